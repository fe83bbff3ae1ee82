"""The penguin dataset's columns as the Transform and Trainer modules see them.

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


def transformed_name(key: str) -> str:
    return key + "_xf"


def vocabulary_name(key: str) -> str:
    return key + "_vocab"
