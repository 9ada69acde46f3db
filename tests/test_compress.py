"""Soft-label codecs: roundtrip error, payload sizes, strict decoding, fuzzed payloads."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from fedkd.compress import CODECS, CodecError, get_codec, payload_nbytes, vote_bits


def _probs(n: int, c: int, seed: int) -> np.ndarray:
    """Random probability rows (no ties, float32)."""
    return np.random.default_rng(seed).dirichlet(np.ones(c), size=n).astype(np.float32)


# -- roundtrips --------------------------------------------------------------------------------
def test_fp32_roundtrip_is_lossless() -> None:
    # Prepare
    p = _probs(50, 10, 0)
    codec = get_codec("fp32")

    # Execute
    out = codec.decode(codec.encode(p), 50, 10)

    # Assert
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, p, atol=1e-6)


def test_fp16_roundtrip_error_is_below_1e_3() -> None:
    # Prepare
    p = _probs(288, 10, 1)
    codec = get_codec("fp16")

    # Execute
    out = codec.decode(codec.encode(p), 288, 10)

    # Assert
    assert out.dtype == np.float32
    assert np.max(np.abs(out - p)) < 1e-3


def test_int8_encodes_hand_computed_quantization() -> None:
    # Prepare: rowmax 0.8 -> q = round([1, 0.25, 0] * 255) = [255, 64, 0]
    p = np.array([[0.8, 0.2, 0.0]])
    codec = get_codec("int8")

    # Execute
    arrays = codec.encode(p)
    out = codec.decode(arrays, 1, 3)

    # Assert
    np.testing.assert_array_equal(arrays["q"], [[255, 64, 0]])
    assert arrays["q"].dtype == np.uint8
    assert arrays["scale"].dtype == np.float16
    assert abs(float(arrays["scale"][0]) - 0.8) < 1e-3
    np.testing.assert_allclose(out, [[255 / 319, 64 / 319, 0.0]], atol=1e-6)


def test_int8_roundtrip_is_within_half_a_step_of_rowmax() -> None:
    # Prepare
    p = _probs(288, 10, 2)
    codec = get_codec("int8")

    # Execute
    out = codec.decode(codec.encode(p), 288, 10)

    # Assert: relative to the row maximum, each entry is off by at most 0.5/255
    rel_out = out / out.max(axis=1, keepdims=True)
    rel_in = p / p.max(axis=1, keepdims=True)
    assert np.max(np.abs(rel_out - rel_in)) <= 0.5 / 255 + 1e-6
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)


def test_onebit_packs_hand_computed_bits() -> None:
    # Prepare: argmaxes 1, 0, 2 -> bits 010 100 001 -> bytes 0b01010000, 0b10000000
    p = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    codec = get_codec("onebit")

    # Execute
    arrays = codec.encode(p)
    out = codec.decode(arrays, 3, 3)

    # Assert
    np.testing.assert_array_equal(arrays["bits"], np.array([80, 128], dtype=np.uint8))
    np.testing.assert_array_equal(out, np.eye(3, dtype=np.float32)[[1, 0, 2]])


def test_onebit_roundtrip_recovers_argmax_exactly() -> None:
    # Prepare
    p = _probs(288, 10, 3)
    codec = get_codec("onebit")

    # Execute
    out = codec.decode(codec.encode(p), 288, 10)

    # Assert
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.eye(10, dtype=np.float32)[p.argmax(axis=1)])


def test_vote_packs_hand_computed_class_indices() -> None:
    # Prepare: 3 classes -> 2 bits per row; argmaxes 1, 0, 2 -> 01 00 10 -> 0b01001000
    p = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    codec = get_codec("vote")

    # Execute
    arrays = codec.encode(p)

    # Assert
    np.testing.assert_array_equal(arrays["index"], np.array([72], dtype=np.uint8))
    np.testing.assert_array_equal(codec.decode(arrays, 3, 3), np.eye(3)[[1, 0, 2]])


@pytest.mark.parametrize("classes", [1, 2, 10, 17, 300])
def test_vote_decodes_to_exactly_what_onebit_decodes_to(classes: int) -> None:
    # Prepare
    p = _probs(97, classes, classes)
    onebit, vote = get_codec("onebit"), get_codec("vote")

    # Execute
    out = vote.decode(vote.encode(p), 97, classes)

    # Assert: the same message in fewer bits
    np.testing.assert_array_equal(out, onebit.decode(onebit.encode(p), 97, classes))
    assert out.dtype == np.float32


def test_vote_refuses_padding_bits_that_are_set() -> None:
    # 3 rows x 2 bits = 6 bits: the last two bits of the byte are padding
    with pytest.raises(CodecError, match="padding"):
        get_codec("vote").decode({"index": np.array([0b00000001], np.uint8)}, 3, 3)


@pytest.mark.parametrize(("rows", "classes"), [(1, 2), (1, 4), (1, 8), (2, 4), (4, 2), (8, 1)])
def test_onebit_and_vote_payloads_are_never_read_as_each_other(rows: int, classes: int) -> None:
    # N * C <= 8: both codecs send one byte, so only the key tells them apart.
    p = _probs(rows, classes, 7)
    onebit, vote = get_codec("onebit"), get_codec("vote")
    with pytest.raises(CodecError):
        vote.decode(onebit.encode(p), rows, classes)
    with pytest.raises(CodecError):
        onebit.decode(vote.encode(p), rows, classes)


def test_vote_bits_are_the_bits_of_the_largest_class_index() -> None:
    assert [vote_bits(c) for c in (1, 2, 3, 4, 5, 10, 16, 17, 256, 257)] == [
        1, 1, 2, 2, 3, 4, 4, 5, 8, 9,
    ]  # fmt: skip


def test_topk_spreads_the_remaining_mass_evenly() -> None:
    # Prepare: keep 0.6 (class 1) and 0.2 (class 2); 0.2 left over 3 classes
    p = np.array([[0.1, 0.6, 0.2, 0.05, 0.05]])
    codec = get_codec("topk", k=2)

    # Execute
    arrays = codec.encode(p)
    out = codec.decode(arrays, 1, 5)

    # Assert
    np.testing.assert_array_equal(arrays["idx"], [[1, 2]])
    np.testing.assert_allclose(out, [[0.2 / 3, 0.6, 0.2, 0.2 / 3, 0.2 / 3]], atol=1e-3)
    np.testing.assert_allclose(out.sum(), 1.0, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_topk_roundtrip_keeps_the_top_k_exactly(k: int) -> None:
    # Prepare
    p = _probs(288, 10, 4 + k)
    codec = get_codec("topk", k=k)
    top_in = np.argsort(-p, axis=1)[:, :k]

    # Execute
    out = codec.decode(codec.encode(p), 288, 10)

    # Assert
    top_out = np.argsort(-out, axis=1)[:, :k]
    np.testing.assert_array_equal(np.sort(top_out, axis=1), np.sort(top_in, axis=1))
    kept_in = np.take_along_axis(p, top_in, axis=1)
    kept_out = np.take_along_axis(out, top_in, axis=1)
    assert np.max(np.abs(kept_out - kept_in)) < 1e-3
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)


def test_topk_with_k_at_least_c_keeps_every_class() -> None:
    # Prepare
    p = _probs(20, 4, 5)
    codec = get_codec("topk", k=9)

    # Execute
    arrays = codec.encode(p)
    out = codec.decode(arrays, 20, 4)

    # Assert
    assert arrays["idx"].shape == (20, 4)
    assert np.max(np.abs(out - p)) < 1e-3


def test_topk_uses_uint16_indices_above_256_classes() -> None:
    # Prepare
    p = _probs(3, 300, 6)
    codec = get_codec("topk", k=2)

    # Execute
    arrays = codec.encode(p)
    out = codec.decode(arrays, 3, 300)

    # Assert
    assert arrays["idx"].dtype == np.uint16
    np.testing.assert_array_equal(out.argmax(axis=1), p.argmax(axis=1))


@pytest.mark.parametrize("name", CODECS)
def test_payloads_hold_only_numeric_arrays_and_survive_an_array_record(name: str) -> None:
    # Prepare
    from flwr.app import Array, ArrayRecord

    p = _probs(7, 5, 7)
    codec = get_codec(name)
    direct = codec.decode(codec.encode(p), 7, 5)

    # Execute
    record = ArrayRecord({k: Array(v) for k, v in codec.encode(p).items()})
    received = {k: v.numpy() for k, v in record.items()}

    # Assert
    assert all(isinstance(a, np.ndarray) and a.dtype.kind in "uf" for a in received.values())
    np.testing.assert_array_equal(codec.decode(received, 7, 5), direct)


# -- sizes -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("fp32", {}, 288 * 10 * 4),
        ("fp16", {}, 288 * 10 * 2),
        ("int8", {}, 288 * 10 + 288 * 2),
        ("onebit", {}, 288 * 10 // 8),
        ("vote", {}, 288 * 4 // 8),
        ("topk", {"k": 2}, 288 * 2 + 288 * 2 * 2),
    ],
)
def test_payload_sizes_for_288_rows_of_10_classes(
    name: str, params: dict[str, int], expected: int
) -> None:
    # Prepare
    p = _probs(288, 10, 8)

    # Execute
    size = payload_nbytes(get_codec(name, **params).encode(p))

    # Assert
    assert size == expected


def test_onebit_rounds_the_bit_count_up_to_whole_bytes() -> None:
    # Prepare: 3 x 3 = 9 bits -> 2 bytes
    p = _probs(3, 3, 9)

    # Execute
    size = payload_nbytes(get_codec("onebit").encode(p))

    # Assert
    assert size == 2


# -- registry ----------------------------------------------------------------------------------
def test_get_codec_names_and_topk_parameter() -> None:
    # Execute
    codecs = {name: get_codec(name) for name in CODECS}
    topk3 = get_codec("topk", k=3)

    # Assert
    assert {name: c.name for name, c in codecs.items()} == {n: n for n in CODECS}
    assert topk3.k == 3  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        topk3.k = 4  # type: ignore[misc]


def test_unknown_codec_lists_the_choices() -> None:
    with pytest.raises(
        ValueError, match=r"unknown codec 'x' \(choose from fp32, fp16, int8, onebit, vote, topk\)"
    ):
        get_codec("x")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("topk", {"k": 0}),
        ("topk", {"k": 1.5}),
        ("topk", {"k": "2"}),
        ("topk", {"k": 2, "j": 1}),
        ("fp32", {"k": 2}),
    ],
)
def test_bad_codec_params_name_the_codec(name: str, params: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=f"codec '{name}'"):
        get_codec(name, **params)


@pytest.mark.parametrize(
    "probs",
    [
        np.array([0.5, 0.5]),
        np.array([[0.5, np.nan]]),
        np.array([[0.5, np.inf]]),
        np.array([[None, 1.0]], dtype=object),
        np.array([[0.5 + 1j, 0.5]]),
    ],
)
@pytest.mark.parametrize("name", CODECS)
def test_encode_rejects_non_finite_or_non_2d_input(name: str, probs: np.ndarray) -> None:
    with pytest.raises(ValueError, match="codec input"):
        get_codec(name).encode(probs)


# -- strict decoding ---------------------------------------------------------------------------
N, C = 4, 3
BASE = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [1.0, 0.0, 0.0]])


def _payload(name: str) -> dict[str, np.ndarray]:
    return get_codec(name).encode(BASE)


def _set(name: str, key: str, value: object) -> dict[str, object]:
    arrays: dict[str, object] = dict(_payload(name))
    arrays[key] = value
    return arrays


def _drop(name: str, key: str) -> dict[str, np.ndarray]:
    arrays = _payload(name)
    del arrays[key]
    return arrays


BAD_PAYLOADS: dict[str, tuple[str, Callable[[], object]]] = {
    "extra key": ("fp32", lambda: _set("fp32", "extra", np.zeros(1, np.float32))),
    "missing key": ("int8", lambda: _drop("int8", "scale")),
    "renamed key": ("onebit", lambda: {"bitz": _payload("onebit")["bits"]}),
    "not a mapping": ("fp32", lambda: [BASE.astype(np.float32)]),
    "list value": ("fp32", lambda: _set("fp32", "probs", BASE.tolist())),
    "fp32 as float64": ("fp32", lambda: _set("fp32", "probs", BASE)),
    "fp16 as float32": ("fp16", lambda: _set("fp16", "probs", BASE.astype(np.float32))),
    "int8 q as int8": ("int8", lambda: _set("int8", "q", np.zeros((N, C), np.int8))),
    "int8 scale as float32": ("int8", lambda: _set("int8", "scale", np.ones(N, np.float32))),
    "onebit as int8": ("onebit", lambda: _set("onebit", "bits", np.zeros(2, np.int8))),
    "topk idx as uint16": ("topk", lambda: _set("topk", "idx", np.zeros((N, 2), np.uint16))),
    "object dtype": ("fp32", lambda: _set("fp32", "probs", np.full((N, C), None, object))),
    "fp32 wrong columns": ("fp32", lambda: _set("fp32", "probs", np.ones((N, C + 1), "f4"))),
    "fp32 flattened": ("fp32", lambda: _set("fp32", "probs", BASE.astype("f4").ravel())),
    "fp32 3-d": ("fp32", lambda: _set("fp32", "probs", BASE.astype("f4")[None])),
    "fp32 empty": ("fp32", lambda: _set("fp32", "probs", np.zeros((0, C), np.float32))),
    "scale 2-d": ("int8", lambda: _set("int8", "scale", np.ones((N, 1), np.float16))),
    "onebit short": ("onebit", lambda: _set("onebit", "bits", np.zeros(1, np.uint8))),
    "vote short": ("vote", lambda: _set("vote", "index", np.zeros(0, np.uint8))),
    "vote as int8": ("vote", lambda: _set("vote", "index", np.zeros(1, np.int8))),
    "vote index >= C": ("vote", lambda: _set("vote", "index", np.full(1, 0b11000000, np.uint8))),
    "vote as onebit": ("vote", lambda: _payload("onebit")),
    "topk too many": ("topk", lambda: _set("topk", "idx", np.zeros((N, 3), np.uint8))),
    "fp32 nan": ("fp32", lambda: _set("fp32", "probs", np.full((N, C), np.nan, np.float32))),
    "fp16 inf": ("fp16", lambda: _set("fp16", "probs", np.full((N, C), np.inf, np.float16))),
    "scale nan": ("int8", lambda: _set("int8", "scale", np.full(N, np.nan, np.float16))),
    "fp32 negative": (
        "fp32",
        lambda: _set("fp32", "probs", np.tile(np.float32([1.1, -0.1, 0.0]), (N, 1))),
    ),
    "fp32 huge": ("fp32", lambda: _set("fp32", "probs", np.full((N, C), 1e30, np.float32))),
    "fp32 rows not summing to 1": (
        "fp32",
        lambda: _set("fp32", "probs", np.full((N, C), 0.2, np.float32)),
    ),
    "scale negative": ("int8", lambda: _set("int8", "scale", np.full(N, -0.5, np.float16))),
    "scale above 1": ("int8", lambda: _set("int8", "scale", np.full(N, 2.0, np.float16))),
    "int8 zero row": ("int8", lambda: _set("int8", "q", np.zeros((N, C), np.uint8))),
    "topk val negative": ("topk", lambda: _set("topk", "val", np.full((N, 2), -0.1, "f2"))),
    "topk val nan": ("topk", lambda: _set("topk", "val", np.full((N, 2), np.nan, "f2"))),
    "topk mass above 1": ("topk", lambda: _set("topk", "val", np.full((N, 2), 0.7, "f2"))),
    "topk index out of range": (
        "topk",
        lambda: _set("topk", "idx", np.tile(np.uint8([0, C]), (N, 1))),
    ),
    # class 0 twice with 0.3 + 0.3: decodable mass ([0.3, 0.4, 0.4]) but a repeated index
    "topk repeated index": (
        "topk",
        lambda: {"idx": np.zeros((N, 2), np.uint8), "val": np.full((N, 2), 0.3, np.float16)},
    ),
    # 12 bits: rows 100 110 000 001 -> two votes in row 1, none in row 2
    "onebit two votes and none": (
        "onebit",
        lambda: _set("onebit", "bits", np.packbits([1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1])),
    ),
    "onebit padding set": (
        "onebit",
        lambda: _set("onebit", "bits", np.packbits([1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1])),
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PAYLOADS))
def test_decode_rejects_malformed_payload(case: str) -> None:
    # Prepare
    name, make = BAD_PAYLOADS[case]
    codec = get_codec(name, k=2) if name == "topk" else get_codec(name)
    arrays = make()

    # Execute
    with pytest.raises(CodecError) as info:
        codec.decode(arrays, N, C)  # type: ignore[arg-type]

    # Assert: a one-line reason
    assert str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", CODECS)
def test_decode_accepts_the_base_payload(name: str) -> None:
    # Prepare: the valid counterpart of the malformed payloads above
    arrays = _payload(name)

    # Execute
    out = get_codec(name).decode(arrays, N, C)

    # Assert
    assert out.shape == (N, C)
    np.testing.assert_array_equal(out.argmax(axis=1), BASE.argmax(axis=1))


@pytest.mark.parametrize(("rows", "classes"), [(-1, 3), (4, 0), (4.0, 3), (True, 3), ("4", 3)])
@pytest.mark.parametrize("name", CODECS)
def test_decode_rejects_bad_dimensions(name: str, rows: object, classes: object) -> None:
    with pytest.raises(CodecError):
        get_codec(name).decode(_payload(name), rows, classes)  # type: ignore[arg-type]


def test_decode_of_zero_rows_is_an_empty_matrix() -> None:
    # Prepare
    empty = np.zeros((0, C))

    # Execute
    outs = [get_codec(name).decode(get_codec(name).encode(empty), 0, C) for name in CODECS]

    # Assert
    assert all(o.shape == (0, C) and o.dtype == np.float32 for o in outs)


# -- fuzz --------------------------------------------------------------------------------------
_FUZZ_DTYPES = ("f2", "f4", "f8", "u1", "u2", "i1", "i8", "?", "c8", ">f4", "U3", "O")


def _random_array(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(_FUZZ_DTYPES[rng.integers(len(_FUZZ_DTYPES))])
    if dtype.kind == "O":
        return np.full(shape, None, dtype=object)
    if dtype.kind == "U":
        return np.full(shape, "ab", dtype=dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def _mutate(rng: np.random.Generator, arrays: dict[str, object]) -> dict[str, object]:
    key = list(arrays)[rng.integers(len(arrays))]
    a = arrays[key]
    kind = rng.integers(6)
    if kind == 0:  # random bytes in place: NaN, Inf, huge, negative, out-of-range
        b = np.array(a, copy=True)
        if b.dtype.kind != "O" and b.size:
            flat = b.reshape(-1).view(np.uint8)
            flat[rng.integers(flat.size, size=3)] = rng.integers(0, 256, size=3)
        arrays[key] = b
    elif kind == 1:  # another dtype and maybe another shape
        shape = tuple(int(s) for s in rng.integers(0, 6, size=rng.integers(0, 4)))
        arrays[key] = _random_array(rng, shape if rng.random() < 0.5 else np.shape(a))
    elif kind == 2:  # same bytes, other shape
        arrays[key] = np.asarray(a).reshape(-1) if rng.random() < 0.5 else np.asarray(a)[None]
    elif kind == 3:  # missing or extra key
        if rng.random() < 0.5:
            del arrays[key]
        else:
            arrays["junk"] = np.zeros(2, np.float32)
    elif kind == 4:  # not an array
        arrays[key] = [None, 1.0] if rng.random() < 0.5 else np.float32(0.5)
    else:  # extreme values of the right dtype and shape
        b = np.array(a, copy=True)
        if b.size and b.dtype.kind in "uf":
            extreme = np.iinfo(b.dtype).max if b.dtype.kind == "u" else -1
            b.reshape(-1)[rng.integers(b.size)] = extreme
        arrays[key] = b
    return arrays


def test_fuzzed_payloads_raise_only_codec_error_or_decode_to_valid_probabilities() -> None:
    # Prepare
    rng = np.random.default_rng(2024)
    codecs = [get_codec(name) for name in CODECS]
    rejected = 0

    # Execute / Assert
    for trial in range(400):
        codec = codecs[trial % len(codecs)]
        n, c = int(rng.integers(0, 5)), int(rng.integers(1, 6))
        arrays: dict[str, object] = dict(codec.encode(_probs(n, c, trial)))
        for _ in range(rng.integers(1, 3)):
            if arrays:
                arrays = _mutate(rng, arrays)
        try:
            out = codec.decode(arrays, n, c)  # type: ignore[arg-type]
        except CodecError:
            rejected += 1
            continue
        except Exception as err:  # the property under test: nothing but CodecError
            pytest.fail(f"{codec.name} raised {type(err).__name__}: {err} for {arrays!r}")
        assert out.shape == (n, c)
        assert out.dtype == np.float32
        assert np.all(np.isfinite(out)) and np.all(out >= 0)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert rejected > 200
