"""A content hash of the code a component runs, for TFX's cache key.

TFX hashes a component's module file and its folder (pipeline/modules/, packaged into a wheel), but not the code
that folder imports from elsewhere: an edit to the training launcher (pipeline/training/) could hide behind a cached
Trainer. So the pipeline puts this fingerprint of every folder a component runs into its execution properties,
which are part of the cache key.
"""
from __future__ import annotations

import hashlib
import os

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the Trainer's run_fn runs, besides the packages of the lock: pipeline/modules/ imports pipeline.training and
# serving (tests/pipeline/test_layout.py holds it to that), of which export_tflite runs the TF Lite model file's
# functions (parse_model, with_signature_defs).
TRAINER_CODE = ("pipeline/__init__.py", "pipeline/modules", "pipeline/training", "serving/tflite_servable.py")
# What CsvExampleGen's executor runs besides TFX's code: its package and the record reader and type inference it shares
# with the preflight.
CSV_EXAMPLE_GEN_CODE = ("components/csv_example_gen", "pipeline/dataset/csv_records.py")
# What the ServingValidator's executor runs: its component and the serving client it probes with.
SERVING_VALIDATOR_CODE = ("components/serving_validation", "serving/client.py")


def fingerprint(paths: tuple[str, ...], root: str = PROJECT_ROOT) -> str:
    """sha256 over the names and contents of the .py files under `paths` (files or folders, relative to root)."""
    digest = hashlib.sha256()
    for path in sorted(_python_files(paths, root)):
        digest.update(os.path.relpath(path, root).encode())
        digest.update(b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
        digest.update(b"\0")
    return digest.hexdigest()


def _python_files(paths: tuple[str, ...], root: str) -> list[str]:
    found = []
    for path in paths:
        full = os.path.join(root, path)
        if os.path.isfile(full):
            found.append(full)
            continue
        for directory, subdirectories, files in os.walk(full):
            subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
            found += [os.path.join(directory, f) for f in files if f.endswith(".py")]
    return found
