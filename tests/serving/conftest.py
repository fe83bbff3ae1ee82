"""Fixtures for the serving tests: saved test models and the shared conformance server.

The helpers they use (test models, servers, clients, request builders) are in tests/support/serving.py.
"""
from __future__ import annotations

import os
import shutil

import pytest

from serving import half_plus_two
from tests.support.serving import export_spin, export_static_shape, start, stop, write_config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# data/ holds test models and TF Serving's own test files, which run through run_tfserving_test.py only.
collect_ignore = ["data"]


@pytest.fixture(scope="session")
def saved_half_plus_two(tmp_path_factory) -> dict[float, str]:
    """Saved half_plus_two variants by ``b`` (copied into base paths by the tests that need them)."""
    root = tmp_path_factory.mktemp("saved")
    return {b: half_plus_two.save(str(root / f"b{b:g}"), b=b) for b in (1.0, 2.0, 3.0, 4.0, 5.0)}


# ------------------------------------------------------------------------------------------ servers


@pytest.fixture(scope="session")
def conformance_server(tmp_path_factory, saved_half_plus_two):
    """The shared server of the conformance and fuzz tests (nothing may change its configuration).

    Models: ``default`` (half_plus_two, version 123, as in TF Serving's tests), ``two_versions``
    (123: half plus two, 124: half plus three; policy all; label ``stable`` -> 123), ``slow`` (Spin),
    ``static_shape`` (half plus two declaring its input [-1, 1]).
    REST timeout 2 s; REST bodies limited to 4 MiB; monitoring on.
    """
    root = tmp_path_factory.mktemp("conformance")
    shutil.copytree(saved_half_plus_two[2.0], root / "default" / "00000123")
    shutil.copytree(saved_half_plus_two[2.0], root / "two_versions" / "123")
    shutil.copytree(saved_half_plus_two[3.0], root / "two_versions" / "124")
    export_spin(str(root / "slow"))
    export_static_shape(str(root / "static_shape"))
    config = write_config(root / "models.config", [
        {"name": "default", "base_path": root / "default"},
        {"name": "two_versions", "base_path": root / "two_versions",
         "extra": 'model_version_policy { all {} } version_labels { key: "stable" value: 123 }'},
        {"name": "slow", "base_path": root / "slow"},
        {"name": "static_shape", "base_path": root / "static_shape"},
    ])
    monitoring = root / "monitoring.config"
    monitoring.write_text('prometheus_config: { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    server = start("default", str(root / "default"), f"--model_config_file={config}",
                   "--allow_version_labels_for_unavailable_models", "--rest_api_timeout_in_ms=2000",
                   f"--rest_api_max_body_bytes={4 << 20}", f"--monitoring_config_file={monitoring}")
    yield server
    stop(server)
