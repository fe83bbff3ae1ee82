"""The input CSV of `tfxsp predict`, streamed as batches of the raw serving signature's inputs (serving_raw: one
input per feature column under its header's name, a number or a string), each row's text kept as it is in the file
for the output. A row that cannot be scored is a Reject with its line number and reason, never dropped without a
word.

Cells are read as CsvExampleGen reads them: an empty cell or a missing marker (contract.missing_markers, e.g. NA)
in a number column is a gap (NaN, which serving_raw fills as Transform filled the training data's gaps); text
columns go as they are. Memory is one batch, whatever the file's size. The per-row work is only what the csv module
must do; columns are converted a batch at a time (the slow path, cell by cell, runs only on a batch that holds a
cell that is not a number, to say which and why)."""
from __future__ import annotations

import collections
import csv
import dataclasses
import itertools
import math
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import numpy as np

from pipeline.modules import features, signatures


class InputError(Exception):
    """The file cannot be scored at all (unreadable, no header, a feature column missing): nothing was written."""


@dataclasses.dataclass
class Reject:
    line: int  # the row's first line in the file (1 = the header)
    reason: str
    cells: list[str]


@dataclasses.dataclass
class Batch:
    lines: list[int]
    records: list[str]  # each row's text as in the file, without its line ending
    inputs: dict[str, Any]  # header name -> one value per row (numbers: a float64 array; text: a list of str)
    labels: list[Any]  # the label of each row as the model answers it (a class as text, a number), or None
    rejects: list[Reject]  # rows read with this batch that cannot be scored, in line order


@dataclasses.dataclass
class _Rows:
    """The rows of a chunk of lines as read, before their columns are converted."""
    lines: list[int]
    rows: list[list[str]]
    records: list[str]
    rejects: list[Reject]


class _Lines:
    """The lines of a chunk, then the file's, one at a time, for the csv module; `taken` holds the lines it took."""

    def __init__(self, lines: list[str], file: TextIO):
        self.pending, self._file = collections.deque(lines), file
        self.taken: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.pending.popleft() if self.pending else self._file.readline()
        if not line:
            raise StopIteration
        self.taken.append(line)
        return line


@dataclasses.dataclass(frozen=True)
class _Field:
    column: features.Column
    index: int
    number: bool


class CsvRows:
    """Iterating yields Batch objects of up to `batch_size` scorable rows, in file order."""

    def __init__(self, path: str, contract: features.DatasetContract, batch_size: int):
        self.path, self.contract, self.batch_size = path, contract, batch_size
        self._gaps = {"", *contract.missing_markers}
        try:
            # utf-8-sig drops a byte-order mark; surrogateescape keeps a bad byte as a lone surrogate, so that one
            # row of bad text is a reject instead of an exception that ends the file.
            self._file: TextIO = open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")
        except OSError as e:
            raise InputError(f"Cannot read {path}: {e.strerror or e}") from None
        source = _Lines([], self._file)
        try:
            header = next(csv.reader(source))
        except StopIteration:
            self._file.close()
            raise InputError(f"{path} is empty: it has no header line.") from None
        except csv.Error as e:
            self._file.close()
            raise InputError(f"{path}: the header line is not CSV: {e}") from None
        self.header_text = "".join(source.taken).rstrip("\r\n")
        self.header = [name.strip() for name in header]
        self._line = 1 + len(source.taken)  # the number of the next line read
        self._fields = self._fields_of(contract)
        label = contract.label.name
        self.label_index = self.header.index(label) if label in self.header else None

    def _fields_of(self, contract: features.DatasetContract) -> list[_Field]:
        position = {name: i for i, name in enumerate(self.header)}
        missing = [c.name for c in contract.features if c.name not in position]
        if missing:
            self._file.close()
            raise InputError(f"{self.path} lacks the column(s) {', '.join(repr(m) for m in missing)} that the model "
                             f"takes (its header: {', '.join(repr(h) for h in self.header)}).")
        return [_Field(c, position[c.name], signatures.raw_input_dtype(c).is_floating) for c in contract.features]

    @property
    def bytes_read(self) -> int:
        """How far into the file reading is (the text layer reads ahead a little), for a progress bar."""
        return self._file.buffer.tell()

    def close(self) -> None:
        self._file.close()

    def __iter__(self) -> Iterator[Batch]:
        while True:
            chunk = list(itertools.islice(self._file, self.batch_size))
            if not chunk:
                return
            batch = _Rows([], [], [], [])
            joined = "".join(chunk)
            if '"' in joined or "\x00" in joined:
                self._add_csv(chunk, batch)
            else:
                self._add_plain(chunk, batch)
            yield self._batch(batch)

    def _add_plain(self, chunk: list[str], batch: _Rows) -> None:
        """Lines without a quote: each is one record, its fields split at the commas (CSV's whole grammar there)."""
        width, first = len(self.header), self._line
        self._line += len(chunk)
        texts = [line.rstrip("\r\n") for line in chunk]
        rows = [text.split(",") for text in texts]
        if all(len(cells) == width for cells in rows):  # the usual chunk, taken whole
            batch.lines.extend(range(first, first + len(rows)))
            batch.rows.extend(rows)
            batch.records.extend(texts)
            return
        for i, (text, cells) in enumerate(zip(texts, rows)):
            if len(cells) == width:
                batch.lines.append(first + i)
                batch.rows.append(cells)
                batch.records.append(text)
            elif text:  # a blank line holds no row
                batch.rejects.append(Reject(first + i, f"{len(cells)} fields where the header has {width}", cells))

    def _add_csv(self, chunk: list[str], batch: _Rows) -> None:
        """Lines with quotes: record by record with the csv module, which reads on past the chunk when a quoted
        field holds a line break."""
        width = len(self.header)
        source = _Lines(chunk, self._file)
        reader = csv.reader(source)
        while source.pending:
            source.taken.clear()
            first = self._line
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:  # e.g. a NUL byte: the line is a reject, the next one goes on
                self._line += len(source.taken)
                batch.rejects.append(Reject(first, f"not CSV: {e}", []))
                continue
            self._line += len(source.taken)
            text = "".join(source.taken).rstrip("\r\n")
            if len(cells) == width:
                batch.lines.append(first)
                batch.rows.append(cells)
                batch.records.append(text)
            elif cells:  # a blank line holds no row
                batch.rejects.append(Reject(first, f"{len(cells)} fields where the header has {width}", cells))

    def _batch(self, read: _Rows) -> Batch:
        lines, rows, records, rejects = read.lines, read.rows, read.records, read.rejects
        bad = _undecodable_rows(rows)
        numbers = {}
        for field in self._fields:
            if field.number:
                values, reasons = self._numbers([row[field.index] for row in rows], field.column.name)
                numbers[field.column.name] = values
                for position, reason in reasons.items():
                    bad.setdefault(position, reason)
        if bad:
            rejects = rejects + [Reject(lines[i], reason, rows[i]) for i, reason in bad.items()]
            keep = [i for i in range(len(rows)) if i not in bad]
            lines, rows, records = [lines[i] for i in keep], [rows[i] for i in keep], [records[i] for i in keep]
            numbers = {name: values[keep] for name, values in numbers.items()}
        rejects.sort(key=lambda r: r.line)
        inputs = {f.column.name: numbers[f.column.name] if f.number else [row[f.index] for row in rows]
                  for f in self._fields}
        labels = self._labels([row[self.label_index] for row in rows]) if self.label_index is not None else \
            [None] * len(rows)
        return Batch(lines, records, inputs, labels, rejects)

    def _numbers(self, cells: list[str], name: str) -> tuple[np.ndarray, dict[int, str]]:
        """The column as float64 (gaps NaN), and the rows whose cell is not a number, with the reason."""
        gaps = self._gaps
        try:
            return np.array(["nan" if c in gaps else c for c in cells], dtype=np.float64), {}
        except ValueError:
            pass
        values, reasons = np.empty(len(cells)), {}
        for i, cell in enumerate(cells):
            text = cell.strip()
            if text in gaps:
                values[i] = math.nan
                continue
            try:
                values[i] = float(text)
            except ValueError:
                values[i] = math.nan
                reasons[i] = f"column {name!r}: {cell!r} is not a number"
        return values, reasons

    def _labels(self, cells: list[str]) -> list[Any]:
        """Each row's label as the model answers it (a class as text, a number), None where it is missing."""
        gaps = self._gaps
        texts = [cell.strip() for cell in cells]
        if self.contract.task == features.CLASSIFICATION:
            return [None if text in gaps else text for text in texts]
        return [_number_or_none(text) if text not in gaps else None for text in texts]


def _number_or_none(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _undecodable_rows(rows: list[list[str]]) -> dict[int, str]:
    """Rows holding a byte that is not UTF-8 (read as a lone surrogate); one encode for the whole batch when none."""
    try:
        "".join("".join(row) for row in rows).encode("utf-8")
        return {}
    except UnicodeEncodeError:
        pass
    found = {}
    for i, row in enumerate(rows):
        try:
            "".join(row).encode("utf-8")
        except UnicodeEncodeError:
            found[i] = "not UTF-8 text"
    return found


def set_field_size_limit() -> None:
    """The csv module refuses fields over 128 KiB by default; a long free-text column is still a row."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
