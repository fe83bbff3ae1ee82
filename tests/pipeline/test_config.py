import pytest
from ml_metadata.proto import metadata_store_pb2

from pipeline.config import ConfigError, PipelineConfig, load_config, parse_set_options


def test_defaults_are_valid_and_derive_locations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config({}, environ={})
    assert config == PipelineConfig()
    assert config.pipeline_root == str(tmp_path / "tfx_runs" / "pipelines" / "penguin_serving")
    assert config.metadata_path == config.pipeline_root + "/metadata.db"
    assert config.serving_model_dir == str(tmp_path / "tfx_runs" / "serving_model" / "penguin")
    assert config.metadata_connection_config().sqlite.filename_uri == config.metadata_path


def test_precedence_defaults_then_environment_then_set():
    env = {"TFXSP_EPOCHS": "4", "TFXSP_MODEL_NAME": "from_env", "TFXSP_LEARNING_RATE": "0.5"}
    config = load_config({"epochs": "7"}, environ=env)
    assert config.epochs == 7
    assert config.model_name == "from_env"
    assert config.learning_rate == 0.5


@pytest.mark.parametrize("overrides, message", [
    ({"nope": "1"}, "unknown config key 'nope'"),
    ({"epochs": "many"}, "'epochs' = 'many': expected an int"),
    ({"epochs": "0"}, "'epochs' = 0: must be >= 1"),
    ({"min_accuracy": "1.5"}, "'min_accuracy' = 1.5: must be between 0 and 1"),
    ({"min_accuracy": "most"}, "'min_accuracy' = 'most': expected a float or nothing (unset)"),
    ({"task": "clustering"}, "'task' = 'clustering': must be one of auto, classification, regression"),
    ({"label": " "}, "'label' = ' ': must name the label column"),
    ({"column_roles": '{"x": "feature"}'}, "'x': a role is one of numeric, categorical, ignored"),
    ({"column_roles": "[1]"}, "expected a JSON object of column -> role"),
    ({"slice_by": "[1, 2]"}, "expected a list of column names"),
    ({"strategy": "magic"}, "'strategy' = 'magic': must be one of"),
    ({"rest_port": "8500"}, "'rest_port' = 8500: must differ from grpc_port"),
    ({"grpc_port": "70000"}, "must be a TCP port"),
    ({"model_name": "a/b"}, "'model_name'"),
    ({"metadata_url": "postgres://x"}, "use sqlite:///"),
    ({"metadata_url": "mysql://user@/"}, "needs a host and a database"),
    ({"epochs": "900", "train_steps": "100"}, "'epochs' = 900: must not exceed train_steps"),
])
def test_bad_values_are_rejected_with_the_key_named(overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(overrides, environ={})
    assert message in str(err.value)


def test_bad_environment_value_is_rejected():
    with pytest.raises(ConfigError, match="'train_steps' = 'ten'"):
        load_config({}, environ={"TFXSP_TRAIN_STEPS": "ten"})


def test_mysql_url_becomes_an_mlmd_mysql_config():
    config = load_config({"metadata_url": "mysql://ml%40user:p%3Ass@db.internal:3307/mlmd"},
                         environ={})
    mysql = config.metadata_connection_config().mysql
    assert (mysql.host, mysql.port, mysql.database) == ("db.internal", 3307, "mlmd")
    assert (mysql.user, mysql.password) == ("ml@user", "p:ss")


def test_sqlite_url_is_used_as_given():
    config = load_config({"metadata_url": "sqlite:///tmp/elsewhere.db"}, environ={})
    connection = config.metadata_connection_config()
    assert isinstance(connection, metadata_store_pb2.ConnectionConfig)
    assert connection.sqlite.filename_uri == "/tmp/elsewhere.db"


def test_set_options_parse_and_reject_items_without_equals():
    assert parse_set_options(["epochs=5", " strategy = default "]) == {
        "epochs": "5", "strategy": "default"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_set_options(["epochs"])


def test_trainer_hparams_carry_the_training_settings():
    hparams = load_config({"strategy": "default", "epochs": "3"}, environ={}).trainer_hparams()
    assert hparams["strategy"] == "default" and hparams["epochs"] == 3
    assert {"batch_size", "learning_rate", "random_seed", "histogram_freq"} <= set(hparams)


def test_export_tflite_reaches_the_trainer_and_the_probe_and_is_validated():
    assert load_config({}, environ={}).export_tflite is False
    config = load_config({"export_tflite": "true"}, environ={})
    assert config.trainer_hparams()["export_tflite"] is True
    assert config.serving_validation_args()["prefer_tflite_model"] is True
    with pytest.raises(ConfigError, match="export_tflite"):
        load_config({"export_tflite": "sometimes"}, environ={})
