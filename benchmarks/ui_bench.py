"""Server time per page of `tfxsp ui` on an ML Metadata store of many runs, and its time to ready.

    .venv/bin/python benchmarks/ui_bench.py [--runs 200] [--template path/to/metadata.db] [--repeats 5]
        [--keep DIR] [--out results.json]

The store is lineage_bench.py's: one real pipeline run (`--template`, or one this script makes with `tfxsp run`,
about a minute or more) replayed `--runs` times the way TFX writes runs, here with every artifact pointing at the
template's real folders, so that the data, evaluation and training pages read real statistics, metrics and event
files for every run. A real `tfxsp ui` process serves it; every page and its /api/ twin is asked over HTTP on
loopback (one connection, kept alive), `--repeats` times, after one warm-up request.

Beside each page: the time of the ML Metadata reader calls behind it, in this process (the reference: what the
page adds is templates, charts and HTTP), and the 404 page (the floor of a request). Time to ready: from starting
`tfxsp ui` to its first answered /runs page, beside `tfxsp --help` (the floor of any tfxsp process).
Goals: every page under 300 ms, ready under 3 s.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import lineage_bench  # noqa: E402

from pipeline.metadata import evaluations, lineage, models, runs, training  # noqa: E402
from pipeline.metadata import statistics as stats  # noqa: E402
from pipeline.metadata.metrics import eval_metrics  # noqa: E402
from pipeline.metadata.store import open_store  # noqa: E402

TFXSP = str(Path(sys.executable).with_name("tfxsp"))
PAGE_GOAL_MS = 300.0
READY_GOAL_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(connection: http.client.HTTPConnection, path: str) -> tuple[int, int]:
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, len(response.read())


def _times(fn, repeats: int) -> dict[str, float]:
    fn()  # warm-up: the first request opens the store
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1)}


def _start_ui(base: list[str], port: int, cwd: Path) -> tuple[subprocess.Popen, float]:
    """`tfxsp ui` and the seconds until its first /runs page answered."""
    start = time.perf_counter()
    process = subprocess.Popen([TFXSP, "ui", "--port", str(port), *base], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    while True:
        if process.poll() is not None:
            sys.exit(f"tfxsp ui exited {process.returncode}:\n{process.stdout.read()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            status, _ = _get(connection, "/runs")
            connection.close()
            if status == 200:
                return process, time.perf_counter() - start
        except OSError:
            time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--change-every", type=int, default=10)
    parser.add_argument("--template", help="metadata.db of a real run (default: make one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ready-repeats", type=int, default=3)
    parser.add_argument("--keep", help="build the store in this folder and keep it")
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args()

    workdir = Path(args.keep or tempfile.mkdtemp(prefix="ui_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        template_path = args.template or lineage_bench.make_template(workdir / "template")
        config, template = lineage_bench.build_store(template_path, workdir / "store", args.runs,
                                                     args.change_every, reuse_uris=True)
        store = open_store(config.metadata_connection_config())
        all_runs = runs.pipeline_runs(store, config.pipeline_name)
        newest, oldest = all_runs[-1].name, all_runs[0].name
        print(f"Store: {config.metadata_path}: {len(all_runs)} runs, {len(store.get_executions())} executions, "
              f"{len(store.get_artifacts())} artifacts (replayed from {template_path})")
        run = urllib.parse.quote(newest, safe="")
        pages = {
            "runs (page 1)": "/runs",
            "runs (last page)": f"/runs?page={-(-len(all_runs) // 20)}",
            "run": f"/runs/{run}",
            "data": f"/runs/{run}/data",
            "evaluation": f"/runs/{run}/evaluation",
            "training": f"/runs/{run}/training",
            "models": "/models",
            "lineage served": "/lineage/served",
            "compare newest/oldest": f"/compare?a={run}&b={urllib.parse.quote(oldest, safe='')}",
        }

        def detail():
            return runs.show_run(store, config.pipeline_name, newest)

        def outputs(detail_, type_name):
            return [a for ids in detail_.outputs.values() for a in ids if a.type == type_name]
        readers = {  # the metadata/ calls behind each page, in process
            "runs (page 1)": lambda: runs.list_runs(store, config.pipeline_name, 20),
            "runs (last page)": lambda: runs.list_runs(store, config.pipeline_name, 20,
                                                       offset=(-(-len(all_runs) // 20) - 1) * 20),
            "run": detail,
            "data": lambda: [stats.read_statistics(a.uri) for a in outputs(detail(), "ExampleStatistics")],
            "evaluation": lambda: evaluations.evaluation_of(detail()),
            "training": lambda: [training.read_curves(a.uri) for a in outputs(detail(), "ModelRun")],
            "models": lambda: [eval_metrics(m.evaluation_uri) for m in models.list_models(
                store, config.serving_model_dir, with_metrics=False)[:20] if m.evaluation_uri],
            "lineage served": lambda: lineage.trace(
                store, lineage.resolve_target(store, "served", config.serving_model_dir)[0].id),
            "compare newest/oldest": lambda: (detail(), runs.show_run(store, config.pipeline_name, oldest)),
        }
        base = ["--set", f"tfx_root={workdir / 'store' / 'runs'}", "--set", f"pipeline_name={config.pipeline_name}",
                "--set", f"rest_port={free_port()}"]  # no model server there: the models page's live ask fails fast
        floor = []
        for _ in range(args.ready_repeats):
            start = time.perf_counter()
            subprocess.run([TFXSP, "--help"], capture_output=True, check=True)
            floor.append(time.perf_counter() - start)
        ready = []
        for _ in range(args.ready_repeats):
            process, seconds = _start_ui(base, free_port(), workdir)
            ready.append(seconds)
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
        port = free_port()
        process, _ = _start_ui(base, port, workdir)
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            results: dict[str, dict] = {}
            for name, path in pages.items():
                status, size = _get(connection, path)
                if status != 200:
                    sys.exit(f"{path}: HTTP {status}")
                results[name] = {"path": path, "bytes": size,
                                 "page": _times(lambda p=path: _get(connection, p), args.repeats),
                                 "api": _times(lambda p="/api" + path: _get(connection, p), args.repeats),
                                 "reader": _times(readers[name], args.repeats)}
            not_found = _times(lambda: _get(connection, "/no-such-page"), args.repeats)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
        load = os.getloadavg()[0]
        print(f"\nPer request over HTTP, {args.repeats} times after a warm-up (load average {load:.1f} on "
              f"{os.cpu_count()} CPUs); median (fastest) ms")
        print(f"  {'page':24s} {'HTML page':>16s} {'/api JSON':>16s} {'metadata reader':>18s} {'KB':>6s}")
        for name, r in results.items():
            print(f"  {name:24s} {r['page']['median_ms']:8.1f} ({r['page']['min_ms']:5.1f}) "
                  f"{r['api']['median_ms']:8.1f} ({r['api']['min_ms']:5.1f}) "
                  f"{r['reader']['median_ms']:10.1f} ({r['reader']['min_ms']:5.1f}) {r['bytes'] / 1024:6.0f}")
        print(f"  {'404 page (floor)':24s} {not_found['median_ms']:8.1f} ({not_found['min_ms']:5.1f})")
        slowest = max(results.items(), key=lambda kv: kv[1]["page"]["median_ms"])
        print(f"\nTime to ready (start to first /runs page), {args.ready_repeats} times: median "
              f"{statistics.median(ready):.2f} s, fastest {min(ready):.2f} s; `tfxsp --help` (process floor): "
              f"median {statistics.median(floor):.2f} s")
        page_ok = slowest[1]["page"]["median_ms"] < PAGE_GOAL_MS
        ready_ok = statistics.median(ready) < READY_GOAL_S
        print(f"Goal: every page < {PAGE_GOAL_MS:.0f} ms: {'met' if page_ok else 'NOT met'} (slowest: {slowest[0]}, "
              f"{slowest[1]['page']['median_ms']:.1f} ms); ready < {READY_GOAL_S:.0f} s: "
              f"{'met' if ready_ok else 'NOT met'}")
        if args.out:
            Path(args.out).write_text(json.dumps({
                "runs": len(all_runs), "repeats": args.repeats, "load_average": round(load, 2),
                "pages": results, "not_found": not_found, "ready_s": [round(r, 3) for r in ready],
                "help_s": [round(f, 3) for f in floor], "page_goal_met": page_ok, "ready_goal_met": ready_ok},
                indent=2) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
