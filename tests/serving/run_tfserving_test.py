"""Runs TF Serving's own ``tensorflow_model_server_test.py`` (vendored in data/tfserving) as upstream runs it.

``python tests/serving/run_tfserving_test.py [TestClass.test_name ...]`` executes the vendored test module
as ``__main__`` (so ``tf.test.main()`` runs the named tests, or all), with
``tensorflow_serving.model_servers.test_util.tensorflow_model_server_test_base`` importable from the
vendored copy (the pip package ``tensorflow-serving-api`` ships only ``apis`` and ``config``). The caller
sets ``TEST_SRCDIR`` as bazel would: ``$TEST_SRCDIR/tf_serving/tensorflow_serving/`` must hold
``model_servers/tensorflow_model_server`` and ``servables/tensorflow/testdata`` (see test_tfserving_test.py).
"""
from __future__ import annotations

import os
import runpy
import sys

UPSTREAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tfserving")
TEST_MODULE = os.path.join(UPSTREAM, "model_servers", "tensorflow_model_server_test.py")


def main(argv: list[str]) -> None:
    import tensorflow_serving

    # The vendored model_servers/ directory becomes tensorflow_serving.model_servers (a namespace portion).
    tensorflow_serving.__path__.append(UPSTREAM)
    sys.argv = [TEST_MODULE, *argv]
    runpy.run_path(TEST_MODULE, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
