"""COMP: lightweight post-training structured pruning of LLMs, and its baselines.

Xu, Xu, Xu, Liao, Yao and Xie, "COMP: Compact Pruning of Large Language Models...",
arXiv:2501.15255, 2025 (no public code). What follows the paper (``papers.md`` §5):

* coarse stage: layer importance from how much each block changes its input
  (``1 - cos(x_in, x_out)``), least important blocks removed first
  (:func:`block_influence`, :func:`edgeloom.algos.comp.budget.select_layers`);
* fine stage: neuron pruning inside the dense (MLP) blocks of the remaining layers, tied to a
  least-squares problem, with no gradients (:func:`select_neurons`);
* mask tuning instead of fine-tuning: kept neurons are rescaled to restore each block's
  output, with the variance of the mask values kept within a bound (:func:`solve_mask`);
* blocks processed one at a time, so memory stays near one block plus its activations.

What is a documented reconstruction (``papers.md`` §5 [R]): the least-squares form of mask
tuning (Kwon et al. 2022), the neuron metric (OBS error / variance-inflation factor of the
mask problem, see :mod:`edgeloom.algos.comp.masks`), and the variance bound enforced by
ridge regularisation towards the all-ones mask.

Everything here is pure torch over a :class:`edgeloom.models.llm.TransformerView`; the
device follows the model.
"""

from edgeloom.algos.comp.baselines import (
    flap_prune,
    llm_pruner_prune,
    magnitude_prune,
    shortgpt_prune,
)
from edgeloom.algos.comp.calibration import Calibration
from edgeloom.algos.comp.comp import CompOptions, PruneReport, comp_prune
from edgeloom.algos.comp.layers import block_influence
from edgeloom.algos.comp.masks import NormalEquations, select_neurons, solve_mask

__all__ = [
    "Calibration",
    "CompOptions",
    "NormalEquations",
    "PruneReport",
    "block_influence",
    "comp_prune",
    "flap_prune",
    "llm_pruner_prune",
    "magnitude_prune",
    "select_neurons",
    "shortgpt_prune",
    "solve_mask",
]
