"""What the Evaluator measures and when it blesses a model: the TFMA EvalConfig of the pipeline.

The metric names are read by the command line, which must not pay for importing TFMA (and so TensorFlow): TFMA is
imported only where the EvalConfig is built.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.modules import features

if TYPE_CHECKING:
    import tensorflow_model_analysis as tfma

# TFMA's name for the accuracy metric that the thresholds apply to.
ACCURACY_METRIC = "sparse_categorical_accuracy"
EXAMPLE_COUNT_METRIC = "example_count"


def eval_config(min_accuracy: float, max_accuracy_drop: float) -> tfma.EvalConfig:
    """Accuracy overall and per label value and slice column; blessing needs both thresholds to hold on the overall
    accuracy."""
    import tensorflow_model_analysis as tfma
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default",
                prediction_key="probabilities",
                # The label is the Transform's integer class id, from the transform_features signature that the
                # Trainer exports.
                label_key=features.transformed_name(features.LABEL_KEY),
                preprocessing_function_names=["transform_features"])
        ],
        slicing_specs=[
            tfma.SlicingSpec(),
            tfma.SlicingSpec(feature_keys=[features.LABEL_KEY]),
            *(tfma.SlicingSpec(feature_keys=[key]) for key in features.SLICE_KEYS),
        ],
        metrics_specs=[
            tfma.MetricsSpec(metrics=[
                tfma.MetricConfig(class_name="ExampleCount"),
                tfma.MetricConfig(
                    class_name="SparseCategoricalAccuracy",
                    # Gate on the overall slice only: per-slice accuracies are reported, but a slice of twenty
                    # penguins is too small to block a release on.
                    per_slice_thresholds=[tfma.PerSliceMetricThreshold(
                        slicing_specs=[tfma.SlicingSpec()],
                        threshold=tfma.MetricThreshold(
                            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_accuracy}),
                            change_threshold=tfma.GenericChangeThreshold(
                                direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                absolute={"value": -max_accuracy_drop})))]),
            ])
        ])
