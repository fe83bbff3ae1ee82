"""`tfxsp predict` with the session's real pipeline run (tests/conftest.py): the bundled penguins, with rows that
cannot be scored put among them, scored in process, then through a real `tfxsp serve` over REST and gRPC, by
version number and by label; the three agree. Every bad input exits with its code and writes nothing under the
output's name."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import time
import urllib.request

import pytest

from tests.support.paths import PENGUINS_DIR, TFXSP
from tests.support.processes import free_port, stop

pytestmark = pytest.mark.timeout(1200)
BAD_ROWS = {  # line in the written file -> (the row's text, what the rejects file says)
    3: ("Adelie,Torgersen,forty,18.7,181,3750,male,2007", "column 'bill_length_mm': 'forty' is not a number"),
    6: ("Adelie,Torgersen,39.1,18.7", "4 fields where the header has 8"),
    10: (b"Adelie,Torg\xffersen,39.1,18.7,181,3750,male,2007", "not UTF-8 text"),
}


@pytest.fixture(scope="module")
def scored_file(pipeline_runs, tmp_path_factory):
    """penguins.csv with BAD_ROWS put in at their lines; (path, how many good rows)."""
    assert pipeline_runs.results["first"].returncode == 0
    lines = (PENGUINS_DIR / "penguins.csv").read_bytes().splitlines()
    good = len(lines) - 1
    for number in sorted(BAD_ROWS):
        text = BAD_ROWS[number][0]
        lines.insert(number - 1, text if isinstance(text, bytes) else text.encode())
    path = tmp_path_factory.mktemp("predict") / "penguins_and_bad_rows.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, good


def _predict(pipeline_runs, *args, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run([TFXSP, "predict", *pipeline_runs.base_args, *args], cwd=pipeline_runs.root, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _read(path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


@pytest.fixture(scope="module")
def local(pipeline_runs, scored_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "scored.csv"
    result = _predict(pipeline_runs, str(scored_file[0]), "-o", str(out), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return json.loads(result.stdout), out


def test_local_scoring_keeps_every_input_column_and_adds_the_predictions(local, scored_file):
    summary, out = local
    header, rows = _read(out)
    input_header = (PENGUINS_DIR / "penguins.csv").read_text().splitlines()[0].split(",")
    classes = ["Adelie", "Gentoo", "Chinstrap"]
    assert header[:len(input_header)] == input_header
    assert header[len(input_header)] == "predicted_species"
    assert sorted(header[len(input_header) + 1:]) == sorted(f"probability_{c}" for c in classes)
    assert len(rows) == scored_file[1] == summary["rows"]
    original = list(csv.DictReader(open(PENGUINS_DIR / "penguins.csv", newline="")))
    assert [{k: r[k] for k in input_header} for r in rows] == original  # every cell as it was, in file order
    for row in rows:
        probabilities = {c: float(row[f"probability_{c}"]) for c in classes}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert row["predicted_species"] == max(probabilities, key=probabilities.get)
    accuracy = sum(r["predicted_species"] == r["species"] for r in rows) / len(rows)
    assert summary["metric"] == {"accuracy": pytest.approx(accuracy), "labelled": len(rows)}
    assert accuracy > 0.8, accuracy  # the bundled penguins are the training data: well above 0.44, the majority
    assert summary["version"] >= 1 and summary["via"] == "local"


def test_rows_that_cannot_be_scored_go_to_the_rejects_file_with_line_and_reason(local, scored_file):
    summary, out = local
    rejects_path = str(out)[:-len(".csv")] + ".rejects.csv"
    assert summary["rejects"] == len(BAD_ROWS) and summary["rejects_file"] == rejects_path
    header, rejects = _read(rejects_path)
    assert header[:2] == ["line", "reason"]
    assert [(int(r["line"]), r["reason"]) for r in rejects] == [(n, BAD_ROWS[n][1]) for n in sorted(BAD_ROWS)]
    assert rejects[0]["bill_length_mm"] == "forty"  # the row's own cells, to fix and score again


def test_the_table_summary_prints_the_metric(pipeline_runs, tmp_path):
    result = _predict(pipeline_runs, str(PENGUINS_DIR / "penguins.csv"), "-o", str(tmp_path / "out.csv"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Scored 344 rows with version" in result.stdout and "via local" in result.stdout
    assert "On the 344 rows with a label: accuracy 0." in result.stdout
    assert not (tmp_path / "out.rejects.csv").exists()


@pytest.fixture(scope="module")
def model_server(pipeline_runs):
    """`tfxsp serve` over the run's model base path on its ports, until a version is AVAILABLE; the model config
    file as it was before is put back afterwards (the label test adds a label to it)."""
    config_file = pipeline_runs.config.model_config_file
    before = open(config_file).read() if os.path.exists(config_file) else None
    process = subprocess.Popen([TFXSP, "serve", *pipeline_runs.base_args, "--file_system_poll_wait_seconds=0.2"],
                               cwd=pipeline_runs.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{pipeline_runs.rest_port}/v1/models/{pipeline_runs.config.model_name}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, process.stdout.read()[-3000:]
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if b'"AVAILABLE"' in response.read():
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the model server did not load a version in 300 s"
            time.sleep(0.3)
        yield process
    finally:
        stop(process)
        if before is None:
            if os.path.exists(config_file):
                os.unlink(config_file)
        else:
            with open(config_file, "w") as f:
                f.write(before)


def _columns(path, prefix="probability_") -> list[list[float]]:
    header, rows = _read(path)
    names = [h for h in header if h.startswith(prefix)]
    return [[float(r[n]) for n in names] for r in rows]


@pytest.mark.parametrize("via", ["rest", "grpc"])
def test_rest_and_grpc_score_as_the_model_does_in_process(pipeline_runs, model_server, local, scored_file, via,
                                                          tmp_path):
    summary, local_out = local
    out = tmp_path / f"{via}.csv"
    result = _predict(pipeline_runs, str(scored_file[0]), "-o", str(out), "--via", via,
                      "--version", str(summary["version"]), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    remote = json.loads(result.stdout)
    assert remote["rows"] == summary["rows"] and remote["rejects"] == summary["rejects"]
    assert remote["metric"] == summary["metric"]
    for got, expected in zip(_columns(out), _columns(local_out), strict=True):
        assert got == pytest.approx(expected, abs=1e-5)


def test_a_label_scores_with_the_version_under_it(pipeline_runs, model_server, local, tmp_path):
    version = local[0]["version"]
    labelled = subprocess.run([TFXSP, "models", "label", str(version), "stable", *pipeline_runs.base_args],
                              cwd=pipeline_runs.root, capture_output=True, text=True, timeout=300)
    assert labelled.returncode == 0, labelled.stdout + labelled.stderr[-3000:]
    for via in ("grpc", "local"):
        out = tmp_path / f"{via}.csv"
        result = _predict(pipeline_runs, str(PENGUINS_DIR / "penguins.csv"), "-o", str(out), "--via", via,
                          "--label", "stable", "--format", "json")
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert json.loads(result.stdout)["version"] == version and json.loads(result.stdout)["label"] == "stable"
        assert len(_columns(out)) == 344


@pytest.mark.parametrize("args, code, message", [
    (["--version", "999"], 2, "'999' is not a pushed version"),
    (["--label", "nosuch"], 2, "'nosuch' is not a label of penguin"),
    (["--version", "1", "--label", "stable"], 2, "give --version or --label, not both"),
])
def test_bad_versions_and_labels_exit_2_and_write_nothing(pipeline_runs, tmp_path, args, code, message):
    out = tmp_path / "out.csv"
    result = _predict(pipeline_runs, str(PENGUINS_DIR / "penguins.csv"), "-o", str(out), *args)
    assert result.returncode == code and message in " ".join(result.stderr.split()), result.stderr[-3000:]
    assert os.listdir(tmp_path) == []


def test_a_file_without_a_feature_column_exits_2(pipeline_runs, tmp_path):
    source = tmp_path / "no_island.csv"
    with open(PENGUINS_DIR / "penguins.csv", newline="") as f, open(source, "w", newline="") as g:
        writer = csv.writer(g)
        for row in csv.reader(f):
            writer.writerow(row[:1] + row[2:])  # island dropped
    result = _predict(pipeline_runs, str(source), "-o", str(tmp_path / "out.csv"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "lacks the column(s) 'island'" in " ".join(result.stderr.split())
    assert sorted(os.listdir(tmp_path)) == ["no_island.csv"]


@pytest.mark.parametrize("name, content, message", [("missing.csv", None, "Cannot read"),
                                                    ("empty.csv", "", "is empty: it has no header line")])
def test_an_unreadable_or_empty_input_exits_2(pipeline_runs, tmp_path, name, content, message):
    source = tmp_path / name
    if content is not None:
        source.write_text(content)
    result = _predict(pipeline_runs, str(source), "-o", str(tmp_path / "out.csv"))
    assert result.returncode == 2 and message in " ".join(result.stderr.split()), result.stderr[-3000:]
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out.csv.partial").exists()


def test_the_output_may_not_overwrite_the_input(pipeline_runs, tmp_path):
    source = tmp_path / "in.csv"
    source.write_bytes((PENGUINS_DIR / "penguins.csv").read_bytes())
    result = _predict(pipeline_runs, str(source), "-o", str(source))
    assert result.returncode == 2 and "would overwrite the input" in result.stderr
    assert source.read_bytes() == (PENGUINS_DIR / "penguins.csv").read_bytes()


@pytest.mark.parametrize("via", ["rest", "grpc"])
def test_no_server_answering_exits_5_and_leaves_no_output(pipeline_runs, tmp_path, via):
    out = tmp_path / "out.csv"
    result = _predict(pipeline_runs, str(PENGUINS_DIR / "penguins.csv"), "-o", str(out), "--via", via,
                      "--set", f"rest_port={free_port()}", "--set", f"grpc_port={free_port()}")
    assert result.returncode == 5, result.stdout + result.stderr[-3000:]
    assert "Model server unreachable" in result.stderr and "--via local" in " ".join(result.stderr.split())
    assert os.listdir(tmp_path) == []
