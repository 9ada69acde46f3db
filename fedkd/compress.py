"""Soft-label codecs: what a client's predictions look like on the wire.

A codec turns a (N, C) probability matrix into a dict of plain numeric NumPy arrays (the
arrays of a Flower ArrayRecord) and back. ``decode`` validates everything (key set, dtype,
shape, finiteness, value ranges) and raises only :class:`CodecError`, whatever it is given.

=========  ==============================================  ======================
codec      arrays                                          bytes for (N, C)
=========  ==============================================  ======================
``fp32``   ``probs`` float32 (N, C)                        4 N C
``fp16``   ``probs`` float16 (N, C)                        2 N C
``int8``   ``q`` uint8 (N, C), ``scale`` float16 (N,)      N C + 2 N
``onebit`` ``bits`` uint8 (ceil(N C / 8),)                 ceil(N C / 8)
``vote``   ``index`` uint8 (ceil(N b / 8),), b below       ceil(N b / 8)
``topk``   ``idx`` uint8/uint16 (N, k), ``val`` float16    N k (1 or 2) + 2 N k
=========  ==============================================  ======================

``onebit`` and ``vote`` carry the same message, each row's top-1 class: ``onebit`` as a
one-hot row of C bits, ``vote`` as the class index in ``b = ceil(log2 C)`` bits, at least
one (:func:`vote_bits`: 4 for 10 classes instead of 10), so both decode to the same one-hot
matrix.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedkd.registry import Registry

#: Tolerance on row sums of decoded fp32/fp16 probabilities and top-k mass.
SUM_TOL = 1e-2
#: Largest class count the top-k codec can index (uint16).
MAX_TOPK_CLASSES = 1 << 16


class CodecError(ValueError):
    """A payload that does not decode (the message gives a one-line reason)."""


class Codec(Protocol):
    """Encode (N, C) probabilities into arrays; decode them back (validating)."""

    name: str

    def encode(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """Encode a finite (N, C) probability matrix into named numeric arrays."""
        ...

    def decode(
        self, arrays: Mapping[str, np.ndarray], num_rows: int, num_classes: int
    ) -> np.ndarray:
        """Decode a payload into float32 (num_rows, num_classes); raise CodecError if bad."""
        ...


# -- encode-side helpers -------------------------------------------------------------------
def _check_input(probs: np.ndarray) -> np.ndarray:
    """Validate the matrix to encode.

    Parameters
    ----------
    probs : np.ndarray
        (N, C) probabilities, C >= 1.

    Returns
    -------
    np.ndarray
        float64 copy of ``probs``.

    Raises
    ------
    ValueError
        If ``probs`` is not a real-valued finite 2-D array with C >= 1.
    """
    p = np.asarray(probs)
    if p.dtype.kind not in "biuf":
        raise ValueError(f"codec input must be real-valued, got dtype {p.dtype}")
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"codec input must be 2-D (N, C>=1), got shape {p.shape}")
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise ValueError("codec input must be finite (no NaN or Inf)")
    return p


def _index_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """Smallest index dtype for ``num_classes`` classes: uint8 up to 256, else uint16."""
    return np.uint8 if num_classes <= 256 else np.uint16


# -- decode-side helpers -------------------------------------------------------------------
def _check_dims(num_rows: object, num_classes: object) -> tuple[int, int]:
    """Validate the expected payload dimensions.

    Parameters
    ----------
    num_rows, num_classes : object
        Expected N >= 0 and C >= 1, integers.

    Returns
    -------
    tuple of int
        ``(num_rows, num_classes)``.

    Raises
    ------
    CodecError
        If either is not an integer in range.
    """
    for label, value, low in (("num_rows", num_rows, 0), ("num_classes", num_classes, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
            raise CodecError(f"{label} must be an integer >= {low}, got {value!r}")
    return int(num_rows), int(num_classes)  # type: ignore[call-overload]


def _get(arrays: Mapping[str, np.ndarray], keys: frozenset[str]) -> dict[str, np.ndarray]:
    """Check the payload holds exactly ``keys``, each a NumPy array.

    Parameters
    ----------
    arrays : Mapping[str, np.ndarray]
        The payload.
    keys : frozenset of str
        The expected key set.

    Returns
    -------
    dict[str, np.ndarray]
        The arrays by key.

    Raises
    ------
    CodecError
        If the payload is not a mapping, has other keys, or holds a non-array.
    """
    if not isinstance(arrays, Mapping):
        raise CodecError(f"payload must be a mapping of arrays, got {type(arrays).__name__}")
    try:
        got = set(arrays.keys())
        if got != keys:
            raise CodecError(f"expected arrays {sorted(keys)}, got {sorted(map(str, got))}")
        out = {k: arrays[k] for k in keys}
    except CodecError:
        raise
    except Exception as err:  # a broken Mapping or key: any failure is a malformed payload
        raise CodecError(f"payload cannot be read: {type(err).__name__}") from err
    for k, a in out.items():
        if not isinstance(a, np.ndarray):
            raise CodecError(f"'{k}' is not a numpy array (got {type(a).__name__})")
    return out


def _expect(a: np.ndarray, name: str, dtype: type, shape: tuple[int, ...]) -> None:
    """Raise CodecError unless ``a`` has exactly ``dtype`` and ``shape``."""
    if a.dtype != np.dtype(dtype):
        raise CodecError(f"'{name}' must be {np.dtype(dtype).name}, got {a.dtype}")
    if a.shape != shape:
        raise CodecError(f"'{name}' must have shape {shape}, got {a.shape}")


def _check_unit(values: np.ndarray, name: str) -> None:
    """Raise CodecError unless every value is finite and in [0, 1]."""
    if not np.all(np.isfinite(values)):
        raise CodecError(f"'{name}' holds NaN or Inf")
    if np.any(values < 0) or np.any(values > 1):
        raise CodecError(f"'{name}' holds values outside [0, 1]")


def _renorm(m: np.ndarray, name: str) -> np.ndarray:
    """Divide each row by its sum; raise CodecError for a row with no mass."""
    s = m.sum(axis=1, keepdims=True, dtype=np.float64)
    if np.any(s <= 0):
        raise CodecError(f"'{name}' has a row with no probability mass")
    return (m / s).astype(np.float32)


# -- codecs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Float:
    """Plain probabilities in float32 (``fp32``) or float16 (``fp16``).

    Attributes
    ----------
    name : str
        ``"fp32"`` or ``"fp16"``.
    dtype : type
        ``np.float32`` or ``np.float16``.
    """

    name: str
    dtype: type

    def encode(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """Encode as ``{"probs": (N, C)}`` in the codec's dtype.

        Parameters
        ----------
        probs : np.ndarray
            Finite (N, C) probabilities.

        Returns
        -------
        dict[str, np.ndarray]
            The payload.

        Raises
        ------
        ValueError
            If ``probs`` is not a finite 2-D real array.
        """
        p = np.clip(_check_input(probs), 0.0, 1.0)
        return {"probs": p.astype(self.dtype)}

    def decode(
        self, arrays: Mapping[str, np.ndarray], num_rows: int, num_classes: int
    ) -> np.ndarray:
        """Validate and return float32 probabilities (rows renormalized).

        Parameters
        ----------
        arrays : Mapping[str, np.ndarray]
            The payload.
        num_rows, num_classes : int
            Expected (N, C).

        Returns
        -------
        np.ndarray
            float32 (num_rows, num_classes) probabilities.

        Raises
        ------
        CodecError
            For a wrong key set, dtype or shape, NaN/Inf, values outside [0, 1], or rows
            that do not sum to 1 within :data:`SUM_TOL`.
        """
        n, c = _check_dims(num_rows, num_classes)
        a = _get(arrays, frozenset({"probs"}))["probs"]
        _expect(a, "probs", self.dtype, (n, c))
        p = a.astype(np.float32)
        _check_unit(p, "probs")
        if np.any(np.abs(p.sum(axis=1, dtype=np.float64) - 1.0) > SUM_TOL):
            raise CodecError("'probs' rows do not sum to 1")
        return _renorm(p, "probs")


@dataclass(frozen=True)
class Int8:
    """Per-row quantization: ``q = round(p / rowmax * 255)`` (uint8) and rowmax (float16).

    Attributes
    ----------
    name : str
        ``"int8"``.
    """

    name: str = "int8"

    def encode(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """Encode as ``{"q": (N, C) uint8, "scale": (N,) float16}``.

        Parameters
        ----------
        probs : np.ndarray
            Finite (N, C) probabilities (clipped to [0, 1]).

        Returns
        -------
        dict[str, np.ndarray]
            The payload.

        Raises
        ------
        ValueError
            If ``probs`` is not a finite 2-D real array.
        """
        p = np.clip(_check_input(probs), 0.0, 1.0)
        scale = p.max(axis=1)  # C >= 1, so defined even for N = 0
        safe = np.where(scale > 0, scale, 1.0)[:, None]
        q = np.rint(p / safe * 255).astype(np.uint8)
        return {"q": q, "scale": scale.astype(np.float16)}

    def decode(
        self, arrays: Mapping[str, np.ndarray], num_rows: int, num_classes: int
    ) -> np.ndarray:
        """Dequantize ``q / 255 * scale`` and renormalize rows.

        Parameters
        ----------
        arrays : Mapping[str, np.ndarray]
            The payload.
        num_rows, num_classes : int
            Expected (N, C).

        Returns
        -------
        np.ndarray
            float32 (num_rows, num_classes) probabilities.

        Raises
        ------
        CodecError
            For a wrong key set, dtype or shape, a scale that is not finite or outside
            [0, 1], or a row that dequantizes to all zeros.
        """
        n, c = _check_dims(num_rows, num_classes)
        a = _get(arrays, frozenset({"q", "scale"}))
        _expect(a["q"], "q", np.uint8, (n, c))
        _expect(a["scale"], "scale", np.float16, (n,))
        scale = a["scale"].astype(np.float32)
        _check_unit(scale, "scale")
        return _renorm(a["q"].astype(np.float32) / 255.0 * scale[:, None], "q")


def _unpack(arrays: Mapping[str, np.ndarray], size: int, key: str) -> np.ndarray:
    """The first ``size`` bits of a ``{key: uint8}`` payload; CodecError if malformed."""
    bits = _get(arrays, frozenset({key}))[key]
    _expect(bits, key, np.uint8, ((size + 7) // 8,))
    flat = np.unpackbits(bits)
    if np.any(flat[size:]):
        raise CodecError(f"'{key}' has padding bits set")
    return flat[:size]


@dataclass(frozen=True)
class OneBit:
    """Top-1 vote: the one-hot argmax matrix, packed 8 entries per byte.

    Attributes
    ----------
    name : str
        ``"onebit"``.
    """

    name: str = "onebit"

    def encode(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """Encode as ``{"bits": packbits(one_hot(argmax).ravel())}``.

        Parameters
        ----------
        probs : np.ndarray
            Finite (N, C) probabilities (ties go to the lowest class).

        Returns
        -------
        dict[str, np.ndarray]
            The payload: ``ceil(N * C / 8)`` uint8.

        Raises
        ------
        ValueError
            If ``probs`` is not a finite 2-D real array.
        """
        p = _check_input(probs)
        onehot = np.zeros(p.shape, np.uint8)
        onehot[np.arange(p.shape[0]), p.argmax(axis=1)] = 1
        return {"bits": np.packbits(onehot.ravel())}

    def decode(
        self, arrays: Mapping[str, np.ndarray], num_rows: int, num_classes: int
    ) -> np.ndarray:
        """Unpack the bits into a one-hot float32 matrix.

        Parameters
        ----------
        arrays : Mapping[str, np.ndarray]
            The payload.
        num_rows, num_classes : int
            Expected (N, C).

        Returns
        -------
        np.ndarray
            float32 (num_rows, num_classes) one-hot rows.

        Raises
        ------
        CodecError
            For a wrong key set, dtype or length, padding bits that are set, or a row
            without exactly one vote.
        """
        n, c = _check_dims(num_rows, num_classes)
        onehot = _unpack(arrays, n * c, "bits").reshape(n, c)
        if np.any(onehot.sum(axis=1, dtype=np.int64) != 1):
            raise CodecError("'bits' has a row without exactly one vote")
        return onehot.astype(np.float32)


def vote_bits(num_classes: int) -> int:
    """Bits per row of the ``vote`` codec: ``ceil(log2 C)``, at least 1."""
    return max(1, (int(num_classes) - 1).bit_length())


@dataclass(frozen=True)
class Vote:
    """Top-1 vote as a packed class index: ``ceil(log2 C)`` bits per row, at least one.

    Attributes
    ----------
    name : str
        ``"vote"``.
    """

    name: str = "vote"

    def encode(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """Encode as ``{"index": packbits(argmax in b bits per row, most significant first)}``.

        The key differs from ``onebit``'s ``"bits"``, so a payload of one is never read as the
        other, even where their byte counts agree (N * C <= 8).

        Parameters
        ----------
        probs : np.ndarray
            Finite (N, C) probabilities (ties go to the lowest class).

        Returns
        -------
        dict[str, np.ndarray]
            The payload: ``ceil(N * b / 8)`` uint8, ``b`` = :func:`vote_bits` (C).

        Raises
        ------
        ValueError
            If ``probs`` is not a finite 2-D real array.
        """
        p = _check_input(probs)
        b = vote_bits(p.shape[1])
        top = p.argmax(axis=1).astype(np.int64)
        shifts = np.arange(b - 1, -1, -1, dtype=np.int64)
        return {"index": np.packbits(((top[:, None] >> shifts) & 1).astype(np.uint8).ravel())}

    def decode(
        self, arrays: Mapping[str, np.ndarray], num_rows: int, num_classes: int
    ) -> np.ndarray:
        """Unpack the class indices into a one-hot float32 matrix.

        Parameters
        ----------
        arrays : Mapping[str, np.ndarray]
            The payload.
        num_rows, num_classes : int
            Expected (N, C).

        Returns
        -------
        np.ndarray
            float32 (num_rows, num_classes) one-hot rows.

        Raises
        ------
        CodecError
            For a wrong key set, dtype or length, padding bits that are set, or a class
            index >= C.
        """
        n, c = _check_dims(num_rows, num_classes)
        b = vote_bits(c)
        weights = 1 << np.arange(b - 1, -1, -1, dtype=np.int64)
        top = _unpack(arrays, n * b, "index").reshape(n, b).astype(np.int64) @ weights
        if np.any(top >= c):
            raise CodecError(f"'index' holds a class index >= {c}")
        onehot = np.zeros((n, c), np.float32)
        onehot[np.arange(n), top] = 1.0
        return onehot


@dataclass(frozen=True)
class TopK:
    """The ``k`` largest probabilities per row; the rest of the mass spread evenly.

    Attributes
    ----------
    k : int
        Number of kept classes per row (capped at C).
    name : str
        ``"topk"``.
    """

    k: int = 2
    name: str = "topk"

    def encode(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """Encode as ``{"idx": (N, k) uint8/uint16, "val": (N, k) float16}``.

        ``idx`` is uint8 when C <= 256, else uint16; ties keep the lower class index.

        Parameters
        ----------
        probs : np.ndarray
            Finite (N, C) probabilities (clipped to [0, 1]), C <= 65536.

        Returns
        -------
        dict[str, np.ndarray]
            The payload.

        Raises
        ------
        ValueError
            If ``probs`` is not a finite 2-D real array or has too many classes.
        """
        p = np.clip(_check_input(probs), 0.0, 1.0)
        if p.shape[1] > MAX_TOPK_CLASSES:
            raise ValueError(f"codec 'topk' supports at most {MAX_TOPK_CLASSES} classes")
        k = min(self.k, p.shape[1])
        idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
        val = np.take_along_axis(p, idx, axis=1)
        return {"idx": idx.astype(_index_dtype(p.shape[1])), "val": val.astype(np.float16)}

    def decode(
        self, arrays: Mapping[str, np.ndarray], num_rows: int, num_classes: int
    ) -> np.ndarray:
        """Scatter the kept values, spread ``1 - sum`` over the other classes, renormalize.

        Parameters
        ----------
        arrays : Mapping[str, np.ndarray]
            The payload.
        num_rows, num_classes : int
            Expected (N, C).

        Returns
        -------
        np.ndarray
            float32 (num_rows, num_classes) probabilities.

        Raises
        ------
        CodecError
            For a wrong key set, dtype or shape, values that are not finite or outside
            [0, 1], kept mass above 1 (beyond :data:`SUM_TOL`), class indices out of
            range or repeated within a row, or a row with no mass.
        """
        n, c = _check_dims(num_rows, num_classes)
        if c > MAX_TOPK_CLASSES:
            raise CodecError(f"codec 'topk' supports at most {MAX_TOPK_CLASSES} classes")
        k = min(self.k, c)
        a = _get(arrays, frozenset({"idx", "val"}))
        _expect(a["idx"], "idx", _index_dtype(c), (n, k))
        _expect(a["val"], "val", np.float16, (n, k))
        idx = a["idx"].astype(np.int64)
        val = a["val"].astype(np.float32)
        _check_unit(val, "val")
        if np.any(idx >= c):
            raise CodecError(f"'idx' holds a class index >= {c}")
        if np.any(np.diff(np.sort(idx, axis=1), axis=1) == 0):
            raise CodecError("'idx' repeats a class within a row")
        kept = val.sum(axis=1, dtype=np.float64)
        if np.any(kept > 1.0 + SUM_TOL):
            raise CodecError("'val' rows sum to more than 1")
        out = np.zeros((n, c), np.float32)
        if c > k:
            out += (np.clip(1.0 - kept, 0.0, None) / (c - k)).astype(np.float32)[:, None]
        np.put_along_axis(out, idx, val, axis=1)
        return _renorm(out, "val")


def _topk_k(value: object) -> int:
    """Validate the ``k`` of the top-k codec (an integer >= 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"codec 'topk': k must be an integer >= 1, got {value!r}")
    if not (isinstance(value, numbers.Integral) or float(value).is_integer()) or value < 1:
        raise ValueError(f"codec 'topk': k must be an integer >= 1, got {value!r}")
    return int(value)


#: Codec name -> factory taking the codec's parameters (only ``topk`` takes one, ``k``).
CODECS: Registry[Callable[..., Codec]] = Registry(
    "codec",
    {
        "fp32": lambda: Float("fp32", np.float32),
        "fp16": lambda: Float("fp16", np.float16),
        "int8": Int8,
        "onebit": OneBit,
        "vote": Vote,
        "topk": lambda k=2: TopK(k=_topk_k(k)),
    },
)
_CODEC_PARAMS: dict[str, frozenset[str]] = {"topk": frozenset({"k"})}


def get_codec(name: str, **params: int) -> Codec:
    """Return the codec called ``name``.

    Parameters
    ----------
    name : str
        One of :data:`CODECS`.
    **params : int
        ``topk`` takes ``k`` (integer >= 1, default 2); the others take none.

    Returns
    -------
    Codec
        A frozen codec instance.

    Raises
    ------
    ValueError
        For an unknown codec name, or an unexpected or invalid parameter.
    """
    factory = CODECS.lookup(name)
    unexpected = sorted(set(params) - _CODEC_PARAMS.get(name, frozenset()))
    if unexpected:
        raise ValueError(f"codec '{name}' got unexpected parameter(s) {', '.join(unexpected)}")
    return factory(**params)


def payload_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Raw bytes of a payload's arrays.

    Parameters
    ----------
    arrays : Mapping[str, np.ndarray]
        An encoded payload.

    Returns
    -------
    int
        Sum of ``nbytes`` (Flower adds a small per-array header on the wire).
    """
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))
