"""TF Serving's own tensorflow_model_server_test.py, as written upstream, against the embedded server.

The vendored excerpt (data/tfserving, see its README.md) starts ``$TEST_SRCDIR/tf_serving/
tensorflow_serving/model_servers/tensorflow_model_server`` with upstream's flags, which here is a
stand-in running ``python -m serving``, and talks to it with the official stubs and TensorFlow's profiler
client. Each case runs in its own process through ``run_tfserving_test.py``, as upstream's test binary.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.support.serving import write_model_server_stand_in

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "data", "tfserving", "testdata")


@pytest.fixture(scope="module")
def test_srcdir(tmp_path_factory):
    """A bazel-like runfiles tree: the stand-in binary and upstream's testdata."""
    root = tmp_path_factory.mktemp("runfiles")
    package = root / "tf_serving" / "tensorflow_serving"
    write_model_server_stand_in(package / "model_servers")
    (package / "servables" / "tensorflow").mkdir(parents=True)
    (package / "servables" / "tensorflow" / "testdata").symlink_to(TESTDATA)
    return root


@pytest.mark.parametrize("case", [
    "testPredictOnTfLite",
    "testPredictWithSignatureDefOnTfLite",
    "test_profiler_service_with_valid_trace_request",
])
def test_upstream_case(case, test_srcdir, tmp_path):
    # The upstream profiler test sends its predict request with wget (.ci/run installs it where missing).
    assert not case.startswith("test_profiler") or shutil.which("wget"), "wget is needed: apt-get install wget"
    bin_dir = str(test_srcdir / "tf_serving" / "tensorflow_serving" / "model_servers")
    env = dict(os.environ, TEST_SRCDIR=str(test_srcdir), TEST_TMPDIR=str(tmp_path),
               PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    result = subprocess.run([sys.executable, os.path.join(HERE, "run_tfserving_test.py"),
                             f"TensorflowModelServerTest.{case}"],
                            env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Ran 1 test" in output and "\nOK" in output, output[-6000:]
