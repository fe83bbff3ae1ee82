"""Training throughput (examples/s) of the Trainer under each tf.distribute strategy, here.

    .venv/bin/python benchmarks/train_bench.py [--steps 600] [--epochs 6] [--repeats 1]
                                               [--pipeline-root DIR] [--out results.json]

Each configuration trains the penguin model with TFX's own Trainer executor and the project's
run_fn (tools/trainer_driver.py), in a fresh process, on the Transform output of one real pipeline
run (made first in a scratch folder unless --pipeline-root names one). The figure is the Trainer's
own count: examples per second over every epoch but the first (which includes tracing and, for the
cluster strategies, the cluster's start), from its training summary; "all epochs" is the figure
with the first epoch included. The batch is 32 per replica, so the global batch grows with the
replicas (weak scaling). multi_worker_mirrored runs with 1 and with 2 worker processes, and the
ratio 2 workers / 1 worker is reported; parameter_server with 1 and 2 workers and 1 PS. The tpu
strategy needs a TPU and is not measured.

Processes that start TensorFlow servers run in a network namespace of their own where available
(pipeline.training.network.isolated_argv), so those servers are reachable over loopback only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.training.network import isolated_argv  # noqa: E402

CONFIGS = [  # (label, strategy, settings)
    ("default", "default", {}),
    ("one_device", "one_device", {}),
    ("mirrored, 2 logical CPUs", "mirrored", {"cpu_replicas": "2"}),
    ("central_storage, 2 logical CPUs", "central_storage", {"cpu_replicas": "2"}),
    ("multi_worker_mirrored, 1 worker", "multi_worker_mirrored", {"workers": "1"}),
    ("multi_worker_mirrored, 2 workers", "multi_worker_mirrored", {"workers": "2"}),
    ("parameter_server, 1 worker + 1 PS", "parameter_server",
     {"workers": "1", "parameter_servers": "1"}),
    ("parameter_server, 2 workers + 1 PS", "parameter_server",
     {"workers": "2", "parameter_servers": "1"}),
    ("model_parallel, 2 devices", "model_parallel", {"model_parallel_devices": "2"}),
    ("hybrid_parallel, 2 x 2 devices", "hybrid_parallel",
     {"data_parallel_replicas": "2", "model_parallel_devices": "2"}),
]
# The wide model (--wide WIDTH): hidden layers WIDTH units wide, where splitting the kernels matters.
WIDE = [("default", "default", {}), ("mirrored, 2 logical CPUs", "mirrored", {"cpu_replicas": "2"}),
        ("model_parallel, 2 devices", "model_parallel", {"model_parallel_devices": "2"}),
        ("hybrid_parallel, 2 x 2 devices", "hybrid_parallel",
         {"data_parallel_replicas": "2", "model_parallel_devices": "2"})]
CLUSTER = ("multi_worker_mirrored", "parameter_server")


def _run(argv: list[str], cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed with exit {result.returncode}:\n"
                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def _pipeline(workdir: Path) -> str:
    """The real pipeline up to Transform; returns its pipeline root."""
    _run([sys.executable, "-m", "tools.trainer_driver", "pipeline", "--tfx-root",
          str(workdir / "runs"), "--to-node", "Transform",
          f"--set=data_root={REPO / 'data' / 'penguins'}"], workdir)
    return str(workdir / "runs" / "pipelines" / "penguin_serving")


def _train(pipeline_root: str, strategy: str, settings: dict[str, str], steps: int, epochs: int,
           workdir: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix="train-", dir=workdir))
    sets = {"train_steps": str(steps), "epochs": str(epochs), **settings}
    argv = [sys.executable, "-m", "tools.trainer_driver", "train", "--pipeline-root",
            pipeline_root, "--out", str(out), "--strategies", strategy,
            *[f"--set={k}={v}" for k, v in sets.items()]]
    start = time.monotonic()
    _run(isolated_argv(argv) if strategy in CLUSTER else argv, workdir)
    wall = time.monotonic() - start
    training = out / strategy / "model_run" / "training"
    chief = "worker-0" if strategy == "multi_worker_mirrored" else "chief-0"
    summary = json.loads((training / f"{chief}.json").read_text())
    distribution = json.loads((out / strategy / "model_run" / "distribution.json").read_text())
    per_device = distribution["variable_bytes_per_device"]
    return {"max_variable_bytes_per_device": max(per_device.values()),
            "devices_holding_variables": len(per_device),
            # One copy of the model: the parts of a variable tile it.
            "total_variable_bytes": sum(p["bytes"] for v in distribution["variables"] for p in v["parts"]),
            "examples_per_second": summary["steady_examples_per_second"],
            "all_epochs_examples_per_second": summary["examples_per_second"],
            "replicas_in_sync": summary["num_replicas_in_sync"], "workers": summary["workers"],
            "global_batch": summary["global_batch_size"], "steps": summary["steps"],
            "train_seconds": summary["train_seconds"], "process_seconds": wall,
            "val_accuracy": summary["history"]["val_accuracy"][-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps per run")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration (median)")
    parser.add_argument("--pipeline-root", help="an existing pipeline root with Transform outputs")
    parser.add_argument("--only", help="comma-separated strategies to measure")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--wide", type=int, default=0, metavar="WIDTH",
                        help="measure only the wide model: default, mirrored, model_parallel, "
                             "hybrid_parallel with hidden layers WIDTH wide (e.g. 2048)")
    args = parser.parse_args()
    configs = CONFIGS
    if args.wide:
        configs = [(f"{label}, width {args.wide}", strategy, {**settings, "hidden_units": str(args.wide)})
                   for label, strategy, settings in WIDE]

    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        workdir = Path(tmp)
        pipeline_root = args.pipeline_root or _pipeline(workdir)
        results = {}
        for label, strategy, settings in configs:
            if args.only and strategy not in args.only.split(","):
                continue
            runs = [_train(pipeline_root, strategy, settings, args.steps, args.epochs, workdir)
                    for _ in range(args.repeats)]
            result = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            result["strategy"], result["settings"] = strategy, settings
            results[label] = result
            print(f"  {label}: {result['examples_per_second']:.0f} examples/s", flush=True)

    ratio = None
    one, two = (results.get(f"multi_worker_mirrored, {n}") for n in ("1 worker", "2 workers"))
    if one and two:
        ratio = two["examples_per_second"] / one["examples_per_second"]
    ps_one, ps_two = (results.get(f"parameter_server, {n} + 1 PS") for n in
                      ("1 worker", "2 workers"))
    ps_ratio = (ps_two["examples_per_second"] / ps_one["examples_per_second"]
                if ps_one and ps_two else None)

    load = os.getloadavg()
    print(f"\nTraining throughput, {os.cpu_count()} CPUs (load average now {load[0]:.1f}, "
          f"{load[2]:.1f} over 15 min), batch 32 per replica, {args.steps} steps in "
          f"{args.epochs} epochs, median of {args.repeats}")
    header = (f"{'strategy':<44}{'replicas':>9}{'workers':>8}{'batch':>6}"
              f"{'examples/s':>12}{'all epochs':>12}{'val acc':>9}{'var MB/device':>15}{'devices':>8}")
    print(header)
    print("-" * len(header))
    for label, r in results.items():
        print(f"{label:<44}{r['replicas_in_sync']:>9.0f}{r['workers']:>8.0f}"
              f"{r['global_batch']:>6.0f}{r['examples_per_second']:>12.0f}"
              f"{r['all_epochs_examples_per_second']:>12.0f}{r['val_accuracy']:>9.3f}"
              f"{r['max_variable_bytes_per_device'] / 2**20:>15.3f}{r['devices_holding_variables']:>8.0f}")
    reference = next((r for label, r in results.items() if r["strategy"] == "default"), None)
    for label, r in results.items():
        if reference and r["strategy"] in ("model_parallel", "hybrid_parallel"):
            print(f"{label}: {r['max_variable_bytes_per_device'] / reference['max_variable_bytes_per_device']:.2f}x "
                  "the variable bytes per device of default, "
                  f"{r['examples_per_second'] / reference['examples_per_second']:.2f}x its examples/s")
    if ratio is not None:
        print(f"multi_worker_mirrored 2 workers / 1 worker: {ratio:.2f}x examples/s")
    if ps_ratio is not None:
        print(f"parameter_server 2 workers / 1 worker: {ps_ratio:.2f}x examples/s")
    if args.out:
        args.out.write_text(json.dumps({
            "examples_per_second": results, "multi_worker_mirrored_2_over_1": ratio,
            "parameter_server_2_over_1": ps_ratio, "steps": args.steps, "epochs": args.epochs,
            "repeats": args.repeats, "cpus": os.cpu_count(), "load_average": load}, indent=2))


if __name__ == "__main__":
    main()
