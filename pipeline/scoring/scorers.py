"""One batch of raw rows scored by a pushed version, through its raw serving signature (serving_raw): in this
process (the SavedModel loaded with TensorFlow), or asked of a TF Serving-compatible server over REST or gRPC, the
same request any client of TF Serving sends. Each answers the model's outputs as numpy arrays: `probabilities`
(classification) or `predictions` (regression). A failed call raises ScoringError, its message for a person."""
from __future__ import annotations

import math
import urllib.error
from typing import Any, Protocol

import numpy as np

from pipeline.modules import signatures
from pipeline.scoring.target import Target
from serving.client import GrpcClient, RestClient, RestError

TIMEOUT_S = 120.0  # one batch; a server queues batches behind others' requests


class ScoringError(Exception):
    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable  # no server answered (as opposed to a server refusing the batch)


class Scorer(Protocol):
    via: str

    def score(self, inputs: dict[str, list[Any]]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def output_name(target: Target) -> str:
    return "probabilities" if target.classification else "predictions"


class LocalScorer:
    """The version's SavedModel in this process. TensorFlow runs a call's ops on its own threads, with the GIL
    released, so the next batch is parsed while this one is scored."""
    via = "local"

    def __init__(self, target: Target):
        import tensorflow as tf
        self._tf = tf
        try:
            loaded = tf.saved_model.load(target.directory)
        except (OSError, ValueError, RuntimeError) as e:
            raise ScoringError(f"Cannot load the SavedModel of version {target.version} from {target.directory}: "
                               f"{e}") from None
        if signatures.RAW_SIGNATURE not in loaded.signatures:
            raise ScoringError(f"Version {target.version} has no {signatures.RAW_SIGNATURE} signature (its "
                               f"signatures: {', '.join(sorted(loaded.signatures))}).")
        self._loaded = loaded  # the signature needs its object alive
        self._function = loaded.signatures[signatures.RAW_SIGNATURE]
        # Loaded in Python, the signature keeps the columns' internal names (signatures.py explains why).
        self._inputs = {c.name: (c.internal, signatures.raw_input_dtype(c)) for c in target.contract.features}
        self._output = output_name(target)
        # The first call initializes the Transform graph's tables and optimizes the graph (about half a second): part
        # of loading, as TF Serving's warmup makes it, not of the first batch.
        self.score({name: [""] if dtype == tf.string else [math.nan] for name, (_, dtype) in self._inputs.items()})

    def score(self, inputs: dict[str, list[Any]]) -> dict[str, np.ndarray]:
        tf = self._tf
        tensors = {internal: tf.constant(inputs[name], dtype) for name, (internal, dtype) in self._inputs.items()}
        return {self._output: self._function(**tensors)[self._output].numpy()}

    def close(self) -> None:
        pass


class _Remote:
    """What REST and gRPC share: the model, and the version or label that each request addresses."""

    def __init__(self, target: Target, model_name: str, label: str | None):
        self._model = model_name
        # A label goes to the server as it is, so the server resolves it; else the version, by number.
        self._version, self._label = (None, label) if label else (target.version, None)
        self._output = output_name(target)


class RestScorer(_Remote):
    via = "rest"

    def __init__(self, target: Target, model_name: str, label: str | None, base_url: str):
        super().__init__(target, model_name, label)
        self._client, self._where = RestClient(base_url, timeout_s=TIMEOUT_S), base_url

    def score(self, inputs: dict[str, list[Any]]) -> dict[str, np.ndarray]:
        try:
            columns = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
            answer = self._client.predict(self._model, inputs=columns, signature_name=signatures.RAW_SIGNATURE,
                                          version=self._version, label=self._label)
        except RestError as e:
            raise ScoringError(f"The model server at {self._where} refused a batch: {e}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ScoringError(f"No model server answered at {self._where}: {reason}", unreachable=True) from None
        outputs = answer.get("outputs")
        if not isinstance(outputs, dict) or self._output not in outputs:
            raise ScoringError(f"The model server at {self._where} answered without {self._output!r}.")
        return {self._output: np.asarray(outputs[self._output], dtype=np.float64)}

    def close(self) -> None:
        pass


class GrpcScorer(_Remote):
    via = "grpc"

    def __init__(self, target: Target, model_name: str, label: str | None, grpc_target: str):
        super().__init__(target, model_name, label)
        self._client, self._where = GrpcClient(grpc_target, timeout_s=TIMEOUT_S), grpc_target
        self._text = {c.name for c in target.contract.features if not signatures.raw_input_dtype(c).is_floating}

    def score(self, inputs: dict[str, list[Any]]) -> dict[str, np.ndarray]:
        import grpc
        arrays = {name: np.array([v.encode("utf-8") for v in values], dtype=object) if name in self._text
                  else np.asarray(values, dtype=np.float32) for name, values in inputs.items()}
        try:
            outputs, _ = self._client.predict(self._model, arrays, signature_name=signatures.RAW_SIGNATURE,
                                              version=self._version, label=self._label,
                                              output_filter=[self._output])
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ScoringError(f"No model server answered at {self._where}: {e.code().name}: {e.details()}",
                                   unreachable=True) from None
            raise ScoringError(f"The model server at {self._where} refused a batch: {e.code().name}: "
                               f"{e.details()}") from None
        return {self._output: outputs[self._output]}

    def close(self) -> None:
        self._client.close()
