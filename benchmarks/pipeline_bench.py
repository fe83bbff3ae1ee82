"""Wall time of `tfxsp run`, cold and warm, beside TFX's own penguin example on the same data.

    .venv/bin/python benchmarks/pipeline_bench.py [--repeats 1] [--out results.json]

Cold: a fresh pipeline root (every component executes). Warm: the same command again with nothing
changed (upstream components come from the cache). The comparison is TFX's
`tfx/examples/penguin/penguin_pipeline_local.py`, shipped in the tfx wheel: its own
create_pipeline(...) with the arguments of its __main__ (it reads ~/penguin, so HOME points at a
scratch folder), except two optional components that do not run on this locked stack: its Tuner
(keras-tuner 1.4.8 refuses tf-keras models) and its BulkInferrer (with Keras 3 it fails to reload the
model: "Could not find variable"). Both pipelines then use tf-keras. It needs the penguin data in its
processed form (numeric columns renamed culmen_*, integer species, rows with missing values dropped;
plus an unlabelled copy for its BulkInferrer), which this script derives from the same
data/penguins/penguins.csv that our pipeline reads.
"""
from __future__ import annotations

import argparse
import csv
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
DATA = REPO / "data" / "penguins" / "penguins.csv"
TFXSP = Path(sys.executable).with_name("tfxsp")


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.monotonic()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed with exit {result.returncode}:\n"
                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed


def _processed_penguins(data_dir: Path) -> int:
    """The example's input format, from our raw CSV: complete rows, integer label, culmen_* names,
    in data/labelled (for training) and, without the label, in data/unlabelled (for its
    BulkInferrer)."""
    species_ids = {"Adelie": 0, "Chinstrap": 1, "Gentoo": 2}
    columns = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    header = ["culmen_length_mm", "culmen_depth_mm", "flipper_length_mm", "body_mass_g"]
    with open(DATA, newline="") as src:
        rows = [r for r in csv.DictReader(src) if all(r[c] for c in columns)]
    for split, with_label in (("labelled", True), ("unlabelled", False)):
        (data_dir / split).mkdir(parents=True, exist_ok=True)
        with open(data_dir / split / "penguins_processed.csv", "w", newline="") as dst:
            writer = csv.writer(dst)
            writer.writerow((["species"] if with_label else []) + header)
            for r in rows:
                writer.writerow(([species_ids[r["species"]]] if with_label else [])
                                + [float(r[c]) for c in columns])
    return len(rows)


# The example's __main__, as shipped, with its Tuner and BulkInferrer off (see the docstring).
_RUN_PENGUIN_EXAMPLE = """
import os
from tfx import v1 as tfx
from tfx.examples.penguin import penguin_pipeline_local as example
name = 'penguin_local_keras'
penguin_root = os.path.join(os.environ['HOME'], 'penguin')
tfx_root = os.path.join(os.environ['HOME'], 'tfx')
tfx.orchestration.LocalDagRunner().run(example.create_pipeline(
    pipeline_name=name,
    pipeline_root=os.path.join(tfx_root, 'pipelines', name),
    data_root=os.path.join(penguin_root, 'data'),
    module_file=os.path.join(penguin_root, 'penguin_utils_keras.py'),
    accuracy_threshold=0.6,
    serving_model_dir=os.path.join(penguin_root, 'serving_model', name),
    metadata_path=os.path.join(tfx_root, 'metadata', name, 'metadata.db'),
    user_provided_schema_path=None,
    enable_tuning=False,
    enable_bulk_inferrer=False,
    examplegen_input_config=None,
    examplegen_range_config_date=None,
    resolver_range_config=None,
    beam_pipeline_args=example._beam_pipeline_args_by_runner['DirectRunner'],
    enable_transform_input_cache=True,
    enable_example_diff=False))
"""


def bench_ours(workdir: Path, env: dict[str, str]) -> dict[str, float]:
    cmd = [str(TFXSP), "run", "--set", f"data_root={DATA.parent}", "--set", "tfx_root=runs"]
    return {"cold": _timed(cmd, workdir, env), "warm": _timed(cmd, workdir, env)}


def bench_penguin_example(home: Path, env: dict[str, str]) -> dict[str, float]:
    import tfx.examples.penguin as penguin  # the installed wheel's copy

    example_dir = Path(penguin.__file__).parent
    penguin_root = home / "penguin"
    _processed_penguins(penguin_root / "data")
    shutil.copy(example_dir / "penguin_utils_keras.py", penguin_root)
    cmd = [sys.executable, "-c", _RUN_PENGUIN_EXAMPLE]
    env = {**env, "HOME": str(home), "TF_USE_LEGACY_KERAS": "1"}
    return {"cold": _timed(cmd, home, env), "warm": _timed(cmd, home, env)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="cold+warm pairs per pipeline")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
    samples: dict[str, dict[str, list[float]]] = {"tfxsp run": {"cold": [], "warm": []},
                                                  "penguin example": {"cold": [], "warm": []}}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-ours-") as tmp:
            for phase, seconds in bench_ours(Path(tmp), env).items():
                samples["tfxsp run"][phase].append(seconds)
        with tempfile.TemporaryDirectory(prefix="bench-penguin-") as tmp:
            for phase, seconds in bench_penguin_example(Path(tmp), env).items():
                samples["penguin example"][phase].append(seconds)

    results = {name: {phase: statistics.median(values) for phase, values in phases.items()}
               for name, phases in samples.items()}
    ratios = {phase: results["tfxsp run"][phase] / results["penguin example"][phase]
              for phase in ("cold", "warm")}
    print(f"{'pipeline':<18}{'cold (s)':>10}{'warm (s)':>10}")
    for name, phases in results.items():
        print(f"{name:<18}{phases['cold']:>10.1f}{phases['warm']:>10.1f}")
    print(f"{'ratio ours/example':<18}{ratios['cold']:>10.2f}{ratios['warm']:>10.2f}"
          "   (goal: <= 1.00)")
    if args.out:
        args.out.write_text(json.dumps({"seconds": results, "ratio": ratios,
                                        "repeats": args.repeats, "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
