"""TF Lite servables (``--prefer_tflite_model``): a version's ``model.tflite`` run by TF Lite interpreters.

Ports ``servables/tensorflow/tflite_session.cc``, ``tflite_interpreter_pool.cc`` and the TF Lite branch
of ``saved_model_bundle_factory.cc``. With ``--prefer_tflite_model``, a version directory holding
``model.tflite`` is loaded from that file (a ``saved_model.pb`` next to it is ignored); without one, the
SavedModel is loaded as usual. The servable offers what ``servable.Servable`` offers (signatures, the
metadata response, a thread-safe blocking ``run`` keyed by tensor names, ``close``), so Predict,
Classify, Regress, MultiInference, batching and GetModelMetadata work on it unchanged, as
``TfLiteSession`` is a ``Session`` to the reference.

Signatures, as the reference builds them:

* SignatureDefs embedded in the model's ``signature_defs_metadata`` metadata entry (written by
  TensorFlow's ``lite/tools/signature/signature_def_utils.set_signature_defs``, or by
  ``with_signature_defs`` here) are the signatures. A tensor name that is not a tensor of the model is
  retried without its ``:N`` suffix (the TF names the TF Lite converter used to strip) and the
  signature is served with the fixed name; a name that still matches nothing fails the load.
* Without them, one ``serving_default`` predict signature is generated from the model's input and
  output tensors, keyed by tensor name without ``:N``. TF Lite's own ``SignatureDef`` tables (what
  ``Interpreter.get_signature_runner`` uses) are not read, as the reference does not read them.
* Only the primary subgraph's input and output tensors can be fed and fetched.

Running: ``--num_tflite_pools`` (default: the number of CPUs) interpreters of one thread each are made
at load time. An interpreter is not thread-safe, so a run takes one from the pool for itself (waiting if
all are busy) and gives it back. An input whose shape differs from what the interpreter last ran resizes
the tensor and reallocates (any dimension may change, as the reference's ``ResizeInputTensor``). With
``--num_tflite_interpreters_per_pool`` N > 1, a run whose inputs share a batch dimension larger than the
reference's split size (the model's fixed batch size if it is > 1, else ceil(500 / N)) is split along
dimension 0 into pieces of that size, which run in parallel on interpreters of the pool; their outputs
are concatenated. Interpreters use TF Lite's default delegate, XNNPACK, as the reference's
``BuiltinOpResolver`` does, except for models with Flex ops: XNNPACK keeps the shapes of the tensors a Flex
op computes from the first run, so a run with another batch size would get wrong-sized results.

Deliberate differences from the reference:

* The reference's batch scheduler for N > 1 also merges concurrent small runs and refuses runs of
  more than 500 rows; here runs are only split (merging is ``--enable_batching``'s job) and have no
  size limit.
* TensorFlow's Python TF Lite runtime has the builtin ops and the Flex delegate (``SELECT_TF_OPS``,
  e.g. ``FlexParseExampleV2`` for Classify/Regress models), but not the reference's native
  ``ParseExample`` custom op: a model using that custom op fails to load ("unresolved custom op").
* The model file is checked to be a complete TF Lite flatbuffer before an interpreter is built (a
  truncated file would crash TF Lite's unverified loader, the reference's too); the check reads the
  whole flatbuffer with TensorFlow's generated schema.
* A run whose ``deadline`` passes while it waits for an interpreter fails with DEADLINE_EXCEEDED.
* A mistyped feed fails with INVALID_ARGUMENT (the reference copies the bytes unchecked).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from flatbuffers import flexbuffers
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.python.interpreter import Interpreter, OpResolverType
from tensorflow.python.profiler.internal import _pywrap_traceme

from serving.errors import Code, ServingError
from serving.servable import DEFAULT_SIGNATURE, PREDICT_METHOD, describe_signatures

log = logging.getLogger("serving")

TFLITE_MODEL_FILE = "model.tflite"
SIGNATURE_DEFS_METADATA = "signature_defs_metadata"
INITIAL_BATCH_SIZE = 500  # internal::kInitialBatchSize, what one split-mode batch may hold
_SCHEMA_VERSION = 3

# TfLiteTypeToTfType: the TF Lite tensor types the reference serves.
_TF_TYPES = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.uint8): types_pb2.DT_UINT8,
    np.dtype(np.int64): types_pb2.DT_INT64,
    np.dtype(np.bytes_): types_pb2.DT_STRING,
    np.dtype(np.bool_): types_pb2.DT_BOOL,
    np.dtype(np.int16): types_pb2.DT_INT16,
    np.dtype(np.complex64): types_pb2.DT_COMPLEX64,
    np.dtype(np.int8): types_pb2.DT_INT8,
}


def has_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, TFLITE_MODEL_FILE))


# ------------------------------------------------------------------------------------------ model file


def parse_model(content: bytes) -> schema.ModelT:
    """The model's flatbuffer, read completely (a truncated or foreign file raises INVALID_ARGUMENT)."""
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ServingError(Code.INVALID_ARGUMENT, "Cannot build FlatBufferModel from buffer: not a TF Lite model "
                           "(no TFL3 file identifier)")
    try:
        model = schema.ModelT.InitFromPackedBuf(content, 0)
    except Exception as e:  # struct.error / IndexError: an offset points outside the file
        raise ServingError(Code.INVALID_ARGUMENT, "Cannot build FlatBufferModel from buffer: the flatbuffer is "
                           f"truncated or corrupt ({type(e).__name__}: {e})") from None
    if model.version != _SCHEMA_VERSION:
        raise ServingError(Code.INVALID_ARGUMENT, f"Cannot build FlatBufferModel from buffer: schema version "
                           f"{model.version}, expected {_SCHEMA_VERSION}")
    return model


def signature_defs_from_model(model: schema.ModelT) -> dict[str, meta_graph_pb2.SignatureDef]:
    """``tflite::GetSignatureDefMap``: the SignatureDefs in the ``signature_defs_metadata`` entry."""
    for metadata in model.metadata or ():
        if metadata.name != SIGNATURE_DEFS_METADATA.encode():
            continue
        try:
            data = model.buffers[metadata.buffer].data
            root = flexbuffers.GetRoot(bytes(data if data is not None else b"")).AsMap
            return {key.AsKey: meta_graph_pb2.SignatureDef.FromString(value.AsStringBytes)
                    for key, value in zip(root.Keys, root.Values)}
        except Exception as e:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"Invalid SignatureDefs found in TfLite model: {type(e).__name__}: {e}") from None
    return {}


def with_signature_defs(content: bytes, signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]) -> bytes:
    """``content`` with ``signature_defs`` as its ``signature_defs_metadata`` entry (replacing any).

    The counterpart of TensorFlow's ``signature_def_utils.set_signature_defs`` (not in the pip package):
    a flexbuffer map from signature key to serialized SignatureDef. Give the TF tensor names of the
    converted graph's inputs and outputs (``x:0``); they are matched to TF Lite tensor names at load time.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    builder = flexbuffers.Builder()
    with builder.Map():
        for key in sorted(signature_defs):
            builder.Key(key)
            # A flexbuffer string holds any bytes, but Builder.String only takes text: write the blob as a
            # string (what the C++ reader's AsString() needs) through the builder's own primitive.
            builder._WriteBlob(signature_defs[key].SerializeToString(), append_zero=True,
                               type_=flexbuffers.Type.STRING)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(bytes(builder.Finish()), dtype=np.uint8)
    model.buffers = list(model.buffers or []) + [buffer]
    entries = [m for m in (model.metadata or []) if m.name != SIGNATURE_DEFS_METADATA.encode()]
    entry = schema.MetadataT()
    entry.name = SIGNATURE_DEFS_METADATA.encode()
    entry.buffer = len(model.buffers) - 1
    model.metadata = entries + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _has_flex_ops(model: schema.ModelT) -> bool:
    return any((code.customCode or b"").startswith(b"Flex") for code in model.operatorCodes or ())


def _model_batch_size(model: schema.ModelT) -> int:
    """``GetModelBatchSize``: dimension 0 of the only input of the primary subgraph, else -1."""
    subgraph = model.subgraphs[0]
    inputs = list(subgraph.inputs) if subgraph.inputs is not None else []
    if len(inputs) != 1:
        return -1
    shape = subgraph.tensors[inputs[0]].shape
    return int(shape[0]) if shape is not None and len(shape) else -1


# ------------------------------------------------------------------------------------------ signatures


def _legacy_name(tensor_name: str) -> str:
    # TfToTfLiteLegacyTensorName: early TF Lite converters dropped the ":0" of TF tensor names.
    return tensor_name.split(":", 1)[0]


def _fix_name(tensor_names: Mapping[str, int], name: str) -> str | None:
    if name in tensor_names:
        return name
    legacy = _legacy_name(name)
    return legacy if legacy in tensor_names else None


def _tensor_map(details: list[dict], kind: str) -> dict[str, dict]:
    """``GetTensorInfoMap``: the primary subgraph's inputs or outputs by tensor name."""
    tensors: dict[str, dict] = {}
    for detail in details:
        if not detail["name"]:
            raise ServingError(Code.INTERNAL, f"{kind} name missing for tensor index: {detail['index']}")
        if detail["name"] in tensors:
            raise ServingError(Code.ALREADY_EXISTS,
                               f"{kind} tensor name: {detail['name']} has multiple indices")
        tensors[detail["name"]] = detail
    return tensors


def _tensor_info(detail: dict) -> meta_graph_pb2.TensorInfo:
    dtype = _TF_TYPES.get(np.dtype(detail["dtype"]))
    if dtype is None:
        raise ServingError(Code.INTERNAL, f"Unknown TfLite type: {np.dtype(detail['dtype']).name}")
    info = meta_graph_pb2.TensorInfo(name=detail["name"], dtype=dtype)
    for size in detail["shape"]:
        info.tensor_shape.dim.add(size=int(size))
    return info


def _signature_defs(model: schema.ModelT, inputs: Mapping[str, dict],
                    outputs: Mapping[str, dict]) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The signatures ``TfLiteSession::Create`` builds (see the module docstring)."""
    embedded = signature_defs_from_model(model)
    if not embedded:
        log.warning("No signature def found in TFLite model. Generating one.")
        signature = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
        for name, detail in inputs.items():
            signature.inputs[_legacy_name(name)].CopyFrom(_tensor_info(detail))
        for name, detail in outputs.items():
            signature.outputs[_legacy_name(name)].CopyFrom(_tensor_info(detail))
        return {DEFAULT_SIGNATURE: signature}
    for signature in embedded.values():
        for kind, infos, tensors in (("input", signature.inputs, inputs), ("output", signature.outputs, outputs)):
            for alias, info in infos.items():
                fixed = _fix_name(tensors, info.name)
                if fixed is None:
                    raise ServingError(Code.INTERNAL, f"Unknown tensor '{info.name}'.\n\tSignature {kind} {alias} "
                                       "references an unknown tensor")
                info.name = fixed
    return embedded


# ------------------------------------------------------------------------------------------ interpreters


class _Interpreter:
    """One TF Lite interpreter and the input shapes it is allocated for (used by one run at a time)."""

    def __init__(self, content: bytes, default_delegates: bool):
        resolver = OpResolverType.AUTO if default_delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self._interpreter = Interpreter(model_content=content, num_threads=1,
                                            experimental_op_resolver_type=resolver)
        except ValueError as e:
            raise ServingError(Code.INVALID_ARGUMENT, f"Cannot build Interpreter from buffer: {e}") from None
        try:
            self._interpreter.allocate_tensors()
        except RuntimeError as e:  # e.g. an op this runtime does not have
            raise ServingError(Code.INTERNAL, f"Failed to allocate tensors: {_tflite_message(e)}") from None
        self.input_details = self._interpreter.get_input_details()
        self.output_details = self._interpreter.get_output_details()
        self._shapes: dict[int, tuple | None] = {
            d["index"]: tuple(int(s) for s in d["shape"]) for d in self.input_details}
        self._names = {d["index"]: d["name"] for d in self.input_details}

    def run(self, inputs: Sequence[tuple[int, np.ndarray]], outputs: Sequence[int]) -> list[np.ndarray]:
        interpreter = self._interpreter
        resized = False
        for index, array in inputs:
            if self._shapes[index] != array.shape:
                previous, self._shapes[index] = self._shapes[index], None
                try:
                    interpreter.resize_tensor_input(index, list(array.shape))
                except (ValueError, RuntimeError) as e:
                    raise ServingError(Code.INTERNAL, f"Failed to resize input tensor: {self._names[index]} from "
                                       f"{list(previous or ())} to {list(array.shape)}: {e}") from None
                self._shapes[index] = array.shape
                resized = True
        if resized:
            try:
                interpreter.allocate_tensors()
            except RuntimeError as e:
                # A later run must resize again before it can use this interpreter.
                self._shapes = dict.fromkeys(self._shapes)
                raise ServingError(Code.INTERNAL, f"Failed to allocate tensors: {_tflite_message(e)}") from None
        for index, array in inputs:
            try:
                interpreter.set_tensor(index, array)
            except ValueError as e:
                raise ServingError(Code.INVALID_ARGUMENT, f"{self._names[index]}: {e}") from None
        try:
            interpreter.invoke()
        except RuntimeError as e:
            raise ServingError(Code.INTERNAL, f"Failed to invoke TfLite interpreter: {_tflite_message(e)}") from None
        return [interpreter.get_tensor(index) for index in outputs]  # copies: the interpreter is reused


class InterpreterPool:
    """``TfLiteInterpreterPool``: interpreters lent to one run at a time; a borrower waits for a free one."""

    def __init__(self, interpreters: list[_Interpreter]):
        self._size = len(interpreters)
        self._free = list(interpreters)
        self._ready = threading.Condition()
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @contextlib.contextmanager
    def interpreter(self, deadline: float | None, unloaded_message: str) -> Iterator[_Interpreter]:
        with self._ready:
            while not self._free and not self._closed:
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    raise ServingError(Code.DEADLINE_EXCEEDED,
                                       "Deadline exceeded while waiting for a free TF Lite interpreter")
                self._ready.wait(timeout)
            if self._closed:
                raise ServingError(Code.UNAVAILABLE, unloaded_message)
            interpreter = self._free.pop()  # the most recently used: its buffers are warm
        try:
            yield interpreter
        finally:
            with self._ready:
                self._free.append(interpreter)
                self._ready.notify_all() if self._closed else self._ready.notify()

    def close(self) -> None:
        """Refuses new borrowers, waits until every interpreter is back, then releases them."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            self._ready.wait_for(lambda: len(self._free) == self._size)
            self._free.clear()


# ------------------------------------------------------------------------------------------ servable


class TfLiteServable:
    """A loaded ``model.tflite`` version. ``run`` is thread-safe and blocking (call it off the event loop)."""

    def __init__(self, model_name: str, version: int, path: str, content: bytes, num_pools: int,
                 num_interpreters_per_pool: int):
        self.model_name = model_name
        self.version = version
        self.path = path
        self.plans: dict[tuple, object] = {}  # see inference.Inference.plan_predict
        model = parse_model(content)
        # XNNPACK (a default delegate) keeps the shapes it was prepared with for tensors that Flex ops
        # compute, so after a resize it would return results for the old batch size: no XNNPACK with Flex ops.
        flex = _has_flex_ops(model)
        interpreters = [_Interpreter(content, default_delegates=not flex) for _ in range(max(1, num_pools))]
        inputs = _tensor_map(interpreters[0].input_details, "Input")
        outputs = _tensor_map(interpreters[0].output_details, "Output")
        self._input_index = {name: d["index"] for name, d in inputs.items()}
        self._output_index = {name: d["index"] for name, d in outputs.items()}
        signature_defs = _signature_defs(model, inputs, outputs)
        self.signatures, self.signature_def_any, self.signature_def_json = describe_signatures(signature_defs)
        self._pool = InterpreterPool(interpreters)
        self._split_size = 0  # 0: runs are not split
        self._splitter: concurrent.futures.ThreadPoolExecutor | None = None
        if num_interpreters_per_pool > 1:
            batch = _model_batch_size(model)
            self._split_size = batch if batch > 1 else math.ceil(INITIAL_BATCH_SIZE / num_interpreters_per_pool)
            if self._pool.size > 1:
                self._splitter = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._pool.size, thread_name_prefix=f"tflite-{model_name}-{version}")
        self._trace_name = f"TfLiteSession::Run#model={model_name},version={version}#"

    def run(self, feed_names: Sequence[str], feed_values: Sequence[np.ndarray], fetch_names: Sequence[str],
            deadline: float | None) -> list[np.ndarray]:
        """One model run; ``deadline`` (time.monotonic) bounds the wait for an interpreter."""
        inputs = []
        for name, value in zip(feed_names, feed_values):
            fixed = _fix_name(self._input_index, name)
            if fixed is None:
                raise ServingError(Code.INTERNAL, f"Unknown tensor '{name}'.\n\tMissing input TFLite tensor: {name}")
            inputs.append((self._input_index[fixed], _feedable(value)))
        outputs = []
        for name in fetch_names:
            fixed = _fix_name(self._output_index, name)
            if fixed is None:
                raise ServingError(Code.INTERNAL, f"Missing output TFLite tensor: {name}: Unknown tensor '{name}'.")
            outputs.append(self._output_index[fixed])
        rows = _common_batch(inputs)
        if self._split_size and rows > self._split_size:
            results = self._run_split(inputs, outputs, rows, deadline)
        else:
            results = self._run_one(inputs, outputs, deadline)
        return [_servable_output(array) for array in results]

    def _run_one(self, inputs, outputs, deadline) -> list[np.ndarray]:
        with self._pool.interpreter(deadline, self._unloaded()) as interpreter:
            trace = _pywrap_traceme.TraceMe(self._trace_name)  # a no-op unless a profile is being taken
            try:
                return interpreter.run(inputs, outputs)
            finally:
                trace.Stop()

    def _run_split(self, inputs, outputs, rows: int, deadline) -> list[np.ndarray]:
        pieces = []
        for start in range(0, rows, self._split_size):
            stop = min(rows, start + self._split_size)
            pieces.append([(index, array[start:stop]) for index, array in inputs])
        if self._splitter is None:
            parts = [self._run_one(piece, outputs, deadline) for piece in pieces]
        else:
            try:
                futures = [self._splitter.submit(self._run_one, piece, outputs, deadline) for piece in pieces]
            except RuntimeError:  # closed meanwhile (a run whose client went away can outlive its handle)
                raise ServingError(Code.UNAVAILABLE, self._unloaded()) from None
            parts = [future.result() for future in futures]
        merged = []
        for position in range(len(outputs)):
            tensors = [part[position] for part in parts]
            if any(t.ndim == 0 for t in tensors):
                raise ServingError(Code.INTERNAL, "Tensor concat operation failed: a split run's output is a "
                                   "scalar, which has no batch dimension to concatenate")
            merged.append(np.concatenate(tensors, axis=0))
        return merged

    def _unloaded(self) -> str:
        return f"Version {self.version} of {self.model_name} was unloaded"

    def close(self) -> None:
        """Releases the interpreters once no run holds one (blocking; call it off the event loop)."""
        self._pool.close()  # pieces of split runs still queued now fail with UNAVAILABLE
        if self._splitter is not None:
            self._splitter.shutdown(wait=True)


def load(model_name: str, version: int, path: str, num_pools: int, num_interpreters_per_pool: int) -> TfLiteServable:
    """Loads ``path/model.tflite`` (``LoadTfLiteModel``). Raises ServingError."""
    model_path = os.path.join(path, TFLITE_MODEL_FILE)
    try:
        with open(model_path, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        raise ServingError(Code.NOT_FOUND, f"{model_path}; No such file or directory") from None
    except OSError as e:
        raise ServingError(Code.UNKNOWN, f"{model_path}; {e.strerror}") from None
    return TfLiteServable(model_name, version, path, content, num_pools, num_interpreters_per_pool)


def _tflite_message(error: Exception) -> str:
    # TF Lite repeats its error reporter's text; keep it on one line.
    return " ".join(str(error).split())


def _feedable(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype.kind == "U":  # REST strings arrive as text when they were not base64
        value = np.char.encode(value, "utf-8")
    return value if value.flags.c_contiguous else np.ascontiguousarray(value)


def _servable_output(array: np.ndarray) -> np.ndarray:
    # TF Lite returns string tensors as object arrays of bytes, like the SavedModel servable.
    if array.dtype.kind == "S":
        result = np.empty(array.shape, dtype=object)
        result[...] = array.tolist() if array.ndim else array.item()
        return result
    return array


def _common_batch(inputs: Sequence[tuple[int, np.ndarray]]) -> int:
    """The shared dimension-0 size of the inputs, or 0 if they have none (a split needs one)."""
    sizes = {array.shape[0] if array.ndim else -1 for _, array in inputs}
    if len(sizes) != 1:
        return 0
    size = sizes.pop()
    return max(size, 0)
