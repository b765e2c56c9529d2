"""FP-DFXM simulator: crystal exit fields, CRL pupil, diversity scans, noisy frames
(docs/fp-dfxm.md, Model and conventions and Geometry, optics and sampling).

Independent of the FP-DFXM inversion (``analysis.dfxm``): its own Zernike table, an analytic pupil evaluated on
a finer grid than the reconstruction, continuous spectrum shifts applied as real-space
phase ramps exp(2πi κ·x), and point sampling of the band-limited field on the coarse
detector grid (no inverse crime). Only the numbers of ``analysis.dfxm.geometry`` are shared.

Model (docs/fp-dfxm.md, Model and conventions): I_j(x) = |F⁻¹{Õ(k − κ_j) P(k)}(x − s_j)|² + b, with Poisson noise;
P(α) = exp(−|α−α_c|²/(4NA²)) · circ(|α−α_c| ≤ D/2d1) · exp(i Σ c_j Z_j((α−α_c)/α₀)).
"""

# Why this module is long: the simulated FP-DFXM microscope: one optical model (condenser, sample, objective,
# detector).

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.dfxm.geometry import FPDFXMGeometry, Reflection
from analysis.geometry import wavelength_m_from_kev
from analysis.xp import array_module, fft_module

__all__ = [
    "CrystalTruth",
    "DiversityScan",
    "crystal_exit_field",
    "bars_exit_field",
    "transmission_exit_field",
    "diversity_scan",
    "grid_shifts_rad",
    "crl_pupil",
    "simulate_frames",
    "setting_shifts",
    "frame_for_setting",
    "DFXMSimulator",
]


# Noll Zernikes 1–11 written out in Cartesian form (x = columns, y = rows), independent of analysis.dfxm.zernike.
def _zernike_table(j: int, x: Any, y: Any) -> Any:
    r2 = x * x + y * y
    table = {
        1: lambda: 1.0 + 0.0 * x,
        2: lambda: 2.0 * x,
        3: lambda: 2.0 * y,
        4: lambda: math.sqrt(3) * (2 * r2 - 1),
        5: lambda: math.sqrt(6) * 2 * x * y,
        6: lambda: math.sqrt(6) * (x * x - y * y),
        7: lambda: math.sqrt(8) * (3 * r2 - 2) * y,
        8: lambda: math.sqrt(8) * (3 * r2 - 2) * x,
        9: lambda: math.sqrt(8) * (3 * x * x * y - y**3),
        10: lambda: math.sqrt(8) * (x**3 - 3 * x * y * y),
        11: lambda: math.sqrt(5) * (6 * r2 * r2 - 6 * r2 + 1),
    }
    if j not in table:
        raise ValueError(f"sim.dfxm: Zernike index {j} not tabulated; use Noll 1–11")
    return table[j]()


@dataclass(frozen=True, kw_only=True)
class CrystalTruth:
    """Ground truth of :func:`crystal_exit_field` on its own (fine) grid."""

    exit_field: np.ndarray = field(repr=False)
    """(ROW, COL) complex exit field O = A exp(i φ)."""
    phase_rad: np.ndarray = field(repr=False)
    """Unwrapped −G·u (plus structure-factor phase), same grid."""
    strain: np.ndarray = field(repr=False)
    """ε_GG (dimensionless)."""
    tilt_rock_rad: np.ndarray = field(repr=False)
    """Tilt about the rocking axis δφ (q_rock)."""
    tilt_roll_rad: np.ndarray = field(repr=False)
    """Tilt about the roll axis (q_roll)."""
    pixel_size_m: float


def _smooth_step(s: np.ndarray, width_px: float) -> np.ndarray:
    return 0.5 * (1 + np.tanh(s / max(width_px, 1e-9)))


def _texture(n_px: int, pixel_size_m: float, seed: int) -> np.ndarray:
    """Smooth unit-variance random texture (Gaussian-filtered white noise, 80 nm correlation)."""
    rng = np.random.default_rng(seed)
    tex = rng.standard_normal((n_px, n_px))
    k = np.fft.fftfreq(n_px, d=pixel_size_m)
    kk = k[:, None] ** 2 + k[None, :] ** 2
    tex = np.real(np.fft.ifft2(np.fft.fft2(tex) * np.exp(-kk * (80e-9) ** 2 * 2 * math.pi**2)))
    return tex / (np.std(tex) + 1e-30)


def crystal_exit_field(n_px: int, pixel_size_m: float, reflection: Reflection, energy_kev: float, *,
                       strain_domains: tuple[float, ...] = (1.0e-4, -1.5e-4, 0.5e-4),
                       tilt_roll_domains_rad: tuple[float, ...] = (-0.8e-4, 1.2e-4),
                       tilt_rock_rad: float = 0.0,
                       dislocations: tuple[tuple[float, float, int], ...] = ((0.3, 0.62, 1), (0.7, 0.35, -1)),
                       wall_width_m: float = 30e-9, texture_amplitude: float = 0.25,
                       grain_fraction: float | None = 0.75, seed: int = 0) -> CrystalTruth:
    """Thin-film Bragg exit field with strain / tilt domains, domain walls and dislocations
    (docs/fp-dfxm.md, Model and conventions and Strain).

    Strain domains are stripes along the rows (ε changes across horizontal walls), roll-tilt
    domains stripes along the columns; each is integrated to a continuous phase
    φ = |G|(∫q_2θ drow + ∫q_roll dcol), q_2θ = −sinθ q_rock + cosθ q_par, q_par = −ε
    (docs/fp-dfxm.md, Reciprocal space and pupil). Dislocations ``(row_frac, col_frac, n)`` add phase vortices n·atan2
    with a
    dark core; walls dim the amplitude; a smooth random texture modulates A. The grain
    fills a soft-edged square of ``grain_fraction`` of the field (None: whole field) (dark outside, as in DFXM).
    """
    if not isinstance(reflection, Reflection):
        raise ValueError("crystal_exit_field: reflection metadata (analysis.dfxm.Reflection) is required")
    theta = reflection.bragg_angle_rad(energy_kev)
    g = reflection.g_per_m
    idx = np.arange(n_px)
    rows = idx[:, None] * np.ones((1, n_px))
    cols = np.ones((n_px, 1)) * idx[None, :]
    w_px = wall_width_m / pixel_size_m

    def domains(coord: np.ndarray, values: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
        edges = [n_px * (k + 1) / len(values) for k in range(len(values) - 1)]
        v = np.full(coord.shape, values[0], float)
        wall = np.zeros(coord.shape)
        for e, (a, b) in zip(edges, zip(values[:-1], values[1:], strict=True), strict=True):
            v = v + (b - a) * _smooth_step(coord - e, w_px)
            wall = wall + np.exp(-((coord - e) / (2 * max(w_px, 1.0))) ** 2)
        return v, wall

    strain, wall_r = domains(rows, strain_domains)
    roll, wall_c = domains(cols, tilt_roll_domains_rad)
    rock = np.full((n_px, n_px), float(tilt_rock_rad))
    q_par = -strain
    q_2theta = -math.sin(theta) * rock + math.cos(theta) * q_par
    # φ(row, col) = |G| Δx (Σ_row q_2θ + Σ_col q_roll): q_2θ depends on rows only, q_roll on columns only.
    phase = g * pixel_size_m * (np.cumsum(q_2theta, axis=0) + np.cumsum(roll, axis=1))
    amp = 1.0 - 0.5 * np.clip(wall_r + wall_c, 0, 1)
    for (rf, cf, charge) in dislocations:
        dr, dc = rows - rf * n_px, cols - cf * n_px
        phase = phase + charge * np.arctan2(dr, dc)
        core = np.hypot(dr, dc) * pixel_size_m
        amp = amp * (1 - np.exp(-(core / (2 * wall_width_m)) ** 2))
    amp = amp * (1 + texture_amplitude * np.tanh(_texture(n_px, pixel_size_m, seed)))
    if grain_fraction is not None:
        half = grain_fraction * n_px / 2
        edge = 2 * max(w_px, 1.0)
        for coord in (rows, cols):
            amp = amp * _smooth_step(half - np.abs(coord - n_px / 2), edge)
    return CrystalTruth(exit_field=amp * np.exp(1j * phase), phase_rad=phase, strain=strain, tilt_rock_rad=rock,
                        tilt_roll_rad=roll, pixel_size_m=pixel_size_m)


def bars_exit_field(n_px: int, pixel_size_m: float, *, period_m: float, orientation: str = "cols",
                    phase_rad: float = 1.0, amplitude_contrast: float = 0.3) -> np.ndarray:
    """Complex bars test object: square-wave phase and amplitude grating of ``period_m`` over the field.

    ``orientation="cols"``: the bars vary along the columns. Choose ``period_m`` so the
    field of view holds an integer number of periods.
    """
    x = np.arange(n_px) * pixel_size_m
    s = (np.sin(2 * math.pi * x / period_m) >= 0).astype(float)
    s = s[None, :] * np.ones((n_px, 1)) if orientation == "cols" else s[:, None] * np.ones((1, n_px))
    return (1 - amplitude_contrast * s) * np.exp(1j * phase_rad * s)


def transmission_exit_field(thickness_m: np.ndarray, *, energy_kev: float, delta: float = 3.0e-6,
                            beta: float = 3.0e-9) -> np.ndarray:
    """Transmission mode: T = exp(−k β t) exp(−i k δ t) of a thickness map (projection approximation)."""
    k = 2 * math.pi / wavelength_m_from_kev(energy_kev)
    t = np.asarray(thickness_m, float)
    return np.exp(-k * beta * t) * np.exp(-1j * k * delta * t)


@dataclass(frozen=True, kw_only=True)
class DiversityScan:
    """Spectrum shifts κ_j (angles) and image shifts s_j produced by a motor scan (docs/fp-dfxm.md, Diversity scans)."""

    shifts_rad: np.ndarray
    """(FRAME, 2) (row, col) shift of the object spectrum relative to the pupil, radians."""
    image_shifts_m: np.ndarray
    """(FRAME, 2) (row, col) image shift in the object plane, metres."""


def diversity_scan(kind: str, values: Any, geometry: FPDFXMGeometry) -> DiversityScan:
    """Shifts for a motor scan (docs/fp-dfxm.md, Diversity scans).

    ``values`` is (FRAME,) for ``"rock"`` (thin film, δφ rad → 2δφ vertical), ``"roll"``
    (δχ rad → 2 sinθ δχ horizontal), ``"two_theta"`` (Δ2θ rad → vertical), or (FRAME, 2)
    (row, col) metres for ``"lens_translation"`` (Δy/d1, image moves by Δy(1 + 1/M)).
    """
    v = np.asarray(values, float)
    n = v.shape[0]
    shifts = np.zeros((n, 2))
    img = np.zeros((n, 2))
    if kind == "rock":
        shifts[:, 0] = 2 * v
    elif kind == "roll":
        shifts[:, 1] = 2 * math.sin(geometry.bragg_angle_rad) * v
    elif kind == "two_theta":
        shifts[:, 0] = v
    elif kind == "lens_translation":
        if v.ndim != 2 or v.shape[1] != 2:
            raise ValueError(f"diversity_scan: lens_translation values must be (FRAME, 2) metres, got {v.shape}")
        shifts = v / geometry.objective.sample_distance_m
        img = v * (1 + 1 / geometry.objective.magnification)
    else:
        raise ValueError(f"diversity_scan: kind {kind!r}, expected rock, roll, two_theta or lens_translation")
    return DiversityScan(shifts_rad=shifts, image_shifts_m=img)


def grid_shifts_rad(n_side: int, step_rad: float) -> np.ndarray:
    """(n_side², 2) square grid of spectrum shifts centred on zero (e.g. 7×7 at 0.4 mrad, docs/fp-dfxm.md, Sampling)."""
    k = (np.arange(n_side) - (n_side - 1) / 2) * step_rad
    rr, cc = np.meshgrid(k, k, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1)


def _tilted_crl_amplitude(dr: Any, dc: Any, geometry: FPDFXMGeometry, tilt_rad: tuple[float, float],
                          tilt_pivot_m: float | None) -> Any:
    """Π_n exp(−μ|αh_n − δ_n|²/2R), δ_n = τ(z_n − z_p): every lenslet absorbs about its own displaced axis.

    A lenslet of thickness r²/R (two parabolic faces) at transverse distance r from its axis
    transmits amplitude exp(−μr²/2R); the ray at object angle α crosses lenslet n at height αh_n
    (docs/fp-dfxm.md, CRL pupil), the tilt (pitch τ_row, yaw τ_col) displaces the axis by τ(z_n − z_p). The physical
    aperture √(RT) is applied at the entrance lenslet (as in the pupil model of docs/fp-dfxm.md, CRL pupil). The prism
    term of the displaced lenslets is a uniform image translation (same for all frames) and is left out.
    """
    xp = array_module(dr, dc)
    obj = geometry.objective
    h = obj.lenslet_ray_heights_m_per_rad()
    z = obj.lenslet_positions_m(tilt_pivot_m=tilt_pivot_m)
    k = obj.mu_per_m / (2 * obj.apex_radius_m)
    log_amp = 0.0 * dr
    for h_n, z_n in zip(h, z, strict=True):
        yr, yc = dr * h_n - tilt_rad[0] * z_n, dc * h_n - tilt_rad[1] * z_n
        log_amp = log_amp - k * (yr * yr + yc * yc)
    yr, yc = dr * h[0] - tilt_rad[0] * z[0], dc * h[0] - tilt_rad[1] * z[0]
    inside = (yr * yr + yc * yc) <= obj.apex_radius_m * obj.lenslet_pitch_m
    return xp.exp(log_amp) * inside


def crl_pupil(alpha_row_rad: Any, alpha_col_rad: Any, geometry: FPDFXMGeometry, *,
              zernike_rad: dict[int, float] | None = None,
              pupil_center_rad: tuple[float, float] = (0.0, 0.0),
              crl_tilt_rad: tuple[float, float] = (0.0, 0.0), tilt_pivot_m: float | None = None) -> Any:
    """Complex CRL pupil P(α) of docs/fp-dfxm.md, CRL pupil at the given angles (Gaussian absorption × circ × exp(iW)).

    A CRL tilt (pitch, yaw) ``crl_tilt_rad`` about ``tilt_pivot_m`` (from the entrance; default the
    centre) is simulated lenslet by lenslet (:func:`_tilted_crl_amplitude`).
    """
    xp = array_module(alpha_row_rad, alpha_col_rad)
    obj = geometry.objective
    dr = alpha_row_rad - pupil_center_rad[0]
    dc = alpha_col_rad - pupil_center_rad[1]
    r2 = dr * dr + dc * dc
    if crl_tilt_rad[0] or crl_tilt_rad[1]:
        amp = _tilted_crl_amplitude(dr, dc, geometry, crl_tilt_rad, tilt_pivot_m)
    else:
        amp = xp.exp(-r2 / (4 * obj.na_rms_rad**2)) * (r2 <= obj.aperture_half_angle_rad**2)
    w = 0.0 * r2
    for j, c in (zernike_rad or {}).items():
        w = w + c * _zernike_table(j, dc / geometry.alpha0_rad, dr / geometry.alpha0_rad)
    return amp * xp.exp(1j * w)


def simulate_frames(exit_field: Any, field_pixel_size_m: float, geometry: FPDFXMGeometry, shifts_rad: Any, *,
                    image_shifts_m: Any = None, zernike_rad: dict[int, float] | None = None,
                    pupil_center_rad: tuple[float, float] = (0.0, 0.0), photons_peak: float | None = 2e4,
                    background_counts: float = 0.0, seed: int = 0, crl_tilt_rad: tuple[float, float] = (0.0, 0.0),
                    tilt_pivot_m: float | None = None) -> np.ndarray:
    """Far-field-filtered detector images (FRAME, n_px, n_px) of ``field``
    (docs/fp-dfxm.md, Model and conventions), Poisson noise.

    ``exit_field`` covers the geometry's field of view n_px·Δx on a grid ``s`` times finer
    (``field_pixel_size_m`` = Δx/s, s integer). The spectrum shift is a phase ramp
    exp(2πi κ·x/λ); the pupil is evaluated analytically on the fine grid; the filtered field
    is point-sampled on the detector grid. ``photons_peak`` scales the brightest frame's
    brightest pixel before Poisson noise (``None``: noise-free expectation).
    """
    xp = array_module(exit_field)
    fft = fft_module(xp)
    n_f = exit_field.shape[0]
    step = geometry.pixel_size_m / field_pixel_size_m
    s = int(round(step))
    if exit_field.shape != (n_f, n_f) or abs(step - s) > 1e-6 or n_f != s * geometry.n_px:
        raise ValueError(f"simulate_frames: exit_field {exit_field.shape} at {field_pixel_size_m} m "
                         "must cover n_px·Δx = "
                         f"{geometry.n_px}×{geometry.pixel_size_m} m on an integer-finer square grid")
    shifts = np.asarray(shifts_rad, float)
    img = np.zeros_like(shifts) if image_shifts_m is None else np.asarray(image_shifts_m, float)
    lam = geometry.wavelength_m
    x = xp.asarray(np.arange(n_f) * field_pixel_size_m)
    f = xp.asarray(np.fft.fftfreq(n_f, d=field_pixel_size_m))
    a_row = lam * f[:, None] * xp.ones((1, n_f))
    a_col = lam * xp.ones((n_f, 1)) * f[None, :]
    pupil = crl_pupil(a_row, a_col, geometry, zernike_rad=zernike_rad, pupil_center_rad=pupil_center_rad,
                      crl_tilt_rad=crl_tilt_rad, tilt_pivot_m=tilt_pivot_m)
    frames = []
    for (kr, kc), (sr, sc) in zip(shifts, img, strict=True):
        ramp = xp.exp(2j * math.pi * ((kr / lam) * x[:, None] + (kc / lam) * x[None, :]))
        spec = fft.fft2(exit_field * ramp) * pupil
        if sr or sc:
            spec = spec * xp.exp(-2j * math.pi * (f[:, None] * sr + f[None, :] * sc))
        psi = fft.ifft2(spec)[::s, ::s]
        frames.append(xp.abs(psi) ** 2)
    stack = np.asarray([np.asarray(fr) for fr in frames]) if xp is np else xp.stack(frames)
    if photons_peak is None:
        return stack + background_counts
    scale = photons_peak / float(stack.max())
    rng = np.random.default_rng(seed)
    lam_counts = np.asarray(stack) * scale + background_counts
    return rng.poisson(lam_counts).astype(np.float64)


def setting_shifts(geometry: FPDFXMGeometry, *, rock_rad: float = 0.0, roll_rad: float = 0.0,
                   two_theta_rad: float = 0.0,
                   lens_translation_m: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) spectrum shift (rad) and image shift (m) of one combined motor setting
    (docs/fp-dfxm.md, Diversity scans).

    The contributions of rocking (thin film), roll, 2θ and the lens translation (row, col) =
    (vertical, horizontal) of :func:`diversity_scan` add to first order.
    """
    shift = np.zeros(2)
    image = np.zeros(2)
    for kind, value in (("rock", [rock_rad]), ("roll", [roll_rad]), ("two_theta", [two_theta_rad]),
                        ("lens_translation", [list(lens_translation_m)])):
        d = diversity_scan(kind, value, geometry)
        shift += d.shifts_rad[0]
        image += d.image_shifts_m[0]
    return shift, image


def frame_for_setting(exit_field: Any, field_pixel_size_m: float, geometry: FPDFXMGeometry, *,
                      rock_rad: float = 0.0, roll_rad: float = 0.0, two_theta_rad: float = 0.0,
                      lens_translation_m: tuple[float, float] = (0.0, 0.0),
                      zernike_rad: dict[int, float] | None = None,
                      pupil_center_rad: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Noise-free intensity (n_px, n_px) of one frame at a motor setting
    (docs/fp-dfxm.md, Diversity scans and Model and conventions).

    Same forward model as :func:`simulate_frames` (``photons_peak=None``) for the single
    spectrum / image shift given by :func:`setting_shifts`.
    """
    shift, image = setting_shifts(geometry, rock_rad=rock_rad, roll_rad=roll_rad, two_theta_rad=two_theta_rad,
                                  lens_translation_m=lens_translation_m)
    out = simulate_frames(exit_field, field_pixel_size_m, geometry, shift[None, :], image_shifts_m=image[None, :],
                          zernike_rad=zernike_rad, pupil_center_rad=pupil_center_rad, photons_peak=None)
    return np.asarray(out[0])


class DFXMSimulator:
    """FP-DFXM frame source for a simulated imaging camera (physics of the sim backend).

    Holds a crystal exit field on a grid ``s`` times finer than the geometry's high-resolution
    grid, the CRL aberrations and the pupil centre. :meth:`frame` gives one Poisson frame
    (uint32) for a motor setting. ``peak_rate_counts_per_s`` is the expected rate of the
    brightest pixel of the unshifted, in-focus frame at nominal flux. A lens focus offset
    ``lens_focus_m`` along the optical axis defocuses the sample by the same distance,
    adding Z4 = Δz π α₀² / (2√3 λ) (inverse of ``FPDFXMGeometry.defocus_m_from_z4``).
    """

    def __init__(self, exit_field: np.ndarray, field_pixel_size_m: float, geometry: FPDFXMGeometry, *,
                 zernike_rad: dict[int, float] | None = None,
                 pupil_center_rad: tuple[float, float] = (0.0, 0.0),
                 peak_rate_counts_per_s: float = 2e5, background_rate_counts_per_s: float = 0.0) -> None:
        if not (math.isfinite(peak_rate_counts_per_s) and peak_rate_counts_per_s > 0):
            raise ValueError(f"DFXMSimulator: peak_rate_counts_per_s must be > 0, got {peak_rate_counts_per_s!r}")
        if not (math.isfinite(background_rate_counts_per_s) and background_rate_counts_per_s >= 0):
            raise ValueError("DFXMSimulator: background_rate_counts_per_s must be >= 0, "
                             f"got {background_rate_counts_per_s!r}")
        self.exit_field = np.asarray(exit_field)
        self.field_pixel_size_m = float(field_pixel_size_m)
        self.geometry = geometry
        self.zernike_rad = dict(zernike_rad or {})
        self.pupil_center_rad = (float(pupil_center_rad[0]), float(pupil_center_rad[1]))
        self.background_rate_counts_per_s = float(background_rate_counts_per_s)
        ref = frame_for_setting(self.exit_field, self.field_pixel_size_m, geometry, zernike_rad=self.zernike_rad,
                                pupil_center_rad=self.pupil_center_rad)
        peak = float(ref.max())
        if not peak > 0:
            raise ValueError("DFXMSimulator: the unshifted frame is dark; check the exit field and pupil centre")
        self.counts_scale_per_s = peak_rate_counts_per_s / peak
        self.detector_shape = (geometry.n_px, geometry.n_px)

    def z4_rad_from_defocus_m(self, defocus_m: float) -> float:
        """Z4 coefficient of a sample defocus Δz (docs/fp-dfxm.md, CRL pupil)."""
        g = self.geometry
        return defocus_m * math.pi * g.alpha0_rad**2 / (2 * math.sqrt(3) * g.wavelength_m)

    def frame(self, *, rock_rad: float, roll_rad: float, two_theta_rad: float,
              lens_translation_m: tuple[float, float], lens_focus_m: float, exposure_s: float,
              flux_scale: float, rng: np.random.Generator) -> np.ndarray:
        """One uint32 Poisson frame (n_px, n_px) at the given setting, exposure and relative flux."""
        zern = dict(self.zernike_rad)
        if lens_focus_m:
            zern[4] = zern.get(4, 0.0) + self.z4_rad_from_defocus_m(lens_focus_m)
        intensity = frame_for_setting(self.exit_field, self.field_pixel_size_m, self.geometry, rock_rad=rock_rad,
                                      roll_rad=roll_rad, two_theta_rad=two_theta_rad,
                                      lens_translation_m=lens_translation_m, zernike_rad=zern,
                                      pupil_center_rad=self.pupil_center_rad)
        lam = (intensity * self.counts_scale_per_s * max(flux_scale, 0.0)
               + self.background_rate_counts_per_s) * exposure_s
        return rng.poisson(np.maximum(lam, 0.0)).astype(np.uint32)
