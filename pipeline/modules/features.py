"""The dataset contract: the penguin dataset's columns and what the pipeline does with each (TFX module file).

Every part of the project that names a column reads it here: Transform and Trainer, the Evaluator's slices
(pipeline/evaluation.py), the input checks (pipeline/cli/preflight.py), the example row of the run summary.

This folder holds only the module files that TFX packages for Transform and Trainer (TFX hashes
every .py file here, so an edit to any of them re-runs those components instead of reusing cache).
"""

LABEL_KEY = "species"

# Numeric measurements: missing values are imputed with the training mean, then z-scored.
NUMERIC_FEATURE_KEYS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]

# Categorical columns: a vocabulary maps them to integer ids, which the model embeds.
CATEGORICAL_FEATURE_KEYS = ["island", "sex"]

# What a missing categorical value becomes before the vocabulary is computed.
MISSING_CATEGORY = "unknown"

# Out-of-vocabulary values get one extra bucket, so a new island at serving time is not an error.
NUM_OOV_BUCKETS = 1

# Columns of the CSV input that the model does not use (kept in the data, ignored by Transform).
UNUSED_KEYS = ["year"]

CSV_COLUMNS = [LABEL_KEY, "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm",
               "body_mass_g", "sex", "year"]

# Columns the Evaluator also slices the metrics by (besides the label).
SLICE_KEYS = ["island"]

# A penguin from the dataset, as plain JSON for the raw-feature signature (the run summary's curl example).
EXAMPLE_ROW = {"island": "Biscoe", "sex": "female", "bill_length_mm": 46.5, "bill_depth_mm": 14.8,
               "flipper_length_mm": 217.0, "body_mass_g": 5200.0}


def transformed_name(key: str) -> str:
    return key + "_xf"


def vocabulary_name(key: str) -> str:
    return key + "_vocab"
