"""Time of `tfxsp runs list` and `tfxsp lineage served` on an ML Metadata store with many runs.

    .venv/bin/python benchmarks/lineage_bench.py [--runs 200] [--change-every 10]
        [--template path/to/metadata.db] [--repeats 5] [--keep DIR] [--out results.json]
        [--stores sqlite,mariadb]

Each store of `--stores` gets the same replayed runs and the same measurements, printed side by side: SQLite
(the default store, a file) and MariaDB (a private server started here, tools/metadata_server.py; Debian's
mariadb-server must be installed), the shared store of a team.

The store is built by replaying one real pipeline run: the first run of `--template` (by default
this script makes one with `tfxsp run --set serving_validation=false` in a scratch folder, about a
minute). Its MLMD records (types, contexts, executions with their exec properties, artifacts
with their properties, events with their keys) are written again, run after run, the way TFX 1.16
writes them: one `put_execution` per node with the pipeline / pipeline_run / node /
execution_cache contexts; every `--change-every`-th run reads changed data (every node executes
and writes new artifacts), the others reuse the upstream nodes from the cache (CACHED executions
re-publishing the earlier outputs); each run's Resolver records the latest blessed model
(INTERNAL_OUTPUT events), its Evaluator takes it as `baseline_model`, and its Pusher pushes a new
version. The newest versions get a folder in the model base path, so `served` resolves.

Reported: the wall time of the commands as a user runs them (a new process each time: Python
start and imports included; `tfxsp --help` gives that floor), the time of the same queries in
process, and how many MLMD calls each makes, beside the one-call-per-execution way that
the run report used before (get_contexts_by_execution and get_events_by_execution_ids per execution).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ml_metadata import metadata_store  # noqa: E402
from ml_metadata.proto import metadata_store_pb2 as mlmd  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.metadata import artifacts, executions, lineage, models  # noqa: E402
from pipeline.metadata import runs as runs_api  # noqa: E402
from pipeline.metadata.properties import event_keys  # noqa: E402
from pipeline.metadata.store import describe_connection, open_store  # noqa: E402

TFXSP = str(Path(sys.executable).with_name("tfxsp"))
# Nodes that run again in every run although the data did not change: the Resolver finds a newer
# blessed model each time, so the Evaluator (and what follows it) has new inputs.
RERUN = ("Resolver", "Evaluator", "Pusher", "ServingValidator")


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


class Template:
    """The MLMD records of a template store's first run."""

    def __init__(self, path: str):
        config = mlmd.ConnectionConfig()
        config.sqlite.filename_uri = path
        config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READONLY
        store = metadata_store.MetadataStore(config)
        [pipeline] = store.get_contexts_by_type("pipeline")
        self.pipeline_name = pipeline.name
        run = runs_api.pipeline_runs(store, pipeline.name)[0]
        self.nodes = executions.node_results(store, [run])[run.id]
        ids = [n.execution_id for n in self.nodes]
        self.executions = {e.id: e for e in store.get_executions_by_id(ids)}
        self.events = store.get_events_by_execution_ids(ids)
        self.artifacts = {a.id: a for a in store.get_artifacts_by_id(
            sorted({e.artifact_id for e in self.events}))}
        self.artifact_types = store.get_artifact_types()
        self.execution_types = store.get_execution_types()
        self.context_types = store.get_context_types()
        # artifact id -> (node id, output key) of the execution that wrote it
        node_of = {n.execution_id: n.node_id for n in self.nodes}
        self.source = {e.artifact_id: (node_of[e.execution_id], event_keys(e)[0])
                       for e in self.events if e.type == mlmd.Event.OUTPUT}


class Replayer:
    """Writes runs shaped like the template's into a new store."""

    def __init__(self, template: Template, connection: mlmd.ConnectionConfig, serving_dir: str,
                 reuse_uris: bool = False):
        # reuse_uris: every replayed artifact points at the template's folder (so that readers of the files, the
        # dashboard's pages, read real statistics, evaluations and event files), not a new path that does not exist.
        self.t, self.serving_dir, self.reuse_uris = template, serving_dir, reuse_uris
        self.store = s = metadata_store.MetadataStore(connection)

        def strip(t):  # the type as the template has it, without the template's id
            copy = type(t)()
            copy.CopyFrom(t)
            copy.ClearField("id")
            return copy
        self.artifact_type = {t.name: s.put_artifact_type(strip(t))
                              for t in template.artifact_types}
        self.execution_type = {t.name: s.put_execution_type(strip(t))
                               for t in template.execution_types}
        self.context_type = {t.name: s.put_context_type(mlmd.ContextType(name=t.name))
                             for t in template.context_types}
        self.pipeline = self._context("pipeline", template.pipeline_name)
        self.node_context = {
            n.node_id: self._context("node", f"{template.pipeline_name}.{n.node_id}")
            for n in template.nodes}
        self.latest: dict[tuple[str, str], int] = {}  # newest non-cached output per node and key
        self.cache_context: dict[str, mlmd.Context] = {}
        self.blessed: tuple[int, int] | None = None  # (model, blessing) of the latest blessing
        self.version = 1800000000
        self.start = datetime.datetime(2026, 1, 1)

    def _context(self, type_name: str, name: str) -> mlmd.Context:
        context = mlmd.Context(type_id=self.context_type[type_name], name=name)
        [context.id] = self.store.put_contexts([context])
        return context

    def _existing(self, artifact_id: int, event: mlmd.Event):
        [artifact] = self.store.get_artifacts_by_id([artifact_id])
        return artifact, event

    @staticmethod
    def _event(event_type, keys):
        event = mlmd.Event(type=event_type)
        for key in keys:
            event.path.steps.add().key = key
            event.path.steps.add().index = 0
        return event

    def add_run(self, index: int, changed: bool) -> None:
        name = (self.start + datetime.timedelta(minutes=index)).isoformat(timespec="microseconds")
        run = self._context("pipeline_run", name)
        self.store.put_parent_contexts([mlmd.ParentContext(child_id=run.id,
                                                           parent_id=self.pipeline.id)])
        produced: dict[tuple[str, str], int] = {}
        for node in self.t.nodes:
            template = self.t.executions[node.execution_id]
            component = _short(template.type)
            cached = not changed and component not in RERUN and any(
                k[0] == node.node_id for k in self.latest)
            execution = mlmd.Execution(type_id=self.execution_type[template.type],
                                       last_known_state=mlmd.Execution.CACHED if cached
                                       else mlmd.Execution.COMPLETE)
            for key, value in template.custom_properties.items():
                execution.custom_properties[key].CopyFrom(value)
            if component == "CsvExampleGen" or "input_fingerprint" in execution.custom_properties:
                execution.custom_properties["input_fingerprint"].string_value = \
                    f"split:single_split,num_files:1,xor_checksum:{index if changed else 0}"
            pairs = []
            if component == "Resolver" and self.blessed:
                for key, artifact_id in zip(("model", "model_blessing"), self.blessed):
                    pairs.append(self._existing(artifact_id, self._event(
                        mlmd.Event.INTERNAL_OUTPUT, [key])))
            inputs: dict[int, list[str]] = {}
            for event in self.t.events:
                if event.execution_id == node.execution_id and event.type == mlmd.Event.INPUT:
                    source = self.t.source.get(event.artifact_id)
                    if source in produced:
                        inputs.setdefault(produced[source], []).extend(event_keys(event))
            if component == "Evaluator" and self.blessed:
                inputs.setdefault(self.blessed[0], []).append("baseline_model")
            for artifact_id, keys in inputs.items():
                pairs.append(self._existing(artifact_id, self._event(mlmd.Event.INPUT, keys)))
            outputs = [e for e in self.t.events
                       if e.execution_id == node.execution_id and e.type == mlmd.Event.OUTPUT]
            fresh = []
            for event in outputs:
                key = event_keys(event)[0]
                event_out = self._event(mlmd.Event.OUTPUT, [key])
                if cached:
                    pairs.append(self._existing(self.latest[(node.node_id, key)], event_out))
                else:
                    pairs.append((self._artifact(self.t.artifacts[event.artifact_id], index),
                                  event_out))
                    fresh.append(key)
            contexts = [self.pipeline, run, self.node_context[node.node_id]]
            if component != "Resolver":
                if not cached:
                    self.cache_context[node.node_id] = self._context(
                        "execution_cache", f"{node.node_id}-{index:06d}")
                contexts.append(self.cache_context[node.node_id])
            _, artifact_ids, _ = self.store.put_execution(
                execution, pairs, contexts, reuse_context_if_already_exist=True)
            for (_, event), artifact_id in zip(pairs, artifact_ids):
                if event.type == mlmd.Event.OUTPUT:
                    key = event_keys(event)[0]
                    produced[(node.node_id, key)] = artifact_id
                    if key in fresh:
                        self.latest[(node.node_id, key)] = artifact_id
        model = next((v for (n, k), v in produced.items() if k == "model" and
                      _short(self._type_of(n)) == "Trainer"), None)
        blessing = next((v for (n, k), v in produced.items() if k == "blessing"), None)
        if model and blessing:
            self.blessed = (model, blessing)

    def _type_of(self, node_id: str) -> str:
        node = next(n for n in self.t.nodes if n.node_id == node_id)
        return self.t.executions[node.execution_id].type

    def _artifact(self, template: mlmd.Artifact, index: int) -> mlmd.Artifact:
        artifact = mlmd.Artifact(type_id=self.artifact_type[template.type],
                                 state=mlmd.Artifact.LIVE,
                                 uri=template.uri if self.reuse_uris
                                 else f"{os.path.dirname(template.uri)}/replay-{index}")
        for key, value in template.properties.items():
            artifact.properties[key].CopyFrom(value)
        for key, value in template.custom_properties.items():
            artifact.custom_properties[key].CopyFrom(value)
        if template.type == "PushedModel":
            self.version += 1
            custom = artifact.custom_properties
            custom["pushed"].int_value = 1
            custom["pushed_version"].string_value = str(self.version)
            custom["pushed_destination"].string_value = os.path.join(self.serving_dir,
                                                                     str(self.version))
        return artifact


def build_store(template_path: str, root: Path, runs: int, change_every: int, metadata_url: str = "",
                reuse_uris: bool = False) -> tuple:
    template = Template(template_path)
    config = load_config({"tfx_root": str(root / "runs"), "metadata_url": metadata_url,
                          "pipeline_name": template.pipeline_name}, environ={})
    os.makedirs(config.pipeline_root, exist_ok=True)
    replay = Replayer(template, config.metadata_connection_config(), config.serving_model_dir, reuse_uris)
    for index in range(runs):
        replay.add_run(index, changed=index % change_every == 0)
    for version in range(replay.version - 2, replay.version + 1):  # the newest three versions
        os.makedirs(os.path.join(config.serving_model_dir, str(version)), exist_ok=True)
    return config, template


class CountingStore:
    def __init__(self, store):
        self._store, self.calls = store, 0

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def counted(*args, **kwargs):
            self.calls += 1
            return attribute(*args, **kwargs)
        return counted


def unbatched_runs_list(store, pipeline_name: str) -> int:
    """Node states of every run, one query per run and per execution (the pre-lineage way)."""
    total = 0
    for run in store.get_contexts_by_type("pipeline_run"):
        if not any(p.name == pipeline_name for p in store.get_parent_contexts_by_context(run.id)):
            continue
        for execution in store.get_executions_by_context(run.id):
            contexts = store.get_contexts_by_execution(execution.id)
            store.get_events_by_execution_ids([execution.id])
            total += sum(1 for c in contexts if c.type == "node")
    return total


def _times_ms(fn, repeats: int) -> dict[str, float]:
    """Median and fastest of `repeats` calls: on a busy machine the fastest is the steadier."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1)}


def _cli_ms(args: list[str], cwd: Path, repeats: int) -> dict[str, float]:
    env = {**os.environ, "COLUMNS": "200"}

    def once() -> None:
        result = subprocess.run([TFXSP, *args], cwd=cwd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"tfxsp {' '.join(args)} failed ({result.returncode}):\n{result.stdout}"
                     f"\n{result.stderr}")
    return _times_ms(once, repeats)


def make_template(workdir: Path) -> str:
    print("Making a template: one real `tfxsp run` (about a minute) ...", flush=True)
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [TFXSP, "run", "--set", f"data_root={REPO / 'data' / 'penguins'}",
           "--set", "tfx_root=runs", "--set", "serving_validation=false"]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"tfxsp run failed ({result.returncode}):\n{result.stdout[-3000:]}")
    return str(workdir / "runs" / "pipelines" / "penguin_serving" / "metadata.db")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--change-every", type=int, default=10,
                        help="every Nth run reads changed data; the others reuse the cache")
    parser.add_argument("--template", help="metadata.db of a real run (default: make one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", help="build the store in this folder and keep it")
    parser.add_argument("--out", help="also write the results here as JSON")
    parser.add_argument("--stores", default="sqlite,mariadb", help="comma-separated: sqlite, mariadb")
    args = parser.parse_args()
    stores = [name.strip() for name in args.stores.split(",") if name.strip()]
    unknown = set(stores) - {"sqlite", "mariadb"}
    if unknown or not stores:
        sys.exit(f"--stores: sqlite and/or mariadb, not {', '.join(sorted(unknown)) or 'nothing'}")

    workdir = Path(args.keep or tempfile.mkdtemp(prefix="lineage_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = None
    try:
        template_path = args.template or make_template(workdir / "template")
        results = {}
        for name in stores:
            url = ""
            if name == "mariadb":
                from tools.metadata_server import MetadataServer
                server = MetadataServer().start()
                server.create_database("bench")  # the password from its file, not on command lines
                url = f"{server.url('bench', with_password=False)}?password_file={server.password_file}"
            print(f"\n=== {name} ===")
            results[name] = measure(template_path, workdir / name, url, args)
        if len(results) > 1:
            _side_by_side(results)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _side_by_side(results: dict) -> None:
    names = list(results)
    print(f"\nSide by side (median ms; {', '.join(names)}):")
    print(f"  {'':46s}" + "".join(f"{n:>12s}" for n in names))
    for section in ("in_process", "cli_ms"):
        for query in results[names[0]][section]:
            print(f"  {query:46s}" + "".join(f"{results[n][section][query]['median_ms']:12.1f}" for n in names))
    print(f"  {'build the store (s)':46s}" + "".join(f"{results[n]['build_s']:12.1f}" for n in names))


def measure(template_path: str, workdir: Path, metadata_url: str, args) -> dict:
    """Builds the store (SQLite when metadata_url is empty) and times the queries and commands on it."""
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    config, template = build_store(template_path, workdir / "store", args.runs,
                                   args.change_every, metadata_url)
    build_s = time.perf_counter() - start
    store = open_store(config.metadata_connection_config())
    executions = store.get_executions()
    counts = {"runs": len(runs_api.pipeline_runs(store, config.pipeline_name)),
              "executions": len(executions), "artifacts": len(store.get_artifacts()),
              "events": len(store.get_events_by_execution_ids([e.id for e in executions]))}
    print(f"Store: {describe_connection(config.metadata_connection_config())}\n  {counts['runs']} runs, "
          f"{counts['executions']} executions, {counts['artifacts']} artifacts, {counts['events']} events "
          f"(replayed from {template_path} in {build_s:.1f} s; "
          f"{len(template.nodes)} nodes per run)")

    def served_trace(s=store):
        artifact, label = lineage.resolve_target(s, "served", config.serving_model_dir)
        return lineage.trace(s, artifact.id, description=label)
    trace = served_trace()
    queries = {
        "runs list (newest 20)": lambda s: runs_api.list_runs(s, config.pipeline_name, 20),
        "runs list (all runs)": lambda s: runs_api.list_runs(s, config.pipeline_name),
        "lineage served": served_trace,
        "models": lambda s: models.list_models(s, config.serving_model_dir),
        "artifacts --type Model": lambda s: artifacts.list_artifacts(s, "Model", None),
        "unbatched runs list (all, before)": lambda s: unbatched_runs_list(
            s, config.pipeline_name),
    }
    in_process = {}
    for name, query in queries.items():
        counting = CountingStore(store)
        query(counting)
        in_process[name] = {**_times_ms(lambda q=query: q(store), args.repeats),
                            "mlmd_calls": counting.calls}
    base = ["--set", f"tfx_root={workdir / 'store' / 'runs'}",
            "--set", f"pipeline_name={config.pipeline_name}"] + \
        (["--set", f"metadata_url={metadata_url}"] if metadata_url else [])
    commands = {
        "tfxsp --help (process floor)": ["--help"],
        "tfxsp runs list": ["runs", "list", *base],
        "tfxsp runs list --limit 0": ["runs", "list", "--limit", "0", *base],
        "tfxsp runs list --limit 0 --format json": ["runs", "list", "--limit", "0",
                                                    "--format", "json", *base],
        "tfxsp lineage served": ["lineage", "served", *base],
        "tfxsp lineage served --format json": ["lineage", "served", "--format", "json",
                                               *base],
        "tfxsp lineage served --format html": ["lineage", "served", "--format", "html",
                                               "--output", str(workdir / "served.html"),
                                               *base],
        "tfxsp models": ["models", *base],
    }
    cli = {name: _cli_ms(cmd, workdir, args.repeats) for name, cmd in commands.items()}
    load = os.getloadavg()[0]

    print(f"\nIn process, {args.repeats} times (load average {load:.1f} on "
          f"{os.cpu_count()} CPUs):{'median':>13s} {'fastest':>9s}")
    for name, result in in_process.items():
        print(f"  {name:38s} {result['median_ms']:9.1f} ms {result['min_ms']:7.1f} ms "
              f"{result['mlmd_calls']:6d} MLMD calls")
    print(f"  (the served trace: {len(trace.nodes)} nodes, {len(trace.edges)} edges)")
    print(f"\nCommands, a new process each, {args.repeats} times:{'median':>21s} "
          f"{'fastest':>9s}")
    for name, result in cli.items():
        print(f"  {name:46s} {result['median_ms']:9.1f} ms {result['min_ms']:7.1f} ms")
    return {"store": counts, "build_s": round(build_s, 1), "repeats": args.repeats,
            "load_average": round(load, 2), "cpus": os.cpu_count(),
            "in_process": in_process, "cli_ms": cli,
            "trace": {"nodes": len(trace.nodes), "edges": len(trace.edges)}}


if __name__ == "__main__":
    main()
