"""The CSV files of `data_root` as CsvExampleGen will read them: which files, the header they share, and the name
CsvExampleGen gives each column.

CsvExampleGen takes the first line of the first file, strips it and splits it on every comma; each later file must
have the very same first line. Field values are parsed as CSV (quotes allowed). So a column's feature name in the
examples is its raw header field, and a person's name for it is that field unquoted and stripped (a UTF-8 byte-order
mark on the first one included). Only the first lines and a few data lines are read here: the files may be larger
than memory.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import os

# Bytes of data lines read to recognise the delimiter.
SNIFF_BYTES = 64 << 10
BOM = "\ufeff"


class DataError(ValueError):
    """Data the pipeline cannot use; the message says what and where, for a person."""


@dataclasses.dataclass(frozen=True)
class CsvColumn:
    name: str  # the header as a person reads it, and as the raw serving signature names its input
    key: str  # the feature name in the examples, as CsvExampleGen names it


@dataclasses.dataclass(frozen=True)
class CsvLayout:
    files: list[str]
    columns: list[CsvColumn]
    header_line: str

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> CsvColumn:
        return next(c for c in self.columns if c.name == name)


def read_layout(data_dir: str) -> CsvLayout:
    """The files and their shared header; raises DataError for anything CsvExampleGen would fail on or misread."""
    files = _csv_files(data_dir)
    header_line = _first_line(files[0])
    for path in files[1:]:
        other = _first_line(path)
        if other != header_line:
            raise DataError(
                f"The CSV files in {data_dir} do not share one header: {files[0]} starts with {header_line!r}, "
                f"{path} with {other!r}. CsvExampleGen reads every *.csv in config 'data_root' as one dataset; give "
                "them the same columns in the same order, or move the others elsewhere.")
    _check_delimiter(files[0], header_line)
    keys = header_line.split(",")
    names = [_person_name(k, first=(i == 0)) for i, k in enumerate(keys)]
    parsed = next(csv.reader([header_line.removeprefix(BOM)]))
    if len(parsed) != len(keys):
        raise DataError(
            f"{files[0]}: a header field holds a comma inside quotes ({header_line!r}). CsvExampleGen splits the "
            "header on every comma, so it would misname the columns; rename that column without a comma.")
    _check_names(files[0], names)
    _check_has_rows(files[0])
    return CsvLayout(files=files, columns=[CsvColumn(n, k) for n, k in zip(names, keys)], header_line=header_line)


def _csv_files(data_dir: str) -> list[str]:
    if not os.path.isdir(data_dir):
        raise DataError(f"The data directory {data_dir} does not exist. Point config 'data_root' at a folder of CSV "
                        "files (for example: tfxsp run --set data_root=data/penguins).")
    files = sorted(glob.glob(os.path.join(data_dir, "*.csv")))
    if not files:
        raise DataError(f"The data directory {data_dir} holds no *.csv file. CsvExampleGen reads every CSV file in "
                        "config 'data_root'; put the dataset there.")
    return files


def _first_line(path: str) -> str:
    """The header as CsvExampleGen reads it: the first line, stripped."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            line = f.readline()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start} of the first line). Save it as "
                        "UTF-8 (CsvExampleGen reads nothing else).") from None
    except OSError as e:
        raise DataError(f"{path} cannot be read: {e.strerror}.") from None
    line = line.strip()
    if not line.removeprefix(BOM).strip():
        raise DataError(f"{path} is empty: it needs a header line naming the columns, then data rows.")
    return line


def _person_name(key: str, first: bool) -> str:
    name = key.removeprefix(BOM) if first else key
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('""', '"').strip()
    return name


def _check_delimiter(path: str, header_line: str) -> None:
    """CsvExampleGen splits on commas only: a file separated by semicolons or tabs would become one column."""
    if "," in header_line:
        return
    with open(path, encoding="utf-8", newline="") as f:
        sample = f.read(SNIFF_BYTES)
    for delimiter, what in ((";", "semicolons"), ("\t", "tabs")):
        if delimiter in header_line:
            try:
                csv.Sniffer().sniff(sample, delimiters=delimiter)
            except csv.Error:
                continue
            raise DataError(
                f"{path} separates its fields with {what}, not commas: its header {header_line!r} would be one "
                f"column. CsvExampleGen reads comma-separated files only; convert it, e.g. with Python: "
                f"csv.writer(out).writerows(csv.reader(open(path), delimiter={delimiter!r})).")


def _check_names(path: str, names: list[str]) -> None:
    empty = [i + 1 for i, name in enumerate(names) if not name]
    if empty:
        raise DataError(f"{path}: header field(s) {', '.join(map(str, empty))} are empty; every column needs a name.")
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        if name in seen:
            raise DataError(f"{path}: columns {seen[name]} and {i} are both named {name!r}; give each a name of "
                            "its own.")
        seen[name] = i


def _check_has_rows(path: str) -> None:
    with open(path, encoding="utf-8", newline="") as f:
        f.readline()
        for line in f:
            if line.strip():
                return
    raise DataError(f"{path} has a header but no data rows.")


def first_misshapen_row(layout: CsvLayout) -> DataError | None:
    """The first data row whose number of fields differs from the header's, as an error naming the file and line
    (read as a stream; only when the CSV decoder has refused the files: it does not say where)."""
    width = len(layout.columns)
    for path in layout.files:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            next(reader, None)
            for row in reader:
                if row and len(row) != width:
                    return DataError(f"{path}, line {reader.line_num}: {len(row)} fields where the header has "
                                     f"{width}: {','.join(row)[:200]!r}.")
    return None


def sample_rows(layout: CsvLayout, count: int = 3, scan: int = 200) -> list[dict[str, str]]:
    """The first `count` data rows of the first file (among its first `scan`, those with every cell filled first),
    as cell text by column name: what the Trainer turns into warmup requests."""
    with open(layout.files[0], encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader, None)  # the header
        full, gaps = [], []
        for i, cells in enumerate(reader):
            if i >= scan or len(full) >= count:
                break
            if len(cells) != len(layout.columns):
                continue  # a misshapen row is preflight's to report, not warmup's
            row = {c.name: cell for c, cell in zip(layout.columns, cells)}
            (full if all(cell.strip() for cell in cells) else gaps).append(row)
    return (full + gaps)[:count]
