"""The input CSV of `tfxsp predict` (pipeline/scoring/reader.py): streamed in batches, so memory stays one batch
on a file far larger than that; cells read as CsvExampleGen reads them; each row that cannot be scored a reject
with its first line's number, quoted newlines counted."""
from __future__ import annotations

import math
import tracemalloc

import pytest

from pipeline.modules import features
from pipeline.scoring.reader import CsvRows, InputError


def _contract(task=features.CLASSIFICATION) -> features.DatasetContract:
    def column(name, dtype, role):
        return features.Column(name=name, key=name, internal=name.lower().replace(" ", "_"), dtype=dtype, role=role)
    label = column("kind", "string" if task == features.CLASSIFICATION else "float", "label")
    return features.DatasetContract(
        label=label, task=task, slice_by=[], missing_markers=["NA"],
        columns=[column("Length (mm)", "float", features.NUMERIC), column("colour", "string", features.CATEGORICAL),
                 column("note", "string", features.IGNORED)])


def test_memory_stays_one_batch_on_a_file_many_times_larger(tmp_path):
    path = tmp_path / "big.csv"
    rows = 300_000
    with open(path, "w") as f:
        f.write("Length (mm),colour,note,kind\n")
        for i in range(rows):
            f.write(f"{i % 97 + 0.5},{'red' if i % 3 else 'blue'},row number {i} of the big file,{'ab'[i % 2]}\n")
    size = path.stat().st_size
    reader = CsvRows(str(path), _contract(), batch_size=500)
    tracemalloc.start()
    try:
        count = sum(len(batch.lines) for batch in reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        reader.close()
    assert count == rows
    # The file is ~12 MB; its rows as Python objects several times that. One batch of 500 rows is a few hundred kB.
    assert peak < 3_000_000 < size / 4, (peak, size)


def test_cells_gaps_labels_and_line_numbers(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("\ufeffLength (mm),colour,note,kind\n"  # a byte-order mark before the header
                    "1.5,red,plain,a\n"
                    "NA,,\"a note\nover two lines\",b\n"  # a missing marker and an empty cell: gaps
                    "\n"  # a blank line: no row
                    "long,red,x,a\n"  # not a number
                    "2,blue,x\n"  # a field short
                    " 3 ,blue,x,NA\n", encoding="utf-8")
    reader = CsvRows(str(path), _contract(), batch_size=2)
    batches = list(reader)
    reader.close()
    assert reader.label_index == 3
    lines = [n for b in batches for n in b.lines]
    lengths = [v for b in batches for v in b.inputs["Length (mm)"]]
    assert lines == [2, 3, 8]
    assert lengths[0] == 1.5 and math.isnan(lengths[1]) and lengths[2] == 3.0
    assert [v for b in batches for v in b.inputs["colour"]] == ["red", "", "blue"]
    assert "note" not in batches[0].inputs  # an ignored column is kept for the output only
    assert [label for b in batches for label in b.labels] == ["a", "b", None]
    assert [r for b in batches for r in b.records] == ["1.5,red,plain,a", 'NA,,"a note\nover two lines",b',
                                                      " 3 ,blue,x,NA"]  # as in the file, for the output
    assert [(r.line, r.reason) for b in batches for r in b.rejects] == [
        (6, "column 'Length (mm)': 'long' is not a number"), (7, "3 fields where the header has 4")]


def test_rows_without_quotes_and_with_them_read_alike_across_batches(tmp_path):
    """Chunks of lines without a quote are split at the commas; a chunk with one goes through the csv module,
    which reads past the chunk for a quoted line break. Both give the same rows, lines and rejects."""
    lines = ["Length (mm),colour,note,kind"]
    for i in range(50):
        lines.append(f"{i},red,plain {i},a" if i % 7 else f'{i},"blue","two\nlines {i}",b')
        if i % 11 == 5:
            lines.append(f"{i},short")
    path = tmp_path / "mixed.csv"
    path.write_text("\r\n".join(lines) + "\r\n")
    for batch_size in (1, 3, 8, 1000):
        reader = CsvRows(str(path), _contract(), batch_size=batch_size)
        batches = list(reader)
        reader.close()
        values = [v for b in batches for v in b.inputs["Length (mm)"].tolist()]
        assert values == [float(i) for i in range(50)], batch_size
        line_of = {int(r.split(",")[0]): n for b in batches for n, r in zip(b.lines, b.records)}
        expected, n = {}, 2
        for i in range(50):
            expected[i] = n
            n += 1 if i % 7 else 2
            n += 1 if i % 11 == 5 else 0
        assert line_of == expected, batch_size
        assert [r.line for b in batches for r in b.rejects] == [expected[i] + (1 if i % 7 else 2)
                                                                for i in range(50) if i % 11 == 5], batch_size
        assert [c for b in batches for c in b.inputs["colour"]][:2] == ["blue", "red"]


def test_regression_labels_are_numbers_and_unreadable_ones_are_no_label(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("Length (mm),colour,note,kind\n1,red,x,2.5\n1,red,x,high\n")
    reader = CsvRows(str(path), _contract(features.REGRESSION), batch_size=10)
    assert [label for b in reader for label in b.labels] == [2.5, None]
    reader.close()


@pytest.mark.parametrize("content, message", [("", "is empty"), ("colour,note,kind\nred,x,a\n",
                                                                  "lacks the column(s) 'Length (mm)'")])
def test_files_that_cannot_be_scored_at_all(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CsvRows(str(path), _contract(), batch_size=10)
