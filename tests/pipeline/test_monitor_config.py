"""The settings of tfxsp monitor: thresholds, and per-feature overrides from --set (JSON) and tfxsp.toml (a table)."""
import pytest

from pipeline.config import ConfigError, load_config


def test_defaults_and_overrides():
    config = load_config({}, environ={})
    assert (config.monitor_numeric_threshold, config.monitor_categorical_threshold) == (0.3, 0.3)
    assert dict(config.monitor_feature_thresholds) == {}
    config = load_config({"monitor_feature_thresholds": '{"body_mass_g": 0.5, "island": 1}'}, environ={})
    assert dict(config.monitor_feature_thresholds) == {"body_mass_g": 0.5, "island": 1.0}


def test_a_toml_table_of_thresholds(tmp_path):
    path = tmp_path / "tfxsp.toml"
    path.write_text("monitor_numeric_threshold = 0.2\n[monitor_feature_thresholds]\nbody_mass_g = 0.4\n")
    config = load_config({}, environ={}, config_file=str(path))
    assert config.monitor_numeric_threshold == 0.2
    assert dict(config.monitor_feature_thresholds) == {"body_mass_g": 0.4}


@pytest.mark.parametrize("overrides, message", [
    ({"monitor_feature_thresholds": '{"body_mass_g": "high"}'}, "a JSON object of column -> number"),
    ({"monitor_feature_thresholds": '{"body_mass_g": 2}'}, "'body_mass_g': must be between 0 and 1"),
    ({"monitor_numeric_threshold": "1.5"}, "monitor_numeric_threshold"),
])
def test_bad_thresholds_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides, environ={})
