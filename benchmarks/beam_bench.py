"""Beam runners on a synthetic dataset: examples/s of ExampleGen, StatisticsGen and Transform for the
in-memory DirectRunner (`direct`) and the multi-processing one (`direct-multiprocess`).

    .venv/bin/python benchmarks/beam_bench.py [--factor 100] [--workers 2] [--out results.json]

The data is data/generate_synthetic.py's, FACTOR times the 344 penguin rows (34,400 by default),
written to a scratch folder. Each runner gets one cold `tfxsp run` (a fresh pipeline root, so every
component executes; serving validation off) as a user would start it, and the per-component
durations are read back from ML Metadata with pipeline/metadata/report.py: an execution's duration is
from its registration to its publication, so it includes TFX's own driver and publisher work, not
only the Beam job. Examples/s = the rows each component processes / that duration: every row for
ExampleGen (read and split) and StatisticsGen (both splits); for Transform, the train split that it
analyzes plus both splits that it transforms.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # this process reads MLMD and statistics
warnings.filterwarnings("ignore")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TFXSP = Path(sys.executable).with_name("tfxsp")
COMPONENTS = ("CsvExampleGen", "StatisticsGen", "Transform")


def run_pipeline(workdir: Path, data_dir: Path, runner: str, workers: int) -> dict:
    overrides = {"data_root": str(data_dir), "tfx_root": str(workdir / "runs"),
                 "beam_runner": runner, "beam_direct_num_workers": str(workers),
                 "serving_validation": "false"}
    cmd = [str(TFXSP), "run"] + [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    start = time.monotonic()
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if result.returncode not in (0, 3):  # 3: not blessed, which does not matter here
        sys.exit(f"{' '.join(cmd)} failed with exit {result.returncode}:\n"
                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")

    from pipeline.config import load_config
    from pipeline.metadata.report import collect
    from pipeline.metadata.runs import latest_run_id
    from pipeline.metadata.store import open_store
    config = load_config(overrides, environ={})
    store = open_store(config.metadata_connection_config())
    report = collect(store, latest_run_id(store, config.pipeline_name))
    seconds = {n.node_id: n.seconds for n in report.nodes}
    states = {n.node_id: n.state for n in report.nodes}
    assert all(states[c] == "complete" for c in COMPONENTS), states
    return {"wall_s": wall, "seconds": seconds, "splits": split_sizes(config.pipeline_root)}


def split_sizes(pipeline_root: str) -> dict:
    """Rows per split, as ExampleGen wrote them (from StatisticsGen's num_examples)."""
    import glob

    from tensorflow_metadata.proto.v0 import statistics_pb2
    sizes = {}
    for path in glob.glob(os.path.join(pipeline_root, "StatisticsGen", "statistics", "*",
                                       "Split-*", "FeatureStats.pb")):
        with open(path, "rb") as f:
            stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
        sizes[os.path.basename(os.path.dirname(path))[len("Split-"):]] = \
            stats.datasets[0].num_examples
    return sizes


def examples_per_second(result: dict) -> dict:
    total = sum(result["splits"].values())
    rows = {"CsvExampleGen": total, "StatisticsGen": total,
            "Transform": result["splits"]["train"] + total}
    return {c: rows[c] / result["seconds"][c] for c in COMPONENTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=100, help="multiple of the penguin rows")
    parser.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                        help="worker processes of direct-multiprocess (default: CPUs, at least 2)")
    parser.add_argument("--runners", default="direct,direct-multiprocess")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "data"))
    import generate_synthetic

    results = {}
    with tempfile.TemporaryDirectory(prefix="beam-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        rows, _ = generate_synthetic.generate(str(data_dir), factor=args.factor)
        print(f"{rows} synthetic rows ({args.factor}x penguins) in {data_dir}; "
              f"{os.cpu_count()} CPUs", flush=True)
        for runner in args.runners.split(","):
            workdir = Path(tmp) / runner
            workdir.mkdir()
            print(f"  tfxsp run --set beam_runner={runner}"
                  + (f" --set beam_direct_num_workers={args.workers}" if runner != "direct" else "")
                  + " ...", flush=True)
            results[runner] = run_pipeline(workdir, data_dir, runner,
                                           args.workers if runner != "direct" else 1)
            results[runner]["examples_per_s"] = examples_per_second(results[runner])

    print(f"\n{'component':<15}" + "".join(f"{r + ' (s)':>26}{'ex/s':>9}" for r in results))
    for component in COMPONENTS:
        print(f"{component:<15}" + "".join(
            f"{r['seconds'][component]:>26.1f}{r['examples_per_s'][component]:>9.0f}"
            for r in results.values()))
    print(f"{'whole run':<15}" + "".join(f"{r['wall_s']:>26.1f}{'':>9}" for r in results.values()))
    if {"direct", "direct-multiprocess"} <= results.keys():
        speedup = {c: results["direct-multiprocess"]["examples_per_s"][c]
                   / results["direct"]["examples_per_s"][c] for c in COMPONENTS}
        print("multiprocess / in-memory: " + ", ".join(f"{c} {s:.2f}x" for c, s in speedup.items()))
        results["speedup"] = speedup
    if args.out:
        args.out.write_text(json.dumps({"factor": args.factor, "rows": rows,
                                        "workers": args.workers, "cpus": os.cpu_count(),
                                        "results": results}, indent=2))


if __name__ == "__main__":
    main()
