"""Bad input is caught before anything runs, with a message that says what and where."""
import shutil
import socket

import pytest

from pipeline.cli.preflight import PreflightError, check_inputs
from pipeline.config import load_config
from tests.support.paths import PENGUINS_DIR
from tests.support.processes import free_port, run_tfxsp

HEADER = "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year"
GOOD_ROW = "Adelie,Torgersen,39.1,18.7,181,3750,male,2007"


def _config(tmp_path, data_dir, **extra):
    overrides = {"data_root": str(data_dir), "tfx_root": str(tmp_path / "runs"), **extra}
    return load_config({k: str(v) for k, v in overrides.items()}, environ={})


def _write(tmp_path, text, name="data.csv"):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / name).write_text(text)
    return data


def test_the_shipped_dataset_passes(tmp_path):
    files = check_inputs(_config(tmp_path, PENGUINS_DIR))
    assert [f.rsplit("/", 1)[-1] for f in files] == ["penguins.csv"]


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("\n", "is empty"),
    ("a,b,c\n1,2,3\n", "but the pipeline expects the columns"),
    (HEADER.replace("island", "isle") + "\n" + GOOD_ROW + "\n", "missing: island; unexpected: isle"),
    (HEADER + "\n" + GOOD_ROW.replace("39.1", "thirty-nine") + "\n",
     "line 2: column 'bill_length_mm' holds 'thirty-nine', which is not a number"),
    (HEADER + "\n" + GOOD_ROW + ",extra\n", "line 2: 9 fields where the header has 8"),
    (HEADER + "\n" + GOOD_ROW.replace("Adelie", "") + "\n", "the label column 'species' is empty"),
    (HEADER + "\n" + GOOD_ROW + "\n", "has 1 data row(s); the pipeline needs at least 10"),
])
def test_bad_csv_is_rejected(tmp_path, text, message):
    data = _write(tmp_path, text)
    with pytest.raises(PreflightError) as err:
        check_inputs(_config(tmp_path, data))
    assert message in str(err.value)
    assert str(data / "data.csv") in str(err.value)


def test_missing_data_directory(tmp_path):
    with pytest.raises(PreflightError, match="does not exist"):
        check_inputs(_config(tmp_path, tmp_path / "nowhere"))


def test_directory_without_csv_files(tmp_path):
    data = _write(tmp_path, "not a csv", name="notes.txt")
    with pytest.raises(PreflightError, match=r"holds no \*\.csv file"):
        check_inputs(_config(tmp_path, data))


def test_unwritable_serving_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a file where a folder must go: unwritable even for root
    config = _config(tmp_path, PENGUINS_DIR, serving_model_base=blocker / "serving")
    with pytest.raises(PreflightError, match="serving model base path .* is not writable"):
        check_inputs(config)


def test_cli_reports_bad_input_in_one_paragraph_and_exits_2_without_running(tmp_path):
    data = _write(tmp_path, HEADER + "\n" + "\n".join([GOOD_ROW] * 5 + [GOOD_ROW.replace("181", "n/a")] * 6))
    result = run_tfxsp(["run", "--set", f"data_root={data}", "--set", "tfx_root=runs"],
                       cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Input error:" in result.stderr
    assert "column 'flipper_length_mm' holds 'n/a'" in result.stderr
    assert "Nothing was run or pushed." in result.stderr
    assert not (tmp_path / "runs" / "pipelines" / "penguin_serving" / "metadata.db").exists()
    assert not list((tmp_path / "runs" / "serving_model" / "penguin").glob("[0-9]*"))


def test_cli_rejects_bad_config_with_exit_2(tmp_path):
    result = run_tfxsp(["run", "--set", "epochs=lots"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "Configuration error: config 'epochs' = 'lots': expected a int" in result.stderr
    shutil.rmtree(tmp_path / "tfx_runs", ignore_errors=True)


def test_cli_refuses_to_run_when_the_serving_ports_are_taken(tmp_path):
    """Found only after training, a taken port would fail the probe and roll back a good model."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_port = taken.getsockname()[1]
        result = run_tfxsp(["run", "--set", f"data_root={PENGUINS_DIR}", "--set", "tfx_root=runs",
                            "--set", f"grpc_port={grpc_port}", "--set", f"rest_port={free_port()}"],
                           cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Serving ports in use:" in result.stderr and str(grpc_port) in result.stderr
    assert "Nothing was run or pushed." in result.stderr
    assert not (tmp_path / "runs" / "pipelines" / "penguin_serving" / "metadata.db").exists()
