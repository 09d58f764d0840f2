"""PruneJob: post-training structured pruning of an LLM (COMP and its baselines)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from edgeloom.api.artifacts import FolderOutput, ModelSource
from edgeloom.api.base import MAX_SEED, SpecModel
from edgeloom.api.registry import HeadlineMetric, KindInfo, PrinterColumn, RoleInfo, register_kind
from edgeloom.api.status import Status


class PruneMethod(StrEnum):
    """Pruning method; every baseline prunes the same model on the same calibration data."""

    COMP = "comp"
    LLM_PRUNER = "llm-pruner"
    FLAP = "flap"
    MAGNITUDE = "magnitude"
    SHORTGPT = "shortgpt"


class PruneStage(StrEnum):
    """The stages a pruning job reports in ``status.progress.stage`` (and as a metric label);
    COMP's own pass goes through the three in the middle."""

    LOADING = "Loading"
    LAYER_PRUNING = "LayerPruning"
    NEURON_PRUNING = "NeuronPruning"
    MASK_TUNING = "MaskTuning"
    EVALUATING = "Evaluating"
    SAVING = "Saving"
    DONE = "Done"


class CalibrationSource(StrEnum):
    """``stdlib``: the Python standard library's sources (code and docstrings) for causal LMs,
    its docstring summary/body pairs for encoders; ``text``: your own corpus at ``path``."""

    STDLIB = "stdlib"
    TEXT = "text"


class Calibration(SpecModel):
    """Data the methods look at to decide what to prune (and, for COMP, to tune masks)."""

    source: CalibrationSource = Field(
        default=CalibrationSource.STDLIB, description="stdlib or text."
    )
    path: str | None = Field(
        default=None,
        max_length=4096,
        description="For source text: a .txt file, a .jsonl file with a text field, or a "
        "folder of .txt/.md files.",
    )
    samples: int = Field(
        default=64, ge=1, le=4096, description="Calibration sequences (or text pairs)."
    )
    sequence_length: int = Field(
        default=128, ge=8, le=8192, description="Tokens per calibration sequence."
    )

    @model_validator(mode="after")
    def _path_for_text(self) -> Calibration:
        if self.source == CalibrationSource.TEXT and not self.path:
            raise ValueError("calibration.path is required when calibration.source is text")
        return self


class Evaluation(SpecModel):
    """Held-out data for measuring quality before and after pruning."""

    samples: int = Field(
        default=64, ge=1, le=4096, description="Held-out sequences (or text pairs)."
    )


class CompOptions(SpecModel):
    """COMP's options (ignored by the baselines)."""

    layer_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Share of the pruning budget taken by removing whole layers; the rest "
        "comes from MLP neurons.",
    )
    mask_tuning: bool = Field(
        default=True, description="Rescale kept neurons by least squares to restore outputs."
    )
    variance_bound: float = Field(
        default=0.25, gt=0, le=100, description="Upper bound on the variance of mask values."
    )
    steps: int = Field(
        default=4, ge=1, le=64, description="Remove-and-rescore rounds inside each layer."
    )


class PruneJobSpec(SpecModel):
    """Desired state of a pruning job."""

    method: PruneMethod = Field(
        default=PruneMethod.COMP,
        description="comp, llm-pruner, flap, magnitude or shortgpt.",
    )
    model: ModelSource = Field(description="The model to prune.")
    ratio: float = Field(
        gt=0,
        lt=0.9,
        description="Fraction of the transformer blocks' parameters to remove "
        "(embeddings and LM head excluded).",
    )
    calibration: Calibration = Field(default_factory=Calibration, description="Calibration data.")
    evaluation: Evaluation = Field(default_factory=Evaluation, description="Held-out data.")
    comp: CompOptions = Field(default_factory=CompOptions, description="COMP options.")
    output: FolderOutput = Field(
        default_factory=FolderOutput,
        description="Where the pruned model goes (safetensors, config.json with layer widths).",
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed for calibration sampling.")
    gpu: bool = Field(default=False, description="Request a GPU for the pruning pod.")


class PruneJobStatus(Status):
    """Status of a pruning job; ``progress.stage`` is Loading, LayerPruning, NeuronPruning,
    MaskTuning, Evaluating or Saving (the values of PruneStage)."""

    params_before: int | None = Field(default=None, ge=0, description="Model parameters before.")
    params_after: int | None = Field(default=None, ge=0, description="Model parameters after.")
    quality_metric: str | None = Field(
        default=None, description="perplexity (causal LMs) or embedding_fidelity (encoders)."
    )
    quality_before: float | None = Field(default=None, description="Quality metric before.")
    quality_after: float | None = Field(default=None, description="Quality metric after.")
    peak_memory_bytes: int | None = Field(
        default=None, ge=0, description="Peak resident memory of the pruning process."
    )
    output_path: str | None = Field(default=None, description="Where the pruned model is.")


KIND = register_kind(
    KindInfo(
        kind="PruneJob",
        plural="prunejobs",
        short_names=("pj",),
        spec_model=PruneJobSpec,
        status_model=PruneJobStatus,
        roles=(RoleInfo("pruner", "cloud", lambda spec: 1),),
        app_module="edgeloom.apps.comp",
        description="Post-training structured pruning of an LLM (COMP, LLM-Pruner, FLAP, "
        "magnitude, ShortGPT) without fine-tuning.",
        shape="job",
        metric=HeadlineMetric(
            "quality",
            "Perplexity (causal LMs) or embedding fidelity (encoders), as status.qualityMetric "
            "says: before pruning while it runs, after pruning once done",
        ),
        extra_columns=(
            PrinterColumn("Method", ".spec.method", description="Pruning method.", priority=1),
            PrinterColumn(
                "Ratio",
                ".spec.ratio",
                type="number",
                description="Target pruning ratio.",
                priority=1,
            ),
            PrinterColumn(
                "Stage",
                ".status.progress.stage",
                description="Current stage; Progress counts its layers.",
            ),
        ),
        cel_rules=(
            (
                "[has(self.model.builtin), has(self.model.path), has(self.model.objectStore)]"
                ".filter(x, x).size() == 1",
                "exactly one of model.builtin, model.path or model.objectStore must be set",
            ),
            (
                "self.calibration.source != 'text' || "
                "(has(self.calibration.path) && self.calibration.path != '')",
                "calibration.path is required when calibration.source is text",
            ),
            (
                "!has(self.output.volumeClaim) || "
                "(has(self.output.path) && self.output.path.startsWith('/'))",
                "output.volumeClaim needs an absolute output.path to mount it at",
            ),
        ),
    )
)
