"""What keeps a large CSV cheap: the preflight's statistics of a sample (with the whole data's types and row count),
the eval split capped at eval_max_rows, and the summary saying how much of the data the Trainer saw."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import palmerpenguins
import pytest

from pipeline import evaluation
from pipeline.cli.summary import training_line
from pipeline.dataset import csv_files, roles, statistics
from pipeline.metadata.report import RunReport
from pipeline.metadata.training import TrainingSeen
from tests.support import datasets
from tests.support.paths import PENGUINS_DIR, REPO_ROOT


def _folder(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    if name == "messy":
        datasets.write_messy(folder)
    elif name == "penguins":
        shutil.copy(PENGUINS_DIR / "penguins.csv", folder)
    else:  # palmerpenguins' raw export: ids, dates, free text, NA
        shutil.copy(palmerpenguins.__path__[0] + "/data/penguins-raw.csv", folder)
    return str(folder)


@pytest.mark.parametrize("name", ["penguins", "palmerpenguins raw", "messy"])
def test_the_sampled_statistics_of_all_rows_are_the_full_statistics(tmp_path, monkeypatch, name):
    """With fewer rows than SAMPLE_ROWS the sample is every row: the sampled path (the fast reader's types and
    count, TFDV reading by those types) must then give exactly what TFDV gives inferring the types itself."""
    layout = csv_files.read_layout(_folder(tmp_path, name))
    full = statistics.column_stats(layout)
    monkeypatch.setattr(statistics, "SAMPLE_ABOVE_BYTES", 0)
    sampled = statistics.column_stats(layout)
    for key, column in full.items():
        assert sampled[key].rows_in_data == column.rows
        assert dataclasses.replace(sampled[key], rows_in_data=None) == column, key


def test_a_sample_keeps_the_whole_datas_types_and_count(tmp_path, monkeypatch):
    """A column whose only non-integer value is in a row the sample skips is still FLOAT, as CsvExampleGen will
    read it; the rows are the file's, the presence counts the sample's."""
    skipped = min(set(range(1000)) - statistics.sampled_records(1000, 100))
    lines = ["id,size,kind"] + [f"{i},{i % 7},{'abc'[i % 3]}" for i in range(1, 1001)]
    lines[1 + skipped] = f"{skipped + 1},2.5,b"
    folder = datasets.write_csv(tmp_path / "data", "\n".join(lines) + "\n")
    monkeypatch.setattr(statistics, "SAMPLE_ABOVE_BYTES", 0)
    monkeypatch.setattr(statistics, "SAMPLE_ROWS", 100)
    found = statistics.column_stats(csv_files.read_layout(str(folder)))
    assert found["size"].type == "FLOAT"
    assert found["id"].type == "INT"
    assert found["kind"].rows == 100 and found["kind"].data_rows == 1000
    assert found["kind"].distinct == 3


def test_a_sample_of_rows_in_a_repeating_order_sees_every_class(tmp_path, monkeypatch):
    """A label cycling through ten classes, sampled one row in ten: every k-th row would be one class only (and the
    preflight would refuse to train a classifier on it)."""
    lines = ["id,kind"] + [f"{i},{'abcdefghij'[i % 10]}" for i in range(1000)]
    folder = datasets.write_csv(tmp_path / "data", "\n".join(lines) + "\n")
    monkeypatch.setattr(statistics, "SAMPLE_ABOVE_BYTES", 0)
    monkeypatch.setattr(statistics, "SAMPLE_ROWS", 100)
    found = statistics.column_stats(csv_files.read_layout(str(folder)))
    assert found["kind"].distinct == 10
    assert statistics.sampled_records(1000, 100) == statistics.sampled_records(1000, 100)  # a re-run samples alike


def test_a_misshapen_row_is_named_by_the_sampled_path_too(tmp_path, monkeypatch):
    folder = datasets.write_csv(tmp_path / "data", "a,b\n1,2\n3\n")
    monkeypatch.setattr(statistics, "SAMPLE_ABOVE_BYTES", 0)
    with pytest.raises(csv_files.DataError, match="line 3: 1 fields where the header has 2"):
        statistics.column_stats(csv_files.read_layout(str(folder)))


@pytest.mark.parametrize("rows, buckets", [(344, (2, 1)), (150_000, (2, 1)), (150_001, (667, 333)),
                                           (1_000_000, (950, 50)), (10_000_000, (995, 5)),
                                           (10**9, (999, 1))])
def test_the_eval_split_is_capped_at_eval_max_rows(rows, buckets):
    assert evaluation.split_buckets(rows, 50_000) == buckets


def test_the_contract_carries_the_whole_datas_rows(tmp_path, monkeypatch):
    layout = csv_files.read_layout(_folder(tmp_path, "penguins"))
    monkeypatch.setattr(statistics, "SAMPLE_ABOVE_BYTES", 0)
    monkeypatch.setattr(statistics, "SAMPLE_ROWS", 100)
    contract = roles.decide(layout, statistics.column_stats(layout), roles.Choices(label="species"))
    assert contract.rows == 344


def test_the_summary_says_how_much_of_the_data_the_trainer_saw():
    report = RunReport(run_id="r", nodes=[], training=TrainingSeen(steps=800, global_batch_size=32, epochs=16),
                       split_rows={"train": 66_700, "eval": 33_300})
    line = training_line(report)
    assert line.startswith("25,600 examples (800 steps x batch 32), 0.38 passes over the 66,700 training rows")
    assert "raise train_steps to at least 2,085 for one pass" in line
    report.split_rows = {"train": 200}
    assert training_line(report) == "25,600 examples (800 steps x batch 32), 128 passes over the 200 training rows"


_PREFLIGHT_RSS = """
import json, sys
from pipeline.config import load_config
from tests.support import memory
from pipeline.dataset import analysis, statistics

statistics.SAMPLE_ABOVE_BYTES, statistics.SAMPLE_ROWS = 2**20, 2_000  # the sampled path, on a file of a test's size
small, big, runs = sys.argv[1:4]

def analyze(folder):
    return analysis.analyze(load_config({"data_root": folder, "tfx_root": runs, "label": "kind"}, environ={}))

analyze(small)  # imports, Beam's and TFDV's first pipeline: what any run pays before the data's size counts
found, grew = memory.growth_mb(lambda: analyze(big))
print(json.dumps({"grew_mb": grew, "rows": found.rows, "types": {k: s.type for k, s in found.stats.items()}}))
"""


def _wide_csv(folder, rows):
    """Rows of about 430 bytes (a unique 400-character note each), so a file of many megabytes stays quick to read."""
    folder.mkdir()
    with open(folder / "data.csv", "w", encoding="utf-8") as f:
        f.write("id,size,kind,note\n")
        for i in range(rows):
            f.write(f"{i},{i % 97 / 4},{'abc'[i % 3]},{str(i).rjust(8, '0') * 50}\n")
    return folder


def test_the_preflight_streams_a_csv_larger_than_the_memory_it_may_use(tmp_path):
    """The preflight (layout, statistics, contract) of a 62 MB CSV may grow its process by at most 24 MB past what
    a small CSV costs: a reader that held the file, or a split of it, would need more than twice that."""
    small, big = _wide_csv(tmp_path / "small", 3_000), _wide_csv(tmp_path / "big", 150_000)
    assert (big / "data.csv").stat().st_size > 60_000_000
    out = subprocess.run([sys.executable, "-c", _PREFLIGHT_RSS, str(small), str(big), str(tmp_path / "runs")],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=300)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["rows"] == 150_000
    assert found["types"] == {"id": "INT", "size": "FLOAT", "kind": "STRING", "note": "STRING"}
    assert found["grew_mb"] < 24, found


def test_transform_leaves_its_own_statistics_to_statisticsgen(tmp_path):
    """Transform's pre- and post-transform statistics were two more TFDV passes over every row (a third of its time
    at 1M rows), read by nothing: StatisticsGen's statistics are the ones SchemaGen and ExampleValidator use."""
    from pipeline.config import load_config
    from pipeline.runners import local as local_runner

    config = load_config({"data_root": str(PENGUINS_DIR), "tfx_root": str(tmp_path), "serving_validation": "false"},
                         environ={})
    transform = next(n for n in local_runner.bind_pipeline(config).components if n.id == "Transform")
    assert transform.exec_properties["disable_statistics"]
