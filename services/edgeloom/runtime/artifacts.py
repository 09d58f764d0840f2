"""Artifacts: folders (HF model folders, PEFT adapters, checkpoints) to and from a local or PVC
path or the JetStream object store, for every kind.

In the object store a folder is one object, no pickle: every file travels as a ``uint8``
tensor named after the file inside one codec message (safetensors), and the envelope lists the
names, so a folder comes back byte for byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import Field

from edgeloom.api.artifacts import BuiltinModel, FolderOutput, ModelSource
from edgeloom.api.base import ApiModel
from edgeloom.runtime.bus import Bus


class FolderManifest(ApiModel):
    files: list[str] = Field(description="File names, relative to the folder.")


async def put_folder(bus: Bus, bucket: str, name: str, folder: Path) -> int:
    """Store every file under ``folder``; returns the stored size in bytes."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    tensors = {
        f: torch.frombuffer(bytearray((folder / f).read_bytes()), dtype=torch.uint8) for f in files
    }
    return await bus.put_object(bucket, name, FolderManifest(files=files), tensors)


async def get_folder(bus: Bus, bucket: str, name: str, destination: Path) -> Path:
    """Fetch a folder stored by :func:`put_folder` into ``destination``."""
    message = await bus.get_object(bucket, name)
    manifest = message.parse(FolderManifest)
    root = destination.resolve()
    for file in manifest.files:
        target = (root / file).resolve()
        if not target.is_relative_to(root) or file not in message.tensors:
            raise ValueError(f"object {bucket}/{name}: bad file entry {file!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(message.tensors[file].numpy().tobytes())
    return destination


async def fetch_model_folder(
    bus: Bus,
    source: ModelSource,
    scratch: Path,
    resolve_builtin: Callable[[BuiltinModel], Path],
) -> Path:
    """The local folder of ``source``: a builtin (``resolve_builtin`` builds or finds it, in a
    worker thread), a path as given, or an object-store folder fetched into ``scratch``."""
    if source.builtin is not None:
        return await asyncio.to_thread(resolve_builtin, source.builtin)
    if source.path is not None:
        return Path(source.path)
    if source.object_store is None:  # the model validator forbids this
        raise ValueError("the model source names no builtin, path or objectStore")
    ref = source.object_store
    return await get_folder(bus, ref.bucket, ref.name, scratch)


async def publish_folder(bus: Bus, folder: Path, output: FolderOutput) -> int | None:
    """Store ``folder`` where ``output`` asks besides its path; the stored bytes, or None."""
    if output.object_store is None:
        return None
    ref = output.object_store
    return await put_folder(bus, ref.bucket, ref.name, folder)
