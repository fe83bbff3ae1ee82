"""The Evaluator's baseline: the newest blessed model other than the one being evaluated.

TFX's LatestBlessedModelStrategy picks the newest blessed model of the whole store. On a re-run with nothing
changed, the Trainer's output comes from the cache and is that very model (blessed by the first run), so the
Evaluator sees a new baseline (the candidate itself), executes again, blesses again, and Pusher pushes the same
model as a new version. Leaving the candidate out of the choice keeps the Evaluator's inputs what they were the
first time: it, and Pusher after it, come from the cache and nothing new is pushed. A run whose Trainer made a new
model gets the same baseline as TFX's strategy would give it (the candidate is never blessed before it is
evaluated).

Kubeflow's compiler knows only TFX's own strategies (its step builder translates them by class), so the Kubeflow
binding keeps LatestBlessedModelStrategy (pipeline/pipeline.py).
"""
from __future__ import annotations

import ml_metadata as mlmd
from tfx import types
from tfx.dsl.components.common import resolver

# The keys of the Resolver's channels (pipeline/pipeline.py).
MODEL, MODEL_BLESSING, CANDIDATE = "model", "model_blessing", "candidate"
# What TFX's Evaluator writes on a ModelBlessing (tfx/components/evaluator/constants.py).
_CURRENT_MODEL_ID, _BLESSED = "current_model_id", "blessed"


def latest_blessed_other_than(models: list[types.Artifact], blessings: list[types.Artifact],
                              candidates: list[types.Artifact]) -> tuple[types.Artifact, types.Artifact] | None:
    """The newest model (by MLMD id, as TFX's strategy orders them) that a blessing blessed and that is none of
    `candidates`, with that blessing; None when there is none."""
    excluded = {c.id for c in candidates}
    blessing_of = {b.get_int_custom_property(_CURRENT_MODEL_ID): b for b in blessings
                   if b.get_int_custom_property(_BLESSED) == 1}
    for model in sorted(models, key=lambda a: a.id, reverse=True):
        if model.id not in excluded and model.id in blessing_of:
            return model, blessing_of[model.id]
    return None


class LatestBlessedOtherModelStrategy(resolver.ResolverStrategy):
    """TFX's LatestBlessedModelStrategy, except that the models of the `candidate` channel (the Trainer's output of
    this run) are never the baseline."""

    def resolve_artifacts(self, store: mlmd.MetadataStore,
                          input_dict: dict[str, list[types.Artifact]]) -> dict[str, list[types.Artifact]]:
        found = latest_blessed_other_than(input_dict.get(MODEL, []), input_dict.get(MODEL_BLESSING, []),
                                          input_dict.get(CANDIDATE, []))
        model, blessing = found if found else (None, None)
        # Every key is returned (a Resolver's outputs are its input keys); the candidate is not a baseline.
        return {MODEL: [model] if model else [], MODEL_BLESSING: [blessing] if blessing else [], CANDIDATE: []}
