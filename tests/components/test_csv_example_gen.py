"""Our CsvExampleGen executor against TFX's own, on the same files with real Beam: every split must hold the same
records, byte for byte (ours are TFX's Examples as SerializeToString(deterministic=True) writes them; TFX's are
read back and written that way), so every row lands in the split stock CsvExampleGen puts it in.

Files: the bundled penguins, palmerpenguins' raw export, scikit-learn's iris and breast cancer data, the messy CSV
(a byte-order mark, an always-empty column, free text), and one written here with the cases TFX's reader handles
specially: a quoted cell spanning lines, blank lines, empty cells in every type, negative and large integers, floats
in exponent form, non-ASCII text. A row with too few fields fails both the same way."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import palmerpenguins
import pytest
import sklearn
import sklearn.datasets
import tensorflow as tf
from tfx.components.example_gen import utils
from tfx.components.example_gen.csv_example_gen import executor as tfx_csv
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from components.csv_example_gen import executor
from tests.support import datasets
from tests.support.paths import PENGUINS_DIR, REPO_ROOT

EDGE_CASES = (
    'name,count,ratio,note,flag\n'
    'a,1,0.5,"one line",x\n'
    '\n'
    'b,-7,1e3,"two\nlines, and a comma",\n'
    'c,,,,y\n'
    'd,9007199254740993,-0.0,"quote "" inside",z\n'
    '\n'
    'é,3,2.5,naïve café,x\n'
)


def _run(executor_class: type, data_dir: Path, out: Path) -> dict[str, list[bytes]]:
    """Runs an ExampleGen executor on every CSV of data_dir (TFX's default 2:1 train/eval split); returns each split's
    records, each as deterministic bytes, sorted."""
    executor_class().Do({}, *_arguments(data_dir, out))
    splits = {}
    for split in sorted(os.listdir(out)):
        records = []
        for name in sorted(os.listdir(out / split)):
            for record in tf.data.TFRecordDataset(str(out / split / name), compression_type="GZIP"):
                records.append(tf.train.Example.FromString(record.numpy()).SerializeToString(deterministic=True))
        splits[split] = sorted(records)
    return splits


def _arguments(data_dir: Path, out: Path) -> tuple[dict, dict]:
    """An ExampleGen executor's output dict and exec properties: every CSV of data_dir, TFX's default split."""
    examples = standard_artifacts.Examples()
    examples.uri = str(out)
    exec_properties = {
        standard_component_specs.INPUT_BASE_KEY: str(data_dir),
        standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(utils.make_default_input_config()),
        standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(utils.make_default_output_config(
            utils.make_default_input_config())),
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
        standard_component_specs.OUTPUT_FILE_FORMAT_KEY: example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    }
    return {standard_component_specs.EXAMPLES_KEY: [examples]}, exec_properties


def _files(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "data" / name
    folder.mkdir(parents=True)
    sklearn_data = Path(sklearn.__file__).parent / "datasets" / "data"
    sources = {"penguins": PENGUINS_DIR / "penguins.csv",
               "palmerpenguins raw": Path(palmerpenguins.__file__).parent / "data" / "penguins-raw.csv",
               "sklearn iris": sklearn_data / "iris.csv"}
    if name in sources:
        shutil.copy(sources[name], folder / "data.csv")
    elif name == "sklearn breast cancer":  # its file's first line is counts, not names: through its loader
        sklearn.datasets.load_breast_cancer(as_frame=True).frame.to_csv(folder / "data.csv", index=False)
    elif name == "messy":
        datasets.write_messy(folder)
    else:
        datasets.write_csv(folder, EDGE_CASES)
    return folder


@pytest.mark.parametrize("name", ["penguins", "palmerpenguins raw", "sklearn iris", "sklearn breast cancer", "messy",
                                  "edge cases"])
def test_the_same_records_in_the_same_splits_as_tfx_csv_example_gen(tmp_path, name):
    data_dir = _files(tmp_path, name)
    ours = _run(executor.Executor, data_dir, tmp_path / "ours")
    theirs = _run(tfx_csv.Executor, data_dir, tmp_path / "tfx")
    assert list(ours) == ["Split-eval", "Split-train"]
    assert sum(len(records) for records in ours.values()) > 0
    assert ours == theirs


def test_the_written_records_are_the_deterministic_bytes(tmp_path):
    """What is on disk is what TFX hashed to choose the split: written as it is, not re-serialized."""
    data_dir = _files(tmp_path, "edge cases")
    _run(executor.Executor, data_dir, tmp_path / "ours")
    split = tmp_path / "ours" / "Split-train"
    for name in os.listdir(split):
        with gzip.open(split / name) as f:
            assert f.read(1)  # a gzipped TFRecord file with at least one record
        for record in tf.data.TFRecordDataset(str(split / name), compression_type="GZIP"):
            raw = record.numpy()
            assert raw == tf.train.Example.FromString(raw).SerializeToString(deterministic=True)


@pytest.mark.parametrize("executor_class", [executor.Executor, tfx_csv.Executor], ids=["ours", "tfx"])
def test_a_row_with_too_few_fields_fails_with_tfx_message(tmp_path, executor_class):
    data_dir = datasets.write_csv(tmp_path / "data", "a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(Exception, match=r"Columns do not match specified csv headers: \['a', 'b', 'c'\]"):
        _run(executor_class, data_dir, tmp_path / "out")


_EXAMPLE_GEN_RSS = """
import json, sys
from pathlib import Path
from tests.components.test_csv_example_gen import _arguments, _run
from tests.support import memory
from components.csv_example_gen import executor

small, big, out, mode = sys.argv[1:5]
if mode == "reshuffle":  # TFX's write on every runner: what the test must be able to tell apart
    executor._IN_PROCESS_RUNNERS = ()
_run(executor.Executor, Path(small), Path(out) / "small")  # Beam's and TFX's first pipeline, on a small file
_, grew = memory.growth_mb(lambda: executor.Executor().Do({}, *_arguments(Path(big), Path(out) / "big")))
print(json.dumps({"grew_mb": grew}))
"""


@pytest.mark.parametrize("mode, most_mb", [("in order", 40), ("reshuffle", None)])
def test_the_direct_runner_writes_the_splits_without_holding_them(tmp_path, mode, most_mb):
    """200,000 rows (9 MB of CSV) through the executor on the in-memory direct runner: written as they come, the
    process grows by under 40 MB; through TFX's Reshuffle (which that runner holds whole, in memory) by far more."""
    small, big = datasets.write_csv(tmp_path / "small", EDGE_CASES), tmp_path / "big"
    subprocess.run([sys.executable, str(REPO_ROOT / "data" / "generate_synthetic.py"), str(big), "--rows", "200000"],
                   check=True, capture_output=True, timeout=120)
    out = subprocess.run([sys.executable, "-c", _EXAMPLE_GEN_RSS, str(small), str(big), str(tmp_path / "out"), mode],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=300)
    grew = json.loads(out.stdout.strip().splitlines()[-1])["grew_mb"]
    if most_mb is not None:
        assert grew < most_mb
    else:
        assert grew > 100  # the guard above can fail: the same rows, held for a shuffle


def test_only_a_runner_in_this_process_writes_in_order():
    from tfx.proto import example_gen_pb2

    local = beam.Pipeline(argv=["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    portable = beam.Pipeline(argv=["--runner=PortableRunner", "--job_endpoint=localhost:8099"])
    assert executor.writes_in_order(local, example_gen_pb2.FORMAT_TF_EXAMPLE)
    assert not executor.writes_in_order(local, example_gen_pb2.FORMAT_PARQUET)
    assert not executor.writes_in_order(portable, example_gen_pb2.FORMAT_TF_EXAMPLE)
