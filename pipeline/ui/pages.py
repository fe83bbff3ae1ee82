"""What each page of the dashboard shows, as plain data: a page renders it with its template, its /api/ twin returns
it as JSON. Every ML Metadata question goes through pipeline/metadata (the one reader); a page only arranges."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline.config import PipelineConfig
from pipeline.metadata import (
    comparison,
    evaluations,
    failures,
    lineage,
    models,
    runs,
    skew_checks,
    statistics,
    training,
)
from pipeline.metadata.run_graph import run_graph
from pipeline.metadata.store import NotFoundError
from pipeline.runners import run_lock

PER_PAGE = 20
MAX_PER_PAGE = 200


class BadRequest(ValueError):
    """A query parameter that cannot be used; the message says which and why."""


@dataclasses.dataclass
class Page:
    template: str
    data: dict[str, Any]  # what the /api/ twin returns
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # for the template only (pictures)


def pipeline_root(config: PipelineConfig) -> str:
    """The folder whose run lock and logs speak for the store: a SQLite store's folder when it holds a run lock or
    logs (a store given by --metadata-url), else the configured pipeline root."""
    connection = config.metadata_connection_config()
    if isinstance(connection, metadata_store_pb2.ConnectionConfig) and connection.HasField("sqlite"):
        folder = os.path.dirname(os.path.abspath(connection.sqlite.filename_uri))
        if any(os.path.exists(os.path.join(folder, name)) for name in (run_lock.LOCK_FILE, "logs")):
            return folder
    return config.pipeline_root


def _mark_abandoned(config: PipelineConfig, summaries: list[runs.RunSummary]) -> None:
    """As `tfxsp runs` does: a run shown running that no `tfxsp run` holds the run lock for is abandoned."""
    state = run_lock.lock_state(pipeline_root(config))
    if state.exists:
        runs.mark_abandoned(summaries, (state.holder.started_ms if state.holder else 0) if state.held else None)


def positive_int(value: str | None, name: str, default: int, most: int | None = None) -> int:
    if value in (None, ""):
        return default
    if not value.isdigit() or int(value) < 1:
        raise BadRequest(f"{name} must be a whole number from 1, not {value!r}.")
    return min(int(value), most) if most else int(value)


def runs_page(store: metadata_store.MetadataStore, config: PipelineConfig, page: int,
              per_page: int = PER_PAGE) -> Page:
    total = len(runs.pipeline_runs(store, config.pipeline_name))
    pages = max(1, -(-total // per_page))
    if page > pages:
        raise NotFoundError(f"There is no page {page} of runs: {total} run(s) make {pages} page(s).")
    offset = (page - 1) * per_page
    summaries = runs.list_runs(store, config.pipeline_name, per_page, offset=offset)
    _mark_abandoned(config, summaries)
    return Page("runs.html", {"pipeline": config.pipeline_name, "page": page, "pages": pages,
                              "per_page": per_page, "total": total, "runs": [s.to_dict() for s in summaries]})


def _detail(store: metadata_store.MetadataStore, config: PipelineConfig, run_id: str) -> runs.RunDetail:
    detail = runs.show_run(store, config.pipeline_name, run_id)
    _mark_abandoned(config, [detail.summary])
    return detail


def run_page(store: metadata_store.MetadataStore, config: PipelineConfig, run_id: str) -> Page:
    from pipeline.metadata import render
    detail = _detail(store, config, run_id)
    logs_dir = os.path.join(pipeline_root(config), "logs")
    found = [failures.failure_of(n.node_id, n.execution_id, detail.parameters.get(n.execution_id, {}), logs_dir,
                                 detail.summary.started_ms)
             for n in detail.summary.nodes if n.state == "failed"]
    data = detail.to_dict()
    data["failures"] = [f.to_dict() for f in found]
    graph = run_graph(detail)
    svg = render.to_svg(graph, standalone=False, link="#node-{id}",
                        title=f"Run {detail.summary.run_id}: {len(graph.nodes)} nodes") if graph.nodes else ""
    return Page("run.html", data, {"graph_svg": svg, "live": data["state"] == "running"})


def _outputs_of_type(detail: runs.RunDetail, type_name: str) -> list[tuple[str, runs.ArtifactRef]]:
    return [(n.node_id, a) for n in detail.summary.nodes for a in detail.outputs.get(n.execution_id, [])
            if a.type == type_name]


def data_page(store: metadata_store.MetadataStore, config: PipelineConfig, run_id: str) -> Page:
    detail = _detail(store, config, run_id)
    splits, anomalies, problems = [], [], []
    stats_artifacts = _outputs_of_type(detail, "ExampleStatistics")
    for node_id, artifact in stats_artifacts:
        try:
            splits += [{"node_id": node_id, "artifact_id": artifact.id, **s.to_dict()}
                       for s in statistics.read_statistics(artifact.uri)]
        except ValueError as e:
            problems.append(str(e))
    anomaly_artifacts = _outputs_of_type(detail, "ExampleAnomalies")
    for _, artifact in anomaly_artifacts:
        try:
            anomalies += [a.to_dict() for a in statistics.read_anomalies(artifact.uri)]
        except ValueError as e:
            problems.append(str(e))
    return Page("data.html", {"run_id": detail.summary.run_id, "splits": splits, "anomalies": anomalies,
                              "validated": bool(anomaly_artifacts), "statistics_found": bool(stats_artifacts),
                              "problems": problems})


def evaluation_page(store: metadata_store.MetadataStore, config: PipelineConfig, run_id: str) -> Page:
    from pipeline import evaluation as gate
    detail = _detail(store, config, run_id)
    result = evaluations.evaluation_of(detail)
    data = result.to_dict()
    data["metric_label"] = gate.METRIC_LABELS.get(result.gate_metric or "", result.gate_metric)
    bound = next((t.lower_bound if t.lower_bound is not None else t.upper_bound
                  for t in result.thresholds if t.metric == result.gate_metric
                  and (t.lower_bound is not None or t.upper_bound is not None)), None)
    data["gate_bound"] = bound
    data["metric_names"] = list(dict.fromkeys(name for values in result.metrics.values() for name in values))
    return Page("evaluation.html", data)


def training_page(store: metadata_store.MetadataStore, config: PipelineConfig, run_id: str) -> Page:
    detail = _detail(store, config, run_id)
    model_runs = _outputs_of_type(detail, "ModelRun")
    curves: list[training.Curve] = []
    uri = model_runs[0][1].uri if model_runs else None
    if uri:
        curves = training.read_curves(uri)
    by_metric: dict[str, dict[str, list]] = {}
    for curve in curves:
        by_metric.setdefault(curve.metric, {})[curve.run] = curve.points
    trainer = next((n for n in detail.summary.nodes if n.node_id == "Trainer"), None)
    parameters = detail.parameters.get(trainer.execution_id, {}) if trainer else {}
    custom = parameters.get("custom_config") if isinstance(parameters.get("custom_config"), dict) else {}
    return Page("training.html", {"run_id": detail.summary.run_id, "model_run_uri": uri,
                                  "trainer_state": trainer.state if trainer else None,
                                  "strategy": (custom.get("hparams") or {}).get("strategy") or custom.get("strategy"),
                                  "curves": [c.to_dict() for c in curves], "by_metric": by_metric})


def models_page(store: metadata_store.MetadataStore, config: PipelineConfig, live: dict[str, Any],
                page: int = 1, per_page: int = PER_PAGE) -> Page:
    """The pushed versions, newest first, a page at a time: the metrics are read (one evaluation folder per
    version) only for the versions shown."""
    from pipeline.metadata.metrics import eval_metrics
    total = models.count_models(store, config.serving_model_dir)
    pages = max(1, -(-total // per_page))
    if page > pages:
        raise NotFoundError(f"There is no page {page} of models: {total} version(s) make {pages} page(s).")
    shown = models.list_models(store, config.serving_model_dir, with_metrics=False,
                               offset=(page - 1) * per_page, limit=per_page)
    latest = skew_checks.latest_by_version(skew_checks.skew_checks(store, config.model_name))
    listed = []
    for model in shown:
        if model.evaluation_uri:
            model.metrics = eval_metrics(model.evaluation_uri)
        check = latest.get(model.version or "")
        listed.append({**model.to_dict(), "skew_check": check.to_dict() if check else None})
    return Page("models.html", {"model_name": config.model_name, "model_base_path": config.serving_model_dir,
                                "served_version": models.served_version(config.serving_model_dir),
                                "live": live, "page": page, "pages": pages, "per_page": per_page,
                                "total": total, "models": listed})


def monitor_page(store: metadata_store.MetadataStore, config: PipelineConfig, version: int | None) -> Page:
    """The skew checks of `tfxsp monitor`, newest first (of one version when given): each one's verdict and every
    feature's distance beside its threshold."""
    checks = skew_checks.skew_checks(store, config.model_name, None if version is None else str(version))
    return Page("monitor.html", {"model_name": config.model_name, "version": version,
                                 "checks": [c.to_dict() for c in checks]})


def lineage_page(store: metadata_store.MetadataStore, config: PipelineConfig, target: str,
                 direction: str) -> Page:
    from pipeline.metadata import render
    if direction not in ("upstream", "downstream", "both"):
        raise BadRequest(f"direction must be upstream, downstream or both, not {direction!r}.")
    artifact, description = lineage.resolve_target(store, target, config.serving_model_dir)
    graph = lineage.trace(store, artifact.id, direction, description=description)
    svg = render.to_svg(graph, standalone=False, link="/go/{key}")
    return Page("lineage.html", {"target": target, "direction": direction, **graph.to_dict()},
                {"svg": svg, "artifact_id": artifact.id})


def compare_page(store: metadata_store.MetadataStore, config: PipelineConfig, a: str | None,
                 b: str | None) -> Page:
    choices = [c.name for c in reversed(runs.pipeline_runs(store, config.pipeline_name))][:MAX_PER_PAGE]
    if not a or not b:
        return Page("compare.html", {"a": a, "b": b, "choices": choices, "comparison": None})
    result = comparison.compare(runs.show_run(store, config.pipeline_name, a),
                                runs.show_run(store, config.pipeline_name, b))
    return Page("compare.html", {"a": result.a, "b": result.b, "choices": choices, "comparison": result.to_dict()})


def node_target(store: metadata_store.MetadataStore, key: str) -> str:
    """Where a lineage node links: an artifact to its lineage, an execution to its run's page."""
    from pipeline.metadata.executions import execution_infos
    if key[:1] == "a" and key[1:].isdigit():
        return f"/lineage/{int(key[1:])}"
    if key[:1] in ("e", "s") and key[1:].isdigit():
        from ml_metadata import errors as mlmd_errors
        try:
            info = execution_infos(store, [int(key[1:])]).get(int(key[1:]))
        except mlmd_errors.NotFoundError:  # no such execution: the subgraph query has nothing to start from
            info = None
        if info and info.run_ids:
            return f"/runs/{info.run_ids[0]}#node-{int(key[1:])}"
    raise NotFoundError(f"No lineage node {key!r} in this metadata store.")
