"""Model folders in the JetStream object store: one object per folder, no pickle.

Every file of the folder travels as a ``uint8`` tensor named after the file inside one codec
message (safetensors), and the envelope lists the names, so a folder comes back byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

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
