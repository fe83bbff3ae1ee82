"""Session fixtures: one real pipeline run that several test modules build on.

`make test` runs the tests in two pytest-xdist workers (`--dist loadgroup`). A session fixture is made once per
worker, so every test that uses the shared pipeline run goes to the same worker: its group is named after the
fixture (modules that share another expensive fixture name their group themselves, with `xdist_group`).
"""
import pytest

from pipeline.config import load_config
from tests.support.paths import PENGUINS_DIR
from tests.support.processes import free_port, run_tfxsp


class PipelineRuns:
    """`tfxsp run` in one temporary folder, with its own serving ports, any number of times."""

    def __init__(self, root):
        self.root = root
        self.grpc_port, self.rest_port = free_port(), free_port()
        overrides = {"data_root": str(PENGUINS_DIR), "tfx_root": str(root / "runs"),
                     "grpc_port": str(self.grpc_port), "rest_port": str(self.rest_port),
                     "serving_validation": "true"}
        self.base_args = [arg for key, value in overrides.items()
                          for arg in ("--set", f"{key}={value}")]
        self.config = load_config(overrides, environ={})
        self.results = {}

    def run(self, name, *extra):
        self.results[name] = run_tfxsp(["run", *self.base_args, *extra], cwd=self.root)
        return self.results[name]


@pytest.fixture(scope="session")
def pipeline_runs(tmp_path_factory) -> PipelineRuns:
    """A pipeline folder whose first run (blessed, pushed, probed) has happened."""
    runs = PipelineRuns(tmp_path_factory.mktemp("pipeline"))
    runs.run("first")
    return runs


SHARED_SESSION_FIXTURES = ("pipeline_runs",)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups off the items
def pytest_collection_modifyitems(items) -> None:
    for item in items:
        for name in SHARED_SESSION_FIXTURES:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(name))
