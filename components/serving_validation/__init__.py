"""The serving validation component: REST and gRPC probes of the pushed model, recorded in MLMD."""
from components.serving_validation.artifact import ServingValidation
from components.serving_validation.component import ServingValidator

__all__ = ["ServingValidation", "ServingValidator"]
