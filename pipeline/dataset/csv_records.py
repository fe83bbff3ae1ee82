"""The rows of a CSV file as TFX's CsvExampleGen reads them, one file at a time and fast: its record reader (the
header skipped; a quoted cell may span lines), tfx_bsl's CSV parser, and its column type inference. Shared by our
CsvExampleGen executor (components/csv_example_gen) and the preflight's statistics of a large CSV (statistics.py),
so both see the types the pipeline will."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tfx.components.example_gen.csv_example_gen import executor as tfx_csv
from tfx_bsl.coders import csv_decoder

ColumnType = csv_decoder.ColumnType


def records(path: str) -> Iterable[tuple[str, list[bytes]]]:
    """(the record's text, its parsed cells) for every record of one file; a blank line parses as []."""
    reader = csv_decoder._CSVRecordReader(",")  # pylint: disable=protected-access
    for record in tfx_csv._ReadCsvRecordsFromTextFile().process(path):  # pylint: disable=protected-access
        yield record, reader.ReadLine(record)


class TypeInference:
    """Column types over rows, exactly as tfx_bsl's ColumnTypeInferrer(skip_blank_lines=True) infers them, faster.

    A column's type is the highest over its values (INT < FLOAT < STRING; UNKNOWN for an empty cell), so a value
    seen before cannot change it and is skipped (a bounded set per column), and a column already STRING is done.
    `accumulator()` is the inferrer's accumulator, for its merge_accumulators and extract_output."""

    _REMEMBERED = 10_000  # distinct values kept per column; past it, the set starts again

    def __init__(self, column_names: list[str]):
        self.column_names = column_names
        self._found: list[Any] = [None] * len(column_names)
        self._seen: list[set[bytes]] = [set() for _ in column_names]

    def add(self, cells: list[bytes]) -> None:
        if not cells:
            return  # skip_blank_lines
        if len(cells) != len(self.column_names):
            raise ValueError(f"Columns do not match specified csv headers: {self.column_names} -> {cells}")
        for i, cell in enumerate(cells):
            if self._found[i] == ColumnType.STRING or cell in self._seen[i]:
                continue
            if len(self._seen[i]) >= self._REMEMBERED:
                self._seen[i].clear()
            self._seen[i].add(cell)
            kind = csv_decoder._InferValueType(cell)  # pylint: disable=protected-access
            if self._found[i] is None or kind > self._found[i]:
                self._found[i] = kind

    def accumulator(self) -> dict[str, Any]:
        return {name: kind for name, kind in zip(self.column_names, self._found) if kind is not None}
