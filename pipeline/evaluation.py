"""What the Evaluator measures and when it blesses a model, from the task and the data: the TFMA EvalConfig.

  classification  accuracy (and AUC when there are two classes); blessed when the overall accuracy reaches its
                  threshold and falls at most max_accuracy_drop below the last blessed model's
  regression      RMSE and MAE; blessed when the overall RMSE stays under its threshold and rises at most
                  max_rmse_increase (relative) above the last blessed model's

Both are reported overall, per class (classification) and per slice_by column. The threshold is the one the
configuration names (min_accuracy, max_rmse); without one, the model must beat the naive baseline (always the
majority class; always the mean) by baseline_margin. The bundled penguins keep their example's 0.9 accuracy.

The metric names are read by the command line, which must not pay for importing TFMA (and so TensorFlow): TFMA is
imported only where the EvalConfig is built.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pipeline.modules import features

if TYPE_CHECKING:
    import tensorflow_model_analysis as tfma

# TFMA's metric names.
ACCURACY_METRIC = "sparse_categorical_accuracy"
AUC_METRIC = "auc/class_1"  # binary classification: the AUC of class 1 (the less frequent class) against class 0
RMSE_METRIC = "root_mean_squared_error"
MAE_METRIC = "mean_absolute_error"
EXAMPLE_COUNT_METRIC = "weighted_example_count"
# The metric that gates the blessing, per task, and how it reads to a person.
GATE_METRIC = {features.CLASSIFICATION: ACCURACY_METRIC, features.REGRESSION: RMSE_METRIC}
METRIC_LABELS = {ACCURACY_METRIC: "accuracy", AUC_METRIC: "AUC", RMSE_METRIC: "RMSE", MAE_METRIC: "MAE"}


@dataclasses.dataclass(frozen=True)
class Blessing:
    """The thresholds a candidate model must meet, and where each comes from (for the run summary)."""
    metric: str
    bound: float  # classification: the lowest accuracy allowed; regression: the highest RMSE
    change: float  # classification: the largest drop below the baseline model; regression: the largest rise
    reason: str

    @property
    def higher_is_better(self) -> bool:
        return self.metric == ACCURACY_METRIC


def blessing(contract: features.DatasetContract, min_accuracy: float | None, max_accuracy_drop: float,
             max_rmse: float | None, max_rmse_increase: float, baseline_margin: float,
             bundled_example: bool) -> Blessing:
    if contract.task == features.CLASSIFICATION:
        if min_accuracy is not None:
            bound, reason = min_accuracy, f"accuracy >= {min_accuracy:g} (min_accuracy)"
        elif bundled_example:
            bound, reason = 0.9, "accuracy >= 0.9 (the bundled penguins' threshold)"
        else:
            bound = min(1.0, contract.baseline + baseline_margin)
            reason = (f"accuracy >= {bound:.3f}: the majority class's {contract.baseline:.3f} + baseline_margin "
                      f"{baseline_margin:g}")
        return Blessing(ACCURACY_METRIC, bound, max_accuracy_drop,
                        reason + f", at most {max_accuracy_drop:g} below the baseline model")
    if max_rmse is not None:
        bound, reason = max_rmse, f"RMSE <= {max_rmse:g} (max_rmse)"
    else:
        bound = contract.baseline * (1 - baseline_margin)
        reason = (f"RMSE <= {bound:.4g}: the mean predictor's {contract.baseline:.4g} less baseline_margin "
                  f"{baseline_margin:.0%}")
    return Blessing(RMSE_METRIC, bound, max_rmse_increase,
                    reason + f", at most {max_rmse_increase:.0%} above the baseline model")


def split_buckets(rows: int, eval_max_rows: int) -> tuple[int, int]:
    """CsvExampleGen's hash buckets (train, eval): TFX's 2:1, unless a third of the rows would exceed eval_max_rows;
    then eval gets the share of 1,000 buckets that holds about eval_max_rows (at least one bucket)."""
    if rows <= 3 * eval_max_rows:
        return 2, 1
    eval_buckets = max(1, round(1000 * eval_max_rows / rows))
    return 1000 - eval_buckets, eval_buckets


def eval_config(contract: features.DatasetContract, thresholds: Blessing) -> tfma.EvalConfig:
    import tensorflow_model_analysis as tfma
    classification = contract.task == features.CLASSIFICATION
    slices = [tfma.SlicingSpec()]
    if classification:
        slices.append(tfma.SlicingSpec(feature_keys=[contract.label.key]))
    slices += [tfma.SlicingSpec(feature_keys=[contract.by_name(name).key]) for name in contract.slice_by]
    # Gate on the overall slice only: per-slice metrics are reported, but a slice of twenty rows is too small to
    # block a release on.
    gate = tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=_threshold(tfma, thresholds))
    counts = [tfma.MetricConfig(class_name="ExampleCount"), tfma.MetricConfig(class_name="WeightedExampleCount")]
    if classification:
        specs = [tfma.MetricsSpec(metrics=[*counts, tfma.MetricConfig(class_name="SparseCategoricalAccuracy",
                                                                        per_slice_thresholds=[gate])])]
        if contract.num_classes == 2:
            specs.append(tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name="AUC")],
                                          binarize=tfma.BinarizationOptions(class_ids={"values": [1]})))
        return _config(tfma, contract, "probabilities", slices, specs)
    specs = [tfma.MetricsSpec(metrics=[*counts, tfma.MetricConfig(class_name="MeanAbsoluteError"),
                                       tfma.MetricConfig(class_name="RootMeanSquaredError",
                                                         per_slice_thresholds=[gate])])]
    return _config(tfma, contract, "predictions", slices, specs)


def _threshold(tfma, thresholds: Blessing):
    if thresholds.higher_is_better:
        return tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": thresholds.bound}),
            change_threshold=tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                                         absolute={"value": -thresholds.change}))
    return tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(upper_bound={"value": thresholds.bound}),
        change_threshold=tfma.GenericChangeThreshold(direction=tfma.MetricDirection.LOWER_IS_BETTER,
                                                     relative={"value": thresholds.change}))


def _config(tfma, contract: features.DatasetContract, prediction_key: str, slices, specs) -> tfma.EvalConfig:
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name="serving_default", prediction_key=prediction_key,
            # The label and the weight (0 for a row without a label) come from the transform_features signature
            # that the Trainer exports.
            label_key=features.LABEL_XF, example_weight_key=features.WEIGHT_KEY,
            preprocessing_function_names=["transform_features"])],
        slicing_specs=slices, metrics_specs=specs)
