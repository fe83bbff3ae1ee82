"""Synthetic penguins: any multiple of data/penguins/penguins.csv, statistically like it, same format.

    .venv/bin/python data/generate_synthetic.py OUT_DIR [--factor 100 | --rows N] [--shards 4] [--seed 42]

Writes OUT_DIR/penguins-synthetic-NNNNN-of-NNNNN.csv (the header and value formats of the real file,
so the pipeline reads OUT_DIR as its data_root). Deterministic for a given seed, factor and shard
count. Generated data is not committed: write it outside the repository or under an ignored folder
(tfx_runs/, build/).

How it is like the real data: species in the real proportions; island and year drawn from their
real distribution within each species; sex from its real distribution within each species
(including missing); the four measurements from a multivariate normal fitted to each species and sex
(so their correlations and the sexual dimorphism hold), rounded like the real columns and kept within
the real range widened by 10%; measurements and sex missing at the real rate.
"""
from __future__ import annotations

import argparse
import collections
import csv
import os
import sys
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parent / "penguins" / "penguins.csv"
COLUMNS = ["species", "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm",
           "body_mass_g", "sex", "year"]
MEASUREMENTS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
INTEGER = {"flipper_length_mm", "body_mass_g", "year"}


def read_real(path: Path = REAL) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS, reader.fieldnames
        return list(reader)


class Model:
    """The per-species distributions fitted to the real rows."""

    def __init__(self, rows: list[dict[str, str]]):
        self.n = len(rows)
        by_species = collections.defaultdict(list)
        for row in rows:
            by_species[row["species"]].append(row)
        self.species = sorted(by_species)
        self.species_p = np.array([len(by_species[s]) for s in self.species]) / self.n
        self.categorical: dict[tuple[str, str], tuple[list[str], np.ndarray]] = {}
        self.normal: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        missing_measurements = sum(1 for r in rows if not r[MEASUREMENTS[0]])
        self.p_missing_measurements = missing_measurements / self.n
        values = np.array([[float(r[m]) for m in MEASUREMENTS] for r in rows if r[MEASUREMENTS[0]]])
        span = values.max(axis=0) - values.min(axis=0)
        self.low, self.high = values.min(axis=0) - 0.1 * span, values.max(axis=0) + 0.1 * span
        for species, group in by_species.items():
            for column in ("island", "sex", "year"):
                counts = collections.Counter(r[column] for r in group
                                             if column != "sex" or r[MEASUREMENTS[0]])
                keys = sorted(counts)
                self.categorical[species, column] = (
                    keys, np.array([counts[k] for k in keys], dtype=float) / sum(counts.values()))
            complete = [r for r in group if r[MEASUREMENTS[0]]]
            for sex in {r["sex"] for r in complete} | {"*"}:
                subset = [r for r in complete if sex in ("*", r["sex"])]
                data = np.array([[float(r[m]) for m in MEASUREMENTS] for r in subset])
                self.normal[species, sex] = (data.mean(axis=0), np.cov(data, rowvar=False))

    def sample(self, rng: np.random.Generator, count: int) -> list[list[str]]:
        """`count` rows, each a list of strings in COLUMNS order. Vectorized per species and sex, so that millions of
        rows take seconds, not minutes."""
        species = np.asarray(self.species)[rng.choice(len(self.species), size=count, p=self.species_p)]
        blank = rng.random(count) < self.p_missing_measurements
        columns = {c: np.full(count, "", dtype=object) for c in COLUMNS}
        columns["species"] = species.astype(object)
        for kind in self.species:
            rows = np.flatnonzero(species == kind)
            for column in ("island", "year"):
                columns[column][rows] = self._draw(rng, kind, column, len(rows))
            measured = rows[~blank[rows]]
            columns["sex"][measured] = self._draw(rng, kind, "sex", len(measured))
            for sex in np.unique(columns["sex"][measured]):
                group = measured[columns["sex"][measured] == sex]
                mean, cov = self.normal.get((kind, sex)) or self.normal[kind, "*"]
                values = np.clip(rng.multivariate_normal(mean, cov, size=len(group)), self.low, self.high)
                for m, column_values in zip(MEASUREMENTS, values.T):
                    columns[m][group] = ([str(int(v)) for v in np.round(column_values)] if m in INTEGER
                                         else [f"{v:.1f}" for v in column_values])
        return [list(row) for row in zip(*(columns[c] for c in COLUMNS))]

    def _draw(self, rng: np.random.Generator, kind: str, column: str, count: int) -> np.ndarray:
        keys, p = self.categorical[kind, column]
        return np.asarray(keys, dtype=object)[rng.choice(len(keys), size=count, p=p)]


CHUNK = 100_000  # rows sampled and written at a time: memory stays flat for any row count


def generate(out_dir: str, factor: int = 100, shards: int = 4, seed: int = 42,
             real: Path = REAL, rows: int | None = None) -> tuple[int, list[str]]:
    """Writes `rows` (default factor x len(real)) rows into `shards` CSV files; returns (rows, paths)."""
    model = Model(read_real(real))
    total = rows if rows is not None else model.n * factor
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.Generator(np.random.PCG64(seed))
    paths = []
    for shard in range(shards):
        count = total // shards + (1 if shard < total % shards else 0)
        path = os.path.join(out_dir, f"penguins-synthetic-{shard:05d}-of-{shards:05d}.csv")
        with open(path, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(COLUMNS)
            for done in range(0, count, CHUNK):
                writer.writerows(model.sample(rng, min(CHUNK, count - done)))
        paths.append(path)
    return total, paths


def summary(paths: list[str]) -> dict[str, dict[str, float]]:
    """Per species: share of rows and mean of each measurement (for comparing with the real data)."""
    rows = [r for p in paths for r in read_real(Path(p))]
    result = {}
    for species in sorted({r["species"] for r in rows}):
        group = [r for r in rows if r["species"] == species]
        stats = {"share": len(group) / len(rows)}
        for m in MEASUREMENTS:
            values = [float(r[m]) for r in group if r[m]]
            stats[m] = sum(values) / len(values)
        result[species] = stats
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder for the CSV files (created if missing)")
    parser.add_argument("--factor", type=int, default=100,
                        help="multiple of the real row count (default 100)")
    parser.add_argument("--rows", type=int, help="exactly this many rows (instead of --factor)")
    parser.add_argument("--shards", type=int, default=4, help="number of CSV files (default 4)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--summary", action="store_true",
                        help="print per-species share and means, synthetic beside real")
    args = parser.parse_args()
    if args.factor < 1 or args.shards < 1 or (args.rows is not None and args.rows < 1):
        sys.exit("--factor, --rows and --shards must be >= 1")
    total, paths = generate(args.out_dir, args.factor, args.shards, args.seed, rows=args.rows)
    print(f"Wrote {total} rows (like {REAL.name}) to {len(paths)} files in "
          f"{os.path.abspath(args.out_dir)}")
    if args.summary:
        real = summary([str(REAL)])
        for species, stats in summary(paths).items():
            print(f"  {species:10s} " + "  ".join(
                f"{k} {v:.3g} (real {real[species][k]:.3g})" for k, v in stats.items()))


if __name__ == "__main__":
    main()
