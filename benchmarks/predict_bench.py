"""`tfxsp predict` benchmark (issue 14): rows/s of batch scoring a CSV via local (the SavedModel in the tfxsp
process), gRPC and REST (the embedded model server), beside the raw batched call of the same signature in this
process, on the same rows, in one run. Goal: local at least half the raw rate.

The model is a real pipeline run's (one `tfxsp run` on the bundled penguins, about three minutes, or --tfx-root
of an earlier one); the rows are the project's synthetic penguins (data/generate_synthetic.py). The raw rate is
the signature called on batches of --batch-size already made into tensors (the model's own cost); each `tfxsp
predict` rate is its scoring loop (read, parse, score, write; its own summary), and the command's wall time
(Python and TensorFlow start, model load) is shown beside it. Peak RSS: the tfxsp process (at --rows and at a
tenth of them: streaming keeps it flat) and the model server.

    .venv/bin/python benchmarks/predict_bench.py [--rows 100000] [--tfx-root DIR] [--out predict_bench.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TFXSP = str(Path(sys.executable).with_name("tfxsp"))


def _make_run(workdir: Path) -> Path:
    print("Training a model: one real `tfxsp run` on the bundled penguins ...", flush=True)
    tfx_root = workdir / "runs"
    result = subprocess.run([TFXSP, "run", "--set", f"data_root={REPO / 'data' / 'penguins'}", "--set",
                             f"tfx_root={tfx_root}", "--set", "serving_validation=false"], cwd=workdir,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"tfxsp run failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return tfx_root


def _rows_file(workdir: Path, rows: int) -> tuple[str, int]:
    from data import generate_synthetic
    count, paths = generate_synthetic.generate(str(workdir / f"rows-{rows}"), factor=math.ceil(rows / 344), shards=1)
    return paths[0], count


def _sets(tfx_root: Path, **more: object) -> list[str]:
    items = {"tfx_root": tfx_root, "data_root": REPO / "data" / "penguins", **more}
    return [a for k, v in items.items() for a in ("--set", f"{k}={v}")]


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _predict_with_rss(csv_path: str, out: str, sets: list[str], *extra: str) -> dict:
    """`tfxsp predict`'s JSON summary, its wall time and its peak RSS (its rusage, read as it is reaped; stderr goes
    to a file so that neither pipe can fill while the other is read)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen([TFXSP, "predict", csv_path, "-o", out, "--format", "json", *extra, *sets],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            stderr.seek(0)
            sys.exit(f"tfxsp predict {' '.join(extra)} failed ({code}):\n{stderr.read()[-3000:]}")
    summary = json.loads(stdout)
    summary.update(wall_s=round(wall, 2), peak_rss_mb=round(usage.ru_maxrss / 1024, 1))
    return summary


def _raw_rate(tfx_root: Path, csv_path: str, batch_size: int, repeats: int) -> tuple[float, int]:
    """rows/s of the raw serving signature on the file's rows, already batched into tensors; and the version."""
    import tensorflow as tf
    from ml_metadata import metadata_store

    from pipeline.config import load_config
    from pipeline.metadata import models
    from pipeline.modules import signatures
    from pipeline.scoring import reader, target
    config = load_config({"tfx_root": str(tfx_root), "data_root": str(REPO / "data" / "penguins")}, environ={})
    store = metadata_store.MetadataStore(config.metadata_connection_config())
    served = next(m for m in models.list_models(store, config.serving_model_dir) if m.served)
    scored = target.describe(store, int(served.version), served.destination)
    function = tf.saved_model.load(served.destination).signatures[signatures.RAW_SIGNATURE]
    columns = {c.name: (c.internal, signatures.raw_input_dtype(c)) for c in scored.contract.features}
    rows = reader.CsvRows(csv_path, scored.contract, batch_size)
    batches = [{internal: tf.constant(b.inputs[name], dtype) for name, (internal, dtype) in columns.items()}
               for b in rows]
    rows.close()
    count = sum(int(next(iter(b.values())).shape[0]) for b in batches)
    function(**batches[0])  # traced before timing
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for b in batches:
            function(**b)["probabilities"].numpy()
        best = min(best, time.perf_counter() - started)
    return count / best, int(served.version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--tfx-root", type=Path, default=None, help="an earlier `tfxsp run`'s tfx_root")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="of the raw call (the best is kept)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="predict_bench-"))
    tfx_root = args.tfx_root.resolve() if args.tfx_root else _make_run(workdir)
    csv_path, rows = _rows_file(workdir, args.rows)
    small_path, small_rows = _rows_file(workdir, args.rows // 10)
    print(f"{rows:,} rows in {csv_path} ({os.path.getsize(csv_path) / 1e6:.1f} MB)", flush=True)

    raw, version = _raw_rate(tfx_root, csv_path, args.batch_size, args.repeats)
    from serving import launcher
    results: dict[str, dict] = {"raw": {"rows_per_second": round(raw, 1)}}
    batch = ["--batch-size", str(args.batch_size)]
    results["local"] = _predict_with_rss(csv_path, str(workdir / "local.csv"), _sets(tfx_root), *batch)
    results[f"local ({small_rows:,} rows)"] = _predict_with_rss(small_path, str(workdir / "small.csv"),
                                                                 _sets(tfx_root), *batch)
    from pipeline.config import load_config
    config = load_config({"tfx_root": str(tfx_root)}, environ={})
    with launcher.start_server(config.model_name, config.serving_model_dir, kind="embedded") as server:
        ports = {"grpc_port": server.grpc_port, "rest_port": server.rest_port}
        for via in ("grpc", "rest"):
            results[via] = _predict_with_rss(csv_path, str(workdir / f"{via}.csv"), _sets(tfx_root, **ports),
                                             "--via", via, "--version", str(version), *batch)
        server_rss = _peak_rss_mb(server.process.pid)
    results["server"] = {"peak_rss_mb": round(server_rss, 1)}
    _table(results, raw, rows)
    goal = results["local"]["rows_per_second"] >= raw / 2
    print(f"\nGoal: local at least half the raw rate ({raw / 2:,.0f} rows/s): "
          f"{'met' if goal else 'MISSED'} ({results['local']['rows_per_second'] / raw:.0%} of raw)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "batch_size": args.batch_size, "version": version, "results": results,
                       "goal_local_half_of_raw": goal}, f, indent=2)
        print(f"Wrote {args.out}")


def _table(results: dict, raw: float, rows: int) -> None:
    print(f"\n{'path':<22} {'rows/s':>10} {'of raw':>7} {'wall s':>7} {'peak RSS MB':>12}")
    for name, r in results.items():
        if name == "server":
            continue
        rate = r["rows_per_second"]
        print(f"{name:<22} {rate:>10,.0f} {rate / raw:>7.0%} {r.get('wall_s', float('nan')):>7.1f} "
              f"{r.get('peak_rss_mb', float('nan')):>12.0f}")
    print(f"{'model server':<22} {'':>10} {'':>7} {'':>7} {results['server']['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
