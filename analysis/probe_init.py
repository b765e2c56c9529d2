"""Initial probe of the Bragg engine: the oblique section P2 on (r2, r3) (spec 1.6).

The engine's ``probe`` argument is P2, the probe on the (r2, r3) plane through the
centre of the reconstruction box, on ``geometry.recon_shape[1:]`` = (N2, N3) pixels of
(Δr2, Δr3). The probe is invariant along k_i, so P2(b, c) = P⊥(M (b, c)) with
P⊥ the probe in the plane perpendicular to the beam on (p1, p2) = (V, H) and

    M = [[p1·e2, p1·e3], [p2·e2, p2·e3]],  p3 = k̂_i, p2 = e2, p1 = p2 × p3

(the same M as :func:`analysis.operators.probe.probe_na_mask`). Two sources of P⊥:

* :func:`probe_from_perpendicular` — a measured 2D probe (forward ptychography of a
  Siemens star, rows = p1/V, columns = p2/H), resampled by interpolation;
* :func:`model_probe` — a KB focus modelled by a rectangular numerical aperture
  (:func:`analysis.forward_ptycho.rectangular_na_probe`) when no forward scan exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from analysis.forward_ptycho import rectangular_na_probe
from analysis.geometry import BraggGeometry

__all__ = ["ProbeInitOptions", "oblique_matrix", "p2_plane_coordinates_m", "probe_from_perpendicular",
           "model_probe"]


@dataclass(frozen=True, kw_only=True)
class ProbeInitOptions:
    """How a perpendicular probe is resampled onto the oblique P2 grid."""

    interpolation_order: int = 1
    """Spline order of ``scipy.ndimage.map_coordinates`` (0–5) on real and imaginary parts."""
    antialias: bool = True
    """Low-pass the input along an axis before sampling it more coarsely than it is stored."""
    recentre: bool = False
    """Put the intensity centroid of the input probe at the centre of P2 (else: array centre N//2)."""
    total_intensity: float | None = None
    """Scale P2 so Σ|P2|² equals this; None keeps the interpolated values."""

    def __post_init__(self) -> None:
        if not 0 <= self.interpolation_order <= 5:
            raise ValueError(f"ProbeInitOptions.interpolation_order must be in 0..5, got {self.interpolation_order}")
        if self.total_intensity is not None and not self.total_intensity > 0:
            raise ValueError(f"ProbeInitOptions.total_intensity must be > 0 or None, got {self.total_intensity}")


def oblique_matrix(geometry: BraggGeometry) -> np.ndarray:
    """M (2, 2) with (p1, p2) = M (b, c): P2-plane coordinates (along e2, e3) → beam-plane (V, H), metres."""
    ax = geometry.lab_axes()
    p3 = ax["k_in"]
    p2 = ax["e2"]
    p1 = np.cross(p2, p3)
    return np.array([[p1 @ ax["e2"], p1 @ ax["e3"]], [p2 @ ax["e2"], p2 @ ax["e3"]]], dtype=float)


def p2_plane_coordinates_m(geometry: BraggGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(p1_m, p2_m), each (N2, N3): beam-plane coordinates of every P2 pixel (pixel N//2 at 0)."""
    n2, n3 = geometry.recon_shape[1:]
    _, dr2, dr3 = geometry.voxel_size_m
    b = ((np.arange(n2) - n2 // 2) * dr2)[:, None]
    c = ((np.arange(n3) - n3 // 2) * dr3)[None, :]
    m = oblique_matrix(geometry)
    return m[0, 0] * b + m[0, 1] * c, m[1, 0] * b + m[1, 1] * c


def _step_along(geometry: BraggGeometry) -> tuple[float, float]:
    """Largest spacing of P2 samples along p1 and p2 (metres)."""
    m = np.abs(oblique_matrix(geometry))
    _, dr2, dr3 = geometry.voxel_size_m
    return float(max(m[0, 0] * dr2, m[0, 1] * dr3)), float(max(m[1, 0] * dr2, m[1, 1] * dr3))


def probe_from_perpendicular(probe_vh: np.ndarray, pixel_size_m: float | tuple[float, float],
                             geometry: BraggGeometry, *,
                             options: ProbeInitOptions = ProbeInitOptions()) -> np.ndarray:
    """Resample a beam-plane probe (rows p1 = V, columns p2 = H) onto P2 (N2, N3) complex128.

    ``pixel_size_m`` is the (V, H) pixel size of ``probe_vh`` (one number for square
    pixels); its pixel N//2 (or the intensity centroid with ``options.recentre``) is the
    beam axis. Points outside ``probe_vh`` are 0.
    """
    p = np.asarray(probe_vh)
    if p.ndim != 2 or min(p.shape) < 2:
        raise ValueError(f"probe_from_perpendicular: probe shape {p.shape}, expected a 2D (V, H) array")
    if not np.all(np.isfinite(p)) or not np.any(p):
        raise ValueError("probe_from_perpendicular: the probe contains NaN/inf or is zero everywhere")
    dv, dh = (float(v) for v in np.broadcast_to(np.asarray(pixel_size_m, float), (2,)))
    if not (dv > 0 and dh > 0):
        raise ValueError(f"probe_from_perpendicular: pixel_size_m must be > 0, got {pixel_size_m!r}")
    p = p.astype(np.complex128)
    if options.recentre:
        inten = np.abs(p) ** 2
        idx = np.indices(p.shape)
        cv, ch = (float((i * inten).sum() / inten.sum()) for i in idx)
    else:
        cv, ch = float(p.shape[0] // 2), float(p.shape[1] // 2)
    if options.antialias:
        step_v, step_h = _step_along(geometry)
        sig = [0.4 * r if r > 1.5 else 0.0 for r in (step_v / dv, step_h / dh)]
        if any(sig):
            p = ndimage.gaussian_filter(p.real, sig) + 1j * ndimage.gaussian_filter(p.imag, sig)
    p1, p2 = p2_plane_coordinates_m(geometry)
    coords = np.stack([p1 / dv + cv, p2 / dh + ch])
    kw = dict(order=options.interpolation_order, mode="constant", cval=0.0, prefilter=options.interpolation_order > 1)
    out = (ndimage.map_coordinates(p.real, coords, **kw) + 1j * ndimage.map_coordinates(p.imag, coords, **kw))
    power = float(np.sum(np.abs(out) ** 2))
    if not power > 0:
        raise ValueError(f"probe_from_perpendicular: the probe ({p.shape[0] * dv * 1e6:.2f} × "
                         f"{p.shape[1] * dh * 1e6:.2f} µm) does not overlap the P2 grid; check pixel_size_m")
    if options.total_intensity is not None:
        out *= math.sqrt(options.total_intensity / power)
    return out.astype(np.complex128)


def model_probe(geometry: BraggGeometry, *, na_v_rad: float, na_h_rad: float, defocus_m: float = 0.0,
                oversampling: int = 4, options: ProbeInitOptions = ProbeInitOptions()) -> np.ndarray:
    """P2 (N2, N3) of a KB focus with a rectangular NA (V × H) and optional defocus (seed Methods).

    The beam-plane probe is computed on a grid ``oversampling`` times finer than the P2
    samples and twice as wide as the P2 window, then resampled with
    :func:`probe_from_perpendicular`.
    """
    if oversampling < 1:
        raise ValueError(f"model_probe: oversampling must be >= 1, got {oversampling}")
    step_v, step_h = _step_along(geometry)
    d = min(step_v, step_h) / oversampling
    p1, p2 = p2_plane_coordinates_m(geometry)
    n = [int(2 ** math.ceil(math.log2(max(8.0, 4 * float(np.abs(a).max()) / d + 2)))) for a in (p1, p2)]
    pv = rectangular_na_probe((n[0], n[1]), pixel_size_m=d, wavelength_m=geometry.wavelength_m,
                              na_rows=na_v_rad, na_cols=na_h_rad, defocus_m=defocus_m)
    return probe_from_perpendicular(pv, d, geometry, options=options)
