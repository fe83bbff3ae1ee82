"""CSV files the dataset tests write: the messy one (data/messy.py) and small ones for the bad inputs."""
from __future__ import annotations

from pathlib import Path

from data.messy import MESSY_LABEL, MESSY_ROLES
from data.messy import write as write_messy

__all__ = ["MESSY_LABEL", "MESSY_ROLES", "write_csv", "write_messy"]


def write_csv(folder: Path, text: str, name: str = "data.csv", encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding=encoding)
    return folder
