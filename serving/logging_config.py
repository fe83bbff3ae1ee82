"""A model's ``logging_config`` (``tensorflow.serving.LoggingConfig`` in its ``ModelConfig``), checked without
TensorFlow, so that the command line refuses one it cannot honour before anything loads (serving.request_logger
does the logging)."""
from __future__ import annotations

from tensorflow_serving.config import logging_config_pb2, model_server_config_pb2

from serving.errors import Code, ServingError, invalid_argument

# The one log collector this server has (open-source TF Serving registers none).
COLLECTOR_TYPE = "tfrecord"
FILE_SUFFIX = ".tfrecord"


def checked(model: model_server_config_pb2.ModelConfig) -> logging_config_pb2.LoggingConfig | None:
    """A model's logging_config, checked; None when it has none. Raises ServingError (the reference's message for
    an unknown collector type, ``LogCollector::Create``)."""
    if not model.HasField("logging_config"):
        return None
    config = model.logging_config
    collector = config.log_collector_config
    if collector.type != COLLECTOR_TYPE:
        raise ServingError(Code.NOT_FOUND, f"Cannot find LogCollector::Factory for type: {collector.type} "
                                           f"(model {model.name}; this server has type \"{COLLECTOR_TYPE}\")")
    if not collector.filename_prefix:
        raise invalid_argument(f"Model {model.name}: log_collector_config needs a filename_prefix")
    rate = config.sampling_config.sampling_rate
    if not 0.0 <= rate <= 1.0:
        raise invalid_argument(f"Model {model.name}: sampling_rate must be between 0 and 1; got {rate}")
    return config


def check_all(config: model_server_config_pb2.ModelServerConfig) -> None:
    for model in config.model_config_list.config:
        checked(model)
