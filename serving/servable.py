"""One loaded model version (a "servable"): its TensorFlow session and precomputed signatures.

The version's SavedModel is loaded into a TF1-style ``Session`` with the ``serve`` MetaGraph, which is
exactly what the reference server does (``SavedModelBundle``), and runs go straight to the C API's
``TF_SessionRun`` as the reference's do. That matters for compatibility: a feed is not checked
against the placeholder's static shape, so inputs the reference accepts (e.g. shape ``[3]`` for a
``[-1, 1]`` input, spec §2.5 and §8.7) are accepted here too (``tf.saved_model.load(...).signatures``
and Python's ``Session.run`` both refuse them), and several signatures can be computed in one run
(MultiInference, spec §3.3). It also skips Python's per-run feed/fetch bookkeeping.

Everything per request that can be computed once is computed at load time or on first use: the
signature input and output specs, the metadata response (proto and JSON), the graph endpoints
of the tensors fed and fetched.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import any_pb2, json_format
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.client import pywrap_tf_session
from tensorflow_serving.apis import get_model_metadata_pb2

from serving import tensor_codec
from serving.errors import Code, ServingError, from_exception

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    alias: str
    name: str  # graph tensor name, e.g. "serving_default_x:0"
    dtype: int  # tensorflow DataType enum
    shape: tensor_shape_pb2.TensorShapeProto


@dataclasses.dataclass(frozen=True)
class Signature:
    key: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    defaults: Mapping[str, np.ndarray]
    proto: meta_graph_pb2.SignatureDef

    @property
    def input_dtypes(self) -> dict[str, int]:
        return {alias: spec.dtype for alias, spec in self.inputs.items()}


class Servable:
    """A loaded SavedModel version. ``run`` is thread-safe and blocking (call it off the event loop)."""

    def __init__(self, model_name: str, version: int, path: str, session: tf.compat.v1.Session,
                 meta_graph: meta_graph_pb2.MetaGraphDef):
        self.model_name = model_name
        self.version = version
        self.path = path
        self._session = session
        self._endpoints: dict[str, object] = {}  # tensor name -> TF_Output
        # Runs still executing on worker threads; close() waits for them (a request whose client
        # went away may have released its handle while its run goes on).
        self._running = 0
        self._closed = False
        self._idle = threading.Condition()
        # Validated request plans by (signature, request aliases, output filter); see inference.
        self.plans: dict[tuple, object] = {}
        self.signatures, self.signature_def_any, self.signature_def_json = describe_signatures(
            meta_graph.signature_def)

    def run(self, feed_names: Sequence[str], feed_values: Sequence[np.ndarray], fetch_names: Sequence[str],
            deadline: float | None) -> list[np.ndarray]:
        """One session run; ``deadline`` (time.monotonic) bounds it like RunOptions.timeout_in_ms."""
        unique_fetches = tuple(dict.fromkeys(fetch_names))
        feeds = {self._endpoint(name): _contiguous(value) for name, value in zip(feed_names, feed_values)}
        fetches = [self._endpoint(name) for name in unique_fetches]
        options = None
        if deadline is not None:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded before the model could run")
            options = pywrap_tf_session.TF_NewBufferFromString(
                tf.compat.v1.RunOptions(timeout_in_ms=remaining_ms).SerializeToString())
        with self._idle:
            if self._closed:
                raise ServingError(Code.UNAVAILABLE, f"Version {self.version} of {self.model_name} was unloaded")
            self._running += 1
        try:
            # What Session.run ends in, minus its Python-side feed checks (see the module docstring).
            results = self._session._call_tf_sessionrun(options, feeds, fetches, [], None)
        except tf.errors.OpError as e:
            raise from_exception(e) from None
        finally:
            if options is not None:
                pywrap_tf_session.TF_DeleteBuffer(options)
            with self._idle:
                self._running -= 1
                self._idle.notify_all()
        by_name = dict(zip(unique_fetches, results))
        return [np.asarray(by_name[name]) for name in fetch_names]

    @property
    def running(self) -> int:
        """Runs executing now on worker threads."""
        return self._running

    def close(self) -> None:
        """Releases the session once no run is executing (blocking; call it off the event loop)."""
        with self._idle:
            self._closed = True
            self._idle.wait_for(lambda: self._running == 0)
        self._session.close()

    def _endpoint(self, tensor_name: str):
        endpoint = self._endpoints.get(tensor_name)
        if endpoint is None:
            try:
                tensor = self._session.graph.get_tensor_by_name(tensor_name)
            except (KeyError, ValueError) as e:
                raise ServingError(Code.INVALID_ARGUMENT, f"Tensor {tensor_name} is not in the graph: {e}") from None
            endpoint = self._endpoints[tensor_name] = tensor._as_tf_output()
        return endpoint


def load(model_name: str, version: int, path: str, tags: Sequence[str] = ("serve",)) -> Servable:
    """Loads ``path`` (one version directory). Raises ServingError with the reference's codes."""
    if not any(os.path.isfile(os.path.join(path, f)) for f in SAVED_MODEL_FILES):
        raise missing_saved_model_error(path)
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    try:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, list(tags), path)
    except RuntimeError as e:
        session.close()
        if "could not be found in SavedModel" in str(e):
            raise ServingError(
                Code.NOT_FOUND,
                "Could not find meta graph def matching supplied tags: { " + " ".join(tags) + " }. To inspect "
                "available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`",
            ) from None
        raise ServingError(Code.UNKNOWN, str(e)) from None
    except tf.errors.OpError as e:
        session.close()
        raise from_exception(e) from None
    except Exception as e:  # a corrupt saved_model.pb surfaces as protobuf/IO errors
        session.close()
        raise ServingError(Code.DATA_LOSS if "parse" in str(e).lower() else Code.UNKNOWN,
                           f"{type(e).__name__}: {e}") from None
    return Servable(model_name, version, path, session, meta_graph)


def _contiguous(array: np.ndarray) -> np.ndarray:
    # The C API copies from a C-contiguous buffer (np.ascontiguousarray would turn a scalar into [x]).
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def missing_saved_model_error(path: str) -> ServingError:
    # tensorflow/cc/saved_model/reader.cc, as the reference reports a version without saved_model.pb.
    return ServingError(
        Code.NOT_FOUND,
        f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}. Check that the "
        "directory exists and that you have the right permissions for accessing it.",
    )


def describe_signatures(
        signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]) -> tuple[dict[str, Signature], any_pb2.Any, str]:
    """A version's signatures, and its metadata response's ``SignatureDefMap`` (packed, and as REST JSON)."""
    signatures = {key: _signature(key, sig) for key, sig in signature_defs.items()}
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in signature_defs.items():
        signature_map.signature_def[key].CopyFrom(sig)
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    # The REST metadata body prints the map with proto field names and all fields (spec §2.4).
    as_json = json_format.MessageToJson(
        signature_map, including_default_value_fields=True, preserving_proto_field_name=True, indent=1
    )
    return signatures, packed, as_json


def _signature(key: str, sig: meta_graph_pb2.SignatureDef) -> Signature:
    def specs(infos) -> dict[str, TensorSpec]:
        return {alias: TensorSpec(alias, info.name, info.dtype, info.tensor_shape)
                for alias, info in sorted(infos.items())}

    defaults = {}
    for alias, proto in sig.defaults.items():
        try:
            defaults[alias] = tensor_codec.array_from_proto(proto, max_implied_bytes=None)  # the model's own
        except ValueError:
            pass  # an unusable default behaves as no default: the input must then be sent
    return Signature(key, sig.method_name, specs(sig.inputs), specs(sig.outputs), defaults, sig)

