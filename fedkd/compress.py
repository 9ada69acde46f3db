"""Soft-label codecs: what a client's predictions look like on the wire.

A codec turns a (N, C) probability matrix into a dict of plain numeric NumPy arrays (the
arrays of a Flower ArrayRecord) and back. ``decode`` validates everything and raises only
:class:`CodecError`, whatever it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class CodecError(ValueError):
    """A payload that does not decode (the message gives a one-line reason)."""


class Codec(Protocol):
    """Encode (N, C) probabilities into arrays; decode them back (validating)."""

    name: str

    def encode(self, probs: np.ndarray) -> dict[str, np.ndarray]: ...  # noqa: D102

    def decode(  # noqa: D102
        self, arrays: Mapping[str, np.ndarray], num_rows: int, num_classes: int
    ) -> np.ndarray: ...


def _check_input(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs)
    if p.ndim != 2 or not np.issubdtype(p.dtype, np.number) or not np.all(np.isfinite(p)):
        raise ValueError("codec input must be a finite 2-D numeric array")
    return p.astype(np.float32)


def _get(arrays: Mapping[str, np.ndarray], keys: set[str]) -> dict[str, np.ndarray]:
    try:
        got = set(arrays.keys())
    except Exception as err:  # noqa: BLE001
        raise CodecError("payload is not a mapping of arrays") from err
    if got != keys:
        raise CodecError(f"expected arrays {sorted(keys)}, got {sorted(map(str, got))}")
    out = {}
    for k in keys:
        a = arrays[k]
        if not isinstance(a, np.ndarray):
            raise CodecError(f"'{k}' is not an array")
        out[k] = a
    return out


def _expect(a: np.ndarray, name: str, dtype: type, shape: tuple[int, ...]) -> None:
    if a.dtype != np.dtype(dtype):
        raise CodecError(f"'{name}' must be {np.dtype(dtype).name}, got {a.dtype}")
    if a.shape != shape:
        raise CodecError(f"'{name}' must have shape {shape}, got {a.shape}")


def _renorm(m: np.ndarray) -> np.ndarray:
    s = m.sum(axis=1, keepdims=True)
    if np.any(s <= 0):
        raise CodecError("a row has no probability mass")
    return (m / s).astype(np.float32)


def _check_probs(p: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(p)):
        raise CodecError(f"'{name}' holds NaN or Inf")
    if np.any(p < 0) or np.any(p > 1.0 + 1e-3):
        raise CodecError(f"'{name}' holds values outside [0, 1]")


def _check_sums(p: np.ndarray, name: str, tol: float) -> None:
    if p.size and np.any(np.abs(p.sum(axis=1) - 1.0) > tol):
        raise CodecError(f"'{name}' rows do not sum to 1")


@dataclass(frozen=True)
class Float:
    """Plain probabilities in float32 (``fp32``) or float16 (``fp16``)."""

    name: str
    dtype: type

    def encode(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """``{"probs": (N, C)}`` in the codec's dtype."""
        return {"probs": _check_input(probs).astype(self.dtype)}

    def decode(
        self, arrays: Mapping[str, np.ndarray], num_rows: int, num_classes: int
    ) -> np.ndarray:
        """Validate and return float32 probabilities."""
        a = _get(arrays, {"probs"})["probs"]
        _expect(a, "probs", self.dtype, (num_rows, num_classes))
        p = a.astype(np.float32)
        _check_probs(p, "probs")
        _check_sums(p, "probs", 1e-2)
        return _renorm(p) if num_rows else p


@dataclass(frozen=True)
class Int8:
    """Per-row quantisation: ``q = round(p / rowmax * 255)`` (uint8) and rowmax (float16)."""

    name: str = "int8"

    def encode(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """``{"q": (N, C) uint8, "scale": (N,) float16}``."""
        p = np.clip(_check_input(probs), 0.0, 1.0)
        scale = p.max(axis=1) if p.size else np.zeros(len(p), np.float32)
        safe = np.where(scale > 0, scale, 1.0)[:, None]
        q = np.rint(p / safe * 255).astype(np.uint8)
        return {"q": q, "scale": scale.astype(np.float16)}

    def decode(
        self, arrays: Mapping[str, np.ndarray], num_rows: int, num_classes: int
    ) -> np.ndarray:
        """Dequantise, validate, renormalise rows."""
        a = _get(arrays, {"q", "scale"})
        _expect(a["q"], "q", np.uint8, (num_rows, num_classes))
        _expect(a["scale"], "scale", np.float16, (num_rows,))
        scale = a["scale"].astype(np.float32)
        _check_probs(scale, "scale")
        return (
            _renorm(a["q"].astype(np.float32) / 255.0 * scale[:, None])
            if num_rows
            else np.zeros((0, num_classes), np.float32)
        )


@dataclass(frozen=True)
class OneBit:
    """Top-1 vote: the one-hot matrix packed 8 entries per byte."""

    name: str = "onebit"

    def encode(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """``{"bits": packbits(one_hot(argmax))}``."""
        p = _check_input(probs)
        onehot = np.zeros(p.shape, np.uint8)
        if p.size:
            onehot[np.arange(len(p)), p.argmax(axis=1)] = 1
        return {"bits": np.packbits(onehot.ravel())}

    def decode(
        self, arrays: Mapping[str, np.ndarray], num_rows: int, num_classes: int
    ) -> np.ndarray:
        """Unpack and check that every row holds exactly one vote."""
        bits = _get(arrays, {"bits"})["bits"]
        n = num_rows * num_classes
        _expect(bits, "bits", np.uint8, ((n + 7) // 8,))
        flat = np.unpackbits(bits)
        if np.any(flat[n:]):
            raise CodecError("'bits' has padding bits set")
        onehot = flat[:n].reshape(num_rows, num_classes).astype(np.float32)
        if num_rows and np.any(onehot.sum(axis=1) != 1):
            raise CodecError("'bits' rows are not one-hot votes")
        return onehot


@dataclass(frozen=True)
class TopK:
    """The ``k`` largest probabilities per row; the rest of the mass spread evenly."""

    k: int = 2
    name: str = "topk"

    def encode(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """``{"idx": (N, k) uint8/uint16, "val": (N, k) float16}``."""
        p = _check_input(probs)
        k = min(self.k, p.shape[1])
        idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
        val = np.take_along_axis(p, idx, axis=1)
        itype = np.uint8 if p.shape[1] <= 256 else np.uint16
        return {"idx": idx.astype(itype), "val": val.astype(np.float16)}

    def decode(
        self, arrays: Mapping[str, np.ndarray], num_rows: int, num_classes: int
    ) -> np.ndarray:
        """Scatter the kept values, spread the remaining mass, renormalise."""
        a = _get(arrays, {"idx", "val"})
        k = min(self.k, num_classes)
        itype = np.uint8 if num_classes <= 256 else np.uint16
        _expect(a["idx"], "idx", itype, (num_rows, k))
        _expect(a["val"], "val", np.float16, (num_rows, k))
        idx = a["idx"].astype(np.int64)
        val = a["val"].astype(np.float32)
        _check_probs(val, "val")
        if np.any(idx >= num_classes):
            raise CodecError("'idx' holds a class index out of range")
        if num_rows and np.any(np.diff(np.sort(idx, axis=1), axis=1) == 0):
            raise CodecError("'idx' repeats a class within a row")
        if num_rows and np.any(val.sum(axis=1) > 1.0 + 1e-2):
            raise CodecError("'val' rows sum to more than 1")
        out = np.zeros((num_rows, num_classes), np.float32)
        if num_classes > k:
            rest = np.clip(1.0 - val.sum(axis=1), 0.0, None) / (num_classes - k)
            out += rest[:, None]
        np.put_along_axis(out, idx, val, axis=1)
        return _renorm(out) if num_rows else out


CODECS = ("fp32", "fp16", "int8", "onebit", "topk")


def get_codec(name: str, **params: int) -> Codec:
    """The codec called ``name`` (``topk`` takes ``k``)."""
    if name == "topk":
        k = int(params.pop("k", 2))
        if k < 1:
            raise ValueError(f"codec 'topk': k must be >= 1, got {k}")
        codec: Codec = TopK(k=k)
    elif name == "fp32":
        codec = Float("fp32", np.float32)
    elif name == "fp16":
        codec = Float("fp16", np.float16)
    elif name == "int8":
        codec = Int8()
    elif name == "onebit":
        codec = OneBit()
    else:
        raise ValueError(f"unknown codec '{name}' (choose from {', '.join(CODECS)})")
    if params:
        raise ValueError(f"codec '{name}' takes no parameter {', '.join(sorted(params))}")
    return codec


def payload_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Raw bytes of the arrays (Flower adds a small per-array header on the wire)."""
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))
