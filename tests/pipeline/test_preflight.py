"""Settings that cannot work are caught before anything runs, with a message that says what and where. (The data's
checks: test_dataset.py.)"""
import shutil
import socket

import pytest

from pipeline.cli.preflight import PreflightError, check_writable
from pipeline.config import load_config
from tests.support.paths import PENGUINS_DIR
from tests.support.processes import free_port, run_tfxsp


def _config(tmp_path, data_dir, **extra):
    overrides = {"data_root": str(data_dir), "tfx_root": str(tmp_path / "runs"), **extra}
    return load_config({k: str(v) for k, v in overrides.items()}, environ={})


def test_unwritable_serving_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a file where a folder must go: unwritable even for root
    config = _config(tmp_path, PENGUINS_DIR, serving_model_base=blocker / "serving")
    with pytest.raises(PreflightError, match="serving model base path .* is not writable"):
        check_writable(config)


def test_cli_rejects_bad_config_with_exit_2(tmp_path):
    result = run_tfxsp(["run", "--set", "epochs=lots"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "Configuration error: config 'epochs' = 'lots': expected an int" in result.stderr
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
