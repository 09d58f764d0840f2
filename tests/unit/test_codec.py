"""The tensor codec: safetensors round trips, chunking, and validation of hostile payloads."""

from __future__ import annotations

import json
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloom.runtime.codec import DTYPES, CodecError, Encoded, Limits, decode, encode
from edgeloom.runtime.framing import frame_envelope

ENVELOPE = json.dumps({"type": "features", "round": 3})
FUZZ = settings(max_examples=200, deadline=None)


def sample_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A tensor of ``dtype`` with varied values (both signs where the dtype has them)."""
    gen = torch.Generator().manual_seed(seed)
    if dtype is torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * 100).to(dtype)
    info = torch.iinfo(dtype)
    low, high = max(info.min, -1000), min(info.max, 1000)
    return torch.randint(low, high + 1, shape, generator=gen, dtype=torch.int64).to(dtype)


def craft(header: dict[str, Any], data: bytes = b"", envelope: str | None = "{}") -> bytes:
    """Bytes in safetensors layout from a hand-written header (no validation)."""
    header = dict(header)
    if envelope is not None:
        header.setdefault("__metadata__", {"envelope": envelope})
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def entry(dtype: Any = "F32", shape: Any = (1,), offsets: Any = (0, 4)) -> dict[str, Any]:
    def as_json(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    return {"dtype": dtype, "shape": as_json(shape), "data_offsets": as_json(offsets)}


def assert_same(decoded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert decoded.keys() == expected.keys()
    for name, tensor in expected.items():
        got = decoded[name]
        assert got.dtype == tensor.dtype, name
        assert got.shape == tensor.shape, name
        assert torch.equal(got, tensor), name


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_every_allowed_dtype_round_trips(name: str) -> None:
    tensor = sample_tensor(DTYPES[name], (3, 5), seed=len(name))

    envelope, tensors = decode(encode(ENVELOPE, {"x": tensor}).tobytes())

    assert envelope == ENVELOPE
    assert_same(tensors, {"x": tensor})


def test_mixed_dtypes_empty_and_zero_dim_tensors_round_trip_together() -> None:
    tensors = {
        "bf16": sample_tensor(torch.bfloat16, (4, 3)),
        "flags": sample_tensor(torch.bool, (7,)),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "int_scalar": torch.tensor(-7, dtype=torch.int16),
        "empty": torch.empty(0, 5, dtype=torch.float32),
        "empty_bool": torch.empty(0, dtype=torch.bool),
        "bytes": sample_tensor(torch.uint8, (9,)),
    }

    _, decoded = decode(encode(ENVELOPE, tensors).tobytes())

    assert_same(decoded, tensors)
    assert decoded["scalar"].shape == torch.Size([])
    assert decoded["empty"].shape == torch.Size([0, 5])


def test_envelope_without_tensors_round_trips() -> None:
    envelope, tensors = decode(encode(ENVELOPE).tobytes())

    assert envelope == ENVELOPE
    assert tensors == {}


def test_the_torch_free_frame_is_the_codecs_frame() -> None:
    for envelope in (ENVELOPE, '{"text": "é"}', "{}"):
        assert frame_envelope(envelope) == encode(envelope).tobytes()


def test_non_contiguous_tensors_round_trip_by_value() -> None:
    base = sample_tensor(torch.float32, (6, 4))
    tensors = {"transposed": base.t(), "strided": base[::2, 1:]}

    _, decoded = decode(encode(ENVELOPE, tensors).tobytes())

    assert_same(decoded, tensors)


def test_encoded_bytes_are_valid_safetensors() -> None:
    tensors = {
        "w": sample_tensor(torch.float32, (4, 4)),
        "b": sample_tensor(torch.bfloat16, (4,)),
        "mask": sample_tensor(torch.bool, (2, 3)),
        "ids": sample_tensor(torch.int64, (5,)),
        "scalar": torch.tensor(1.0, dtype=torch.float16),
        "none": torch.empty(0, 2, dtype=torch.int8),
    }
    encoded = encode(ENVELOPE, tensors)

    loaded = safetensors.torch.load(encoded.tobytes())

    assert_same(loaded, tensors)


def test_envelope_sits_in_safetensors_metadata() -> None:
    raw = encode(ENVELOPE, {"x": torch.ones(2)}).tobytes()
    (hlen,) = struct.unpack("<Q", raw[:8])

    header = json.loads(raw[8 : 8 + hlen])

    assert header["__metadata__"] == {"envelope": ENVELOPE}


def test_nbytes_matches_tobytes_length() -> None:
    encoded = encode(ENVELOPE, {"a": torch.ones(3, 3), "b": torch.zeros(5, dtype=torch.int8)})

    assert encoded.nbytes == len(encoded.tobytes())


def test_tensor_data_is_aligned_to_element_size_after_decoding() -> None:
    tensors = {name: sample_tensor(dtype, (3,)) for name, dtype in DTYPES.items()}
    payload = bytearray(encode(ENVELOPE, tensors).tobytes())

    _, decoded = decode(payload)

    for name, tensor in decoded.items():
        assert tensor.data_ptr() % tensor.element_size() == 0, name


# --- decoded tensors are writable views ---------------------------------------------------------


def test_decoding_a_writable_buffer_returns_views_of_it() -> None:
    payload = bytearray(encode(ENVELOPE, {"x": torch.zeros(4, dtype=torch.float32)}).tobytes())

    _, tensors = decode(payload)
    tensors["x"][2] = 1.5

    assert payload[-8:-4] == struct.pack("<f", 1.5)


def test_decoding_read_only_bytes_returns_writable_tensors_without_touching_the_input() -> None:
    payload = encode(ENVELOPE, {"x": torch.zeros(4)}).tobytes()
    original = bytes(payload)

    _, tensors = decode(payload)
    tensors["x"] += 1

    assert torch.equal(tensors["x"], torch.ones(4))
    assert payload == original


def test_empty_tensors_decode_writable() -> None:
    _, tensors = decode(encode(ENVELOPE, {"e": torch.empty(0, 3)}).tobytes())

    assert tensors["e"].shape == torch.Size([0, 3])
    tensors["e"].add_(1)  # would raise on a read-only tensor


# --- chunks -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_encoded() -> Encoded:
    tensors = {
        "big": sample_tensor(torch.float32, (300,)),
        "mid": sample_tensor(torch.int16, (40,)),
        "tiny1": sample_tensor(torch.uint8, (3,)),
        "tiny2": sample_tensor(torch.bool, (1,)),
        "empty": torch.empty(0),
        "scalar": torch.tensor(4, dtype=torch.int64),
    }
    return encode(ENVELOPE, tensors)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 8, 13, 64, 100, 333, 1000, 1201, 4096, 10**6])
def test_chunks_concatenate_to_payload_and_respect_size(mixed_encoded: Encoded, size: int) -> None:
    pieces = [bytes(p) for p in mixed_encoded.chunks(size)]

    assert b"".join(pieces) == mixed_encoded.tobytes()
    assert all(0 < len(p) <= size for p in pieces)


def test_chunk_size_must_be_positive(mixed_encoded: Encoded) -> None:
    with pytest.raises(ValueError, match="positive"):
        list(mixed_encoded.chunks(0))


@FUZZ
@given(
    sizes=st.lists(st.integers(0, 700), max_size=8),
    chunk=st.integers(1, 2000),
)
def test_chunks_of_random_payloads_concatenate_and_respect_size(
    sizes: list[int], chunk: int
) -> None:
    tensors = {f"t{i}": torch.arange(n, dtype=torch.uint8) for i, n in enumerate(sizes)}
    encoded = encode(ENVELOPE, tensors)

    pieces = [bytes(p) for p in encoded.chunks(chunk)]

    assert b"".join(pieces) == encoded.tobytes()
    assert all(0 < len(p) <= chunk for p in pieces)


# --- encode refuses what it cannot represent ----------------------------------------------------


def test_encode_refuses_unsupported_dtype() -> None:
    with pytest.raises(CodecError, match="complex64"):
        encode(ENVELOPE, {"z": torch.zeros(2, dtype=torch.complex64)})


def test_encode_refuses_non_tensor_values() -> None:
    with pytest.raises(CodecError, match=r"torch\.Tensor"):
        encode(ENVELOPE, {"x": [1, 2, 3]})  # type: ignore[dict-item]


# --- fuzzing: decode returns or raises CodecError, nothing else ---------------------------------


def _decode_or_codec_error(data: bytes) -> None:
    """Any other exception fails the test; a success must be a well-formed result."""
    try:
        envelope, tensors = decode(data)
    except CodecError:
        return
    assert isinstance(envelope, str)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    _decode_or_codec_error(data)


@FUZZ
@given(header=st.binary(max_size=256), tail=st.binary(max_size=64))
def test_arbitrary_header_bytes_with_valid_length_prefix_decode_or_raise_codec_error(
    header: bytes, tail: bytes
) -> None:
    _decode_or_codec_error(struct.pack("<Q", len(header)) + header + tail)


@pytest.fixture(scope="module")
def valid_payload() -> bytes:
    tensors = {
        "a": sample_tensor(torch.float32, (3, 2)),
        "b": sample_tensor(torch.bool, (5,)),
        "c": torch.tensor(9, dtype=torch.int64),
        "d": torch.empty(0, 4, dtype=torch.bfloat16),
    }
    return encode(ENVELOPE, tensors).tobytes()


@FUZZ
@given(data=st.data())
def test_truncated_encoding_raises_codec_error(valid_payload: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(valid_payload) - 1))

    with pytest.raises(CodecError):
        decode(valid_payload[:cut])


def test_truncation_at_every_position_raises_codec_error(valid_payload: bytes) -> None:
    for cut in range(len(valid_payload)):
        with pytest.raises(CodecError):
            decode(valid_payload[:cut])


@FUZZ
@given(data=st.data())
def test_byte_flips_in_header_decode_or_raise_codec_error(
    valid_payload: bytes, data: st.DataObject
) -> None:
    (hlen,) = struct.unpack("<Q", valid_payload[:8])
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, 8 + hlen - 1), st.integers(1, 255)), min_size=1, max_size=6
        )
    )
    corrupted = bytearray(valid_payload)
    for pos, mask in flips:
        corrupted[pos] ^= mask

    _decode_or_codec_error(bytes(corrupted))


_HASHABLE_JSON = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)


@FUZZ
@given(
    dtype=st.one_of(st.sampled_from(sorted(DTYPES)), _HASHABLE_JSON),
    # at most one zero dim next to dims below 2**31: larger ones have tests of their own
    shape=st.one_of(
        st.lists(st.integers(-4, 2**31), max_size=10),
        _HASHABLE_JSON,
        st.lists(_HASHABLE_JSON, max_size=3),
    ),
    offsets=st.one_of(
        st.lists(st.integers(-(2**66), 2**66), max_size=3),
        st.lists(_HASHABLE_JSON, max_size=3),
        _HASHABLE_JSON,
    ),
    data=st.binary(max_size=64),
)
def test_crafted_entries_decode_or_raise_codec_error(
    dtype: Any, shape: Any, offsets: Any, data: bytes
) -> None:
    payload = craft({"t": {"dtype": dtype, "shape": shape, "data_offsets": offsets}}, data)

    try:
        _, tensors = decode(payload)
    except CodecError:
        return
    t = tensors["t"]
    assert t.numel() * t.element_size() == len(data)


# --- crafted headers: each problem is named -----------------------------------------------------


@pytest.mark.parametrize(
    "dtype", ["F8_E4M3", "F8_E5M2", "C64", "U16", "garbage", "f32", "", 4, None]
)
def test_dtype_outside_allow_list_is_refused(dtype: Any) -> None:
    with pytest.raises(CodecError, match="dtype"):
        decode(craft({"t": entry(dtype=dtype)}, b"\0" * 4))


def test_limits_dtype_allow_list_refuses_i64_tensor() -> None:
    payload = encode(ENVELOPE, {"ids": torch.arange(4)}).tobytes()

    with pytest.raises(CodecError, match="'I64' is not allowed"):
        decode(payload, Limits(dtypes=frozenset({"F32"})))


def test_limits_dtype_allow_list_accepts_listed_dtype() -> None:
    payload = encode(ENVELOPE, {"x": torch.ones(4)}).tobytes()

    _, tensors = decode(payload, Limits(dtypes=frozenset({"F32"})))

    assert torch.equal(tensors["x"], torch.ones(4))


@pytest.mark.parametrize(
    "shape",
    [[-1], [2, -3], [1.5], ["4"], [True], "4", None, [[2]], [1] * 9],
    ids=[
        "negative",
        "negative-inner",
        "float",
        "string",
        "bool",
        "not-a-list",
        "null",
        "nested",
        "too-many-dims",
    ],
)
def test_bad_shapes_are_refused(shape: Any) -> None:
    with pytest.raises(CodecError, match="shape"):
        decode(craft({"t": entry(shape=shape, offsets=(0, 4))}, b"\0" * 4))


def test_huge_shape_that_does_not_match_the_offsets_is_refused() -> None:
    with pytest.raises(CodecError, match="data_offsets do not match shape"):
        decode(craft({"t": entry(shape=[2**40], offsets=(0, 4))}, b"\0" * 4))


@pytest.mark.parametrize(
    "offsets",
    [[0], [0, 4, 8], [-4, 0], ["0", "4"], [0.0, 4.0], [False, True], None],
    ids=["one", "three", "negative", "strings", "floats", "bools", "null"],
)
def test_bad_data_offsets_are_refused(offsets: Any) -> None:
    with pytest.raises(CodecError, match="data_offsets"):
        decode(craft({"t": entry(shape=[1], offsets=offsets)}, b"\0" * 4))


def test_offsets_past_the_payload_are_refused() -> None:
    with pytest.raises(CodecError, match="size mismatch"):
        decode(craft({"t": entry(shape=[2], offsets=(0, 8))}, b"\0" * 4))


def test_trailing_bytes_after_the_last_tensor_are_refused() -> None:
    with pytest.raises(CodecError, match="size mismatch"):
        decode(craft({"t": entry(shape=[1], offsets=(0, 4))}, b"\0" * 8))


def test_overlapping_offsets_are_refused() -> None:
    header = {"a": entry(shape=[2], offsets=(0, 8)), "b": entry(shape=[2], offsets=(4, 12))}

    with pytest.raises(CodecError, match="overlap or leave a gap"):
        decode(craft(header, b"\0" * 12))


def test_gap_between_tensors_is_refused() -> None:
    header = {"a": entry(shape=[1], offsets=(0, 4)), "b": entry(shape=[1], offsets=(8, 12))}

    with pytest.raises(CodecError, match="overlap or leave a gap"):
        decode(craft(header, b"\0" * 12))


def test_data_not_starting_at_offset_zero_is_refused() -> None:
    with pytest.raises(CodecError, match="overlap or leave a gap"):
        decode(craft({"t": entry(shape=[1], offsets=(4, 8))}, b"\0" * 8))


def test_entry_with_extra_or_missing_keys_is_refused() -> None:
    extra = {**entry(), "scale": 2}
    missing = {"dtype": "F32", "shape": [1]}

    for bad in (extra, missing, "F32", [1, 2]):
        with pytest.raises(CodecError, match="exactly dtype, shape, data_offsets"):
            decode(craft({"t": bad}, b"\0" * 4))


def test_header_length_beyond_payload_is_refused() -> None:
    payload = encode(ENVELOPE).tobytes()
    lying = struct.pack("<Q", len(payload)) + payload[8:]

    with pytest.raises(CodecError, match="truncated"):
        decode(lying)


def test_header_length_beyond_limit_is_refused_before_reading_it() -> None:
    limits = Limits(max_header_bytes=64)
    payload = craft({}, envelope="x" * 100)

    with pytest.raises(CodecError, match=r"header of \d+ bytes exceeds the limit of 64"):
        decode(payload, limits)


def test_header_length_of_two_to_the_63_is_refused() -> None:
    with pytest.raises(CodecError, match="exceeds the limit"):
        decode(struct.pack("<Q", 2**63) + b"{}")


def test_payload_above_max_bytes_is_refused() -> None:
    payload = encode(ENVELOPE, {"x": torch.zeros(64)}).tobytes()

    with pytest.raises(CodecError, match=f"payload of {len(payload)} bytes exceeds the limit"):
        decode(payload, Limits(max_bytes=len(payload) - 1))


def test_payload_exactly_max_bytes_is_accepted() -> None:
    payload = encode(ENVELOPE, {"x": torch.zeros(64)}).tobytes()

    _, tensors = decode(payload, Limits(max_bytes=len(payload)))

    assert torch.equal(tensors["x"], torch.zeros(64))


def test_too_many_tensors_are_refused() -> None:
    tensors = {f"t{i}": torch.ones(1) for i in range(5)}
    payload = encode(ENVELOPE, tensors).tobytes()

    with pytest.raises(CodecError, match="5 tensors exceed the limit of 4"):
        decode(payload, Limits(max_tensors=4))


def test_more_dims_than_max_ndim_are_refused() -> None:
    payload = encode(ENVELOPE, {"t": torch.ones([1] * 4)}).tobytes()

    with pytest.raises(CodecError, match="at most 3"):
        decode(payload, Limits(max_ndim=3))


@pytest.mark.parametrize(
    "header, problem",
    [
        (b"[1, 2]", "JSON object"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b'{"t": 1}', "envelope"),
        (b'{"__metadata__": {"envelope": 3}}', "envelope"),
        (b'{"__metadata__": []}', "envelope"),
    ],
    ids=["array", "broken", "not-utf8", "no-metadata", "envelope-not-str", "metadata-not-dict"],
)
def test_malformed_headers_are_refused(header: bytes, problem: str) -> None:
    with pytest.raises(CodecError, match=problem):
        decode(struct.pack("<Q", len(header)) + header)


def test_payload_shorter_than_length_prefix_is_refused() -> None:
    with pytest.raises(CodecError, match="shorter than the 8-byte header length"):
        decode(b"\x01\x00\x00")


# --- bugs found while writing these tests --------------------------------------------------------


@pytest.mark.parametrize("dtype", [[], {"F32": 1}], ids=["list", "object"])
def test_unhashable_dtype_is_refused_with_codec_error(dtype: Any) -> None:
    with pytest.raises(CodecError, match="dtype"):
        decode(craft({"t": entry(dtype=dtype)}, b"\0" * 4))


@pytest.mark.parametrize("shape", [[0, 2**64], [0, 2**62, 2**62]], ids=["above-int64", "stride"])
def test_empty_tensor_with_huge_dims_is_refused_with_codec_error(shape: list[int]) -> None:
    with pytest.raises(CodecError, match="shape"):
        decode(craft({"t": entry(shape=shape, offsets=(0, 0))}))


def test_deeply_nested_header_is_refused_with_codec_error() -> None:
    header = b"[" * 100_000 + b"]" * 100_000

    with pytest.raises(CodecError):
        decode(struct.pack("<Q", len(header)) + header)


def test_header_with_huge_integer_literal_is_refused_with_codec_error() -> None:
    header = b'{"t": ' + b"1" * 5000 + b"}"

    with pytest.raises(CodecError):
        decode(struct.pack("<Q", len(header)) + header)


# --- memory: nothing is allocated past the declared limit ---------------------------------------


def _peak_traced_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


MB = 1024 * 1024


def test_read_only_payload_copy_is_visible_to_tracemalloc() -> None:
    """Control for the tests below: a decoded 8 MB read-only payload shows an 8 MB peak."""
    payload = encode(ENVELOPE, {"x": torch.zeros(2 * MB, dtype=torch.float32)}).tobytes()

    peak = _peak_traced_bytes(lambda: decode(payload))

    assert peak >= 8 * MB


def test_header_claiming_a_huge_tensor_is_refused_with_small_peak_memory() -> None:
    payload = craft({"t": entry(shape=[2**40], offsets=(0, 4 * 2**40))}, b"\0" * 64)

    def attempt() -> None:
        with pytest.raises(CodecError, match="size mismatch"):
            decode(payload)

    assert _peak_traced_bytes(attempt) < 10 * MB


def test_oversized_payload_is_refused_before_any_copy() -> None:
    payload = encode(ENVELOPE, {"x": torch.zeros(2 * MB, dtype=torch.float32)}).tobytes()

    def attempt() -> None:
        with pytest.raises(CodecError, match="exceeds the limit"):
            decode(payload, Limits(max_bytes=MB))

    assert _peak_traced_bytes(attempt) < MB
