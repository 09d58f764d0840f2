"""SplitTrainingJob: split federated learning (MergeSFL and its baselines)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from edgeloom.api.base import MAX_SEED, SpecModel
from edgeloom.api.device import DeviceProfile, DeviceProfileLabel, EmulationMode
from edgeloom.api.registry import HeadlineMetric, KindInfo, RoleInfo, register_kind
from edgeloom.api.status import Status

Name = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)]


class SplitMethod(StrEnum):
    """Training method; the baselines share models, data and partition with MergeSFL."""

    MERGESFL = "mergesfl"
    SPLITFED = "splitfed"
    SFL = "sfl"
    FEDAVG = "fedavg"


class Architecture(StrEnum):
    """Built-in models, each with a documented bottom/top split."""

    CNN1D = "cnn1d"
    DIGITS_CNN = "digits-cnn"
    CIFAR_ALEXNET = "cifar-alexnet"


class DatasetName(StrEnum):
    MNIST1D = "mnist1d"
    DIGITS = "digits"
    CIFAR10 = "cifar10"
    FASHION_MNIST = "fashion-mnist"
    IMAGEFOLDER = "imagefolder"


PATH_DATASETS = (DatasetName.CIFAR10, DatasetName.IMAGEFOLDER)
"""Datasets read from ``dataset.path``; the others are generated or bundled offline."""


@dataclass(frozen=True)
class ArchitectureFacts:
    """What the API knows of a built-in model; :mod:`edgeloom.models.split_cnn` builds it
    (a test checks the block counts against the built models)."""

    blocks: int
    """Blocks of the model, the unit of ``model.splitPoint``."""
    default_split_point: int
    """Leading blocks on the worker when ``model.splitPoint`` is not given."""
    datasets: tuple[DatasetName, ...]
    """The datasets the model's input shape fits."""


ARCHITECTURES: dict[Architecture, ArchitectureFacts] = {
    Architecture.CNN1D: ArchitectureFacts(5, 2, (DatasetName.MNIST1D,)),
    Architecture.DIGITS_CNN: ArchitectureFacts(4, 2, (DatasetName.DIGITS,)),
    Architecture.CIFAR_ALEXNET: ArchitectureFacts(
        8, 5, (DatasetName.CIFAR10, DatasetName.FASHION_MNIST, DatasetName.IMAGEFOLDER)
    ),
}
"""The one table of the built-in models' facts, read by the validators, the CEL rules and
:mod:`edgeloom.models`."""

MAX_WORKERS = 1000
"""Workers of one job in all its groups together: each is a process (a pod in a cluster) with
its own copy of the data and the bottom model, and a NATS connection to the server."""
MAX_SAMPLES = 1_000_000
"""``dataset.samples`` at most: a million 32x32 RGB images are 12 GB of float32 in every role
that loads them (MNIST-1D: 160 MB); CIFAR-10 has 60,000."""
MAX_ROUNDS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_LEARNING_RATE = 10.0
MAX_WAIT_SECONDS = 86_400.0
"""A day: deadlines and health windows longer than that would never fire in practice."""

# The messages of the cross-field rules, given alike by pydantic (``edgeloom run``, the
# operator) and by the CRD's CEL rules (admission); see _CEL_RULES.
MIN_BATCH_MESSAGE = "training.minBatchSize must not exceed training.maxBatchSize"
WORKERS_PER_ROUND_MESSAGE = "training.workersPerRound must not exceed the number of workers"
MIN_WORKERS_MESSAGE = "participation.minWorkers must not exceed the number of workers"
TOTAL_WORKERS_MESSAGE = f"workers[*].count must add up to at most {MAX_WORKERS} workers"
GROUP_NAMES_MESSAGE = "workers[*].name must be unique: each group becomes a Job of that name"
DATASET_PATH_MESSAGE = f"dataset.path is required for {' and '.join(PATH_DATASETS)}"


def _datasets_message(arch: Architecture) -> str:
    datasets = " or ".join(ARCHITECTURES[arch].datasets)
    return f"model.architecture {arch} needs dataset.name {datasets}"


def _split_point_message(arch: Architecture) -> str:
    return f"model.splitPoint must be below {ARCHITECTURES[arch].blocks} for {arch}"


class PartitionScheme(StrEnum):
    IID = "iid"
    DIRICHLET = "dirichlet"
    DOMINANT_CLASS = "dominant-class"


class ModelRef(SpecModel):
    """The model and where it is split between worker (bottom) and server (top)."""

    architecture: Architecture = Field(
        default=Architecture.CNN1D,
        description="Built-in model: cnn1d, digits-cnn or cifar-alexnet.",
    )
    split_point: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="Number of leading blocks that run on the worker; default per architecture.",
    )


class DatasetRef(SpecModel):
    """Training data; mnist1d and digits are generated or bundled offline, fashion-mnist comes
    from Debian's dataset-fashion-mnist package."""

    name: DatasetName = Field(default=DatasetName.MNIST1D, description="Dataset to train on.")
    path: str | None = Field(
        default=None,
        description=(
            "Local or PVC path; required for cifar10 and imagefolder; for fashion-mnist the "
            "folder of its four IDX files (default /usr/share/datasets/fashion-mnist)."
        ),
    )
    samples: int | None = Field(
        default=None,
        ge=100,
        le=MAX_SAMPLES,
        description="Samples to use (train+test): MNIST-1D generates this many, other datasets "
        "keep a seeded random subset of this size.",
    )

    @model_validator(mode="after")
    def _path_when_needed(self) -> DatasetRef:
        if self.name in PATH_DATASETS and not self.path:
            raise ValueError(DATASET_PATH_MESSAGE)
        return self


class Partition(SpecModel):
    """How training data is split over workers (non-IID label skew)."""

    scheme: PartitionScheme = Field(
        default=PartitionScheme.DIRICHLET, description="iid, dirichlet or dominant-class."
    )
    alpha: float = Field(
        default=0.1, gt=0, le=1000, description="Dirichlet concentration; smaller is more skewed."
    )
    dominant_ratio: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="dominant-class: fraction of each worker's samples from its dominant class.",
    )


class WorkerGroup(SpecModel):
    """A group of identical workers."""

    name: Name = Field(description="Group name, for people reading the spec.")
    count: int = Field(ge=1, le=MAX_WORKERS, description="Number of workers in the group.")
    profile: DeviceProfile = Field(
        default_factory=DeviceProfile, description="Emulated device profile of each worker."
    )
    device_profile_label: DeviceProfileLabel = None


class Training(SpecModel):
    """Rounds, batches and optimiser."""

    rounds: int = Field(default=50, ge=1, le=MAX_ROUNDS, description="Maximum number of rounds.")
    iterations_per_round: int = Field(
        default=20, ge=1, le=10000, description="Local iterations per round (tau)."
    )
    total_batch_size: int = Field(
        default=320,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="Merged batch size per iteration summed over selected workers (B).",
    )
    min_batch_size: int = Field(
        default=4, ge=1, le=MAX_BATCH_SIZE, description="Lower bound of a worker's batch."
    )
    max_batch_size: int = Field(
        default=128, ge=1, le=MAX_BATCH_SIZE, description="Upper bound of a worker's batch."
    )
    workers_per_round: int | None = Field(
        default=None,
        ge=1,
        le=MAX_WORKERS,
        description="Workers selected per round (K); default all.",
    )
    learning_rate: float = Field(
        default=0.05, gt=0, le=MAX_LEARNING_RATE, description="SGD learning rate."
    )
    lr_decay: float = Field(
        default=0.993, gt=0, le=1, description="Learning rate multiplier applied each round."
    )
    lr_floor: float = Field(
        default=0.005, ge=0, le=MAX_LEARNING_RATE, description="Learning rate never decays below."
    )
    momentum: float = Field(default=0.0, ge=0, lt=1, description="SGD momentum.")
    joint_time_slack: float = Field(
        default=0.25,
        ge=0,
        le=4,
        description=(
            "How much longer than the regulated iteration time joint batch sizing may make "
            "an iteration to balance the merged label mix (0.25: 25 %)."
        ),
    )
    seed: int = Field(
        default=0, ge=0, le=MAX_SEED, description="Seed for data, partition and model init."
    )


class Ablation(SpecModel):
    """Turn MergeSFL's two mechanisms off one at a time."""

    feature_merging: bool = Field(
        default=True, description="Merge selected workers' features into one mixed batch."
    )
    batch_regulation: bool = Field(
        default=True, description="Size each worker's batch so iterations finish together."
    )
    joint_batch_sizing: bool = Field(
        default=True,
        description=(
            "Choose each candidate set's batch sizes for the closest merged label mix within "
            "(1 + jointTimeSlack) x its regulated iteration time, inside the worker selection "
            "(a reconstruction of the paper's joint optimisation); false: regulation alone, "
            "the control step of the official code."
        ),
    )


class StopCondition(SpecModel):
    target_accuracy: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description=(
            "Test accuracy (0-1) whose first crossing is recorded as timeToTargetSeconds; the "
            "job stops there unless stopAtTarget is false."
        ),
    )
    stop_at_target: bool = Field(
        default=True,
        description=(
            "Stop once targetAccuracy is reached; false runs every round and still records "
            "timeToTargetSeconds (to compare methods on both)."
        ),
    )


class UnhealthyWorkerPolicy(StrEnum):
    """What the operator does with a worker its Prometheus checks find unhealthy."""

    REPLACE = "replace"
    DROP = "drop"
    REPORT = "report"


class Participation(SpecModel):
    """What happens when workers are slow or die."""

    min_workers: int = Field(
        default=1,
        ge=1,
        le=MAX_WORKERS,
        description="The job fails when fewer workers than this remain.",
    )
    round_deadline_seconds: float = Field(
        default=60.0,
        gt=0,
        le=MAX_WAIT_SECONDS,
        description="Wall seconds a worker may take to answer one request (load, forward, "
        "backward, upload) before it is dropped from the round.",
    )
    on_unhealthy_worker: UnhealthyWorkerPolicy = Field(
        default=UnhealthyWorkerPolicy.REPLACE,
        description="What the operator does with a worker whose metrics went stale or whose "
        "round time stays far above its peers' (checked on Prometheus data): replace (delete "
        "the pod; its Job starts a new one, which rejoins), drop (the server stops using the "
        "worker for the rest of the job) or report (a condition and an event only).",
    )
    unhealthy_after_seconds: float = Field(
        default=60.0,
        ge=5,
        le=MAX_WAIT_SECONDS,
        description="A worker is unhealthy when Prometheus could not scrape it for this long, "
        "or when its round time averaged over this long exceeds stragglerFactor times its "
        "peers' median.",
    )
    straggler_factor: float = Field(
        default=3.0,
        gt=1,
        le=100,
        description="How many times its peers' median round time makes a worker a straggler.",
    )


class SplitTrainingJobSpec(SpecModel):
    """Desired state of a split federated learning job."""

    method: SplitMethod = Field(
        default=SplitMethod.MERGESFL, description="mergesfl, splitfed, sfl or fedavg."
    )
    model: ModelRef = Field(default_factory=ModelRef, description="Model and split point.")
    dataset: DatasetRef = Field(default_factory=DatasetRef, description="Training data.")
    partition: Partition = Field(default_factory=Partition, description="Non-IID partition.")
    workers: list[WorkerGroup] = Field(
        min_length=1, max_length=64, description="Worker groups with device profiles."
    )
    training: Training = Field(default_factory=Training, description="Rounds and optimiser.")
    ablation: Ablation = Field(default_factory=Ablation, description="MergeSFL ablations.")
    stop: StopCondition = Field(default_factory=StopCondition, description="Early stopping.")
    participation: Participation = Field(
        default_factory=Participation, description="Deadlines and minimum participation."
    )
    checkpoint_interval: int = Field(
        default=5,
        ge=1,
        le=MAX_ROUNDS,
        description="Rounds between server checkpoints in the object store.",
    )
    emulation: EmulationMode = Field(
        default=EmulationMode.VIRTUAL,
        description=(
            "Device emulation mode: virtual (measured compute), modelled (compute from the "
            "model's FLOPs, so runs repeat exactly), sleep or off."
        ),
    )
    gpu: bool = Field(default=False, description="Request a GPU for the server role.")

    @property
    def worker_count(self) -> int:
        return sum(g.count for g in self.workers)

    @model_validator(mode="after")
    def _cross_field(self) -> SplitTrainingJobSpec:
        if self.worker_count > MAX_WORKERS:
            raise ValueError(TOTAL_WORKERS_MESSAGE)
        names = [g.name for g in self.workers]
        if len(set(names)) != len(names):
            raise ValueError(GROUP_NAMES_MESSAGE)
        t = self.training
        if t.min_batch_size > t.max_batch_size:
            raise ValueError(MIN_BATCH_MESSAGE)
        if t.workers_per_round is not None and t.workers_per_round > self.worker_count:
            raise ValueError(WORKERS_PER_ROUND_MESSAGE)
        if self.participation.min_workers > self.worker_count:
            raise ValueError(MIN_WORKERS_MESSAGE)
        arch = self.model.architecture
        if self.dataset.name not in ARCHITECTURES[arch].datasets:
            raise ValueError(_datasets_message(arch))
        split_point = self.model.split_point
        if split_point is not None and split_point >= ARCHITECTURES[arch].blocks:
            raise ValueError(_split_point_message(arch))
        return self


class SplitTrainingJobStatus(Status):
    """Status of a split training job."""

    final_accuracy: float | None = Field(
        default=None, ge=0, le=1, description="Test accuracy after the last round."
    )
    time_to_target_seconds: float | None = Field(
        default=None, ge=0, description="Virtual seconds until the target accuracy was reached."
    )


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


_WORKER_COUNT = "self.workers.map(g, g.count).sum()"

_CEL_RULES: tuple[tuple[str, str], ...] = (
    (f"{_WORKER_COUNT} <= {MAX_WORKERS}", TOTAL_WORKERS_MESSAGE),
    (
        "self.workers.all(g, self.workers.filter(h, h.name == g.name).size() == 1)",
        GROUP_NAMES_MESSAGE,
    ),
    ("self.training.minBatchSize <= self.training.maxBatchSize", MIN_BATCH_MESSAGE),
    (
        f"!has(self.training.workersPerRound) || self.training.workersPerRound <= {_WORKER_COUNT}",
        WORKERS_PER_ROUND_MESSAGE,
    ),
    (
        f"!(self.dataset.name in {_cel_list(PATH_DATASETS)}) || "
        "(has(self.dataset.path) && self.dataset.path != '')",
        DATASET_PATH_MESSAGE,
    ),
    (f"self.participation.minWorkers <= {_WORKER_COUNT}", MIN_WORKERS_MESSAGE),
    *(
        (
            f"self.model.architecture != '{arch}' || "
            f"self.dataset.name in {_cel_list(facts.datasets)}",
            _datasets_message(arch),
        )
        for arch, facts in ARCHITECTURES.items()
    ),
    *(
        (
            f"self.model.architecture != '{arch}' || !has(self.model.splitPoint) || "
            f"self.model.splitPoint < {facts.blocks}",
            _split_point_message(arch),
        )
        for arch, facts in ARCHITECTURES.items()
    ),
)
"""The admission-time twins of the validators above, generated from the same table and
messages (tests/unit/test_cel_matches_pydantic.py evaluates both on the same specs)."""


KIND = register_kind(
    KindInfo(
        kind="SplitTrainingJob",
        plural="splittrainingjobs",
        short_names=("stj",),
        spec_model=SplitTrainingJobSpec,
        status_model=SplitTrainingJobStatus,
        roles=(
            RoleInfo("server", "cloud", lambda spec: 1),
            RoleInfo("worker", "edge", lambda spec: spec.worker_count, essential=False),
        ),
        app_module="edgeloom.apps.mergesfl",
        description="Split federated learning (MergeSFL, SplitFed, sequential split learning, "
        "FedAvg) over edge workers.",
        shape="job",
        metric=HeadlineMetric("accuracy", "Test accuracy after the last round, 0-1"),
        cel_rules=_CEL_RULES,
    )
)
