"""A copy of a SavedModel whose lookup tables are filled from constants instead of files, for TF Lite's converter.

TF Lite fills a lookup table only from tensors (its HASHTABLE_IMPORT op, what TensorFlow's LookupTableImportV2
becomes). The transform graph's tables (tf.Transform's vocabularies) are filled from text files
(InitializeTableFromTextFileV2, reading an asset), which the converter drops: its output would fail every run. So
before converting, each such initializer is rewritten in the SavedModel's graph, at the proto level:

* inside the function that holds it, it becomes LookupTableImportV2 of two constants holding what TensorFlow would
  have read from the file (the keys and values, per the op's key_index, value_index, vocab_size and offset);
* at the graph's top level, the call that passed the asset's path to it passes a constant path instead (the
  converter leaves out a session initializer fed from the asset variables).

The file is found by following the initializer's filename argument up through the function calls to the top-level
graph, where it is read from the variable that holds an asset's path (asset_file_def). The copy answers exactly as
the original (tests/pipeline/test_tflite_export.py compares them); anything this does not recognise raises
ValueError, and the Trainer exports the SavedModel alone.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import function_pb2, graph_pb2, node_def_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tfx.utils import io_utils

SAVED_MODEL_FILE = "saved_model.pb"
_CALLS = ("StatefulPartitionedCall", "PartitionedCall")
_FILE_INIT = "InitializeTableFromTextFileV2"
# tf.lookup.TextFileIndex
_WHOLE_LINE, _LINE_NUMBER = -2, -1


def copy_with_tensor_initialized_tables(saved_model_dir: str, out_dir: str) -> int:
    """Writes to `out_dir` the SavedModel of `saved_model_dir` with its file-initialized tables initialized from
    constants; returns how many initializers were rewritten (0: nothing written, convert the original)."""
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(saved_model_dir, SAVED_MODEL_FILE), "rb") as f:
        saved_model.ParseFromString(f.read())
    rewritten = sum(_Rewriter(meta_graph, saved_model_dir).rewrite() for meta_graph in saved_model.meta_graphs)
    if rewritten:
        io_utils.copy_dir(saved_model_dir, out_dir)
        with tf.io.gfile.GFile(os.path.join(out_dir, SAVED_MODEL_FILE), "wb") as f:
            f.write(saved_model.SerializeToString())
    return rewritten


class _Rewriter:
    def __init__(self, meta_graph, saved_model_dir: str):
        self._graph: graph_pb2.GraphDef = meta_graph.graph_def
        self._dir = saved_model_dir
        self._functions = {f.signature.name: f for f in self._graph.library.function}
        self._top = {n.name: n for n in self._graph.node}
        # function name -> the call nodes that call it, with the function they are in (None: the top level)
        self._callers: dict[str, list[tuple[function_pb2.FunctionDef | None, node_def_pb2.NodeDef]]] = {}
        for function in [None, *self._functions.values()]:
            for node in (self._graph.node if function is None else function.node_def):
                if node.op in _CALLS:
                    self._callers.setdefault(node.attr["f"].func.name, []).append((function, node))
        self._asset_placeholders = {a.tensor_info.name.split(":")[0]: a.filename for a in meta_graph.asset_file_def}

    def rewrite(self) -> int:
        count = 0
        for function in self._functions.values():
            for node in list(function.node_def):
                if node.op == _FILE_INIT:
                    self._rewrite(function, node)
                    count += 1
        return count

    def _rewrite(self, function: function_pb2.FunctionDef, node: node_def_pb2.NodeDef) -> None:
        table_ref, filename_ref = node.input[0], node.input[1]
        where = f"{node.name} in {function.signature.name}"
        file_sources = self._sources(function, filename_ref)
        paths = {self._asset_path(top_node) for top_node, _ in file_sources}
        if len(paths) != 1:
            raise ValueError(f"{where} reads {len(paths)} different files ({sorted(paths)}): cannot inline one")
        tables = {self._table_types(None, t.name) for t, _ in self._sources(function, table_ref)}
        if len(tables) != 1:
            raise ValueError(f"{where} fills {len(tables)} kinds of table: cannot inline one")
        [(key_dtype, value_dtype)] = tables
        [path] = paths
        keys, values = _read_table_file(path, node, tf.as_dtype(key_dtype), tf.as_dtype(value_dtype))
        constants = []
        for suffix, array, dtype in (("keys", keys, key_dtype), ("values", values, value_dtype)):
            constant = function.node_def.add(name=f"{node.name}/inlined_{suffix}", op="Const")
            constant.attr["dtype"].type = dtype
            constant.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array, dtype=tf.as_dtype(dtype)))
            constants.append(f"{constant.name}:output:0")
        control = [i for i in node.input if i.startswith("^")]
        node.op = "LookupTableImportV2"
        del node.input[:]
        node.input.extend([table_ref, *constants, *control])
        node.attr.clear()
        node.attr["Tin"].type = key_dtype
        node.attr["Tout"].type = value_dtype
        # The path no longer matters to the function; the top-level call gets a constant one (see the docstring).
        calls = [(call, index) for _, (call, index) in file_sources if call is not None]
        if calls:
            constant = self._path_constant(path).name
            for call, index in calls:
                call.input[index] = constant

    def _sources(self, function: function_pb2.FunctionDef | None, ref: str
                 ) -> list[tuple[node_def_pb2.NodeDef, tuple[node_def_pb2.NodeDef | None, int]]]:
        """The top-level nodes an input `ref` of a node in `function` comes from, each with the top-level call
        (and its input index) that passed it in (None when `ref` is a top-level node's output)."""
        name = ref.split(":")[0]
        if function is None:
            return [(self._top[name], (None, -1))]
        args = [a.name for a in function.signature.input_arg]
        if name not in args:  # a node of the function itself: only an Identity is looked through
            inner = next((n for n in function.node_def if n.name == name), None)
            if inner is None or inner.op != "Identity":
                raise ValueError(f"{ref} in {function.signature.name} is computed there ({inner and inner.op}), "
                                 "not passed in")
            return self._sources(function, inner.input[0])
        index = args.index(name)
        found = []
        for caller, call in self._callers.get(function.signature.name, []):
            data_inputs = [i for i in call.input if not i.startswith("^")]
            position = list(call.input).index(data_inputs[index])
            for top_node, passed in self._sources(caller, data_inputs[index]):
                found.append((top_node, passed if caller is not None else (call, position)))
        if not found:
            raise ValueError(f"nothing calls {function.signature.name}: its argument {name} cannot be traced")
        return found

    def _table_types(self, function: function_pb2.FunctionDef | None, ref: str) -> tuple[int, int]:
        """The key and value types of the HashTableV2 whose handle `ref` (a node's output in `function`, None: the
        top level) is, through Identity nodes and the outputs of function calls (a restored table's
        _create_resource)."""
        name, _, rest = ref.partition(":")
        nodes = self._graph.node if function is None else function.node_def
        node = next((n for n in nodes if n.name == name), None)
        if node is not None and node.op == "HashTableV2":
            return node.attr["key_dtype"].type, node.attr["value_dtype"].type
        if node is not None and node.op == "Identity":
            return self._table_types(function, node.input[0])
        if node is not None and node.op in _CALLS:
            called = self._functions[node.attr["f"].func.name]
            index = int(rest.rpartition(":")[2] or 0)  # top level "name:K", in a function "name:output:K"
            return self._table_types(called, called.ret[called.signature.output_arg[index].name])
        raise ValueError(f"a table's handle comes from {node.op if node else ref}, not a HashTableV2")

    def _asset_path(self, node: node_def_pb2.NodeDef) -> str:
        """The file a top-level node's string holds: an asset's path variable (as TF2 saves them), its placeholder,
        or a constant."""
        if node.op == "ReadVariableOp":
            variable = node.input[0].split(":")[0]
            assigned = [n for n in self._graph.node
                        if n.op == "AssignVariableOp" and n.input[0].split(":")[0] == variable]
            if len(assigned) != 1:
                raise ValueError(f"the variable {variable} that holds a table's file is assigned {len(assigned)} times")
            node = self._top[assigned[0].input[1].split(":")[0]]
        if node.op == "Placeholder" and node.name in self._asset_placeholders:
            return os.path.join(self._dir, "assets", self._asset_placeholders[node.name])
        if node.op == "Const":
            return tf.make_ndarray(node.attr["value"].tensor).item().decode()
        raise ValueError(f"a table's file comes from {node.op} {node.name}, which is not an asset's path")

    def _path_constant(self, path: str) -> node_def_pb2.NodeDef:
        name = f"inlined_table_file_{len(self._graph.node)}"
        constant = self._graph.node.add(name=name, op="Const")
        constant.attr["dtype"].type = tf.string.as_datatype_enum
        constant.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(path.encode()))
        self._top[name] = constant
        return constant


def _read_table_file(path: str, node: node_def_pb2.NodeDef, key_dtype: tf.DType, value_dtype: tf.DType
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The keys and values InitializeTableFromTextFileV2 would put in the table, line by line: the whole line
    (without its line break, parsed as the table's type) or its number (plus `offset` for values), per key_index
    and value_index, for the first vocab_size lines (-1: all). Columns of delimited lines are not inlined."""
    key_index, value_index = node.attr["key_index"].i, node.attr["value_index"].i
    vocab_size = node.attr["vocab_size"].i if "vocab_size" in node.attr else -1
    offset = node.attr["offset"].i if "offset" in node.attr else 0
    with tf.io.gfile.GFile(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines[-1] == b"":  # the file's last line ends in a newline
        lines.pop()
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]  # as TensorFlow reads them
    if b"" in lines:  # TensorFlow refuses it too ("empty line found"): the original could not run either
        raise ValueError(f"{path} has an empty line at line {lines.index(b'') + 1}")
    if vocab_size > 0:
        if len(lines) < vocab_size:
            raise ValueError(f"{path} has {len(lines)} lines, fewer than the table's vocab_size {vocab_size}")
        lines = lines[:vocab_size]
    keys = _column(lines, key_index, key_dtype, 0, f"{node.name}'s keys")
    values = _column(lines, value_index, value_dtype, offset, f"{node.name}'s values")
    return keys, values


def _column(lines: list[bytes], index: int, dtype: tf.DType, offset: int, what: str) -> np.ndarray:
    if index == _LINE_NUMBER and dtype == tf.int64:
        return np.arange(offset, offset + len(lines), dtype=np.int64)
    if index == _WHOLE_LINE and dtype == tf.string:
        return np.array(lines, dtype=object)
    if index == _WHOLE_LINE and (dtype.is_integer or dtype.is_floating):
        parse = int if dtype.is_integer else float
        try:
            return np.array([parse(line) for line in lines], dtype=dtype.as_numpy_dtype)
        except ValueError as e:
            raise ValueError(f"{what}: a line is not a {dtype.name}: {e}") from None
    raise ValueError(f"{what}: only whole lines and line numbers are inlined, not index {index} as {dtype.name}")

