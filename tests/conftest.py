"""Session fixtures: one real pipeline run that several test modules build on; the private MariaDB server, and the
two pipelines that ran at once against one store on it.

`make test` runs the tests in two pytest-xdist workers. A session fixture is made once per worker, so every module
that uses one of the shared pipeline runs goes to the same worker, the group "shared_runs"; modules that share
another expensive fixture name a group of their own with `xdist_group`; every other module is a group of its own
(pytest_xdist_make_scheduler below).
"""
import functools
import os
import re
import shutil
import subprocess
import time

import pytest

from pipeline.config import load_config
from pipeline.runners import run_lock
from tests.support import mariadb as mariadb_support
from tests.support.paths import PENGUINS_DIR, TFXSP
from tests.support.processes import free_port, run_tfxsp


class PipelineRuns:
    """`tfxsp run` in one temporary folder, with its own serving ports, any number of times (or several at once:
    start, then wait). `settings` are more --set items; `env` the environment's additions for the command
    (`metadata_url` there stays out of `config`, which the test reads the store with)."""

    def __init__(self, root, settings=None, env=None, cli_settings=None):
        self.root = root
        self.grpc_port, self.rest_port = free_port(), free_port()
        overrides = {"data_root": str(PENGUINS_DIR), "tfx_root": str(root / "runs"),
                     "grpc_port": str(self.grpc_port), "rest_port": str(self.rest_port),
                     "serving_validation": "true", **(settings or {})}
        given = {**overrides, **(cli_settings or {})}
        self.base_args = [arg for key, value in given.items()
                          for arg in ("--set", f"{key}={value}")]
        self.env = env or {}
        self.config = load_config(overrides, environ={})
        self.results = {}
        self._started = {}

    def run(self, name, *extra):
        self.results[name] = run_tfxsp(["run", *self.base_args, *extra], cwd=self.root, env=self.env)
        return self.results[name]

    def start(self, name, *extra) -> subprocess.Popen:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **self.env}
        self._started[name] = subprocess.Popen([TFXSP, "run", *self.base_args, *extra], cwd=self.root, env=env,
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self._started[name]

    def wait(self, name, timeout=1800) -> subprocess.CompletedProcess:
        process = self._started.pop(name)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        self.results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        return self.results[name]

    def tfxsp(self, *args, timeout=120) -> subprocess.CompletedProcess:
        """A metadata command (runs, lineage, models, ...) on this pipeline's store and settings."""
        return run_tfxsp([*args, *self.base_args], cwd=self.root, timeout=timeout, env=self.env)


@pytest.fixture(scope="session")
def pipeline_runs(tmp_path_factory) -> PipelineRuns:
    """A pipeline folder whose first run (blessed, pushed, probed) has happened."""
    runs = PipelineRuns(tmp_path_factory.mktemp("pipeline"))
    runs.run("first")
    return runs


@pytest.fixture(scope="session")
def mariadb():
    """A private MariaDB server for the session (tools/metadata_server.py), stopped and removed at its end."""
    server = mariadb_support.start_server()
    yield server
    server.stop()


class SharedStore:
    """Two pipelines of one user (same tfx_root, their own pipeline_name, model and data folder) that ran at the
    same time against one MariaDB store, and a second run of the first that started while it ran."""

    def __init__(self, root, server):
        self.server = server
        self.database = "shared"
        url = server.create_database(self.database)
        tfx_root = root / "runs"
        data_b = root / "data_b"
        shutil.copytree(PENGUINS_DIR, data_b)
        # The first pipeline as the sqlite tests run it (full training, serving validation), its password from
        # a file named by $TFXSP_METADATA_PASSWORD_FILE; the second small and quick, the password in its URL.
        self.first = PipelineRuns(root, {"tfx_root": str(tfx_root), "metadata_url": url},
                                  env={"TFXSP_METADATA_PASSWORD_FILE": server.password_file},
                                  cli_settings={"metadata_url": server.url(self.database, with_password=False)})
        self.second = PipelineRuns(root, {"tfx_root": str(tfx_root), "metadata_url": url,
                                          "pipeline_name": "penguin_small", "model_name": "penguin_small",
                                          "data_root": str(data_b), "serving_validation": "false",
                                          "train_steps": "60", "epochs": "2", "min_accuracy": "0.0"})
        self.refused = None

    def run_at_once(self) -> None:
        self.first.start("first")
        self.second.start("first")
        lock_root = self.first.config.pipeline_root
        deadline = time.monotonic() + 600
        running = self.first._started["first"]
        while not run_lock.lock_state(lock_root).held and running.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        # The same pipeline again while it runs: the run lock refuses it before anything runs.
        self.refused = run_tfxsp(["run", *self.first.base_args], cwd=self.first.root, env=self.first.env,
                                 timeout=600)
        self.first_still_running = self.first._started["first"].poll() is None
        self.first.wait("first")
        self.second.wait("first")


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory, mariadb) -> SharedStore:
    shared = SharedStore(tmp_path_factory.mktemp("shared_store"), mariadb)
    shared.run_at_once()
    return shared


@pytest.fixture(scope="session")
def mariadb_pipeline_runs(shared_store) -> PipelineRuns:
    """Like pipeline_runs, on the MariaDB store: the first pipeline of shared_store."""
    return shared_store.first


SHARED_RUNS = "shared_runs"
SHARED_SESSION_FIXTURES = ("pipeline_runs", "mariadb_pipeline_runs", "shared_store")
_GROUP_MARK = re.compile(r"""xdist_group\(["']([^"']+)["']\)""")


def pytest_xdist_make_scheduler(config, log):
    """Whole modules to each worker (their module-scoped pipeline runs made once), and the modules that use one of
    the session's shared pipeline runs, or name an `xdist_group`, together on one worker. pytest-xdist's own
    --dist loadgroup cannot do it with pytest 9 (it renames a private attribute pytest no longer reads), so the
    groups are read here from each module's text, which the scheduler (it sees node ids only) can open."""
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group_of(os.path.join(str(config.rootpath), nodeid.split("::")[0]))

    return ModulesAndGroups(config, log)


@functools.cache
def _group_of(module_path: str) -> str:
    try:
        with open(module_path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return module_path
    if any(name in text for name in SHARED_SESSION_FIXTURES):
        return SHARED_RUNS
    named = _GROUP_MARK.search(text)
    return named.group(1) if named else module_path
