"""The dataset contract from the data (pipeline/dataset/): the CSV layout as CsvExampleGen reads it, TFDV's
statistics, and the roles, task and checks decided from them, on real CSVs (palmerpenguins' raw data, the bundled
penguins) and on files written here for every bad input."""
from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.dataset import analysis, csv_files
from pipeline.dataset.csv_files import DataError
from pipeline.modules.features import internal_names
from tests.support import datasets
from tests.support.paths import PENGUINS_DIR

HEADER = "species,island,bill_length_mm,sex"
ROWS = ["Adelie,Torgersen,39.1,male", "Gentoo,Biscoe,46.5,female", "Adelie,Dream,38.8,female",
        "Gentoo,Biscoe,50.0,male", "Chinstrap,Dream,49.0,male"] * 4


def _analyze(tmp_path, data_dir, **settings):
    config = load_config({"data_root": str(data_dir), "tfx_root": str(tmp_path / "runs"),
                          **{k: str(v) for k, v in settings.items()}}, environ={})
    return analysis.analyze(config)


def _roles(found):
    return {c.name: c.role for c in found.contract.columns}


# ----------------------------------------------------------------------------------- layouts (no statistics)
@pytest.mark.parametrize("files, message", [
    ({}, "holds no *.csv file"),
    ({"a.csv": ""}, "is empty"),
    ({"a.csv": "\n\n"}, "is empty"),
    ({"a.csv": HEADER + "\n"}, "has a header but no data rows"),
    ({"a.csv": HEADER + "\n" + ROWS[0] + "\n", "b.csv": "species,island\nAdelie,Dream\n"},
     "do not share one header"),
    ({"a.csv": HEADER.replace(",", ";") + "\n" + ROWS[0].replace(",", ";") + "\n"},
     "separates its fields with semicolons, not commas"),
    ({"a.csv": HEADER.replace(",", "\t") + "\n" + ROWS[0].replace(",", "\t") + "\n"},
     "separates its fields with tabs, not commas"),
    ({"a.csv": 'species,"island, as seen",x\nAdelie,Dream,1\n'}, "a header field holds a comma inside quotes"),
    ({"a.csv": "species,x,x\nAdelie,1,2\n"}, "columns 2 and 3 are both named 'x'"),
    ({"a.csv": "species,,x\nAdelie,1,2\n"}, "header field(s) 2 are empty"),
])
def test_bad_layouts_are_refused_naming_the_file(tmp_path, files, message):
    folder = tmp_path / "data"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(DataError) as error:
        csv_files.read_layout(str(folder))
    assert message in str(error.value)
    assert str(folder) in str(error.value)


def test_a_missing_data_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        csv_files.read_layout(str(tmp_path / "nowhere"))


def test_not_utf8(tmp_path):
    folder = datasets.write_csv(tmp_path / "data", "espèce,x\nAdélie,1\n", encoding="latin-1")
    with pytest.raises(DataError, match="is not UTF-8 text"):
        csv_files.read_layout(str(folder))


def test_a_byte_order_mark_is_part_of_the_key_not_of_the_name(tmp_path):
    folder = datasets.write_csv(tmp_path / "data", "\ufeff" + HEADER + "\n" + "\n".join(ROWS) + "\n")
    layout = csv_files.read_layout(str(folder))
    assert layout.names == ["species", "island", "bill_length_mm", "sex"]
    assert layout.columns[0].key == "\ufeffspecies"  # as CsvExampleGen names the feature


def test_quoted_headers_are_unquoted_for_people(tmp_path):
    folder = datasets.write_csv(tmp_path / "data", '"Culmen Length (mm)",species\n1,A\n')
    layout = csv_files.read_layout(str(folder))
    assert [c.name for c in layout.columns] == ["Culmen Length (mm)", "species"]
    assert layout.columns[0].key == '"Culmen Length (mm)"'


def test_internal_names_are_safe_and_unique():
    assert internal_names(["Culmen Length (mm)", "culmen length mm", "Δ 15 N", "1st", "", "__weight__"]) == [
        "culmen_length_mm", "culmen_length_mm_2", "c_15_n", "c_1st", "column", "weight"]


# ------------------------------------------------------------------------------------ decisions from TFDV
@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    return _analyze(root, datasets.write_messy(root / "data"), label=datasets.MESSY_LABEL)


def test_the_messy_csv_gets_a_role_per_column(messy):
    assert messy.contract.task == "classification" and messy.contract.num_classes == 3
    assert _roles(messy) == datasets.MESSY_ROLES
    reasons = {c.name: c.reason for c in messy.contract.columns}
    assert reasons["Row ID"] == "a different value in every row (an id)"
    assert reasons["Field Notes"].startswith("free text")
    assert reasons["Date Seen"].startswith("dates or times (%Y-%m-%d)")
    assert reasons["Project"] == "the same value in every row"
    assert reasons["Tag Colour"] == "no value in any row"
    assert reasons["Clutch Size"] == "integers with 3 distinct values: categories"


def test_the_messy_csv_slices_by_its_small_categorical_columns(messy):
    assert messy.contract.slice_by == ["Island", "sex/Gender", "Clutch Size"]
    assert messy.contract.baseline == pytest.approx(152 / 344)


def test_the_raw_penguins_numbers_with_na_are_parsed_and_ids_and_dates_left_out(tmp_path):
    from data import public_datasets
    found = _analyze(tmp_path, public_datasets.write("penguins_raw", str(tmp_path / "raw")), label="Species")
    roles, columns = _roles(found), {c.name: c for c in found.contract.columns}
    for name in ("Culmen Length (mm)", "Body Mass (g)", "Delta 15 N (o/oo)"):
        assert roles[name] == "numeric" and columns[name].parse_numbers, columns[name]
        assert "missing values written as 'NA'" in columns[name].reason
    assert roles["Individual ID"] == "ignored" and "an id" in columns["Individual ID"].reason
    assert roles["Date Egg"] == "ignored" and roles["Region"] == roles["Stage"] == "ignored"
    assert roles["Island"] == roles["Sex"] == roles["Clutch Completion"] == "categorical"


def test_the_bundled_penguins(tmp_path):
    found = _analyze(tmp_path, PENGUINS_DIR)
    assert found.contract.task == "classification" and found.contract.label.name == "species"
    assert _roles(found) == {"island": "categorical", "bill_length_mm": "numeric", "bill_depth_mm": "numeric",
                             "flipper_length_mm": "numeric", "body_mass_g": "numeric", "sex": "categorical",
                             "year": "categorical"}


def test_a_person_s_choices_come_first(tmp_path):
    found = _analyze(tmp_path, PENGUINS_DIR, ignore_columns="year", column_roles='{"sex": "ignored"}',
                     slice_by="island", task="classification")
    assert _roles(found)["year"] == _roles(found)["sex"] == "ignored"
    assert found.contract.slice_by == ["island"]
    only = _analyze(tmp_path, PENGUINS_DIR, feature_columns="bill_length_mm,island")
    assert [c.name for c in only.contract.features] == ["island", "bill_length_mm"]


@pytest.mark.parametrize("label, task", [("body_mass_g", "regression"), ("year", "classification"),
                                         ("sex", "classification")])
def test_the_task_follows_the_label(tmp_path, label, task):
    assert _analyze(tmp_path, PENGUINS_DIR, label=label).contract.task == task


# ----------------------------------------------------------------------------- bad inputs that need the data
@pytest.mark.parametrize("text, settings, message", [
    (HEADER + "\n" + "\n".join(ROWS), {"label": "Species"},
     "the label column 'Species' (config 'label') is not in its header"),
    ("species,x\n" + "\n".join(f"Adelie,{i}" for i in range(20)), {},
     "every labelled row has the same class ('Adelie')"),
    ("species,x\n" + "\n".join(f",{i}" for i in range(20)), {}, "the label is missing in every row"),
    (HEADER + "\n" + "\n".join(ROWS), {"task": "regression"},
     "task=regression needs a numeric label, and this one holds text"),
    ("species,id\n" + "\n".join(f"{'AB'[i % 2]},{i}" for i in range(30)), {}, "no usable feature is left"),
    (HEADER + "\n" + "\n".join(ROWS[:5]), {}, "the pipeline needs at least 10"),
    (HEADER + "\n" + "\n".join(ROWS) + "\nAdelie,Dream,40.0,male,extra\n", {},
     "line 22: 5 fields where the header has 4"),
])
def test_bad_data_is_refused_naming_the_file_and_column(tmp_path, text, settings, message):
    folder = datasets.write_csv(tmp_path / "data", text + "\n")
    with pytest.raises(DataError) as error:
        _analyze(tmp_path, folder, **settings)
    assert message in str(error.value)
    assert str(folder / "data.csv") in str(error.value)


def test_close_matches_of_a_mistyped_label(tmp_path):
    with pytest.raises(DataError, match="Did you mean 'species'"):
        _analyze(tmp_path, PENGUINS_DIR, label="Specie")


def test_a_column_mixing_numbers_and_text_says_how_it_is_read(tmp_path):
    rows = [f"{'AB'[i % 2]},{i * 1.5}" for i in range(60)] + ["A,n/a", "B,unknown"]
    found = _analyze(tmp_path, datasets.write_csv(tmp_path / "data", "species,weight\n" + "\n".join(rows) + "\n"))
    [weight] = found.contract.columns
    assert weight.role == "numeric" and weight.parse_numbers
    assert "missing values written as 'n/a'" in weight.reason
    assert "1 value(s) that are not numbers ('unknown') are read as missing" in weight.reason
    mostly_text = [f"{'AB'[i % 2]},{'xyz'[i % 3] if i % 2 else i}" for i in range(60)]
    found = _analyze(tmp_path, datasets.write_csv(tmp_path / "data2", "species,code\n" + "\n".join(mostly_text)))
    assert "are numbers, the rest text: treated as categories" in found.contract.columns[0].reason


def test_statistics_are_computed_once_per_version_of_the_files(tmp_path):
    folder = datasets.write_csv(tmp_path / "data", HEADER + "\n" + "\n".join(ROWS) + "\n")
    _analyze(tmp_path, folder)
    cached = list((tmp_path / "runs" / "pipelines" / "penguin_serving" / "dataset").glob("statistics-*.json"))
    assert len(cached) == 1
    _analyze(tmp_path, folder)
    assert list(cached[0].parent.glob("statistics-*.json")) == cached
    (folder / "data.csv").write_text(HEADER + "\n" + "\n".join(ROWS + ROWS) + "\n")
    assert _analyze(tmp_path, folder).rows == 40
    assert len(list(cached[0].parent.glob("statistics-*.json"))) == 2


def test_the_messy_csv_s_byte_order_mark_stays_in_the_label_s_key_only(messy):
    assert messy.contract.label.name == datasets.MESSY_LABEL
    assert messy.contract.label.key == "\ufeff" + datasets.MESSY_LABEL


def test_tfxsp_run_refuses_bad_data_with_exit_2_and_runs_nothing(tmp_path):
    from tests.support.processes import run_tfxsp
    result = run_tfxsp(["run", "--set", f"data_root={PENGUINS_DIR}", "--set", "label=Specie", "--set",
                        "tfx_root=runs"], cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Input error:" in result.stderr and "Did you mean 'species'" in result.stderr
    assert "Nothing was run or pushed." in result.stderr
    assert not (tmp_path / "runs" / "pipelines" / "penguin_serving" / "metadata.db").exists()
    assert not (tmp_path / "runs" / "serving_model" / "penguin").exists() or not list(
        (tmp_path / "runs" / "serving_model" / "penguin").iterdir())
