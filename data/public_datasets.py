"""Real datasets that packages of the lock ship as CSV, written as the CSV files a user would bring, for the tests
and the quality benchmark (nobody here wrote their rows):

  breast_cancer   scikit-learn's Wisconsin diagnostic breast cancer data: binary classification, string labels
                  (malignant, benign), 30 numeric columns, 569 rows
  wine            scikit-learn's wine recognition data: 3 classes with integer labels (0, 1, 2), 13 numeric
                  columns, 178 rows
  diabetes        scikit-learn's diabetes data, unscaled: regression (disease progression, 25-346), 9 numeric
                  columns and sex (1 or 2), 442 rows
  penguins_raw    palmerpenguins' raw data: 17 columns as the researchers recorded them (headers with spaces and
                  parentheses, NA for missing values, ids, dates, comments), 344 rows

    python -m data.public_datasets OUT_DIR [NAME ...]      one folder per dataset, OUT_DIR/NAME/NAME.csv
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
from collections.abc import Callable

# name -> (label column, task)
LABELS = {"breast_cancer": ("diagnosis", "classification"), "wine": ("cultivar", "classification"),
          "diabetes": ("progression", "regression"), "penguins_raw": ("Species", "classification")}


def _sklearn(name: str, label: str, **kwargs) -> Callable[[str], None]:
    def write(path: str) -> None:
        from sklearn import datasets
        bunch = getattr(datasets, f"load_{name}")(**kwargs)
        names = [str(n) for n in bunch.feature_names]
        targets = bunch.target_names if name == "breast_cancer" else None
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([*names, label])
            for row, target in zip(bunch.data, bunch.target):
                value = targets[target] if targets is not None else (int(target) if float(target).is_integer()
                                                                     else float(target))
                writer.writerow([*(f"{v:g}" for v in row), value])
    return write


def _penguins_raw(path: str) -> None:
    from importlib import resources
    with resources.as_file(resources.files("palmerpenguins") / "data" / "penguins-raw.csv") as source:
        shutil.copyfile(source, path)


WRITERS = {"breast_cancer": _sklearn("breast_cancer", "diagnosis"), "wine": _sklearn("wine", "cultivar"),
           "diabetes": _sklearn("diabetes", "progression", scaled=False), "penguins_raw": _penguins_raw}


def write(name: str, out_dir: str) -> str:
    """Writes dataset `name` as out_dir/name.csv; returns the folder (a pipeline's data_root)."""
    os.makedirs(out_dir, exist_ok=True)
    WRITERS[name](os.path.join(out_dir, f"{name}.csv"))
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m data.public_datasets")
    parser.add_argument("out_dir")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(WRITERS)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(WRITERS))
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(WRITERS)}")
    for name in args.names or list(WRITERS):
        print(write(name, os.path.join(args.out_dir, name)))


if __name__ == "__main__":
    main()
