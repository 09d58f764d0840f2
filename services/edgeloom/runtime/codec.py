"""Tensor codec: an envelope plus a dict of tensors as one safetensors buffer.

The wire format is exactly safetensors (8-byte little-endian header length, JSON header, raw
little-endian tensor bytes), with the message envelope as JSON in ``__metadata__["envelope"]``.
No pickle anywhere. Decoding validates the header before touching the data: sizes, offsets,
dtypes and shapes are checked against explicit limits, so a hostile or truncated payload raises
:class:`CodecError` and never allocates past the declared limit. Decoded tensors are views of
the received buffer (no second copy).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from edgeloom.runtime.framing import ENVELOPE_KEY, envelope_of, parse_header
from edgeloom.runtime.framing import CodecError as CodecError  # re-exported: codec's error

# safetensors dtype names <-> torch dtypes; the allow-list for decoding.
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_DIM = 2**48  # any real tensor is far smaller; keeps torch's size arithmetic in range


@dataclass(frozen=True)
class Limits:
    """Bounds a decoder enforces before it allocates anything."""

    max_bytes: int = 256 * 1024 * 1024
    max_header_bytes: int = 1024 * 1024
    max_tensors: int = 4096
    max_ndim: int = 8
    dtypes: frozenset[str] = field(default_factory=lambda: frozenset(DTYPES))


DEFAULT_LIMITS = Limits()


Buffer = bytes | bytearray | memoryview | np.ndarray


@dataclass(frozen=True)
class Encoded:
    """An encoded message as a list of byte segments (header, then each tensor's memory).

    Nothing is copied at encode time: segments are views of the tensors, so a large payload
    can be chunked and sent without an intermediate buffer.
    """

    segments: tuple[memoryview, ...]

    @property
    def nbytes(self) -> int:
        return sum(len(s) for s in self.segments)

    def chunks(self, size: int) -> Iterator[bytes | memoryview]:
        """Consecutive pieces of at most ``size`` bytes that concatenate to the payload.

        Large segments (a quarter of ``size`` or more) are sliced without copying; only runs
        of small segments are joined into one piece.
        """
        if size <= 0:
            raise ValueError("chunk size must be positive")
        large = max(1, size // 4)
        pending: list[memoryview] = []
        pending_len = 0
        for seg in self.segments:
            if len(seg) >= large:
                if pending:
                    yield _join(pending)
                    pending, pending_len = [], 0
                for pos in range(0, len(seg), size):
                    piece = seg[pos : pos + size]
                    if len(piece) >= large:
                        yield piece
                    else:
                        pending, pending_len = [piece], len(piece)
                continue
            if pending_len + len(seg) > size:
                yield _join(pending)
                pending, pending_len = [], 0
            pending.append(seg)
            pending_len += len(seg)
        if pending:
            yield _join(pending)

    def tobytes(self) -> bytes:
        return b"".join(self.segments)


def _join(parts: list[memoryview]) -> bytes | memoryview:
    return parts[0] if len(parts) == 1 else b"".join(parts)


def encode(envelope_json: str, tensors: dict[str, torch.Tensor] | None = None) -> Encoded:
    """Encode an envelope and tensors as safetensors.

    Tensors are laid out largest element size first so that every tensor is aligned to its
    element size when decoded in place. The tensors must not be modified until the encoded
    message has been sent.
    """
    tensors = tensors or {}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise CodecError(f"tensor {name!r}: expected a torch.Tensor, got {type(t).__name__}")
    header: dict[str, object] = {"__metadata__": {ENVELOPE_KEY: envelope_json}}
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    segments: list[memoryview] = []
    offset = 0
    for name in order:
        t = tensors[name]
        if t.dtype not in _NAMES:
            raise CodecError(f"tensor {name!r}: dtype {t.dtype} is not supported")
        size = t.numel() * t.element_size()
        header[name] = {
            "dtype": _NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
        if size:
            flat = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
            segments.append(flat.numpy().data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)  # data starts 8-byte aligned
    head = memoryview(struct.pack("<Q", len(raw)) + raw)
    return Encoded((head, *segments))


def _check_entry(
    name: str, entry: object, limits: Limits
) -> tuple[torch.dtype, list[int], int, int]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise CodecError(f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in limits.dtypes or dtype not in DTYPES:
        raise CodecError(f"tensor {name!r}: dtype {dtype!r} is not allowed")
    if (
        not isinstance(shape, list)
        or len(shape) > limits.max_ndim
        or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < _MAX_DIM for d in shape
        )
        or math.prod(d for d in shape if d) >= _MAX_DIM
    ):
        raise CodecError(
            f"tensor {name!r}: shape must be a list of at most "
            f"{limits.max_ndim} non-negative integers"
        )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise CodecError(f"tensor {name!r}: data_offsets must be two integers")
    begin, end = offsets
    itemsize = torch.empty((), dtype=DTYPES[dtype]).element_size()
    if begin < 0 or end - begin != math.prod(shape) * itemsize:
        raise CodecError(f"tensor {name!r}: data_offsets do not match shape {shape} and {dtype}")
    return DTYPES[dtype], shape, begin, end


def decode(data: Buffer, limits: Limits = DEFAULT_LIMITS) -> tuple[str, dict[str, torch.Tensor]]:
    """Decode a buffer made by :func:`encode` into (envelope JSON, tensors).

    Tensors are views of ``data`` when it is writable (copied once when it is read-only).

    Raises
    ------
    CodecError
        On any malformed, truncated, oversized or disallowed payload.
    """
    if len(data) > limits.max_bytes:  # before any copy
        raise CodecError(f"payload of {len(data)} bytes exceeds the limit of {limits.max_bytes}")
    arr = np.frombuffer(data, dtype=np.uint8)
    header, start = parse_header(arr, limits.max_header_bytes)
    envelope = envelope_of(header)
    del header["__metadata__"]
    if len(header) > limits.max_tensors:
        raise CodecError(f"{len(header)} tensors exceed the limit of {limits.max_tensors}")
    entries = sorted(
        ((name, *_check_entry(name, entry, limits)) for name, entry in header.items()),
        key=lambda e: e[3],
    )
    cursor = 0
    for name, _, _, begin, end in entries:
        if begin != cursor:
            raise CodecError(f"tensor {name!r}: data_offsets overlap or leave a gap")
        cursor = end
    if start + cursor != len(arr):
        raise CodecError(
            f"payload size mismatch: header describes {start + cursor} bytes, got {len(arr)}"
        )
    buf = arr if arr.flags.writeable else arr.copy()
    tensors: dict[str, torch.Tensor] = {}
    for name, dtype, shape, begin, end in entries:
        if end == begin:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        count = (end - begin) // torch.empty((), dtype=dtype).element_size()
        view = torch.frombuffer(buf, dtype=dtype, count=count, offset=start + begin)
        tensors[name] = view.reshape(shape)
    return envelope, tensors
