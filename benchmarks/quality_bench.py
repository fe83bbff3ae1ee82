"""How good the pipeline's models are on data nobody here wrote: the served model's metric on the held-out (eval)
split, beside a scikit-learn baseline fitted on the same train split in the same run.

    .venv/bin/python benchmarks/quality_bench.py [--datasets breast_cancer,wine,diabetes,penguins_raw,messy]
        [--out results.json] [--keep DIR]

Each dataset runs through `tfxsp run` with the default settings (only the label named), in a scratch folder; the
served model (the embedded TF Serving-compatible server over the pushed version) is asked over REST with the eval
rows as plain JSON. The baseline is the textbook one: standardized numbers (mean-imputed) and one-hot categories
(a "missing" category), then logistic regression (classification) or ridge regression (regression), fitted on the
same train rows, scored on the same eval rows. Goal: accuracy at least the baseline's - 0.02; RMSE at most 1.1 times
the baseline's.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ml_metadata import metadata_store  # noqa: E402

from data import messy, public_datasets  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.dataset import analysis, examples  # noqa: E402
from pipeline.metadata.report import collect  # noqa: E402
from pipeline.metadata.runs import latest_run_id  # noqa: E402
from serving import launcher  # noqa: E402

TFXSP = str(Path(sys.executable).with_name("tfxsp"))


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_dataset(name: str, workdir: Path) -> dict:
    folder = workdir / name
    data = str(messy.write(folder / "data")) if name == "messy" else public_datasets.write(name, str(folder / "data"))
    label = messy.MESSY_LABEL if name == "messy" else public_datasets.LABELS[name][0]
    settings = {"data_root": data, "label": label, "tfx_root": str(folder / "runs"), "model_name": name,
                "grpc_port": str(_free_port()), "rest_port": str(_free_port())}
    start = time.perf_counter()
    result = subprocess.run([TFXSP, "run", *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")]],
                            cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        return {"dataset": name, "error": f"tfxsp run exited {result.returncode}: {result.stderr[-2000:]}"}
    config = load_config(settings, environ={})
    contract = analysis.analyze(config).contract
    store = metadata_store.MetadataStore(config.metadata_connection_config())
    report = collect(store, latest_run_id(store, config.pipeline_name))
    train = [(r, y) for r, y in examples.rows_and_labels(report.examples_uri, contract, "train") if y is not None]
    test = [(r, y) for r, y in examples.rows_and_labels(report.examples_uri, contract, "eval") if y is not None]
    served = _served(config, [r for r, _ in test], contract.task)
    baseline = _baseline(contract, train, test)
    truth = [y for _, y in test]
    row = {"dataset": name, "task": contract.task, "rows": len(train) + len(test), "eval_rows": len(test),
           "pipeline_seconds": round(seconds, 1)}
    if contract.task == "classification":
        row.update(metric="accuracy", served=_accuracy(served, truth), baseline=_accuracy(baseline, truth),
                   majority=contract.baseline)
        row["met"] = row["served"] >= row["baseline"] - 0.02
    else:
        row.update(metric="rmse", served=_rmse(served, truth), baseline=_rmse(baseline, truth),
                   mean_predictor=contract.baseline)
        row["met"] = row["served"] <= 1.1 * row["baseline"]
    return row


def _served(config, rows: list[dict], task: str) -> list:
    output = "classes" if task == "classification" else "predictions"
    with launcher.start_server(config.model_name, config.serving_model_dir, kind="embedded",
                               grpc_port=_free_port(), rest_port=_free_port()) as server:
        body = json.dumps({"signature_name": "serving_raw", "instances": rows}).encode()
        request = urllib.request.Request(f"{server.rest_url}/v1/models/{config.model_name}:predict", data=body)
        with urllib.request.urlopen(request, timeout=120) as response:
            # TF Serving's row format: one object per row, or the bare value when the signature has one output
            # (regression serves `predictions` alone).
            return [p[output] if isinstance(p, dict) else p for p in json.loads(response.read())["predictions"]]


def _baseline(contract, train, test) -> list:
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c.name for c in contract.features if isinstance(train[0][0][c.name], int | float)]
    categorical = [c.name for c in contract.features if c.name not in numeric]

    def matrix(pairs):
        return np.array([[r[n] for n in numeric] + [r[n] or "(missing)" for n in categorical] for r, _ in pairs],
                        dtype=object)
    columns = ColumnTransformer([
        ("numbers", make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()),
         list(range(len(numeric)))),
        ("categories", OneHotEncoder(handle_unknown="ignore"), list(range(len(numeric), len(numeric) +
                                                                          len(categorical))))])
    model = LogisticRegression(max_iter=5000) if contract.task == "classification" else Ridge()
    x_train = matrix(train)
    x_train[:, :len(numeric)] = x_train[:, :len(numeric)].astype(float)
    fitted = make_pipeline(columns, model).fit(x_train, [y for _, y in train])
    x_test = matrix(test)
    x_test[:, :len(numeric)] = x_test[:, :len(numeric)].astype(float)
    return list(fitted.predict(x_test))


def _accuracy(predicted, truth) -> float:
    return sum(str(p) == str(y) for p, y in zip(predicted, truth)) / len(truth)


def _rmse(predicted, truth) -> float:
    return math.sqrt(sum((float(p) - y) ** 2 for p, y in zip(predicted, truth)) / len(truth))


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/quality_bench.py")
    parser.add_argument("--datasets", default="breast_cancer,wine,diabetes,penguins_raw,messy")
    parser.add_argument("--out", default=None)
    parser.add_argument("--keep", default=None, help="work in this folder and keep it")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="quality_bench_"))
    results = []
    for name in args.datasets.split(","):
        print(f"{name} …", flush=True)
        results.append(run_dataset(name, workdir))
        print(json.dumps(results[-1]), flush=True)
    print(f"\n{'dataset':<14} {'task':<15} {'rows':>5} {'metric':<9} {'served':>8} {'sklearn':>8} {'goal':<22} met")
    for r in results:
        if "error" in r:
            print(f"{r['dataset']:<14} ERROR {r['error'][:200]}")
            continue
        goal = "served >= sklearn - 0.02" if r["metric"] == "accuracy" else "served <= 1.1 x sklearn"
        print(f"{r['dataset']:<14} {r['task']:<15} {r['rows']:>5} {r['metric']:<9} {r['served']:>8.4f} "
              f"{r['baseline']:>8.4f} {goal:<22} {'yes' if r['met'] else 'NO'}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
