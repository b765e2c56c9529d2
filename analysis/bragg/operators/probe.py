"""Probe operators: 2D oblique section P2, extrusion B along k_i, projection R (docs/geometry.md, Operators).

P2 is the probe on the (r2, r3) plane through the box centre (n1 = N1P//2); slice n1
of the box holds P2 shifted by (n1 - N1P//2)·d pixels, d the k_i slope per slice.
"""

from __future__ import annotations

import numpy as np

from analysis.bragg.operators.fourier import _fft_kw
from analysis.geometry import BraggGeometry
from analysis.xp import Array, DeviceCopies, array_module, fft_module


def extrusion_slope_px(geometry: BraggGeometry, n1_padded: int | None = None) -> tuple[float, float]:
    """d = Δr1 (k̂_i·e2 / k̂_i·e1, k̂_i·e3 / k̂_i·e1) / (Δr2, Δr3): P2 shift per r1 slice, pixels."""
    n1p = geometry.recon_shape[0] if n1_padded is None else n1_padded
    dr1, dr2, dr3 = geometry._voxel(n1p)  # noqa: SLF001
    ax = geometry.lab_axes()
    ki = ax["k_in"]
    k1, k2, k3 = (float(ki @ ax[e]) for e in ("e1", "e2", "e3"))
    return (dr1 * k2 / (k1 * dr2), dr1 * k3 / (k1 * dr3))


def _freqs(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]


def _check(op: object, x: Array, shape: tuple[int, ...], name: str) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{type(op).__name__}.{name}: input shape {tuple(x.shape)}, expected {tuple(shape)}")
    if not np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{type(op).__name__}.{name}: dtype {x.dtype}, expected complex64 or complex128")


class SubpixelShift2D:
    """Fourier-phase-ramp shift of a 2D array by ``shift_px`` (periodic, unitary).

    ``forward``: ``(N2, N3) complex`` → ``(N2, N3)``, out(r) = in(r − s). ``adjoint``: shift by −s.
    """

    def __init__(self, shape: tuple[int, int], shift_px: tuple[float, float]) -> None:
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"SubpixelShift2D: shape {shape}, expected two positive sizes")
        self.shape = (int(shape[0]), int(shape[1]))
        self.shift_px = (float(shift_px[0]), float(shift_px[1]))
        f2, f3 = _freqs(self.shape)
        self._phase = np.exp(-2j * np.pi * (f2 * self.shift_px[0] + f3 * self.shift_px[1]))
        self._on_device = DeviceCopies()

    def _apply(self, x: Array, conj: bool) -> Array:
        xp = array_module(x)
        fft = fft_module(xp)
        ph = self._on_device.get("phase", self._phase, xp, x.dtype)
        ph = xp.conj(ph) if conj else ph
        return fft.ifft2(fft.fft2(x, **_fft_kw(xp)) * ph, overwrite_x=True, **_fft_kw(xp))

    def forward(self, x: Array) -> Array:
        """Shift by +s: ``(N2, N3)`` → ``(N2, N3)`` complex."""
        _check(self, x, self.shape, "forward")
        return self._apply(x, False)

    def adjoint(self, y: Array) -> Array:
        """Shift by −s (the inverse): ``(N2, N3)`` → ``(N2, N3)`` complex."""
        _check(self, y, self.shape, "adjoint")
        return self._apply(y, True)


class ProbeExtrusion:
    """Back-projection B of the 2D probe section along k_i, with optional sub-pixel shift g.

    ``forward``: P2 ``(N2, N3) complex`` → P3 = B(Shift_g P2) ``(N1P, N2, N3) complex``.
    ``adjoint``: ``(N1P, N2, N3)`` → ``(N2, N3)``: Shift_{−g} B^H, B^H the *sum* along k_i.
    ``project``: R = B^H / N1P (average along k_i), so R B = I (seed Eq 6).

    Parameters
    ----------
    box_shape : (N1P, N2, N3).
    slope_px : d, the (r2, r3) shift in pixels per r1 slice (:func:`extrusion_slope_px`).
    shift_px : g, the extra 2D sub-pixel shift of P2 (docs/geometry.md, Operators), default (0, 0).
    """

    def __init__(self, box_shape: tuple[int, int, int], slope_px: tuple[float, float],
                 shift_px: tuple[float, float] = (0.0, 0.0)) -> None:
        if len(box_shape) != 3 or min(box_shape) < 1:
            raise ValueError(f"ProbeExtrusion: box_shape {box_shape}, expected (N1P, N2, N3) positive")
        self.box_shape = (int(box_shape[0]), int(box_shape[1]), int(box_shape[2]))
        self.probe_shape = self.box_shape[1:]
        self.slope_px = (float(slope_px[0]), float(slope_px[1]))
        self.shift_px = (float(shift_px[0]), float(shift_px[1]))
        n1p = self.box_shape[0]
        n1c = (np.arange(n1p) - n1p // 2)[:, None, None]
        f2, f3 = _freqs(self.probe_shape)
        self._one_d = self.slope_px[0] == 0.0
        if self._one_d:   # slices differ only along r3: 1D transforms suffice
            self._slices = np.exp(-2j * np.pi * n1c * self.slope_px[1] * f3[None])  # (N1P, 1, N3)
        else:
            self._slices = np.exp(-2j * np.pi * n1c * (self.slope_px[0] * f2 + self.slope_px[1] * f3)[None])
        self._shift = SubpixelShift2D(self.probe_shape, self.shift_px)
        self._has_shift = self.shift_px != (0.0, 0.0)
        self._on_device = DeviceCopies()

    @classmethod
    def from_geometry(cls, geometry: BraggGeometry, shift_px: tuple[float, float] = (0.0, 0.0)) -> ProbeExtrusion:
        """Extrusion on ``geometry.recon_shape``."""
        return cls(geometry.recon_shape, extrusion_slope_px(geometry), shift_px)

    def with_shift(self, shift_px: tuple[float, float]) -> ProbeExtrusion:
        """Same extrusion with another sub-pixel shift g (reuses nothing heavy)."""
        return ProbeExtrusion(self.box_shape, self.slope_px, shift_px)

    def forward(self, p2: Array) -> Array:
        """P3 = B Shift_g P2: ``(N2, N3)`` → ``(N1P, N2, N3)`` complex."""
        _check(self, p2, self.probe_shape, "forward")
        xp = array_module(p2)
        fft = fft_module(xp)
        kw = _fft_kw(xp)
        sl = self._on_device.get("slices", self._slices, xp, p2.dtype)
        if self._has_shift:
            p2 = self._shift.forward(p2)
        if self._one_d:
            return fft.ifft(fft.fft(p2, axis=-1, **kw)[None] * sl, axis=-1, overwrite_x=True, **kw)
        return fft.ifft2(fft.fft2(p2, **kw)[None] * sl, axes=(1, 2), overwrite_x=True, **kw)

    def adjoint(self, p3: Array) -> Array:
        """Shift_{−g} B^H P3 (sum along k_i): ``(N1P, N2, N3)`` → ``(N2, N3)`` complex."""
        _check(self, p3, self.box_shape, "adjoint")
        xp = array_module(p3)
        fft = fft_module(xp)
        kw = _fft_kw(xp)
        sl = xp.conj(self._on_device.get("slices", self._slices, xp, p3.dtype))
        if self._one_d:
            out = fft.ifft((fft.fft(p3, axis=-1, **kw) * sl).sum(axis=0), axis=-1, overwrite_x=True, **kw)
        else:
            out = fft.ifft2((fft.fft2(p3, axes=(1, 2), **kw) * sl).sum(axis=0), overwrite_x=True, **kw)
        if self._has_shift:
            out = self._shift.adjoint(out)
        return out

    def project(self, p3: Array) -> Array:
        """R P3 = B^H P3 / N1P (average along k_i): ``(N1P, N2, N3)`` → ``(N2, N3)`` complex."""
        return self.adjoint(p3) / self.box_shape[0]


def probe_na_mask(geometry: BraggGeometry, na_p1_rad: float, na_p2_rad: float, factor: float = 1.5,
                  n1_padded: int | None = None) -> np.ndarray:
    """Boolean (N2, N3) mask in FFT order on the P2 frequency grid (docs/geometry.md, Operators, seed Methods).

    True where |f_p1| ≤ factor·NA_p1/λ and |f_p2| ≤ factor·NA_p2/λ, with
    f_(p1,p2) = M^{-T} f_(b,c), M = [[p1·e2, p1·e3], [p2·e2, p2·e3]]. In vertical
    scattering NA_p1 is the vertical NA (V ↔ p1, H ↔ p2).
    """
    if not (na_p1_rad > 0 and na_p2_rad > 0 and factor > 0):
        raise ValueError(f"probe_na_mask: NA ({na_p1_rad}, {na_p2_rad}) and factor {factor} must be > 0")
    n1p = geometry.recon_shape[0] if n1_padded is None else n1_padded
    _, dr2, dr3 = geometry._voxel(n1p)  # noqa: SLF001
    n2, n3 = geometry.recon_shape[1], geometry.recon_shape[2]
    ax = geometry.lab_axes()
    p3 = ax["k_in"]
    p2 = ax["e2"]
    p1 = np.cross(p2, p3)
    m = np.array([[p1 @ ax["e2"], p1 @ ax["e3"]], [p2 @ ax["e2"], p2 @ ax["e3"]]])
    fb = np.fft.fftfreq(n2, dr2)[:, None]
    fc = np.fft.fftfreq(n3, dr3)[None, :]
    minv_t = np.linalg.inv(m).T
    fp1 = minv_t[0, 0] * fb + minv_t[0, 1] * fc
    fp2 = minv_t[1, 0] * fb + minv_t[1, 1] * fc
    lam = geometry.wavelength_m
    return (np.abs(fp1) <= factor * na_p1_rad / lam) & (np.abs(fp2) <= factor * na_p2_rad / lam)


def apply_fourier_mask_2d(p2: Array, mask: Array) -> Array:
    """P2 ← F₂⁻¹[M · F₂ P2] for a boolean ``mask`` (N2, N3) in FFT order."""
    xp = array_module(p2)
    fft = fft_module(xp)
    m = xp.asarray(mask)
    return fft.ifft2(fft.fft2(p2, **_fft_kw(xp)) * m, overwrite_x=True, **_fft_kw(xp))


def probe_width_along_p1_m(geometry: BraggGeometry, p2: np.ndarray, energy_fraction: float = 0.99) -> float:
    """Rough probe width W along p1 from P2: extent along r3 holding ``energy_fraction`` × |p1·e3| Δr3."""
    prof = np.sum(np.abs(np.asarray(p2)) ** 2, axis=0)
    tot = prof.sum()
    if not tot > 0:
        raise ValueError("probe_width_along_p1_m: the probe is zero everywhere")
    c = np.cumsum(prof) / tot
    lo = int(np.searchsorted(c, (1 - energy_fraction) / 2))
    hi = int(np.searchsorted(c, 1 - (1 - energy_fraction) / 2))
    ax = geometry.lab_axes()
    p1 = np.cross(ax["e2"], ax["k_in"])
    return (hi - lo + 1) * geometry.voxel_size_m[2] * abs(float(p1 @ ax["e3"]))
