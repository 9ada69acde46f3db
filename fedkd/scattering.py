"""A fixed 2-D scattering transform: hand-designed image features that cost no privacy.

The scattering transform (Bruna & Mallat, IEEE TPAMI 2013) cascades Morlet wavelet
convolutions and complex moduli and averages the result with a Gaussian low-pass filter:

    S0 x = x * phi_J
    S1 x = |x * psi_(j1, t1)| * phi_J
    S2 x = ||x * psi_(j1, t1)| * psi_(j2, t2)| * phi_J,      j2 > j1

for scales ``j < J`` and ``L`` orientations ``t``, sampled every ``2**J`` pixels. It has no
trained parameters, so a client may put it under a DP-SGD-trained head for free. Tramèr &
Boneh (ICLR 2021) report 89.7 % on Fashion-MNIST at ε = 3 with a linear model on these
features (J = 2, L = 8) under centralised DP-SGD, against 86 % end to end.

Filter parameters follow the usual choices for J = 2 on small images (Andreux et al., JMLR
2020): wavelet width ``0.8 * 2**j``, centre frequency ``3 pi / 4 / 2**j``, slant ``4 / L``,
low-pass width ``0.8 * 2**J``. Convolutions are circular on a reflect-padded grid, computed
on the full grid for order 1; order 2 is computed on the grid subsampled by ``2**j2``,
where ``|u1 * psi_j2|`` lives, as is usual (Andreux et al. 2020).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

_PERIODS = 2  # filter copies summed on each side when periodising on the padded grid


def num_channels(j_scales: int, orientations: int) -> int:
    """Scattering channels per input channel: ``1 + J L + L**2 J (J - 1) / 2``."""
    return 1 + j_scales * orientations + orientations**2 * j_scales * (j_scales - 1) // 2


def gabor(
    shape: tuple[int, int], sigma: float, theta: float, xi: float, slant: float
) -> np.ndarray:
    """A periodised 2-D Gabor filter centred at the origin of an ``shape`` grid.

    Parameters
    ----------
    shape : (int, int)
        Grid size (N1, N2).
    sigma : float
        Envelope width along the wave direction.
    theta : float
        Wave direction in radians.
    xi : float
        Centre frequency in radians per pixel (0: a Gaussian).
    slant : float
        Envelope width ratio, wave direction over its normal (``< 1``: elongated
        along the edge the filter detects).

    Returns
    -------
    np.ndarray
        (N1, N2) complex128 filter, normalised by ``2 pi sigma**2 / slant``.
    """
    n1, n2 = shape
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    curvature = rot @ np.diag([1.0, slant**2]) @ rot.T / (2 * sigma**2)  # (2, 2)
    out = np.zeros(shape, dtype=np.complex128)
    for k1 in range(-_PERIODS, _PERIODS + 1):
        for k2 in range(-_PERIODS, _PERIODS + 1):
            u1, u2 = np.meshgrid(
                np.arange(n1) + k1 * n1, np.arange(n2) + k2 * n2, indexing="ij"
            )  # (N1, N2) each
            quad = curvature[0, 0] * u1**2 + 2 * curvature[0, 1] * u1 * u2
            quad = quad + curvature[1, 1] * u2**2
            out += np.exp(-quad + 1j * xi * (u1 * c + u2 * s))
    return out / (2 * math.pi * sigma**2 / slant)


def morlet(
    shape: tuple[int, int], sigma: float, theta: float, xi: float, slant: float
) -> np.ndarray:
    """A Gabor filter minus a scaled envelope so that it sums to zero (a wavelet)."""
    wave = gabor(shape, sigma, theta, xi, slant)
    envelope = gabor(shape, sigma, theta, 0.0, slant)
    return wave - envelope * (wave.sum() / envelope.sum())


class Scattering2D(nn.Module):
    """Scattering coefficients of order 0, 1 and 2 of ``(B, C, H, W)`` images.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W)`` or ``(C, H, W)`` of one example.
    j_scales : int
        Number of scales J; the output is sampled every ``2**J`` pixels.
    orientations : int
        Number of orientations L.

    The output is ``(B, C * num_channels(J, L), ceil(H / 2**J), ceil(W / 2**J))``. Filters
    are non-persistent buffers: they are rebuilt from (J, L, shape), not saved.
    """

    def __init__(
        self, input_shape: tuple[int, ...], j_scales: int = 2, orientations: int = 8
    ) -> None:
        super().__init__()
        step = 2**j_scales
        if len(input_shape) not in (2, 3) or min(input_shape[-2:]) < 2 * step:
            raise ValueError(
                f"scattering with J={j_scales} needs images of at least {2 * step} x "
                f"{2 * step} pixels, got input shape {tuple(input_shape)}"
            )
        self.in_shape = tuple(input_shape) if len(input_shape) == 3 else (1, *input_shape)
        self.j_scales, self.orientations = j_scales, orientations
        h, w = self.in_shape[1:]
        # Reflect-pad by 2**J on each side, plus up to 2**J - 1 on the far side so that the
        # grid is a multiple of 2**J (subsampling is then a fold of the spectrum).
        self.pads = tuple((step, step + (-(n + 2 * step)) % step) for n in (h, w))
        grid = tuple(n + a + b for n, (a, b) in zip((h, w), self.pads, strict=True))
        lowpass = gabor(grid, 0.8 * 2**j_scales, 0.0, 0.0, 1.0)
        wavelets = [
            morlet(
                grid,
                0.8 * 2**j,
                math.pi * t / orientations,
                0.75 * math.pi / 2**j,
                4.0 / orientations,
            )
            for j in range(j_scales)
            for t in range(orientations)
        ]  # index j * L + t
        phi = _fourier(lowpass)  # (N1, N2)
        for level in range(j_scales):  # the low-pass on grids subsampled by 2**level
            self.register_buffer(f"phi{level}", _fold(phi, 2**level) * 4**level, persistent=False)
        self.register_buffer("psi", _fourier(np.stack(wavelets)), persistent=False)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Shape of one example's coefficients, ``(channels, H', W')``."""
        c, h, w = self.in_shape
        step = 2**self.j_scales
        k = num_channels(self.j_scales, self.orientations)
        return (c * k, -(-h // step), -(-w // step))

    def _average(self, spectrum: torch.Tensor, level: int = 0) -> torch.Tensor:
        """Low-pass, subsample to stride ``2**J`` and crop the padding: spectrum -> real.

        ``spectrum`` is on the grid subsampled by ``2**level``.
        """
        step = 2 ** (self.j_scales - level)
        phi = getattr(self, f"phi{level}")
        out = torch.fft.ifft2(_fold(spectrum * phi, step)).real
        h, w = self.output_shape[1:]
        (a1, _), (a2, _) = self.pads
        o1, o2 = a1 // 2**self.j_scales, a2 // 2**self.j_scales
        return out[..., o1 : o1 + h, o2 : o2 + w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.in_shape).to(torch.float32)  # (B, C, H, W)
        (a1, b1), (a2, b2) = self.pads
        padded = nn.functional.pad(x, (a2, b2, a1, b1), mode="reflect")  # (B, C, N1, N2)
        spec = torch.fft.fft2(padded)  # (B, C, N1, N2)
        orders = [self._average(spec).unsqueeze(2)]  # (B, C, 1, H', W')
        u1 = torch.fft.ifft2(spec.unsqueeze(2) * self.psi).abs()  # (B, C, JL, N1, N2)
        u1_spec = torch.fft.fft2(u1)
        orders.append(self._average(u1_spec))
        n_l = self.orientations
        for j1 in range(self.j_scales - 1):
            for t1 in range(n_l):
                first = u1_spec[:, :, j1 * n_l + t1].unsqueeze(2)  # (B, C, 1, N1, N2)
                for j2 in range(j1 + 1, self.j_scales):
                    # |u1 * psi_j2| is smooth at scale 2**j2: compute it on that grid.
                    band = _fold(first * self.psi[j2 * n_l : (j2 + 1) * n_l], 2**j2)
                    u2 = torch.fft.ifft2(band).abs()  # (B, C, L, N1 / 2**j2, N2 / 2**j2)
                    orders.append(self._average(torch.fft.fft2(u2), level=j2))
        out = torch.cat(orders, dim=2)  # (B, C, K, H', W')
        return out.reshape(out.shape[0], -1, *out.shape[-2:])


def _fold(spectrum: torch.Tensor, step: int) -> torch.Tensor:
    """Spectrum of the signal subsampled by ``step`` on both axes.

    Subsampling folds the spectrum: ``Y[k] = sum_r X[k + r N / step] / step`` per axis.
    """
    if step == 1:
        return spectrum
    n1, n2 = spectrum.shape[-2:]
    parts = spectrum.reshape(*spectrum.shape[:-2], step, n1 // step, step, n2 // step)
    return parts.sum(dim=(-4, -2)) / step**2


def _fourier(filters: np.ndarray) -> torch.Tensor:
    """2-D DFT over the last two axes, as a complex64 tensor."""
    return torch.from_numpy(np.fft.fft2(filters).astype(np.complex64))
