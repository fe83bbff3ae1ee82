"""A TensorFlow Serving-compatible model server, a launcher that prefers the real one, and helpers.

* ``python -m serving`` (``serving.cli``): the embedded server, taking ``tensorflow_model_server``'s flags.
* ``serving.launcher``: start the real ``tensorflow_model_server``, Docker ``tensorflow/serving``, or
  the embedded server, and wait until a model is AVAILABLE.
* ``serving.client``: thin REST and gRPC helpers (predict, status).
* ``serving/k8s``: manifests for the real TF Serving in a cluster.

The wire behaviour is specified in ``../shared/reference/tfserving-api.md`` ("the spec"); module
docstrings cite the sections they implement.
"""
