"""HAT: hat-shaped device-cloud collaborative LLM inference.

Xie, Xu, Xu, Liao and Yao, arXiv 2503.18989 (no public code; ``papers.md`` §4). What follows
the paper: the cut into an input submodel (embeddings + first blocks) and an output submodel
(last blocks + LM head) on the device, joined by a trained adapter into a draft model
(:mod:`~edgeloom.algos.hat.split`, :mod:`~edgeloom.algos.hat.adapter`); the cloud's middle
blocks verifying drafts in one pass with only hidden states crossing; parallel drafting; prompt
chunking (:mod:`~edgeloom.algos.hat.speculative`). What is a documented reconstruction [R]: the
adapter kinds and their initialisation, the distillation recipe after Kangaroo
(:mod:`~edgeloom.algos.hat.distill`), the adaptive-gamma rule after Leviathan et al., and the
chunk-size cost model (:mod:`~edgeloom.algos.hat.chunking`).

Everything here is pure torch over a :class:`edgeloom.models.llm.TransformerView`.
"""
