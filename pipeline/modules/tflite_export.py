"""The TF Lite copy of the serving model (config `export_tflite`): `model.tflite` beside the SavedModel.

TF Lite's converter reads the exported SavedModel's serving signatures, with select TF ops allowed (the transform
graph parses tf.Examples, strips and hashes strings: ops TF Lite has no builtin for, run by its Flex delegate). The
transform graph's vocabulary tables are filled from files, which TF Lite cannot do: the converter reads a copy of
the SavedModel whose tables are filled from constants holding the files' contents (tflite_tables).

A TF Lite model holds each signature as a subgraph of its own, but a TF Serving model server (ours in serving/, as
TF Serving's TfLiteSession) feeds and fetches only the primary subgraph's tensors, and serves the SignatureDefs of
the model's `signature_defs_metadata` entry. So the primary signature, serving_default, is what the model server
serves from this file: its SignatureDef (the SavedModel's, with the TF Lite tensor names) is embedded here. The
other signatures stay in the file for TF Lite's own runtime (Interpreter.get_signature_runner).

Where the converter cannot convert, the Trainer logs why and exports the SavedModel alone: the run never fails
on it.
"""
from __future__ import annotations

import os
import tempfile

import tensorflow as tf
from absl import logging
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from pipeline.modules import tflite_tables

TFLITE_MODEL_FILE = "model.tflite"
# The signature the model server serves from model.tflite (see the module docstring), then the others converted.
SERVED_SIGNATURE = "serving_default"
CONVERTED_SIGNATURES = (SERVED_SIGNATURE, "serving_raw")


def convert(saved_model_dir: str) -> bytes:
    """The SavedModel's serving signatures as a TF Lite model, serving_default embedded as its SignatureDef; its
    tables filled from files (the transform graph's vocabularies) are filled from constants (tflite_tables)."""
    with tempfile.TemporaryDirectory(prefix="tflite_export_") as copy:
        source = copy if tflite_tables.copy_with_tensor_initialized_tables(saved_model_dir, copy) else saved_model_dir
        converter = tf.lite.TFLiteConverter.from_saved_model(source, signature_keys=list(CONVERTED_SIGNATURES))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        content = converter.convert()
    _check_tables_initialized(content)
    return _with_served_signature(content, _saved_signature_def(saved_model_dir, SERVED_SIGNATURE))


def export(saved_model_dir: str) -> str | None:
    """Writes <saved_model_dir>/model.tflite; returns its path, or None (logged) where it cannot be converted."""
    path = os.path.join(saved_model_dir, TFLITE_MODEL_FILE)
    try:
        content = convert(saved_model_dir)
    except Exception as e:  # the converter raises many kinds (ConverterError, ValueError, ...): never fail the run
        logging.warning("export_tflite: TF Lite cannot convert the SavedModel in %s, which is exported alone: "
                        "%s: %s", saved_model_dir, type(e).__name__, str(e)[:2000])
        return None
    with tf.io.gfile.GFile(path + ".tmp", "wb") as f:
        f.write(content)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    logging.info("export_tflite: wrote %s (%d bytes)", path, len(content))
    return path


def _check_tables_initialized(content: bytes) -> None:
    """Raises where the converted model looks values up in tables that nothing fills. TF Lite initializes a table
    only from tensors (its HASHTABLE_IMPORT op); a table that TensorFlow fills from a file (tf.Transform's
    vocabularies: InitializeTableFromTextFileV2, unless tflite_tables inlined it) is converted without its
    initializer, and every run of the model then fails ("hashtable need to be initialized before using"): not a
    conversion."""
    from serving.tflite_servable import parse_model, schema

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    used = {names.get(max(c.builtinCode, c.deprecatedBuiltinCode)) for c in parse_model(content).operatorCodes or ()}
    if "HASHTABLE_FIND" in used and "HASHTABLE_IMPORT" not in used:
        raise ValueError("the converted model looks up tables that TF Lite leaves empty: their TensorFlow "
                         "initializers read files (the transform graph's vocabularies), which TF Lite cannot; "
                         "every run would fail with 'hashtable need to be initialized before using'")


def _saved_signature_def(saved_model_dir: str, name: str) -> meta_graph_pb2.SignatureDef:
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return next(m.signature_def[name] for m in saved_model.meta_graphs if name in m.signature_def)


def _with_served_signature(content: bytes, saved: meta_graph_pb2.SignatureDef) -> bytes:
    """`content` with the SavedModel's SignatureDef of the primary subgraph, its tensors renamed to the TF Lite
    tensors that TF Lite's signature table maps the same keys to."""
    from serving.tflite_servable import parse_model, with_signature_defs

    subgraphs = {d.signatureKey.decode(): d.subgraphIndex for d in parse_model(content).signatureDefs or ()}
    if subgraphs.get(SERVED_SIGNATURE) != 0:
        raise ValueError(f"the converter made {SERVED_SIGNATURE} subgraph {subgraphs.get(SERVED_SIGNATURE)}, not the "
                         "primary subgraph (0) that a model server serves")
    interpreter = tf.lite.Interpreter(model_content=content)
    runner = interpreter._get_full_signature_list()[SERVED_SIGNATURE]  # {"inputs": {key: index}, "outputs": ...}
    primary = {d["index"]: d["name"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    signature = meta_graph_pb2.SignatureDef()
    signature.CopyFrom(saved)
    for kind, infos in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        for key, info in infos.items():
            index = runner[kind].get(key)
            if index not in primary:
                raise ValueError(f"signature {SERVED_SIGNATURE}'s {kind[:-1]} '{key}' is not a tensor of the TF "
                                 "Lite model's primary subgraph")
            info.name = primary[index]
    return with_signature_defs(content, {SERVED_SIGNATURE: signature})
