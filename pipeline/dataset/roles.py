"""Deciding the dataset contract from the data: the task, and each column's role with the reason for it.

    decide(layout, stats, choices) -> DatasetContract

The rules, in order, for every column but the label (a person's choices in tfxsp.toml or --set come first):
  ignored      listed in ignore_columns, or left out of feature_columns; no value in any row; one value in every
               row; dates or times (TFDV's time domain: not turned into features, say which you want and add them
               to the CSV); free text (TFDV's natural-language domain, or long strings, with many distinct values);
               a different value in every row (an id); an integer counting up by one per row (a row number)
  numeric      numbers (INT with more than 20 distinct values, FLOAT), and text columns whose values are numbers
               but for missing markers such as NA (Transform parses them)
  categorical  strings, booleans, integers with at most 20 distinct values (a vocabulary of the most frequent
               values plus an out-of-vocabulary bucket, and an embedding)
The task (`auto`): a string or boolean label, or an integer one with at most 20 distinct values, is classification;
any other label is regression.
"""
from __future__ import annotations

import dataclasses
import difflib

from pipeline.dataset.csv_files import CsvLayout, DataError
from pipeline.dataset.statistics import MISSING_MARKERS, ColumnStats
from pipeline.modules import features
from pipeline.modules.features import CATEGORICAL, CLASSIFICATION, IGNORED, NUMERIC, REGRESSION, Column

MIN_ROWS = 10  # fewer rows cannot give both a train and an eval split worth the name
FEW_VALUES = 20  # an integer column with at most this many distinct values is a category
NUMBERS_SHARE = 0.95  # a string column whose values are numbers but for this share at most is numeric
FREE_TEXT_DISTINCT = 50  # natural-language text with more distinct values than this is free text
LONG_STRING = 30  # average length above which a string column of many distinct values is free text
MAX_CATEGORIES = 1000  # the vocabulary of a categorical column keeps its most frequent values
SLICE_VALUES = (2, 10)  # default slices: categorical columns with this many values
DEFAULT_SLICES = 3


@dataclasses.dataclass(frozen=True)
class Choices:
    """What a person decided; everything else follows from the data."""
    label: str
    task: str = "auto"  # auto | classification | regression
    ignore_columns: tuple[str, ...] = ()
    feature_columns: tuple[str, ...] = ()  # empty: every usable column
    slice_by: tuple[str, ...] | None = None  # None: the default slices
    column_roles: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> numeric|categorical|ignored


def decide(layout: CsvLayout, stats: dict[str, ColumnStats], choices: Choices) -> features.DatasetContract:
    check_names(layout, choices)
    internal = dict(zip(layout.names, features.internal_names(layout.names)))
    label_csv = layout.column(choices.label)
    label_stats = stats[label_csv.key]
    if label_stats.rows < MIN_ROWS:
        raise DataError(f"{layout.files[0]}: {label_stats.rows} data row(s) in {len(layout.files)} file(s); the "
                        f"pipeline needs at least {MIN_ROWS} to split them into train and eval sets.")
    task = _task(label_csv.name, label_stats, choices.task, layout)
    label = Column(name=label_csv.name, key=label_csv.key, internal=internal[label_csv.name],
                   dtype=label_stats.type.lower(), role="label", reason=_label_reason(label_stats, task),
                   parse_numbers=task == REGRESSION and label_stats.type == "STRING")
    columns = [_column(c.name, c.key, internal[c.name], stats[c.key], choices)
               for c in layout.columns if c.name != label.name]
    if not any(c.role != IGNORED for c in columns):
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in columns) or "the label is the only column"
        raise DataError(f"{layout.files[0]}: no usable feature is left besides the label '{label.name}' ({reasons}). "
                        "Add feature columns to the CSV, or set their roles in tfxsp.toml.")
    contract = features.DatasetContract(
        label=label, task=task, columns=columns, slice_by=_slices(columns, stats, choices, layout),
        missing_markers=list(MISSING_MARKERS[1:]), baseline=_baseline(label_stats, task),
        num_classes=len(_values(label_stats)) if task == CLASSIFICATION else 0, rows=label_stats.data_rows)
    return contract


def check_names(layout: CsvLayout, choices: Choices) -> None:
    """The label and every column the choices name are in the header."""
    names = layout.names
    lowered = {n.lower(): n for n in names}
    if choices.label not in names:
        close = difflib.get_close_matches(choices.label.lower(), list(lowered), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close else ""
        raise DataError(f"{layout.files[0]}: the label column '{choices.label}' (config 'label') is not in its "
                        f"header ({', '.join(names)}).{hint}")
    for key, listed in (("ignore_columns", choices.ignore_columns), ("feature_columns", choices.feature_columns),
                        ("slice_by", choices.slice_by or ()), ("column_roles", tuple(choices.column_roles))):
        unknown = [n for n in listed if n not in names]
        if unknown:
            raise DataError(f"{layout.files[0]}: config '{key}' names {', '.join(map(repr, unknown))}, which the "
                            f"header does not have ({', '.join(names)}).")
    for name, role in choices.column_roles.items():
        if role not in (NUMERIC, CATEGORICAL, IGNORED):
            raise DataError(f"config 'column_roles': {name!r} = {role!r}; a role is numeric, categorical or ignored.")


def _task(name: str, label: ColumnStats, wanted: str, layout: CsvLayout) -> str:
    where = f"{layout.files[0]}, column '{name}' (the label)"
    if label.present == 0 or (label.type == "STRING" and not _values(label)):
        raise DataError(f"{where}: the label is missing in every row, so there is nothing to learn from.")
    numeric_text = label.type == "STRING" and (label.numeric_share or 0) >= NUMBERS_SHARE
    if wanted == "auto":
        few = label.distinct is not None and label.distinct <= FEW_VALUES
        task = CLASSIFICATION if label.type == "STRING" and not numeric_text or label.type == "INT" and few \
            else REGRESSION
    else:
        task = wanted
    if task == REGRESSION and label.type == "STRING" and not numeric_text:
        examples = ", ".join(repr(v) for v, _ in label.top[:3])
        raise DataError(f"{where}: task=regression needs a numeric label, and this one holds text ({examples}, ...). "
                        "Set --set task=classification, or choose another label.")
    if task == CLASSIFICATION and label.type == "FLOAT":
        raise DataError(f"{where}: task=classification needs classes, and this label holds fractional numbers "
                        f"(from {label.minimum:g} to {label.maximum:g}). Set --set task=regression, or write the "
                        "classes as integers or text.")
    if task == CLASSIFICATION and len(_values(label)) < 2:
        only = _values(label)[0] if _values(label) else "?"
        raise DataError(f"{where}: every labelled row has the same class ({only!r}); a classifier needs at least "
                        "two classes.")
    return task


def _values(column: ColumnStats) -> list[str]:
    """The distinct values TFDV ranked, without the missing markers."""
    return [v for v, count in column.top if count > 0 and v.strip() not in MISSING_MARKERS]


def _label_reason(label: ColumnStats, task: str) -> str:
    if task == CLASSIFICATION:
        return f"{len(_values(label))} classes"
    return f"numbers from {label.minimum:g} to {label.maximum:g}" if label.minimum is not None else "numbers"


def _column(name: str, key: str, internal: str, stats: ColumnStats, choices: Choices) -> Column:
    role, reason = _role(name, stats, choices)
    parse = role == NUMERIC and stats.type == "STRING"
    dtype = stats.type.lower() if stats.type != "NONE" else "string"
    return Column(name=name, key=key, internal=internal, dtype=dtype, role=role, reason=reason, parse_numbers=parse,
                  max_categories=MAX_CATEGORIES if role == CATEGORICAL and (stats.distinct or 0) > MAX_CATEGORIES
                  else 0)


def _role(name: str, s: ColumnStats, choices: Choices) -> tuple[str, str]:
    chosen = choices.column_roles.get(name)
    if name in choices.ignore_columns or chosen == IGNORED:
        return IGNORED, "ignored by configuration"
    if choices.feature_columns and name not in choices.feature_columns:
        return IGNORED, "not in feature_columns"
    if s.present == 0:
        return IGNORED, "no value in any row"
    values = _values(s) if s.type == "STRING" else None
    if s.distinct == 1 or (values is not None and len(values) == 1) or (
            s.type == "FLOAT" and s.minimum == s.maximum):
        return IGNORED, "the same value in every row"
    if chosen:
        return chosen, "set by configuration"
    if s.type == "STRING":
        return _string_role(name, s, explicit=name in choices.feature_columns)
    if s.type == "INT":
        if s.distinct is not None and s.distinct <= FEW_VALUES:
            return CATEGORICAL, f"integers with {s.distinct} distinct values: categories"
        if s.distinct == s.present and s.maximum - s.minimum + 1 == s.present and name not in choices.feature_columns:
            return IGNORED, "an integer counting up by one per row (a row number or id)"
        return NUMERIC, f"integers from {s.minimum:g} to {s.maximum:g}"
    return NUMERIC, f"numbers from {s.minimum:g} to {s.maximum:g}"


def _string_role(name: str, s: ColumnStats, explicit: bool) -> tuple[str, str]:
    share = s.numeric_share or 0.0
    if share >= NUMBERS_SHARE:
        written = f", missing values written as {', '.join(repr(m) for m in s.markers)}" if s.markers else ""
        stray = (f"; {len(s.text_values)} value(s) that are not numbers ({', '.join(map(repr, s.text_values[:3]))})"
                 " are read as missing" if s.text_values else "")
        return NUMERIC, f"numbers{written} (parsed from text){stray}"
    if not explicit:
        if s.time_format:
            return IGNORED, (f"dates or times ({s.time_format}): not turned into features; add the parts that "
                             "matter (year, month, weekday, ...) as columns of their own")
        many = (s.distinct or 0) > FREE_TEXT_DISTINCT
        if many and (s.natural_language or (s.average_length or 0) > LONG_STRING):
            return IGNORED, f"free text ({s.distinct} distinct values, {s.average_length:.0f} characters on average)"
        if s.distinct == s.present and s.present > FEW_VALUES:
            return IGNORED, "a different value in every row (an id)"
        if _distinct(s) > max(FREE_TEXT_DISTINCT, s.present / 2):
            return IGNORED, f"mostly a different value in every row ({_distinct(s)} distinct in {s.present}: an id?)"
    mixed = f"; {share:.0%} of its values are numbers, the rest text: treated as categories" if share >= 0.2 else ""
    capped = f", the {MAX_CATEGORIES} most frequent kept" if _distinct(s) > MAX_CATEGORIES else ""
    return CATEGORICAL, f"{_distinct(s)} distinct values{capped}{mixed}"


def _slices(columns: list[Column], stats: dict[str, ColumnStats], choices: Choices, layout: CsvLayout) -> list[str]:
    if choices.slice_by is not None:
        for name in choices.slice_by:
            column = next((c for c in columns if c.name == name), None)
            if column is None or column.role != CATEGORICAL:
                raise DataError(f"{layout.files[0]}: config 'slice_by' names '{name}', which is not a categorical "
                                "feature column; slices need a column of categories.")
        return list(choices.slice_by)
    low, high = SLICE_VALUES
    return [c.name for c in columns if c.role == CATEGORICAL and low <= _distinct(stats[c.key]) <= high
            ][:DEFAULT_SLICES]


def _distinct(column: ColumnStats) -> int:
    """Distinct values, not counting missing markers."""
    return len(_values(column)) if column.type == "STRING" else column.distinct or 0


def _baseline(label: ColumnStats, task: str) -> float:
    if task == CLASSIFICATION:
        counts = [count for value, count in label.top if value.strip() not in MISSING_MARKERS]
        return max(counts) / sum(counts) if counts else 0.0
    return label.std or 0.0
