"""The scoring loop of `tfxsp predict`: batches are read from the CSV, scored a few at a time (the next ones are
parsed, or on their way to the server, while one is scored), and written in file order. Memory is `in_flight`
batches, whatever the file's size."""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.scoring.reader import CsvRows
from pipeline.scoring.scorers import Scorer, ScoringError
from pipeline.scoring.target import Target
from pipeline.scoring.writer import OutputWriter, RejectsWriter


@dataclasses.dataclass
class Summary:
    rows: int
    rejects: int
    seconds: float
    metric: dict[str, Any] | None  # {name: value, ..., "labelled": n}: rows with a label, when the file has one

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class Failed(Exception):
    """Scoring stopped part way: `cause` says why, `rows` were scored and kept in `partial_path`."""

    def __init__(self, cause: ScoringError, rows: int, partial_path: str):
        super().__init__(str(cause))
        self.cause, self.rows, self.partial_path = cause, rows, partial_path


class Metric:
    """Accuracy (classification) or RMSE and MAE (regression) over the rows that have a label."""

    def __init__(self, target: Target):
        self._target = target
        self.labelled = 0
        self._correct = 0
        self._squared = self._absolute = 0.0

    def add(self, labels: list[Any], outputs: dict[str, np.ndarray]) -> None:
        self.labelled += len(labels) - labels.count(None)
        if self._target.classification:
            names = self._target.class_names
            predicted = [names[i] for i in np.argmax(outputs["probabilities"], axis=1).tolist()]
            self._correct += sum(1 for label, name in zip(labels, predicted) if label == name)
        else:
            for label, value in zip(labels, outputs["predictions"].tolist()):
                if label is not None:
                    self._squared += (value - label) ** 2
                    self._absolute += abs(value - label)

    def result(self) -> dict[str, Any] | None:
        if not self.labelled:
            return None
        if self._target.classification:
            return {"accuracy": self._correct / self.labelled, "labelled": self.labelled}
        return {"rmse": math.sqrt(self._squared / self.labelled), "mae": self._absolute / self.labelled,
                "labelled": self.labelled}


def score_file(rows: CsvRows, scorer: Scorer, target: Target, output: OutputWriter, rejects: RejectsWriter,
               in_flight: int, progress: Callable[[int], None] = lambda rows: None) -> Summary:
    """Scores every row of `rows` into `output`; raises Failed when the scorer fails part way."""
    started = time.perf_counter()
    metric, scored = Metric(target), 0
    pending: collections.deque = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="tfxsp-score") as pool:
        def settle_one() -> None:
            nonlocal scored
            batch, future = pending.popleft()
            outputs = future.result()
            output.write(batch.records, outputs)
            metric.add(batch.labels, outputs)
            scored += len(batch.lines)
            progress(scored)

        try:
            for batch in rows:
                rejects.write(batch.rejects)
                if batch.lines:
                    pending.append((batch, pool.submit(scorer.score, batch.inputs)))
                while len(pending) > in_flight or (pending and pending[0][1].done()):
                    settle_one()
            while pending:
                settle_one()
        except ScoringError as error:
            for _, future in pending:
                future.cancel()
            raise Failed(error, scored, output.abandon()) from None
    output.finish()
    return Summary(scored, rejects.count, time.perf_counter() - started, metric.result())
