"""Initial probe of the Bragg engine: the oblique section P2 on (r2, r3) (docs/geometry.md, Operators).

The engine's ``probe`` argument is P2, the probe on the (r2, r3) plane through the
centre of the reconstruction box, on ``geometry.recon_shape[1:]`` = (N2, N3) pixels of
(Δr2, Δr3). The probe is invariant along k_i, so P2(b, c) = P⊥(M (b, c)) with
P⊥ the probe in the plane perpendicular to the beam on (p1, p2) = (V, H) and

    M = [[p1·e2, p1·e3], [p2·e2, p2·e3]],  p3 = k̂_i, p2 = e2, p1 = p2 × p3

(the same M as :func:`analysis.bragg.operators.probe.probe_na_mask`). Two sources of P⊥:

* :func:`probe_from_perpendicular` — a measured 2D probe (forward ptychography of a
  Siemens star, rows = p1/V, columns = p2/H, rectangular pixels allowed), resampled by interpolation;
* :func:`probe_from_section` — a probe already on the (r2, r3) plane (used as is on the P2 grid);
* :func:`probe_from_beam_volume` — a 3D probe on (p1, p2, p3 = k̂_i), sampled on the P2 plane;
* :func:`model_probe` — a KB focus modelled by a rectangular numerical aperture
  (:func:`analysis.forward_ptycho.rectangular_na_probe`) when no forward scan exists.

A measured probe is neither re-centred nor blurred unless ``ProbeInitOptions`` asks for it:
with ``blur_px = 0`` and input nodes that coincide with the P2 nodes the result is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from analysis.forward_ptycho import rectangular_na_probe
from analysis.geometry import BraggGeometry

__all__ = ["ProbeInitOptions", "MODEL_PROBE_BLUR_PX", "oblique_matrix", "p2_plane_coordinates_m",
           "probe_from_perpendicular", "section_matches_grid", "probe_from_section", "probe_from_beam_volume",
           "model_probe"]

MODEL_PROBE_BLUR_PX = 0.4
"""Anti-aliasing blur (P2 samples) of :func:`model_probe`, whose beam-plane grid is 4× finer than P2."""


@dataclass(frozen=True, kw_only=True)
class ProbeInitOptions:
    """How a perpendicular probe is resampled onto the oblique P2 grid."""

    interpolation_order: int = 1
    """Spline order of ``scipy.ndimage.map_coordinates`` (0–5) on real and imaginary parts."""
    blur_px: float = 0.0
    """σ of a Gaussian low-pass applied to the input before sampling, in P2 samples (σ along each input
    axis = blur_px × the P2 spacing along that axis); 0: none. 0.4 anti-aliases a finer input."""
    recentre: bool = False
    """Put the intensity centroid of the input probe (its transverse axes) at the centre of P2 (else: array
    pixel N//2 is the beam axis / box centre)."""
    total_intensity: float | None = None
    """Scale P2 so Σ|P2|² equals this; None keeps the interpolated values."""

    def __post_init__(self) -> None:
        if not 0 <= self.interpolation_order <= 5:
            raise ValueError(f"ProbeInitOptions.interpolation_order must be in 0..5, got {self.interpolation_order}")
        if not (math.isfinite(self.blur_px) and self.blur_px >= 0):
            raise ValueError(f"ProbeInitOptions.blur_px must be >= 0 (P2 samples), got {self.blur_px}")
        if self.total_intensity is not None and not self.total_intensity > 0:
            raise ValueError(f"ProbeInitOptions.total_intensity must be > 0 or None, got {self.total_intensity}")


def oblique_matrix(geometry: BraggGeometry) -> np.ndarray:
    """M (2, 2) with (p1, p2) = M (b, c): P2-plane coordinates (along e2, e3) → beam-plane (V, H), metres."""
    ax = geometry.lab_axes()
    p3 = ax["k_in"]
    p2 = ax["e2"]
    p1 = np.cross(p2, p3)
    return np.array([[p1 @ ax["e2"], p1 @ ax["e3"]], [p2 @ ax["e2"], p2 @ ax["e3"]]], dtype=float)


def _beam_matrix(geometry: BraggGeometry) -> np.ndarray:
    """(3, 2): rows p1, p2, p3 = k̂_i; (p1, p2, p3) = this @ (b, c) for a point b e2 + c e3 of the P2 plane."""
    ax = geometry.lab_axes()
    return np.vstack([oblique_matrix(geometry), [ax["k_in"] @ ax["e2"], ax["k_in"] @ ax["e3"]]])


def _p2_grid_m(geometry: BraggGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(b_m (N2, 1), c_m (1, N3)): P2-plane coordinates along e2 and e3, pixel N//2 at 0."""
    n2, n3 = geometry.recon_shape[1:]
    _, dr2, dr3 = geometry.voxel_size_m
    return ((np.arange(n2) - n2 // 2) * dr2)[:, None], ((np.arange(n3) - n3 // 2) * dr3)[None, :]


def p2_plane_coordinates_m(geometry: BraggGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(p1_m, p2_m), each (N2, N3): beam-plane coordinates of every P2 pixel (pixel N//2 at 0)."""
    b, c = _p2_grid_m(geometry)
    m = oblique_matrix(geometry)
    return m[0, 0] * b + m[0, 1] * c, m[1, 0] * b + m[1, 1] * c


def _step_along(geometry: BraggGeometry, n_axes: int = 2) -> tuple[float, ...]:
    """Largest spacing of P2 samples along p1, p2 (and p3 with ``n_axes = 3``), metres."""
    m = np.abs(_beam_matrix(geometry))
    _, dr2, dr3 = geometry.voxel_size_m
    return tuple(float(max(m[i, 0] * dr2, m[i, 1] * dr3)) for i in range(n_axes))


def _spacing(spacing_m: float | tuple[float, ...], n_axes: int, name: str) -> tuple[float, ...]:
    """Per-axis spacing (one number broadcasts to every axis); ValueError unless finite and > 0."""
    try:
        d = tuple(float(v) for v in np.broadcast_to(np.asarray(spacing_m, float), (n_axes,)))
    except (TypeError, ValueError):
        d = ()
    if len(d) != n_axes or not all(math.isfinite(v) and v > 0 for v in d):
        raise ValueError(f"{name}: pixel size {spacing_m!r}, expected one or {n_axes} finite values > 0 in metres")
    return d


def _checked(probe: np.ndarray, n_axes: int, name: str, axes: str) -> np.ndarray:
    """``probe`` as complex128 with ``n_axes`` axes of ≥ 2 pixels, finite and not zero everywhere."""
    p = np.asarray(probe)
    if p.ndim != n_axes or min(p.shape) < 2:
        raise ValueError(f"{name}: probe shape {p.shape}, expected a {n_axes}D ({axes}) array")
    if not np.all(np.isfinite(p)) or not np.any(p):
        raise ValueError(f"{name}: the probe contains NaN/inf or is zero everywhere")
    return p.astype(np.complex128)


def _resample(p: np.ndarray, spacing_m: tuple[float, ...], coords_m: list[np.ndarray], step_m: tuple[float, ...],
              options: ProbeInitOptions, name: str, *, clamp_last: bool = False) -> np.ndarray:
    """Sample ``p`` (pixel N//2 at 0 on every axis) at ``coords_m`` (one (N2, N3) array per axis of ``p``).

    ``step_m``: P2 spacing along each axis (sets the blur); ``options.recentre`` moves the intensity
    centroid of the first two axes to 0; ``clamp_last`` extends the end planes of the last axis.
    """
    centre = [float(n // 2) for n in p.shape]
    if options.recentre:
        inten = np.abs(p) ** 2
        for ax in range(2):
            prof = inten.sum(axis=tuple(a for a in range(p.ndim) if a != ax))
            centre[ax] = float((np.arange(p.shape[ax]) * prof).sum() / prof.sum())
    if options.blur_px > 0:
        sig = [options.blur_px * s / d for s, d in zip(step_m, spacing_m, strict=True)]
        p = ndimage.gaussian_filter(p.real, sig) + 1j * ndimage.gaussian_filter(p.imag, sig)
    idx = [x / d + c0 for x, d, c0 in zip(coords_m, spacing_m, centre, strict=True)]
    if clamp_last:
        idx[-1] = np.clip(idx[-1], 0.0, p.shape[-1] - 1.0)
    coords = np.stack(np.broadcast_arrays(*idx))
    kw = dict(order=options.interpolation_order, mode="constant", cval=0.0, prefilter=options.interpolation_order > 1)
    out = ndimage.map_coordinates(p.real, coords, **kw) + 1j * ndimage.map_coordinates(p.imag, coords, **kw)
    return _normalised(out, options, name, extent_m=[n * d for n, d in zip(p.shape, spacing_m, strict=True)])


def _normalised(out: np.ndarray, options: ProbeInitOptions, name: str, extent_m: list[float]) -> np.ndarray:
    """``out`` as complex128, scaled to ``options.total_intensity``; ValueError when it is zero."""
    power = float(np.sum(np.abs(out) ** 2))
    if not power > 0:
        ext = " × ".join(f"{e * 1e6:.2f}" for e in extent_m)
        raise ValueError(f"{name}: the probe ({ext} µm) does not overlap the P2 grid; check its pixel size")
    out = np.asarray(out, np.complex128)
    if options.total_intensity is not None:
        out = out * math.sqrt(options.total_intensity / power)
    return out


def probe_from_perpendicular(probe_vh: np.ndarray, pixel_size_m: float | tuple[float, ...],
                             geometry: BraggGeometry, *,
                             options: ProbeInitOptions = ProbeInitOptions()) -> np.ndarray:
    """Resample a beam-plane probe (rows p1 = V, columns p2 = H) onto P2 (N2, N3) complex128.

    ``pixel_size_m`` is the (V, H) pixel size of ``probe_vh`` (one number for square
    pixels); its pixel N//2 (or the intensity centroid with ``options.recentre``) is the
    beam axis. Points outside ``probe_vh`` are 0.
    """
    name = "probe_from_perpendicular"
    p = _checked(probe_vh, 2, name, "V, H")
    d = _spacing(pixel_size_m, 2, name)
    p1, p2 = p2_plane_coordinates_m(geometry)
    return _resample(p, d, [p1, p2], _step_along(geometry), options, name)


def section_matches_grid(shape: tuple[int, ...], pixel_size_m: tuple[float, ...], geometry: BraggGeometry,
                         *, rtol: float = 1e-6) -> bool:
    """True when an (r2, r3) section of ``shape`` and ``pixel_size_m`` lies on the P2 nodes of ``geometry``."""
    _, dr2, dr3 = geometry.voxel_size_m
    return (tuple(shape) == tuple(geometry.recon_shape[1:])
            and bool(np.allclose(pixel_size_m, (dr2, dr3), rtol=rtol, atol=0.0)))


def probe_from_section(probe_r2r3: np.ndarray, pixel_size_m: float | tuple[float, ...], geometry: BraggGeometry,
                       *, options: ProbeInitOptions = ProbeInitOptions()) -> np.ndarray:
    """P2 (N2, N3) complex128 from a probe on the (r2, r3) plane through the box centre (pixel N//2 at 0).

    Used as is (a copy) when it lies on the P2 nodes (:func:`section_matches_grid`) and neither
    ``options.recentre`` nor ``options.blur_px`` asks for a change; otherwise interpolated in its plane.
    """
    name = "probe_from_section"
    p = _checked(probe_r2r3, 2, name, "r2, r3")
    d = _spacing(pixel_size_m, 2, name)
    if section_matches_grid(p.shape, d, geometry) and not options.recentre and options.blur_px == 0:
        return _normalised(p.copy(), options, name, extent_m=[n * s for n, s in zip(p.shape, d, strict=True)])
    b, c = _p2_grid_m(geometry)
    _, dr2, dr3 = geometry.voxel_size_m
    return _resample(p, d, [b, c], (dr2, dr3), options, name)


def probe_from_beam_volume(probe_p123: np.ndarray, voxel_size_m: float | tuple[float, ...],
                           geometry: BraggGeometry, *, options: ProbeInitOptions = ProbeInitOptions()) -> np.ndarray:
    """P2 (N2, N3) complex128: a 3D probe on (p1 = V, p2 = H, p3 = k̂_i) sampled on the P2 plane.

    Voxel N//2 of every axis sits at the centre of the reconstruction box. Beyond the stored range
    along p3 the end planes are extended (the beam goes on); along p1 and p2 the probe is 0 outside.
    A probe that does not change along p3 gives :func:`probe_from_perpendicular` of one plane.
    """
    name = "probe_from_beam_volume"
    p = _checked(probe_p123, 3, name, "p1 = V, p2 = H, p3 = along k_i")
    d = _spacing(voxel_size_m, 3, name)
    b, c = _p2_grid_m(geometry)
    m = _beam_matrix(geometry)
    coords = [m[i, 0] * b + m[i, 1] * c for i in range(3)]
    return _resample(p, d, coords, _step_along(geometry, 3), options, name, clamp_last=True)


def model_probe(geometry: BraggGeometry, *, na_v_rad: float, na_h_rad: float, defocus_m: float = 0.0,
                oversampling: int = 4,
                options: ProbeInitOptions = ProbeInitOptions(blur_px=MODEL_PROBE_BLUR_PX)) -> np.ndarray:
    """P2 (N2, N3) of a KB focus with a rectangular NA (V × H) and optional defocus (seed Methods).

    The beam-plane probe is computed on a grid ``oversampling`` times finer than the P2
    samples and twice as wide as the P2 window, then resampled with
    :func:`probe_from_perpendicular` (anti-aliased by ``MODEL_PROBE_BLUR_PX`` by default).
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
