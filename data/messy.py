"""A messy CSV, as real exports are: the bundled penguins with an id, free text, dates, a constant column and an
empty one, headers with spaces, parentheses and slashes, missing values in numeric and categorical columns, and a
UTF-8 byte-order mark. The dataset tests and the quality benchmark use it.

    python -m data.messy OUT_DIR        writes OUT_DIR/messy.csv
"""
from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

PENGUINS_DIR = Path(__file__).resolve().parent / "penguins"

MESSY_LABEL = "Species Name"
# header -> what the pipeline must decide about it
MESSY_ROLES = {
    "Row ID": "ignored",  # a different value in every row
    "Bill Length (mm)": "numeric",  # header with spaces and parentheses; missing values
    "Bill Depth (mm)": "numeric",
    "Flipper Length (mm)": "numeric",
    "Body Mass (g)": "numeric",
    "Island": "categorical",  # missing values
    "sex/Gender": "categorical",  # a slash; missing values
    "Field Notes": "ignored",  # free text
    "Date Seen": "ignored",  # dates
    "Project": "ignored",  # the same value in every row
    "Tag Colour": "ignored",  # no value in any row
    "Clutch Size": "categorical",  # integers with few values
}


def write(folder: Path, seed: int = 7) -> Path:
    """The bundled penguins with an id, free text, dates, a constant and an empty column, real-world headers, and
    missing values in numeric and categorical columns. Returns the folder."""
    rng = random.Random(seed)
    words = ("calm", "windy", "nest", "rock", "shore", "chick", "egg", "storm", "moult", "fed", "colony", "ice")
    with open(PENGUINS_DIR / "penguins.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    folder.mkdir(parents=True, exist_ok=True)
    # Saved the way spreadsheets save "CSV UTF-8": with a byte-order mark, here before the label's header.
    with open(folder / "messy.csv", "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.writer(f)
        writer.writerow([MESSY_LABEL, *MESSY_ROLES])
        for i, row in enumerate(rows):
            island = "" if i % 23 == 5 else row["island"]
            notes = " ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) + f" (observer {i % 17})"
            date = f"2008-{1 + i % 12:02d}-{1 + i % 28:02d}"
            writer.writerow([row["species"], f"P{i:04d}", row["bill_length_mm"], row["bill_depth_mm"],
                             row["flipper_length_mm"], row["body_mass_g"], island, row["sex"], notes, date,
                             "Palmer LTER", "", 1 + i % 3])
    return folder



if __name__ == "__main__":
    print(write(Path(sys.argv[1])))
