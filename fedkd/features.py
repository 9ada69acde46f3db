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

import numpy as np
import torch
from torch import nn

from fedkd.models import ModelError, build_model


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


def fit_pca(x_public: np.ndarray, k: int) -> PCAFeatures:
    """Fit a whitening PCA with ``k`` components on public inputs.

    Parameters
    ----------
    x_public : np.ndarray
        (M, ...) unlabelled public inputs; flattened to (M, D).
    k : int
        Number of components, ``1 <= k <= min(M, D)``.

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
            f"clients.public_features={k} must be between 1 and min(proxy rows, input size) "
            f"= {min(m, d)}"
        )
    mean = flat.mean(axis=0)
    _, sv, vt = np.linalg.svd(flat - mean, full_matrices=False)
    scale = sv[:k] / math.sqrt(m)  # (k,) std along each direction
    if scale[-1] <= 1e-12 * max(scale[0], 1e-300):
        raise ModelError(
            f"clients.public_features={k}: the proxy inputs span fewer than {k} directions"
        )
    # Fix each direction's sign (largest |coefficient| positive) so the map is deterministic.
    signs = np.sign(vt[:k][np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
    return PCAFeatures(mean, vt[:k] * signs[:, None], scale)


def build_client_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    seed: int,
    x_public: np.ndarray | None = None,
    public_features: int = 0,
) -> nn.Module:
    """A registered model, optionally on top of a PCA fitted on the public proxy.

    With ``public_features == 0`` this is :func:`fedkd.models.build_model`. Otherwise the
    model is ``Sequential(PCAFeatures, model)`` where the inner model sees ``(k,)`` inputs,
    so image-only models (``cnn``) are refused with a clear error.
    """
    if public_features == 0:
        return build_model(name, input_shape, num_classes, seed=seed)
    if x_public is None or len(x_public) == 0:
        raise ModelError("clients.public_features needs public proxy inputs to fit on")
    features = _cached_pca(_digest(x_public), public_features, x_public)
    try:
        head = build_model(name, (public_features,), num_classes, seed=seed)
    except ModelError as err:
        raise ModelError(f"clients.public_features={public_features}: {err}") from err
    return nn.Sequential(features, head)


def _digest(x: np.ndarray) -> str:
    """Content hash of an array (shape, dtype and bytes)."""
    x = np.ascontiguousarray(x)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{x.shape}{x.dtype}".encode())
    h.update(x.view(np.uint8).reshape(-1))
    return h.hexdigest()


_PCA_CACHE: dict[tuple[str, int], PCAFeatures] = {}


def _cached_pca(key: str, k: int, x_public: np.ndarray) -> PCAFeatures:
    """One fit per proxy set and ``k`` per process; each caller gets its own copy."""
    if (key, k) not in _PCA_CACHE:
        if len(_PCA_CACHE) >= 4:
            _PCA_CACHE.clear()
        _PCA_CACHE[(key, k)] = fit_pca(x_public, k)
    cached = _PCA_CACHE[(key, k)]
    return PCAFeatures(cached.mean.numpy(), cached.components.numpy(), cached.scale.numpy())
