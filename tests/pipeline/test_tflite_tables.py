"""pipeline/modules/tflite_tables.py on real SavedModels with tables filled from text files: the copy answers as
the original (in TensorFlow, with the copy's files deleted, and in TF Lite after conversion), for tables saved
directly and for tables loaded and saved again (as a Keras model saves tf.Transform's restored tables); what it
does not inline is refused with the reason."""
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from pipeline.modules import tflite_export, tflite_tables

WORDS = ["Biscoe", "Dream", "Torgersen", "Atlantis"]
PROBE_WORDS = ["Dream", "Atlantis", "Biscoe", "nowhere", "Torgersen", ""]
PROBE_NUMBERS = [30, 10, 99, 40, 20]
PROBE_IDS = [0, 3, 1, 7, -1]


class Tables(tf.Module):
    """One table of each layout inlined, all filled from text files (CRLF line breaks, as TensorFlow reads them).
    TF Lite's tables map strings to int64 or back only: `numbers` (int64 to int64) is for TensorFlow alone."""

    def __init__(self, folder, numbers_table=True):
        super().__init__()
        words = os.path.join(folder, "words.txt")
        with open(words, "wb") as f:
            f.write(b"\r\n".join(w.encode() for w in WORDS) + b"\r\n")
        numbers = os.path.join(folder, "numbers.txt")
        with open(numbers, "w") as f:
            f.write("10\n20\n30\n40")  # no line break at the end
        lines, whole = tf.lookup.TextFileIndex.LINE_NUMBER, tf.lookup.TextFileIndex.WHOLE_LINE
        self.ids = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(words, tf.string, whole, tf.int64, lines, value_index_offset=3), -1)
        self.first_two = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(words, tf.string, whole, tf.int64, lines, vocab_size=2), -1)
        self.oov = tf.lookup.StaticVocabularyTable(
            tf.lookup.TextFileInitializer(words, tf.string, whole, tf.int64, lines), num_oov_buckets=2)
        self.numbers = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(numbers, tf.int64, whole, tf.int64, lines), -1) if numbers_table else None
        self.names = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(words, tf.int64, lines, tf.string, whole), "?")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([None], tf.int64)])
    def serve(self, word, number, word_id):
        answers = {"ids": self.ids.lookup(word), "first_two": self.first_two.lookup(word),
                   "oov": self.oov.lookup(word), "names": self.names.lookup(word_id)}
        if self.numbers is not None:
            answers["numbers"] = self.numbers.lookup(number)
        return answers


def _probe():
    return {"word": np.array(PROBE_WORDS[:5], dtype=object), "number": np.array(PROBE_NUMBERS, dtype=np.int64),
            "word_id": np.array(PROBE_IDS, dtype=np.int64)}


def _answers(saved_model_dir):
    serve = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(**{k: tf.constant(v) for k, v in _probe().items()}).items()}


def _saved(tmp_path, reloaded, numbers_table=True):
    module = Tables(str(tmp_path), numbers_table)
    path = str(tmp_path / "direct")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    if not reloaded:
        return path
    # Loaded and saved again inside another model: the tables are restored resources whose initializers are
    # nested function calls, and their files' paths live in the asset variables of the new SavedModel.
    outer = tf.Module()
    outer.inner = tf.saved_model.load(path)
    outer.serve = tf.function(lambda word, number, word_id: outer.inner.serve(word, number, word_id),
                              input_signature=module.serve.input_signature)
    again = str(tmp_path / "reloaded")
    tf.saved_model.save(outer, again, signatures={"serving_default": outer.serve})
    return again


def _ops(saved_model_dir):
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    graph = saved_model.meta_graphs[0].graph_def
    return [n.op for f in graph.library.function for n in f.node_def] + [n.op for n in graph.node]


@pytest.mark.parametrize("reloaded", [False, True], ids=["saved", "loaded_and_saved_again"])
def test_the_copy_answers_as_the_original_without_its_files(tmp_path, reloaded):
    original = _saved(tmp_path, reloaded)
    expected = _answers(original)
    assert list(expected["ids"]) == [4, 6, 3, -1, 5] and list(expected["names"]) == [b"Biscoe", b"Atlantis",
                                                                                     b"Dream", b"?", b"?"]
    copy = str(tmp_path / "copy")
    assert tflite_tables.copy_with_tensor_initialized_tables(original, copy) == 5
    assert "InitializeTableFromTextFileV2" not in _ops(copy) and _ops(copy).count("LookupTableImportV2") == 5
    shutil.rmtree(os.path.join(copy, "assets"))  # what the copy answers cannot come from the files
    for file in ("words.txt", "numbers.txt"):
        os.rename(tmp_path / file, tmp_path / f"{file}.gone")
    got = _answers(copy)
    for name, values in expected.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)


@pytest.mark.parametrize("reloaded", [False, True], ids=["saved", "loaded_and_saved_again"])
def test_the_copy_converts_to_a_tf_lite_model_that_answers_as_the_original(tmp_path, reloaded):
    original = _saved(tmp_path, reloaded, numbers_table=False)
    expected = _answers(original)
    copy = str(tmp_path / "copy")
    assert tflite_tables.copy_with_tensor_initialized_tables(original, copy) == 4
    converter = tf.lite.TFLiteConverter.from_saved_model(copy)
    # As tflite_export converts (StaticVocabularyTable hashes out-of-vocabulary words: a select TF op).
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    content = converter.convert()
    tflite_export._check_tables_initialized(content)  # TF Lite fills them (HASHTABLE_IMPORT)
    lite = tf.lite.Interpreter(model_content=content).get_signature_runner("serving_default")(**_probe())
    for name, values in expected.items():
        np.testing.assert_array_equal(lite[name], values, err_msg=name)


def test_a_model_without_file_tables_is_left_alone(tmp_path):
    module = tf.Module()
    module.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(["a"]), tf.constant([1], tf.int64)), -1)
    module.serve = tf.function(lambda x: {"y": module.table.lookup(x)}, input_signature=[tf.TensorSpec([None],
                                                                                                      tf.string)])
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.serve})
    assert tflite_tables.copy_with_tensor_initialized_tables(str(tmp_path / "m"), str(tmp_path / "copy")) == 0
    assert not os.path.exists(tmp_path / "copy")


@pytest.mark.parametrize("saved_content, content, initializer, reason", [
    (b"a\tx\nb\ty\n", None,
     dict(key_dtype=tf.string, key_index=0, value_dtype=tf.string, value_index=1, delimiter="\t"),
     "only whole lines and line numbers are inlined, not index 0"),
    (b"a\nb\n", b"a\n\nb\n", dict(key_dtype=tf.string, key_index=-2, value_dtype=tf.int64, value_index=-1),
     "has an empty line at line 2"),
    (b"1\n2\n", b"1\ntwo\n", dict(key_dtype=tf.int64, key_index=-2, value_dtype=tf.int64, value_index=-1),
     "a line is not a int64"),
], ids=["delimited_columns", "empty_line", "not_a_number"])
def test_what_is_not_inlined_is_refused_and_exported_alone(tmp_path, caplog, saved_content, content, initializer,
                                                            reason):
    path = tmp_path / "vocabulary.txt"
    path.write_bytes(saved_content)  # TensorFlow fills the table when it is made: a file it can read
    module = tf.Module()
    module.table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(str(path), **initializer),
                                             "" if initializer["value_dtype"] == tf.string else -1)
    spec = tf.TensorSpec([None], initializer["key_dtype"])
    module.serve = tf.function(lambda x: {"y": module.table.lookup(x)}, input_signature=[spec])
    saved = str(tmp_path / "m")
    tf.saved_model.save(module, saved, signatures={"serving_default": module.serve})
    if content is not None:  # then the saved asset damaged (TensorFlow would refuse to load it too)
        (tmp_path / "m" / "assets" / "vocabulary.txt").write_bytes(content)
    with pytest.raises(ValueError, match=reason):
        tflite_tables.copy_with_tensor_initialized_tables(saved, str(tmp_path / "copy"))
    with caplog.at_level(logging.WARNING):
        assert tflite_export.export(saved) is None
    assert "TF Lite cannot convert" in caplog.text and reason in caplog.text
    assert not os.path.exists(os.path.join(saved, "model.tflite"))
