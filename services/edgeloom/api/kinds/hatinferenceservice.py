"""HatInferenceService: HAT device-cloud speculative LLM inference, served until deleted.

The device groups run the input and output blocks with a trained adapter (the draft model) and
an OpenAI-compatible endpoint; the cloud replicas run the middle blocks for every device's
sequences (``docs/systems/hat.md``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from edgeloom.api.artifacts import ModelSource
from edgeloom.api.base import MAX_SEED, SpecModel
from edgeloom.api.device import DeviceProfile, DeviceProfileLabel
from edgeloom.api.registry import (
    KindInfo,
    PrinterColumn,
    RoleInfo,
    ScaleSubresource,
    register_kind,
)
from edgeloom.api.service import ServiceStatus

MAX_DEVICES = 256
"""Device pods of one service, all groups together."""
MAX_CLOUD_REPLICAS = 64
GroupName = Annotated[str, Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=30)]

TOTAL_DEVICES_MESSAGE = f"devices[*].count must add up to at most {MAX_DEVICES} devices"
GROUP_NAMES_MESSAGE = "devices[*].name must be unique: each group becomes a Deployment of that name"
GAMMA_MESSAGE = (
    "speculation.gammaInitial must lie between speculation.gammaMin and speculation.gammaMax"
)
TOKENS_MESSAGE = "speculation.defaultMaxTokens must not exceed speculation.maxTokens"
CLOUD_REPLICAS_MESSAGE = "cloud.replicas must lie between cloud.minReplicas and cloud.maxReplicas"
ADAPTER_SOURCE_MESSAGE = (
    "exactly one of adapter.source.builtin, adapter.source.path or adapter.source.objectStore "
    "must be set"
)

BUILTIN_ADAPTER_MESSAGE = (
    "adapter.source takes a path or objectStore: there are no built-in adapters"
)


class ServingMethod(StrEnum):
    """``hat``: the device drafts with its outer blocks and the adapter, the cloud verifies
    the drafts in one pass (HAT); ``u-shape``: the same split without speculation, one round
    trip to the cloud per token (the baseline that, like HAT, keeps tokens on the device).

    The benchmark's baselines where tokens cross the network (greedy decoding only):
    ``sd-tokens``, standard device-cloud speculative decoding, the device drafting with the same
    small model as HAT's and the cloud verifying with the whole model; ``cloud-only``, the
    cloud decoding alone and the device only forwarding (today's serving)."""

    HAT = "hat"
    U_SHAPE = "u-shape"
    SD_TOKENS = "sd-tokens"
    CLOUD_ONLY = "cloud-only"


class AdapterKind(StrEnum):
    """``decoder``: decoder blocks of the model's own shape; ``mlp``: residual MLP blocks."""

    DECODER = "decoder"
    MLP = "mlp"


class ChunkingMode(StrEnum):
    """How a prompt is cut into prefill chunks: ``adaptive`` picks the size per request from
    the measured device, link and cloud costs; ``fixed`` uses ``chunkSize``; ``off`` sends the
    whole prompt at once."""

    ADAPTIVE = "adaptive"
    FIXED = "fixed"
    OFF = "off"


class Split(SpecModel):
    """Where the model is cut."""

    input_layers: int = Field(
        default=1, ge=1, le=64, description="Decoder blocks on the device before the cut."
    )
    output_layers: int = Field(
        default=1, ge=1, le=64, description="Decoder blocks on the device before the LM head."
    )


class AdapterTraining(SpecModel):
    """The prepare step's distillation (KL to the full model's logits on real text)."""

    steps: int = Field(default=200, ge=1, le=100_000, description="Optimiser steps.")
    batch_size: int = Field(default=8, ge=1, le=256, description="Blocks of text per step.")
    learning_rate: float = Field(default=1e-3, gt=0, le=1, description="Peak learning rate.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of data and init.")


class Adapter(SpecModel):
    """The module that stands in for the middle blocks on the device: trained once per
    (model, split, adapter) and cached, or a prepared folder given as ``source``."""

    kind: AdapterKind = Field(default=AdapterKind.DECODER, description="decoder or mlp.")
    depth: int = Field(default=1, ge=1, le=16, description="Blocks in the adapter.")
    width: int | None = Field(
        default=None,
        ge=1,
        le=65_536,
        description="Hidden width of an mlp adapter; default the model's own MLP width.",
    )
    training: AdapterTraining = Field(
        default_factory=AdapterTraining, description="How the prepare step trains it."
    )
    source: ModelSource | None = Field(
        default=None,
        description="A prepared adapter folder (adapter.safetensors + adapter.json) on a path "
        "or in the object store; nothing is trained then.",
    )

    @model_validator(mode="after")
    def _no_builtin_adapter(self) -> Adapter:
        if self.source is not None and self.source.builtin is not None:
            raise ValueError(BUILTIN_ADAPTER_MESSAGE)
        return self


class Speculation(SpecModel):
    """Draft lengths and sampling defaults."""

    gamma_min: int = Field(
        default=0,
        ge=0,
        le=32,
        description="Shortest draft; 0 lets the device stop drafting (one round trip per "
        "token, probing now and then) while drafting does not pay.",
    )
    gamma_max: int = Field(default=8, ge=1, le=32, description="Longest draft.")
    gamma_initial: int = Field(default=4, ge=1, le=32, description="Draft length to start with.")
    adaptive_gamma: bool = Field(
        default=True,
        description="Choose each draft's length from the measured acceptance rate and costs.",
    )
    parallel_drafting: bool = Field(
        default=True, description="Draft the next tokens while the cloud verifies."
    )
    temperature: float = Field(
        default=0.0,
        ge=0,
        le=2,
        description="Sampling temperature when a request gives none (0: greedy).",
    )
    max_tokens: int = Field(
        default=512, ge=1, le=8192, description="The most new tokens one request may ask for."
    )
    default_max_tokens: int = Field(
        default=64, ge=1, le=8192, description="New tokens when a request gives no max_tokens."
    )


class Chunking(SpecModel):
    """Chunked prefill of long prompts."""

    mode: ChunkingMode = Field(default=ChunkingMode.ADAPTIVE, description="adaptive, fixed or off.")
    chunk_size: int = Field(
        default=128,
        ge=1,
        le=8192,
        description="Tokens per chunk (fixed), or the first guess before costs are measured "
        "(adaptive).",
    )


class DeviceGroup(SpecModel):
    """Identical devices, each serving the OpenAI-compatible endpoint."""

    name: GroupName = Field(description="Group name; it names the group's Deployment.")
    count: int = Field(ge=1, le=MAX_DEVICES, description="Devices (pods) in the group.")
    profile: DeviceProfile = Field(
        default_factory=DeviceProfile, description="Emulated device profile of each device."
    )
    device_profile_label: DeviceProfileLabel = None
    port: int = Field(
        default=8000, ge=1024, le=65_535, description="HTTP port of the endpoint (and Service)."
    )


class Cloud(SpecModel):
    """The replicas that run the middle blocks."""

    replicas: int = Field(
        default=1, ge=1, le=MAX_CLOUD_REPLICAS, description="Replicas to start with."
    )
    min_replicas: int = Field(
        default=1, ge=1, le=MAX_CLOUD_REPLICAS, description="Fewest replicas autoscaling keeps."
    )
    max_replicas: int = Field(
        default=1, ge=1, le=MAX_CLOUD_REPLICAS, description="Most replicas autoscaling starts."
    )
    profile: DeviceProfile = Field(
        default_factory=DeviceProfile,
        description="Emulated profile of a cloud replica (its link is the devices' side).",
    )
    compute_factor: float = Field(
        default=1.0,
        ge=0.001,
        le=1000,
        description="Cloud compute time relative to the machine running it; below 1 for a "
        "node faster than this one (a GPU).",
    )
    gpu: bool = Field(default=False, description="Request a GPU for each cloud replica.")


class ScalingMetric(StrEnum):
    """What the cloud replicas are scaled on: ``queue-length``, the middle requests waiting per
    replica; ``ttft-p95``, the devices' 95th-percentile time to the first token (seconds)."""

    QUEUE_LENGTH = "queue-length"
    TTFT_P95 = "ttft-p95"


class Autoscaling(SpecModel):
    """The operator's loop that scales the cloud replicas between ``cloud.minReplicas`` and
    ``cloud.maxReplicas`` on Prometheus data, as a HorizontalPodAutoscaler does."""

    enabled: bool = Field(default=False, description="Scale the cloud replicas.")
    metric: ScalingMetric = Field(
        default=ScalingMetric.QUEUE_LENGTH, description="queue-length or ttft-p95."
    )
    target: float = Field(
        default=2.0,
        gt=0,
        le=10_000,
        description="The metric's target: requests per replica, or seconds of p95 TTFT.",
    )
    tolerance: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="No change while the metric is within this fraction of its target.",
    )
    window_seconds: float = Field(
        default=60.0, ge=5, le=3600, description="Window the metric is averaged over."
    )
    scale_down_stabilization_seconds: float = Field(
        default=120.0,
        ge=0,
        le=86_400,
        description="Scale down only to the most replicas recommended over this long.",
    )


class Sessions(SpecModel):
    """Bounds on what one cloud replica holds."""

    max_sessions: int = Field(
        default=64, ge=1, le=10_000, description="Sequences one replica caches at once."
    )
    max_positions: int = Field(
        default=4096, ge=16, le=131_072, description="Positions one sequence may cache."
    )
    max_tokens_per_request: int = Field(
        default=1024, ge=1, le=8192, description="Hidden states one request may carry."
    )
    idle_timeout_seconds: float = Field(
        default=300.0, gt=0, le=86_400, description="A sequence idle this long is dropped."
    )


class HatInferenceServiceSpec(SpecModel):
    """Desired state of a HAT inference service."""

    method: ServingMethod = Field(
        default=ServingMethod.HAT,
        description="hat, u-shape, or a baseline where tokens cross: sd-tokens, cloud-only.",
    )
    model: ModelSource = Field(description="The causal LM to serve (Llama, Mistral or Qwen2).")
    split: Split = Field(
        default_factory=Split, description="Blocks kept on the device on either side of the cut."
    )
    adapter: Adapter = Field(default_factory=Adapter, description="The device's adapter.")
    speculation: Speculation = Field(
        default_factory=Speculation, description="Speculative decoding settings."
    )
    chunking: Chunking = Field(default_factory=Chunking, description="Chunked prefill.")
    devices: list[DeviceGroup] = Field(
        min_length=1, max_length=32, description="Device groups serving the endpoint."
    )
    cloud: Cloud = Field(default_factory=Cloud, description="The middle blocks' replicas.")
    sessions: Sessions = Field(default_factory=Sessions, description="Cloud session bounds.")
    autoscaling: Autoscaling = Field(
        default_factory=Autoscaling, description="Scaling the cloud replicas on Prometheus data."
    )

    @property
    def device_count(self) -> int:
        return sum(g.count for g in self.devices)

    @model_validator(mode="after")
    def _cross_field(self) -> HatInferenceServiceSpec:
        if self.device_count > MAX_DEVICES:
            raise ValueError(TOTAL_DEVICES_MESSAGE)
        names = [g.name for g in self.devices]
        if len(set(names)) != len(names):
            raise ValueError(GROUP_NAMES_MESSAGE)
        s = self.speculation
        if not s.gamma_min <= s.gamma_initial <= s.gamma_max:
            raise ValueError(GAMMA_MESSAGE)
        if s.default_max_tokens > s.max_tokens:
            raise ValueError(TOKENS_MESSAGE)
        c = self.cloud
        if not c.min_replicas <= c.replicas <= c.max_replicas:
            raise ValueError(CLOUD_REPLICAS_MESSAGE)
        return self

    def group_of(self, index: int) -> DeviceGroup:
        """The group of device ``index`` (devices are numbered group by group)."""
        for group in self.devices:
            if index < group.count:
                return group
            index -= group.count
        raise IndexError(f"device index out of range (the spec has {self.device_count})")


class HatInferenceServiceStatus(ServiceStatus):
    """Status of a HAT inference service."""

    cloud_replicas: int | None = Field(
        default=None, ge=0, description="Cloud replicas the operator asks for now."
    )
    endpoints: list[str] = Field(
        default_factory=list, description="In-cluster URLs of the device groups' endpoints."
    )
    cloud_selector: str | None = Field(
        default=None,
        description="Label selector of the cloud pods (what the scale subresource reports).",
    )


CLOUD_SCALE = ScaleSubresource(
    spec_replicas_path=".spec.cloud.replicas",
    status_replicas_path=".status.cloudReplicas",
    label_selector_path=".status.cloudSelector",
)
"""``kubectl scale`` and a HorizontalPodAutoscaler or KEDA scale the cloud part (with
``autoscaling.enabled`` the operator's own loop decides instead)."""


_DEVICE_COUNT = "self.devices.map(g, g.count).sum()"

_CEL_RULES: tuple[tuple[str, str], ...] = (
    (f"{_DEVICE_COUNT} <= {MAX_DEVICES}", TOTAL_DEVICES_MESSAGE),
    (
        "self.devices.all(g, self.devices.filter(h, h.name == g.name).size() == 1)",
        GROUP_NAMES_MESSAGE,
    ),
    (
        "self.speculation.gammaMin <= self.speculation.gammaInitial && "
        "self.speculation.gammaInitial <= self.speculation.gammaMax",
        GAMMA_MESSAGE,
    ),
    ("self.speculation.defaultMaxTokens <= self.speculation.maxTokens", TOKENS_MESSAGE),
    (
        "self.cloud.minReplicas <= self.cloud.replicas && "
        "self.cloud.replicas <= self.cloud.maxReplicas",
        CLOUD_REPLICAS_MESSAGE,
    ),
    (
        "[has(self.model.builtin), has(self.model.path), has(self.model.objectStore)]"
        ".filter(x, x).size() == 1",
        "exactly one of model.builtin, model.path or model.objectStore must be set",
    ),
    (
        "!has(self.adapter.source) || "
        "[has(self.adapter.source.builtin), has(self.adapter.source.path), "
        "has(self.adapter.source.objectStore)].filter(x, x).size() == 1",
        ADAPTER_SOURCE_MESSAGE,
    ),
    (
        "!has(self.adapter.source) || !has(self.adapter.source.builtin)",
        BUILTIN_ADAPTER_MESSAGE,
    ),
)
"""The admission-time twins of the validators above (tests/unit/test_cel_matches_pydantic.py
evaluates both on the same specs)."""


KIND = register_kind(
    KindInfo(
        kind="HatInferenceService",
        plural="hatinferenceservices",
        short_names=("his",),
        spec_model=HatInferenceServiceSpec,
        status_model=HatInferenceServiceStatus,
        roles=(
            RoleInfo(
                "cloud",
                "cloud",
                lambda spec: spec.cloud.replicas,
                subscribes=("middle", "middle.*"),
            ),
            RoleInfo(
                "device",
                "edge",
                lambda spec: spec.device_count,
                publishes=("middle", "middle.*"),
            ),
        ),
        app_module="edgeloom.apps.hat",
        description="HAT device-cloud speculative LLM inference: devices draft with the "
        "model's outer blocks and an adapter and serve an OpenAI-compatible endpoint; cloud "
        "replicas verify with the middle blocks.",
        shape="service",
        extra_columns=(
            PrinterColumn(
                "Cloud",
                ".status.cloudReplicas",
                type="integer",
                description="Cloud replicas asked for now.",
            ),
            PrinterColumn(
                "Available",
                ".status.availableReplicas",
                type="integer",
                description="Device and cloud pods available.",
            ),
        ),
        cel_rules=_CEL_RULES,
        scale=CLOUD_SCALE,
    )
)
