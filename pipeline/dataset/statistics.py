"""What each column of the CSV files holds, from TensorFlow Data Validation's statistics of them.

TFDV reads the files with the CSV decoder and type inference CsvExampleGen uses, so the types agree with what the
pipeline will see: INT, FLOAT or STRING per column. Its semantic-domain statistics say which string columns are
natural-language text or times. Two things TFDV computes only when asked: the number of distinct values of an
integer column (it counts them for categorical ones, so a second pass declares the integer columns categorical),
and the share of a string column's values that are numbers (read from its rank histogram: the 1,000 most frequent
values and their counts).

A large CSV (more than SAMPLE_ABOVE_BYTES) is read once in full, fast (csv_records.py: the exact row count and the
types CsvExampleGen will infer), and TFDV computes its statistics on a random sample of SAMPLE_ROWS rows with
those types. Presence, distinct values and ranges are then the sample's (so "a different value in every row" still
reads as such), and `data_rows` the whole data's: at 1 million rows this takes seconds instead of minutes and
memory stays flat.

The statistics of a folder are kept in a cache (a JSON summary per fingerprint of the files' names, sizes and
modification times), so that a second run on the same data does not compute them again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import tempfile
from collections.abc import Iterator
from typing import Any

from pipeline.dataset import csv_files
from pipeline.dataset.csv_files import CsvLayout

# Values that mean "missing" in CSV files written by R, pandas, spreadsheets and databases.
MISSING_MARKERS = ("", "NA", "N/A", "n/a", "na", "NaN", "nan", "NAN", "null", "NULL", "Null", "None", "none",
                   "#N/A", "?", "-", ".")
_CACHE_VERSION = 4
SAMPLE_ABOVE_BYTES = 16 * 2**20  # about 350,000 rows of the penguin layout
SAMPLE_ROWS = 100_000


@dataclasses.dataclass
class ColumnStats:
    key: str
    type: str  # INT | FLOAT | STRING | NONE (never a value)
    present: int  # rows with a value
    missing: int
    distinct: int | None = None  # exact for strings and categorical integers; None when unknown
    top: list[tuple[str, float]] = dataclasses.field(default_factory=list)  # most frequent values, with counts
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None
    average_length: float | None = None
    natural_language: bool = False  # TFDV's semantic domain: free text
    time_format: str | None = None  # TFDV's semantic domain: dates or times in this format
    # For a string column: of the values TFDV ranked (up to 1,000 distinct), the share (by count) that are numbers,
    # and which missing markers it holds.
    numeric_share: float | None = None
    markers: list[str] = dataclasses.field(default_factory=list)
    text_values: list[str] = dataclasses.field(default_factory=list)  # the ranked values that are neither
    # The whole data's row count when these statistics are of a sample (present + missing are the sample's rows)
    rows_in_data: int | None = None

    @property
    def rows(self) -> int:
        return self.present + self.missing

    @property
    def data_rows(self) -> int:
        """Rows in the whole data (the sample's count scaled to it is what `rows` would need)."""
        return self.rows_in_data if self.rows_in_data is not None else self.rows


def column_stats(layout: CsvLayout, cache_dir: str | None = None) -> dict[str, ColumnStats]:
    """Statistics of every column (by feature key), computed with TFDV or read from the cache."""
    path = os.path.join(cache_dir, f"statistics-{_fingerprint(layout)}.json") if cache_dir else None
    if path and os.path.exists(path):
        with open(path) as f:
            cached = json.load(f)
        if cached.get("version") == _CACHE_VERSION:
            return {key: ColumnStats(**value) for key, value in cached["columns"].items()}
    found = _compute(layout)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"version": _CACHE_VERSION, "files": layout.files,
                       "columns": {k: dataclasses.asdict(v) for k, v in found.items()}}, f)
        os.replace(path + ".tmp", path)
    return found


def _fingerprint(layout: CsvLayout) -> str:
    digest = hashlib.sha256(layout.header_line.encode())
    for path in layout.files:
        info = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:24]


def _statistics(layout: CsvLayout, types: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """TFDV's statistics of the CSV files, read as CsvExampleGen reads them (the header line of each file skipped,
    the columns named by their keys), twice in one Beam pipeline: with the types the CSV decoder infers (as
    CsvExampleGen's), and with every column read as text, whose statistics count the distinct values of every
    column (TFDV counts them for strings only)."""
    import apache_beam as beam
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx_bsl.public import tfxio

    keys = [c.key for c in layout.columns]
    as_text = schema_pb2.Schema()
    for key in keys:
        as_text.feature.add(name=key, type=schema_pb2.BYTES)
    typed_schema = _typed_schema(keys, types, schema_pb2) if types is not None else None
    branches = {"typed": (typed_schema, tfdv.StatsOptions(enable_semantic_domain_stats=True)),
                "text": (as_text, tfdv.StatsOptions(schema=as_text, infer_type_from_schema=True))}
    with tempfile.TemporaryDirectory(prefix="tfxsp-stats-") as workdir:
        with beam.Pipeline() as pipeline:
            for name, (schema, options) in branches.items():
                reads = [pipeline | f"Read {name} {i}" >> tfxio.CsvTFXIO(
                    path, column_names=keys, skip_header_lines=1, schema=schema,
                    telemetry_descriptors=["tfxsp"]).BeamSource() for i, path in enumerate(layout.files)]
                _ = (reads | f"Merge {name}" >> beam.Flatten() | f"Stats {name}" >> tfdv.GenerateStatistics(options)
                     | f"Write {name}" >> tfdv.WriteStatisticsToBinaryFile(os.path.join(workdir, f"{name}.pb")))
        return tuple(tfdv.load_stats_binary(os.path.join(workdir, f"{name}.pb")) for name in branches)


def _compute(layout: CsvLayout) -> dict[str, ColumnStats]:
    if sum(os.path.getsize(path) for path in layout.files) <= SAMPLE_ABOVE_BYTES:
        return _compute_on(layout)
    with tempfile.TemporaryDirectory(prefix="tfxsp-sample-") as workdir:
        sample, rows, types = _sample(layout, workdir)
        found = _compute_on(sample, types)
    for column in found.values():
        column.rows_in_data = rows
    return found


def _sample(layout: CsvLayout, workdir: str) -> tuple[CsvLayout, int, dict[str, Any]]:
    """A sample of SAMPLE_ROWS records of the files, written as one CSV in workdir; the records in all files; and
    each column's type over all of them (csv_records.TypeInference). Two passes: one counts and infers, the second
    keeps the records `sampled_records` chose."""
    from pipeline.dataset import csv_records

    keys = [c.key for c in layout.columns]
    inference, rows = csv_records.TypeInference(keys), 0
    with _naming_a_misshapen_row(layout):
        for path in layout.files:
            for _, cells in csv_records.records(path):
                inference.add(cells)
                rows += bool(cells)
    chosen = sampled_records(rows, SAMPLE_ROWS)
    path, seen = os.path.join(workdir, "sample.csv"), 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(layout.header_line + "\n")
        for source in layout.files:
            for record, cells in csv_records.records(source):
                if cells:
                    if seen in chosen:
                        out.write(record if record.endswith("\n") else record + "\n")
                    seen += 1
    return dataclasses.replace(layout, files=[path]), rows, inference.accumulator()


def sampled_records(rows: int, size: int) -> set[int]:
    """Which of `rows` records (numbered from 0) a sample of `size` keeps: drawn at random, with a fixed seed so a
    second run samples alike. Not every k-th record: rows written in a repeating order (a label cycling through its
    classes, as generated or interleaved data often is) would alias with k and show one class only."""
    if rows <= size:
        return set(range(rows))
    return set(random.Random(0).sample(range(rows), size))


@contextlib.contextmanager
def _naming_a_misshapen_row(layout: CsvLayout) -> Iterator[None]:
    """A failure reading the files (Beam wraps the CSV decoder's errors, which do not say where) becomes the first
    row whose number of fields differs from the header's, named by file and line, when there is one."""
    try:
        yield
    except Exception:
        misshapen = csv_files.first_misshapen_row(layout)
        if misshapen is None:
            raise
        raise misshapen from None


def _compute_on(layout: CsvLayout, types: dict[str, Any] | None = None) -> dict[str, ColumnStats]:
    """The columns' statistics of these files; `types` (column key -> tfx_bsl ColumnType): read them as these types
    instead of inferring them from the files."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    with _naming_a_misshapen_row(layout):
        typed, text = _statistics(layout, types)
    keys = [c.key for c in layout.columns]
    found = {key: ColumnStats(key=key, type="NONE", present=0, missing=0) for key in keys}
    dataset = typed.datasets[0]
    for feature in dataset.features:
        key = feature.path.step[0] if feature.path.step else feature.name
        if key in found:
            found[key] = _from_proto(key, feature, statistics_pb2)
    for column in found.values():  # a column that never holds a value has no statistics at all
        if column.type == "NONE":
            column.missing = dataset.num_examples
    for feature in text.datasets[0].features:
        key = feature.path.step[0]
        if key in found and found[key].type == "INT" and feature.HasField("string_stats"):
            found[key].distinct = int(feature.string_stats.unique)
            found[key].top = _top(feature.string_stats)
    return found


def _typed_schema(keys: list[str], types: dict[str, Any], schema_pb2: Any) -> Any:
    """A schema of the inferred types, for the CSV decoder to read them by. A column never holding a value (UNKNOWN)
    is read as text, which gives it the statistics it gets when the decoder infers the types."""
    from tfx_bsl.coders import csv_decoder

    kinds = {csv_decoder.ColumnType.INT: schema_pb2.INT, csv_decoder.ColumnType.FLOAT: schema_pb2.FLOAT}
    schema = schema_pb2.Schema()
    for key in keys:
        schema.feature.add(name=key, type=kinds.get(types.get(key), schema_pb2.BYTES))
    return schema


def _from_proto(key: str, feature: Any, statistics_pb2: Any) -> ColumnStats:
    kind = feature.WhichOneof("stats")
    stats = getattr(feature, kind)
    common = stats.common_stats
    types = {statistics_pb2.FeatureNameStatistics.INT: "INT", statistics_pb2.FeatureNameStatistics.FLOAT: "FLOAT",
             statistics_pb2.FeatureNameStatistics.STRING: "STRING", statistics_pb2.FeatureNameStatistics.BYTES:
             "STRING"}
    column = ColumnStats(key=key, type=types.get(feature.type, "STRING"), present=int(common.num_non_missing),
                         missing=int(common.num_missing))
    if kind == "num_stats":
        column.minimum, column.maximum = float(stats.min), float(stats.max)
        column.mean, column.std = float(stats.mean), float(stats.std_dev)
    elif kind == "string_stats":
        column.distinct = int(stats.unique)
        column.average_length = float(stats.avg_length)
        column.top = _top(stats)
        column.numeric_share, column.markers, column.text_values = _numbers_among(stats)
    for custom in feature.custom_stats:
        if custom.name == "domain_info":
            column.natural_language = custom.str.startswith("natural_language_domain")
            if custom.str.startswith("time_domain"):
                column.time_format = custom.str.split("string_format:", 1)[-1].strip(" '}") or "time"
    return column


def _top(stats: Any) -> list[tuple[str, float]]:
    return [(_text(b.label), float(b.sample_count)) for b in stats.rank_histogram.buckets]


def _numbers_among(stats: Any) -> tuple[float | None, list[str], list[str]]:
    """Of the ranked values: the share (by count) that are numbers, the missing markers, the other text values."""
    counted, numbers, markers, text = 0.0, 0.0, [], []
    for bucket in stats.rank_histogram.buckets:
        value, count = _text(bucket.label), float(bucket.sample_count)
        if value.strip() in MISSING_MARKERS:
            markers.append(value)
            continue
        counted += count
        if _is_number(value):
            numbers += count
        else:
            text.append(value)
    return (numbers / counted if counted else None), markers, text


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
