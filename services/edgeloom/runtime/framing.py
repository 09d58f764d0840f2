"""The message frame without tensors: safetensors' length-prefixed JSON header.

Torch-free, so the operator can read the status reports jobs publish (messages with an
envelope and no tensors) without importing torch; :mod:`edgeloom.runtime.codec` parses every
header through :func:`parse_header` too.
"""

from __future__ import annotations

import json
import struct
from typing import Any

ENVELOPE_KEY = "envelope"
H_ERROR = "Edgeloom-Error"
"""NATS header of a reply that carries an error instead of an answer."""


class CodecError(ValueError):
    """A payload that cannot be encoded or fails validation on decode."""


def parse_header(data: Any, max_header_bytes: int) -> tuple[dict[str, Any], int]:
    """Parse the JSON header of a frame; returns (header, offset of the tensor data).

    ``data`` is any sliceable byte buffer (bytes, memoryview, uint8 array).
    """
    if len(data) < 8:
        raise CodecError("payload truncated: shorter than the 8-byte header length")
    (hlen,) = struct.unpack("<Q", bytes(data[:8]))
    if hlen > max_header_bytes:
        raise CodecError(f"header of {hlen} bytes exceeds the limit of {max_header_bytes}")
    if 8 + hlen > len(data):
        raise CodecError("payload truncated: header runs past the end")
    try:
        header = json.loads(bytes(data[8 : 8 + hlen]))
    except (ValueError, RecursionError) as err:  # bad JSON, huge integers, deep nesting
        raise CodecError(f"header is not valid JSON: {err}") from None
    if not isinstance(header, dict):
        raise CodecError("header must be a JSON object")
    return header, 8 + hlen


def frame_envelope(envelope_json: str) -> bytes:
    """A frame that carries ``envelope_json`` and no tensors, as :func:`codec.encode` writes it."""
    raw = json.dumps({"__metadata__": {ENVELOPE_KEY: envelope_json}}, separators=(",", ":"))
    raw += " " * (-(8 + len(raw.encode())) % 8)  # data starts 8-byte aligned
    return struct.pack("<Q", len(raw.encode())) + raw.encode()


def envelope_of(header: dict[str, Any]) -> str:
    """The envelope JSON stored in a parsed header's ``__metadata__``."""
    meta = header.get("__metadata__")
    envelope = meta.get(ENVELOPE_KEY) if isinstance(meta, dict) else None
    if not isinstance(envelope, str):
        raise CodecError("header has no envelope in __metadata__")
    return envelope


def read_envelope(data: bytes, max_bytes: int = 1024 * 1024) -> str:
    """The envelope of a frame that carries no tensors (a status report, a result).

    Raises
    ------
    CodecError
        On a malformed, oversized or truncated frame, or one that carries tensors.
    """
    if len(data) > max_bytes:
        raise CodecError(f"payload of {len(data)} bytes exceeds the limit of {max_bytes}")
    header, start = parse_header(data, max_bytes)
    envelope = envelope_of(header)
    if len(header) != 1 or start != len(data):
        raise CodecError("expected a message without tensors")
    return envelope
