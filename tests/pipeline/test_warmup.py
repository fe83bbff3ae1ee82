"""The export's warmup requests (pipeline/modules/warmup.py) are requests the signatures accept: serving_default parses
every column of the raw feature spec, so its tf.Examples carry the ignored columns too (a date column, an id), else
TF Serving's warmup, and with it the version's load, fails ("Feature: Date Egg ... is required but could not be
found", seen on palmerpenguins' raw CSV)."""
import tensorflow as tf

from pipeline.modules import features, warmup


def _column(name, dtype, role):
    return features.Column(name=name, key=name, internal=name.replace(" ", "_"), dtype=dtype, role=role)


def test_the_tf_examples_hold_every_column_of_the_raw_feature_spec_the_ignored_ones_too():
    contract = features.DatasetContract(
        label=_column("Species", "string", "label"), task=features.CLASSIFICATION,
        columns=[_column("Island", "string", features.CATEGORICAL), _column("Mass", "int", features.NUMERIC),
                 _column("Date Egg", "string", features.IGNORED)],
        slice_by=[], missing_markers=["NA"],
        sample_rows=[{"Species": "Adelie", "Island": "Dream", "Mass": "3800", "Date Egg": "11/11/07"},
                     {"Species": "Gentoo", "Island": "Biscoe", "Mass": "NA", "Date Egg": "11/12/07"}])
    spec = {"Island": tf.io.FixedLenFeature([], tf.string), "Date Egg": tf.io.FixedLenFeature([], tf.string),
            "Mass": tf.io.VarLenFeature(tf.int64)}
    logs = warmup.warmup_logs(contract, spec)
    raw = [log.predict_log.request for log in logs if log.predict_log.request.model_spec.signature_name
           == "serving_raw"]
    assert len(raw) == 2 and sorted(raw[0].inputs) == ["Island", "Mass"]  # the features, by header name
    [default] = [log.predict_log.request for log in logs
                 if log.predict_log.request.model_spec.signature_name == "serving_default"]
    examples = tf.make_ndarray(default.inputs["examples"])
    parsed = tf.io.parse_example(examples, spec)  # what serving_default does with them first: no error
    assert [v.decode() for v in parsed["Date Egg"].numpy()] == ["11/11/07", "11/12/07"]
    assert tf.sparse.to_dense(parsed["Mass"]).numpy().tolist() == [[3800], [0]]  # NA: left out, as CsvExampleGen
