"""The dataset contract of a configuration: the CSV files' layout, their statistics, and the decisions they lead
to, as the pipeline's runners, `tfxsp init` and `tfxsp run`'s summary need them."""
from __future__ import annotations

import dataclasses

from pipeline.config import PipelineConfig
from pipeline.dataset import csv_files, roles, statistics
from pipeline.modules.features import DatasetContract


@dataclasses.dataclass(frozen=True)
class Analysis:
    layout: csv_files.CsvLayout
    stats: dict[str, statistics.ColumnStats]
    contract: DatasetContract

    @property
    def rows(self) -> int:
        return max((s.data_rows for s in self.stats.values()), default=0)

    @property
    def unlabelled_rows(self) -> int:
        label = self.stats[self.contract.label.key]
        markers = sum(count for value, count in label.top if value.strip() in statistics.MISSING_MARKERS)
        return round((label.missing + markers) * label.data_rows / max(label.rows, 1))  # scaled up from a sample


def choices(config: PipelineConfig) -> roles.Choices:
    return roles.Choices(label=config.label, task=config.task, ignore_columns=tuple(config.ignore_columns),
                         feature_columns=tuple(config.feature_columns),
                         slice_by=tuple(config.slice_by) if config.slice_by is not None else None,
                         column_roles=dict(config.column_roles))


def analyze(config: PipelineConfig, data_dir: str | None = None) -> Analysis:
    """Reads the layout, computes (or reuses) the statistics, decides the contract. Raises csv_files.DataError."""
    layout = csv_files.read_layout(data_dir or config.data_dir)
    wanted = choices(config)
    roles.check_names(layout, wanted)  # before the statistics: a mistyped label fails in a second
    stats = statistics.column_stats(layout, cache_dir=config.dataset_cache_dir)
    contract = dataclasses.replace(roles.decide(layout, stats, wanted), sample_rows=csv_files.sample_rows(layout))
    return Analysis(layout=layout, stats=stats, contract=contract)
