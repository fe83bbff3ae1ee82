"""The files `tfxsp predict` writes. The output: every input column as it is in the file, then the prediction columns
(classification: `predicted_<label>` and one `probability_<class>` per class, in the model's order; regression:
`predicted_<label>`); written to OUTPUT.partial and renamed to OUTPUT only when every row is scored, so a file under
the name asked for is always whole. The rejects file: one row per line that could not be scored, with its line
number and reason, then its cells; written only when there is one."""
from __future__ import annotations

import csv
import io
import os

import numpy as np

from pipeline.scoring.reader import Reject
from pipeline.scoring.target import Target

PARTIAL = ".partial"


def prediction_columns(target: Target, header: list[str]) -> list[str]:
    label = target.contract.label.name
    wanted = [f"predicted_{label}"] + [f"probability_{name}" for name in target.class_names]
    taken, columns = set(header), []
    for name in wanted:  # a name the input already has gets a suffix: the input's column is kept as it is
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name}_{n}", n + 1
        taken.add(candidate)
        columns.append(candidate)
    return columns


class OutputWriter:
    """Each output row is the input row's text as it is in the file, a comma, and the prediction cells: the input's
    quoting, spacing and number formats are kept, and no cell is parsed and written again."""

    def __init__(self, path: str, header_text: str, header: list[str], target: Target):
        self.path, self._target = path, target
        self.partial_path = path + PARTIAL
        self.columns = prediction_columns(target, header)
        self._file = open(self.partial_path, "w", newline="", encoding="utf-8", errors="surrogateescape")
        self._file.write(header_text + "," + _csv_line(self.columns) + "\n")
        self._names = [_csv_line([name]) for name in target.class_names]  # quoted where CSV needs it
        self._numbers = ",".join(["%.6g"] * len(target.class_names))

    def write(self, records: list[str], outputs: dict[str, np.ndarray]) -> None:
        if self._target.classification:
            probabilities = outputs["probabilities"]
            names, numbers = self._names, self._numbers
            cells = [f"{names[i]},{numbers % tuple(p)}" for i, p in
                     zip(np.argmax(probabilities, axis=1).tolist(), probabilities.tolist())]
        else:
            cells = [f"{v:.7g}" for v in outputs["predictions"].tolist()]
        self._file.write("".join(f"{record},{cell}\n" for record, cell in zip(records, cells)))

    def finish(self) -> None:
        self._file.close()
        os.replace(self.partial_path, self.path)

    def abandon(self) -> str:
        """Closes the file, left as OUTPUT.partial (the rows scored before the failure); returns its path."""
        self._file.close()
        return self.partial_path


def _csv_line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    return buffer.getvalue()


class RejectsWriter:
    def __init__(self, path: str, header: list[str]):
        self.path, self._header = path, header
        self.count = 0
        self._file = None
        if os.path.exists(path):  # a previous run's rejects would describe another scoring
            os.unlink(path)

    def write(self, rejects: list[Reject]) -> None:
        if not rejects:
            return
        if self._file is None:
            self._file = open(self.path, "w", newline="", encoding="utf-8", errors="surrogateescape")
            self._csv = csv.writer(self._file)
            self._csv.writerow(["line", "reason", *self._header])
        self._csv.writerows([r.line, r.reason, *r.cells] for r in rejects)
        self.count += len(rejects)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
