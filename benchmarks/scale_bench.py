"""Cost as the data grows: `tfxsp run` end to end on 10 thousand to 10 million synthetic rows.

    .venv/bin/python benchmarks/scale_bench.py [--sizes 10k,100k,1m,10m] [--multiprocess-at 1m]
                                               [--workers 2] [--out results.json]

The rows are data/generate_synthetic.py's (the bundled penguin schema; 1M rows is a CSV of about 45 MB), written
to a scratch folder in 4 files. Each size gets one cold `tfxsp run` with the default configuration (a fresh
pipeline root, so every component executes; the model server the run starts and the serving validation included)
on free ports. `--multiprocess-at` sizes also run with `beam_runner=direct-multiprocess`.

Reported per run:
- each component's wall time, from ML Metadata (registration to publication, so TFX's driver and publisher
  work are in it), and "outside components": the run's wall time minus theirs (interpreter start, TFX imports,
  the preflight over the CSV, the summary);
- the peak RSS of every process involved, by role: the `tfxsp run` process itself, Beam workers, training
  workers, the model server, and anything else the run started. It is sampled from the process tree every
  0.2 s, so a process that lives less than that can be missed; `largest (rusage)` is the kernel's own peak over
  every descendant the run waited for, which misses nothing that was reaped;
- the examples the Trainer saw (its steps x the global batch), from the run's summary.

Growth: the 1M run's time over the 100k run's (the goal is at most 10x).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TFXSP = Path(sys.executable).with_name("tfxsp")
COMPONENTS = ("CsvExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform", "Trainer",
              "Evaluator", "Pusher", "ServingValidator")
SUFFIXES = {"k": 1_000, "m": 1_000_000}


def parse_size(text: str) -> int:
    text = text.strip().lower()
    if text[-1:] in SUFFIXES:
        return int(float(text[:-1]) * SUFFIXES[text[-1]])
    return int(text)


def label(rows: int) -> str:
    for suffix, scale in (("M", 1_000_000), ("k", 1_000)):
        if rows >= scale and rows % scale == 0:
            return f"{rows // scale}{suffix}"
    return str(rows)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def role(process: psutil.Process, root_pid: int) -> str:
    """Which part of the run a process is, from its command line."""
    if process.pid == root_pid:
        return "tfxsp run"
    try:
        command = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "other"
    if "-m serving" in command or "tensorflow_model_server" in command:
        return "model server"
    if "pipeline.training.worker" in command:
        return "training worker"
    if "apache_beam" in command or "sdk_worker" in command:
        return "Beam worker"
    return "other: " + Path(command.split()[0]).name if command else "other"


class RssSampler(threading.Thread):
    """The peak RSS (MB) seen for each process of a process tree, grouped by role, until stopped."""

    def __init__(self, root_pid: int, interval_s: float = 0.2):
        super().__init__(daemon=True)
        self.root_pid, self.interval_s = root_pid, interval_s
        self.peak_by_role: dict[str, float] = {}
        self.processes_by_role: dict[str, set[int]] = {}
        self._done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
        except psutil.NoSuchProcess:
            return
        while not self._done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in tree:
                try:
                    rss = process.memory_info().rss / 2**20
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                name = role(process, self.root_pid)
                self.peak_by_role[name] = max(self.peak_by_role.get(name, 0.0), rss)
                self.processes_by_role.setdefault(name, set()).add(process.pid)
            self._done.wait(self.interval_s)

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_pipeline(workdir: Path, data_dir: Path, runner: str, workers: int) -> dict:
    overrides = {"data_root": str(data_dir), "tfx_root": str(workdir / "runs"),
                 "grpc_port": str(free_port()), "rest_port": str(free_port())}
    if runner != "direct":
        overrides.update(beam_runner=runner, beam_direct_num_workers=str(workers))
    cmd = [str(TFXSP), "run"] + [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore", "NO_COLOR": "1",
           "COLUMNS": "200"}
    log_path = workdir / "tfxsp-run.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = RssSampler(process.pid)
        sampler.start()
        returncode = process.wait()
        sampler.stop()
    wall = time.monotonic() - start
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    output = log_path.read_text(errors="replace")
    if returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed with exit {returncode}:\n{output[-4000:]}")

    from pipeline.config import load_config
    from pipeline.metadata.report import collect
    from pipeline.metadata.runs import latest_run_id
    from pipeline.metadata.store import open_store
    config = load_config(overrides, environ={})
    store = open_store(config.metadata_connection_config())
    report = collect(store, latest_run_id(store, config.pipeline_name))
    seconds = {n.node_id: n.seconds for n in report.nodes}
    states = {n.node_id: n.state for n in report.nodes}
    assert all(states.get(c) == "complete" for c in COMPONENTS), states
    seen = re.search(r"Trainer saw: ([\d,]+) examples", output)
    return {"wall_s": round(wall, 1), "seconds": {c: round(seconds[c], 1) for c in COMPONENTS},
            "outside_components_s": round(wall - sum(seconds[c] for c in COMPONENTS), 1),
            "peak_rss_mb": {k: round(v) for k, v in sorted(sampler.peak_by_role.items())},
            "processes": {k: len(v) for k, v in sorted(sampler.processes_by_role.items())},
            # ru_maxrss of RUSAGE_CHILDREN: the largest reaped descendant, this whole script's (so a max over runs
            # so far, reported only when this run raised it).
            "largest_rusage_mb": round(largest / 1024) if largest > before else None,
            "trainer_examples_seen": int(seen.group(1).replace(",", "")) if seen else None}


def print_table(results: dict[str, dict]) -> None:
    names = list(results)
    width = max(12, *(len(n) + 2 for n in names))
    print(f"\n{'':<22}" + "".join(f"{n:>{width}}" for n in names))
    for component in COMPONENTS:
        print(f"{component + ' (s)':<22}" + "".join(f"{results[n]['seconds'][component]:>{width}.1f}" for n in names))
    print(f"{'outside components (s)':<22}"
          + "".join(f"{results[n]['outside_components_s']:>{width}.1f}" for n in names))
    print(f"{'end to end (s)':<22}" + "".join(f"{results[n]['wall_s']:>{width}.1f}" for n in names))
    roles = sorted({r for n in names for r in results[n]["peak_rss_mb"]})
    for name in roles:
        print(f"{('peak MB ' + name)[:22]:<22}"
              + "".join(f"{results[n]['peak_rss_mb'].get(name, '-'):>{width}}" for n in names))
    print(f"{'Trainer saw (examples)':<22}"
          + "".join(f"{results[n]['trainer_examples_seen'] or '-':>{width}}" for n in names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k,1m,10m", help="row counts, e.g. 10k,100k,1m,10m")
    parser.add_argument("--multiprocess-at", default="1m",
                        help="sizes also run with beam_runner=direct-multiprocess ('' for none)")
    parser.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                        help="worker processes of direct-multiprocess (default: CPUs, at least 2)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep", type=Path, help="keep the data and pipeline roots under this folder")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    multiprocess = {parse_size(s) for s in args.multiprocess_at.split(",") if s}

    from data import generate_synthetic

    results: dict[str, dict] = {}
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="scale-bench-"))
    print(f"{os.cpu_count()} CPUs; scratch folder {scratch}", flush=True)
    for rows in sizes:
        data_dir = scratch / f"data-{label(rows)}"
        started = time.monotonic()
        generate_synthetic.generate(str(data_dir), rows=rows)
        megabytes = sum(p.stat().st_size for p in data_dir.iterdir()) / 2**20
        print(f"{label(rows)} rows: {megabytes:.0f} MB of CSV in {time.monotonic() - started:.0f} s", flush=True)
        for runner in ["direct"] + (["direct-multiprocess"] if rows in multiprocess else []):
            name = label(rows) + ("" if runner == "direct" else f" {runner}")
            workdir = scratch / name.replace(" ", "-")
            workdir.mkdir(parents=True, exist_ok=True)
            print(f"  tfxsp run on {name} ...", flush=True)
            results[name] = {"rows": rows, "runner": runner, "csv_mb": round(megabytes, 1),
                             **run_pipeline(workdir, data_dir, runner, args.workers)}
            print(f"    {results[name]['wall_s']:.0f} s, peak RSS {results[name]['peak_rss_mb']}", flush=True)
            if args.out:  # written after each run, so a long sweep that is stopped keeps what it measured
                args.out.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))
        if not args.keep:
            for path in sorted(data_dir.iterdir()):
                path.unlink()
    print_table(results)
    by_rows = {r["rows"]: r for r in results.values() if r["runner"] == "direct"}
    if 100_000 in by_rows and 1_000_000 in by_rows:
        growth = by_rows[1_000_000]["wall_s"] / by_rows[100_000]["wall_s"]
        print(f"\n100k -> 1M rows: {growth:.1f}x the time (goal: at most 10x)")
        results["growth_100k_to_1m"] = round(growth, 2)
    if args.out:
        args.out.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
