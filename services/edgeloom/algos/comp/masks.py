"""Fine stage: neuron importance and mask tuning, both on one least-squares problem.

For a dense block with hidden activations ``H`` (tokens x n), output weight ``W`` (d x n) and
the output the block should produce ``Y`` (tokens x d), a mask ``m`` over the kept neurons
``S`` rescales their contributions:

    min_m ‖ H_S diag(m) W_Sᵀ - Y ‖²_F,    normal equations  (AᵀA)_S m = (Aᵀb)_S,
    AᵀA = (WᵀW) ⊙ (HᵀH),                  Aᵀb_j = Σ_t H_tj (Y_t · W_:j).

This is Kwon et al.'s mask-tuning formulation (NeurIPS 2022, ``prune/rescale.py``), which
``papers.md`` §5 gives as COMP's implementable form.

**Reconstruction** (COMP's exact condition-number metric is not public): a neuron's importance
is the error the least-squares fit gains when it is removed and the others re-solved, the
Optimal-Brain-Surgeon quantity ``m_j² / [(AᵀA)⁻¹]_jj``. The inverse's diagonal is the
variance-inflation factor of neuron j over ‖a_j‖², so neurons that the others reproduce
(collinear, ill-conditioning columns) score low and go first, which keeps the remaining
problem well conditioned. Neurons are removed in several steps, re-scoring in between.

The mask-variance bound (COMP checks the variance of the mask values after each step) is
enforced by ridge regularisation towards the all-ones mask: the smallest ridge whose solution
has ``var(m) <= bound`` is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_RIDGES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
_JITTER = 1e-9


@dataclass(frozen=True)
class NormalEquations:
    """``AᵀA`` and ``Aᵀb`` of the mask least-squares problem (float64), plus ``‖Y‖²``."""

    ata: torch.Tensor
    atb: torch.Tensor
    target_energy: float

    @classmethod
    def from_activations(
        cls, hidden: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> NormalEquations:
        """Build from ``hidden`` (tokens x n), ``target`` (tokens x d), ``weight`` (d x n).

        One batch's products are formed in the inputs' precision and returned in float64, in
        which batches are summed (``+``); a batch is small, the sum over batches is not.
        """
        ata = (weight.T @ weight) * (hidden.T @ hidden)
        atb = (hidden * (target @ weight)).sum(dim=0)
        return cls(ata.double(), atb.double(), float(target.double().square().sum()))

    def __add__(self, other: NormalEquations) -> NormalEquations:
        """Sum of two batches' equations: the equations of both batches together."""
        return NormalEquations(
            self.ata + other.ata, self.atb + other.atb, self.target_energy + other.target_energy
        )

    def residual(self, keep: torch.Tensor, mask: torch.Tensor) -> float:
        """Relative squared error ``‖H_S diag(m) W_Sᵀ - Y‖² / ‖Y‖²`` of a mask."""
        m = mask.double()
        sub = self.ata[keep.unsqueeze(1), keep]
        error = m @ sub @ m - 2 * m @ self.atb[keep] + self.target_energy
        return max(float(error), 0.0) / max(self.target_energy, 1e-30)


def solve_mask(
    equations: NormalEquations, keep: torch.Tensor, variance_bound: float
) -> tuple[torch.Tensor, float]:
    """Least-squares mask over ``keep`` with ``var(m) <= variance_bound``; returns ``(m, ridge)``.

    ``ridge`` is the regularisation that was needed, relative to the mean diagonal of ``AᵀA``.
    """
    system, scale = _system(equations, keep)
    rhs = equations.atb[keep]
    diagonal = system.diagonal().clone()
    for ridge in _RIDGES:
        damping = (ridge + _JITTER) * scale
        system.diagonal().copy_(diagonal + damping)
        mask = torch.linalg.solve(system, rhs + damping)
        if len(keep) < 2 or float(mask.var()) <= variance_bound:
            return mask.float(), ridge
    return torch.ones(len(keep)), math.inf


def neuron_scores(
    equations: NormalEquations, keep: torch.Tensor, variance_bound: float
) -> torch.Tensor:
    """OBS error of removing each kept neuron with the others re-solved (higher = keep)."""
    mask, ridge = solve_mask(equations, keep, variance_bound)
    system, scale = _system(equations, keep)
    system.diagonal().add_((min(ridge, _RIDGES[-1]) + 1e-6) * scale)
    scores: torch.Tensor = mask.double() ** 2 / torch.linalg.inv(system).diagonal()
    return scores


def _system(equations: NormalEquations, keep: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A copy of ``AᵀA`` restricted to ``keep``, and its mean diagonal (the ridge scale)."""
    system = equations.ata[keep.unsqueeze(1), keep]
    return system, float(system.diagonal().mean()) or 1.0


def select_neurons(
    equations: NormalEquations, remove: int, steps: int, variance_bound: float
) -> torch.Tensor:
    """Sorted indices of the neurons to keep after removing ``remove`` of them in ``steps``."""
    width = equations.atb.numel()
    if not 0 <= remove < width:
        raise ValueError(f"cannot remove {remove} of {width} neurons")
    keep = torch.arange(width)
    per_step = math.ceil(remove / max(steps, 1)) if remove else 0
    while width - keep.numel() < remove:
        count = min(per_step, remove - (width - keep.numel()))
        scores = neuron_scores(equations, keep, variance_bound)
        drop = torch.topk(scores, count, largest=False).indices
        survivors = torch.ones(keep.numel(), dtype=torch.bool)
        survivors[drop] = False
        keep = keep[survivors]
    return keep
