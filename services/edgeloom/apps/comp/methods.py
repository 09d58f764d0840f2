"""One entry point for every pruning method of a PruneJob."""

from __future__ import annotations

from edgeloom.algos.comp import (
    CompOptions,
    PruneReport,
    comp_prune,
    flap_prune,
    llm_pruner_prune,
    magnitude_prune,
    shortgpt_prune,
)
from edgeloom.algos.comp.comp import ProgressCallback
from edgeloom.api.kinds.prunejob import PruneJobSpec, PruneMethod
from edgeloom.apps.comp.inputs import PruneInputs


def run_method(
    spec: PruneJobSpec, inputs: PruneInputs, progress: ProgressCallback | None = None
) -> PruneReport:
    """Prune ``inputs.model`` in place with ``spec.method`` at ``spec.ratio``."""
    view = inputs.view
    if spec.method == PruneMethod.COMP:
        options = CompOptions(
            ratio=spec.ratio,
            layer_share=spec.comp.layer_share,
            mask_tuning=spec.comp.mask_tuning,
            variance_bound=spec.comp.variance_bound,
            steps=spec.comp.steps,
        )
        return comp_prune(view, inputs.calibration, options, progress)
    notify = progress or (lambda *_: None)
    notify("NeuronPruning", 0, len(view.layers))
    if spec.method == PruneMethod.LLM_PRUNER:
        report = llm_pruner_prune(view, inputs.losses(), spec.ratio)
    elif spec.method == PruneMethod.FLAP:
        report = flap_prune(view, inputs.calibration, spec.ratio)
    elif spec.method == PruneMethod.MAGNITUDE:
        report = magnitude_prune(view, spec.ratio)
    else:
        report = shortgpt_prune(view, inputs.calibration, spec.ratio)
    notify("NeuronPruning", len(view.layers), len(view.layers))
    return report
