"""Fixed feature maps learned from the public proxy inputs alone (no labels, no private data).

DP-SGD noise grows with the number of trained parameters while the signal does not, so a
client that trains a small head on a few informative features keeps more of its signal at
the same ε. The public proxy set is unlabelled and free: a PCA fitted on it costs no
privacy, and every client (and the centralised DP baseline) fits the same one because the
proxy set is the same for all. The projection is a frozen module (buffers, not
parameters): DP-SGD never touches it, and it travels in the model's ``state_dict``.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from fedkd.models import ModelError, build_model
from fedkd.registry import Registry
from fedkd.scattering import Scattering2D


class PCAFeatures(nn.Module):
    """Flatten, centre, project on the top ``k`` principal directions and whiten.

    Parameters
    ----------
    mean : np.ndarray
        (D,) mean of the flattened proxy inputs.
    components : np.ndarray
        (k, D) principal directions, rows orthonormal.
    scale : np.ndarray
        (k,) standard deviation of the proxy along each direction (whitening divisor).
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("components", torch.as_tensor(components, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.reshape(x.shape[0], -1) - self.mean  # (B, D)
        return (z @ self.components.T) / self.scale  # (B, k)


def fit_pca(x_public: np.ndarray, k: int, key: str = "clients.public_features") -> PCAFeatures:
    """Fit a whitening PCA with ``k`` components on public inputs.

    Parameters
    ----------
    x_public : np.ndarray
        (M, ...) unlabelled public inputs; flattened to (M, D).
    k : int
        Number of components, ``1 <= k <= min(M, D)``.
    key : str
        The config key named in errors.

    Raises
    ------
    ModelError
        If ``k`` is out of range or the public inputs have fewer than ``k`` directions of
        non-zero variance.
    """
    flat = np.asarray(x_public, dtype=np.float64).reshape(len(x_public), -1)  # (M, D)
    m, d = flat.shape
    if not 1 <= k <= min(m, d):
        raise ModelError(
            f"{key}={k} must be between 1 and min(proxy rows, input size) = {min(m, d)}"
        )
    mean = flat.mean(axis=0)
    _, sv, vt = np.linalg.svd(flat - mean, full_matrices=False)
    scale = sv[:k] / math.sqrt(m)  # (k,) std along each direction
    if scale[-1] <= 1e-12 * max(scale[0], 1e-300):
        raise ModelError(f"{key}={k}: the proxy inputs span fewer than {k} directions")
    # Fix each direction's sign (largest |coefficient| positive) so the map is deterministic.
    signs = np.sign(vt[:k][np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
    return PCAFeatures(mean, vt[:k] * signs[:, None], scale)


class PublicFeatures(nn.Module):
    """The frozen part of a client model: an optional scattering, an optional PCA.

    Parameters
    ----------
    transform : Scattering2D or None
        Fixed image transform applied first (``clients.feature_map: scattering``).
    pca : PCAFeatures or None
        Whitened PCA fitted on the transformed public proxy (``clients.public_features``).
    key : str
        Identifies the map (transform, k and the proxy it was fitted on) for caching.
    """

    def __init__(self, transform: nn.Module | None, pca: PCAFeatures | None, key: str) -> None:
        super().__init__()
        self.transform, self.pca, self.key = transform, pca, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.transform(x) if self.transform is not None else x
        return self.pca(z) if self.pca is not None else z.reshape(z.shape[0], -1)

    def transform_array(self, x: np.ndarray, chunk: int = 1000) -> np.ndarray:
        """Features of ``x`` as float32, cached per process by content.

        The map is fixed, so a client's private data and the proxy are transformed once
        per process, not once per round or batch.
        """
        key = (self.key, content_key(x))
        if key not in _FEATURE_CACHE:
            _remember(_FEATURE_CACHE, key, _apply(self, x, chunk))
        return _FEATURE_CACHE[key]


@torch.no_grad()
def _apply(module: nn.Module, x: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """``module`` over ``x`` in chunks, as a float32 array (an empty ``x`` gives (0, width))."""
    if len(x) == 0:  # the width from one zero example: some transforms (FFT) refuse no rows
        return _apply(module, np.zeros((1, *x.shape[1:]), dtype=x.dtype), chunk)[:0]
    parts = [
        module(torch.as_tensor(np.ascontiguousarray(x[i : i + chunk]))).numpy()
        for i in range(0, max(len(x), 1), chunk)
    ]
    return np.concatenate(parts).astype(np.float32, copy=False)


#: Feature map name -> the fixed transform of the inputs for ``input_shape`` (None: the
#: pixels as they are). A transform's ``ValueError`` names what it cannot take.
FEATURE_MAPS: Registry[Callable[[tuple[int, ...]], nn.Module | None]] = Registry(
    "feature map", {"pixels": lambda input_shape: None, "scattering": Scattering2D}
)


def build_client_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    seed: int,
    x_public: np.ndarray | None = None,
    public_features: int = 0,
    feature_map: str = "pixels",
    section: str = "clients",
) -> nn.Module:
    """A registered model, optionally on top of fixed features fitted on the public proxy.

    With ``public_features == 0`` and ``feature_map == "pixels"`` this is
    :func:`fedkd.models.build_model`. Otherwise the model is ``Sequential(PublicFeatures,
    head)``: the inputs go through the scattering transform (``feature_map ==
    "scattering"``), then through a whitened PCA with ``public_features`` components fitted
    on the public proxy (if ``public_features > 0``), and the head sees flat features, so
    image-only models (``cnn``) are refused with a clear error. Errors name the config keys
    under ``section`` (``clients`` or ``distill``).
    """
    if feature_map not in FEATURE_MAPS:
        raise ModelError(
            f"{section}.feature_map must be {' or '.join(FEATURE_MAPS)}, got '{feature_map}'"
        )
    if public_features == 0 and feature_map == "pixels":
        return build_model(name, input_shape, num_classes, seed=seed)
    try:
        transform = FEATURE_MAPS[feature_map](input_shape)
    except ValueError as err:
        raise ModelError(f"{section}.feature_map={feature_map}: {err}") from err
    pca, width, key = None, None, f"{feature_map}:{tuple(input_shape)}"
    if public_features > 0:
        if x_public is None or len(x_public) == 0:
            raise ModelError(f"{section}.public_features needs public proxy inputs to fit on")
        proxy = content_key(x_public)
        width, key = public_features, f"{key}:pca{public_features}:{proxy}"
        pca = _cached_pca(proxy, public_features, x_public, transform, key, section)
    else:
        width = int(np.prod(transform.output_shape))
    key_name = f"{section}.public_features" if pca is not None else f"{section}.feature_map"
    setting = public_features if pca is not None else feature_map
    if name == "cnn":  # it would convolve along components that have no order
        raise ModelError(
            f"{key_name}={setting}: model 'cnn' convolves raw inputs; the fixed features "
            "have no spatial order, use mlp or linear on them"
        )
    try:
        head = build_model(name, (width,), num_classes, seed=seed)
    except ModelError as err:
        raise ModelError(f"{key_name}={setting}: {err}") from err
    return nn.Sequential(PublicFeatures(transform, pca, key), head)


def feature_args(section_cfg: Any, section: str) -> dict[str, Any]:
    """Keyword arguments of :func:`build_client_model` from ``cfg.clients`` or ``cfg.distill``
    (``section`` names which, for error messages)."""
    return {
        "public_features": section_cfg.public_features,
        "feature_map": section_cfg.feature_map,
        "section": section,
    }


def on_features(model: nn.Module, *arrays: np.ndarray) -> tuple[nn.Module, list[np.ndarray]]:
    """The trainable part of ``model`` and the inputs it sees.

    For a model with fixed public features, the head and the cached features of each array;
    otherwise ``model`` and the arrays unchanged. The head shares its parameters with
    ``model``.
    """
    features, head = split_features(model)
    if features is None:
        return model, list(arrays)
    return head, [features.transform_array(a) for a in arrays]


def split_features(model: nn.Module) -> tuple[PublicFeatures | None, nn.Module]:
    """``(PublicFeatures, head)`` of a model from :func:`build_client_model`, else
    ``(None, model)``. The head shares its parameters with ``model``."""
    if isinstance(model, nn.Sequential) and isinstance(model[0], PublicFeatures):
        return model[0], model[1]
    return None, model


def _digest(x: np.ndarray) -> str:
    """Content hash of an array (shape, dtype and bytes)."""
    x = np.ascontiguousarray(x)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{x.shape}{x.dtype}".encode())
    h.update(x.view(np.uint8).reshape(-1))
    return h.hexdigest()


_DIGESTS: dict[int, tuple[weakref.ref, str]] = {}


def content_key(x: np.ndarray) -> str:
    """:func:`_digest` of ``x``, remembered per live array object (arrays are not mutated)."""
    hit = _DIGESTS.get(id(x))
    if hit is not None and hit[0]() is x:
        return hit[1]
    key = _digest(x)
    _remember(_DIGESTS, id(x), (weakref.ref(x), key), limit=64)
    return key


_PCA_CACHE: dict[str, PCAFeatures] = {}
_FEATURE_CACHE: dict[tuple[str, str], np.ndarray] = {}


def _remember(cache: dict, key: Any, value: Any, limit: int = 256) -> None:
    """Insert into a small per-process cache, dropping the oldest entry when full."""
    if len(cache) >= limit:
        cache.pop(next(iter(cache)))
    cache[key] = value


def _cached_pca(
    proxy: str,
    k: int,
    x_public: np.ndarray,
    transform: nn.Module | None,
    key: str,
    section: str,
) -> PCAFeatures:
    """One fit per proxy set, ``k`` and transform per process; each caller gets a copy.

    The fit transforms the whole proxy anyway, so it also fills the feature cache for the
    proxy under ``key`` (the key of the resulting :class:`PublicFeatures`).
    """
    if key not in _PCA_CACHE:
        fitted_on = x_public if transform is None else _apply(transform, x_public)
        pca = fit_pca(fitted_on, k, key=f"{section}.public_features")
        _remember(_PCA_CACHE, key, pca, limit=4)
        _remember(_FEATURE_CACHE, (key, proxy), _apply(pca, fitted_on))
    cached = _PCA_CACHE[key]
    return PCAFeatures(cached.mean.numpy(), cached.components.numpy(), cached.scale.numpy())
