"""`tfxsp ui` in a real headless Chromium: every page of a live dashboard process over the store of the session's
real pipeline run (tests/conftest.py), with a real model server (`tfxsp serve`) answering for the served version.
Each page must load without a console error and show what a person looks for: the run id, the component names,
the accuracy, the served version. Screenshots go to the test's tmp folder."""
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from ml_metadata import metadata_store

from pipeline.metadata import runs as runs_api
from tests.support.browser import Browser, chromium_path
from tests.support.paths import TFXSP
from tests.support.processes import free_port, stop

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(autouse=True, scope="module")
def _chromium_is_installed():
    """Never skipped: a missing browser is a missing install step, which must fail."""
    assert chromium_path() is not None, "Debian's chromium is missing: .ci/run installs it (apt-get install chromium)"

COMPONENTS = ["CsvExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform", "Trainer",
              "Evaluator", "Pusher", "ServingValidator"]


def _wait_for(url, process, timeout_s, check=lambda body: True):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args[:2]} exited {process.returncode}: {process.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read().decode()
                if check(body):
                    return body
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


@pytest.fixture(scope="module")
def model_server(pipeline_runs):
    """`tfxsp serve` over the run's model base path, on the run's ports, until its version is AVAILABLE."""
    process = subprocess.Popen([TFXSP, "serve", *pipeline_runs.base_args], cwd=pipeline_runs.root,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{pipeline_runs.rest_port}/v1/models/{pipeline_runs.config.model_name}"
    try:
        body = _wait_for(url, process, 300, lambda text: '"AVAILABLE"' in text)
        yield max((s["version"] for s in json.loads(body)["model_version_status"] if s["state"] == "AVAILABLE"),
                  key=int)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def dashboard(pipeline_runs):
    port = free_port()
    process = subprocess.Popen([TFXSP, "ui", "--port", str(port), *pipeline_runs.base_args], cwd=pipeline_runs.root,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/api/runs", process, 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    opened = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield opened
    opened.close()


def test_every_page_loads_in_chromium_and_shows_what_a_person_looks_for(pipeline_runs, model_server, dashboard,
                                                                        browser, tmp_path):
    store = metadata_store.MetadataStore(pipeline_runs.config.metadata_connection_config())
    run_id = runs_api.pipeline_runs(store, pipeline_runs.config.pipeline_name)[0].name  # the blessed first run
    run = urllib.parse.quote(run_id, safe="")
    evaluation = json.load(urllib.request.urlopen(f"{dashboard}/api/runs/{run}/evaluation", timeout=30))
    accuracy = f"{evaluation['by_slice']['Overall']:.4g}"
    pages = {
        "runs": ("/runs", [run_id, "passed"]),
        "run": (f"/runs/{run}", [run_id, *COMPONENTS, "complete"]),
        "data": (f"/runs/{run}/data", [run_id, "body_mass_g", "Adelie"]),
        "evaluation": (f"/runs/{run}/evaluation", [run_id, accuracy, "species=Gentoo", "blessed", "threshold 0.9"]),
        "training": (f"/runs/{run}/training", [run_id, "loss", "validation"]),
        "models": ("/models", ["Served now", model_server, "Skew check"]),
        "monitor": ("/monitor", [f"Monitor: {pipeline_runs.config.model_name}", "tfxsp monitor"]),
        "lineage": ("/lineage/served", ["Trainer", "PushedModel", f"version {model_server}"]),
        "compare": (f"/compare?a={run}&b={run}", ["Metrics", "sparse_categorical_accuracy"]),
    }
    missing, errors = {}, {}
    for name, (path, wanted) in pages.items():
        text = browser.load(dashboard + path)
        shot = tmp_path / f"{name}.png"
        browser.screenshot(shot)
        assert shot.stat().st_size > 10_000, name  # a picture of a page, not a blank one
        missing[name] = [w for w in wanted if w not in text]
        errors[name] = browser.console_errors()
        if name in ("run", "evaluation", "training", "lineage"):  # the server-drawn SVG is drawn
            assert browser.evaluate("[...document.querySelectorAll('svg')].every(s => s.getBBox().width > 0)"), name
    assert all(not m for m in missing.values()), missing
    assert all(not e for e in errors.values()), errors
    # A box of the run's graph links to that node's details on the same page.
    browser.load(dashboard + f"/runs/{run}")
    href = browser.evaluate("document.querySelector('svg a').getAttribute('href')")
    assert href.startswith("#node-") and browser.evaluate(f"!!document.getElementById('{href[1:]}')")
    print(f"screenshots: {tmp_path}")
    assert sorted(os.listdir(tmp_path)) == sorted(f"{name}.png" for name in pages)
