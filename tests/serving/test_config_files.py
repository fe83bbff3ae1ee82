"""Text-format configuration files (spec §5.6, §5.2, §6, batching parameters)."""
import pytest

from serving import config
from serving.errors import Code, ServingError

# servables/tensorflow/testdata/good_model_config.txt style: ':' before '{', ',' and ';' separators.
GOOD = """
model_config_list: {
  config: {
    name: "half_plus_two",
    base_path: "/models/half_plus_two",
    model_platform: "tensorflow"
  },
  config: {
    name: 'half_plus_three';  # single quotes and comments
    base_path: "/models/half_plus_three";
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 2 versions: 1 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
}
"""


def test_good_config_in_every_standard_syntax():
    entries = config.model_entries(config.parse_model_server_config(GOOD))
    assert [e.name for e in entries] == ["half_plus_two", "half_plus_three"]
    assert entries[0].policy == config.VersionPolicy("latest", num_versions=1)
    assert entries[1].policy == config.VersionPolicy("specific", versions=(1, 2))
    assert entries[1].labels == {"stable": 1, "canary": 2}


def test_bad_config_reports_the_text_format_error():
    with pytest.raises(config.ConfigFileError) as info:
        config.parse_model_server_config('model_config_list { config { name: "a" bogus: 1 } }')
    assert str(info.value).startswith("Error parsing text-format tensorflow.serving.ModelServerConfig: 1:")
    assert "bogus" in str(info.value)


def _entries(text):
    return config.model_entries(config.parse_model_server_config(text))


@pytest.mark.parametrize("text, message", [
    ('model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } '
     'config { name: "a" base_path: "/b" model_platform: "tensorflow" } }',
     "Illegal to list model a multiple times in config list"),
    ('model_config_list { config { name: "a" base_path: "rel/a" model_platform: "tensorflow" } }',
     "Expected model a to have an absolute path or URI; got base_path()=rel/a"),
    ('model_config_list { config { name: "a" base_path: "/a" } }',
     "Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform, "
     "model name is a"),
    ('model_config_list { config { name: "a" base_path: "/a" model_platform: "tflite" } }',
     "Model a requests unsupported platform tflite"),
    ('model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" model_type: TENSORFLOW } }',
     "Illegal setting both ModelServerConfig::model_type (deprecated) and ModelServerConfig::model_platform"),
    ('custom_model_config { }', "Only ModelConfigList is currently supported"),
])
def test_invalid_configs(text, message):
    with pytest.raises(ServingError) as info:
        _entries(text)
    assert info.value.code == Code.INVALID_ARGUMENT
    assert message in info.value.message


def test_platform_change_is_refused():
    old = config.parse_model_server_config(
        'model_config_list { config { name: "a" base_path: "/a" model_type: TENSORFLOW } }')
    new = config.parse_model_server_config(
        'model_config_list { config { name: "a" base_path: "/a" model_platform: "pt" } }')
    with pytest.raises(ServingError) as info:
        config.model_entries(new, previous=old)
    assert ("Illegal to change a model's platform. For model a platform was tensorflow and new platform "
            "requested is pt") in info.value.message


@pytest.mark.parametrize("policy, found, chosen", [
    (config.VersionPolicy("latest"), [1, 3, 2], {3}),
    (config.VersionPolicy("latest", num_versions=2), [1, 3, 2], {2, 3}),
    (config.VersionPolicy("all"), [1, 3], {1, 3}),
    (config.VersionPolicy("specific", versions=(1, 4)), [1, 3], {1}),
])
def test_version_policies(policy, found, chosen):
    assert policy.select(found) == chosen


def test_latest_defaults_to_and_is_at_least_one():
    entry, = _entries('model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" '
                      'model_version_policy { latest { num_versions: 0 } } } }')
    assert entry.policy.num_versions == 1


def test_batching_parameters_like_the_reference_testdata():
    # servables/tensorflow/testdata/batching_config.txt
    options = config.parse_batching_parameters(
        "max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n")
    assert (options.max_batch_size, options.batch_timeout_micros, options.max_enqueued_batches,
            options.num_batch_threads) == (128, 0, 1000000, 8)
    assert options.pad_variable_length_inputs is False


def test_batching_defaults_are_the_shared_batch_scheduler_ones():
    options = config.parse_batching_parameters("")
    assert (options.max_batch_size, options.batch_timeout_micros, options.max_enqueued_batches) == (1000, 0, 10)


@pytest.mark.parametrize("text, message", [
    ("max_batch_size { value: 4 } allowed_batch_sizes: 2 allowed_batch_sizes: 3",
     "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 3; expected 4"),
    ("num_batch_threads { value: 0 }", "num_batch_threads must be >= 1"),
    ("max_batch_size: 4", "Error parsing text-format tensorflow.serving.BatchingParameters"),
])
def test_bad_batching_parameters(text, message):
    with pytest.raises(config.ConfigFileError) as info:
        config.parse_batching_parameters(text)
    assert message in str(info.value)


def test_monitoring_config():
    # servables/tensorflow/testdata/monitoring_config.txt
    options = config.parse_monitoring_config('prometheus_config: {\n  enable: true,\n  path: "/m/metrics"\n}\n')
    assert options == config.MonitoringOptions(True, "/m/metrics")
    assert config.parse_monitoring_config("prometheus_config { enable: true }").prometheus_path == \
        "/monitoring/prometheus/metrics"
