"""Focused KB probe and a Siemens-star test object (docs/geometry.md, Operators; seed Methods).

Probe frame (docs/geometry.md, Frames): p3 = k̂_i, p2 = ŷ (horizontal, H), p1 = p2 × p3 (vertical, V,
in the scattering plane). The probe is invariant along the beam (depth of focus
λ/(2NA²) ≈ 0.5–2 mm ≫ µm): P(r) = P⊥(p1·r, p2·r) with a separable focal field
P⊥(a, b) = p_V(a) p_H(b). Each 1D field is the Fourier transform of a rectangular
pupil of half-width NA/λ (spatial frequency) with an aberration phase
φ(ρ) = π defocus terms + cubic (coma-like) + quartic (spherical) in the normalised pupil
coordinate ρ ∈ [−1, 1]; we compute it with our own 1D FFT on a fine grid and
interpolate. Normalisation: ∫|p_V|² da = ∫|p_H|² db = 1, hence ∫|P⊥|² dA = 1 (m⁻²),
so flux × |P⊥|² is the photon flux density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from analysis.geometry import wavelength_m_from_kev
from analysis.optical_constants import optical_constants

__all__ = ["KBProbe", "SiemensStar", "probe_axes"]


def probe_axes(theta_bragg_rad: float, rocking_rad: float = 0.0) -> dict[str, np.ndarray]:
    """Probe frame in the sample frame (x, y, z): ``p1`` (V), ``p2`` (H), ``p3`` = k̂_i.

    ``rocking_rad`` rotates the beam about ŷ (right-handed) relative to the sample; a
    positive angle moves the measured q by +|Q| δ x̂ (the geometry's rocking direction).
    """
    c, s = math.cos(theta_bragg_rad), math.sin(theta_bragg_rad)
    k_in = np.array([c, 0.0, -s])
    cr, sr = math.cos(rocking_rad), math.sin(rocking_rad)
    ry = np.array([[cr, 0.0, sr], [0.0, 1.0, 0.0], [-sr, 0.0, cr]])
    p3 = ry @ k_in
    p2 = np.array([0.0, 1.0, 0.0])
    p1 = np.cross(p2, p3)
    return {"p1": p1, "p2": p2, "p3": p3}


def _fwhm_central(u: np.ndarray, inten: np.ndarray) -> float:
    i0 = int(np.argmax(inten))
    half = inten[i0] / 2

    def cross(step: int) -> float:
        i = i0
        while 0 <= i + step < len(inten) and inten[i + step] > half:
            i += step
        j = i + step
        if not 0 <= j < len(inten):
            return float(u[i])
        f = (inten[i] - half) / (inten[i] - inten[j])
        return float(u[i] + f * (u[j] - u[i]))

    return abs(cross(+1) - cross(-1))


@dataclass(frozen=True, kw_only=True)
class KBProbe:
    """KB-focused probe with a rectangular aperture (seed: NA 1.9e-4 H × 3.7e-4 V at 8 keV).

    Aberrations (radians at the pupil edge, normalised pupil ρ ∈ [−1, 1]):
    φ(ρ) = −π λ defocus_m (NA/λ)² ρ² + coma·ρ³ + spherical·ρ⁴, per axis.
    ``extent_v_m``/``extent_h_m``: full width kept (tails beyond are tapered to 0).
    """

    energy_kev: float = 8.0
    na_h: float = 1.9e-4
    na_v: float = 3.7e-4
    defocus_m: float = 0.0
    coma_h_rad: float = 2.5
    coma_v_rad: float = 2.5
    spherical_h_rad: float = 1.5
    spherical_v_rad: float = 1.5
    extent_v_m: float = 4.5e-6
    extent_h_m: float = 5.0e-6
    grid_step_m: float = 2e-9
    centre_m: tuple[float, float] = (0.0, 0.0)
    """Focal-spot offset (p1, p2) in metres."""

    def __post_init__(self) -> None:
        for name in ("energy_kev", "na_h", "na_v", "extent_v_m", "extent_h_m", "grid_step_m"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"KBProbe.{name} must be a finite number > 0, got {v!r}")
        for name in ("defocus_m", "coma_h_rad", "coma_v_rad", "spherical_h_rad", "spherical_v_rad"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"KBProbe.{name} must be finite, got {v!r}")
        if self.na_h >= 0.05 or self.na_v >= 0.05:
            raise ValueError(f"KBProbe NA ({self.na_h}, {self.na_v}) too large for the paraxial model (< 0.05)")
        lam = self.wavelength_m
        for ax, na, ext in (("v", self.na_v, self.extent_v_m), ("h", self.na_h, self.extent_h_m)):
            lobe = lam / (2 * na)
            if self.grid_step_m > lobe / 20:
                raise ValueError(f"KBProbe.grid_step_m = {self.grid_step_m} m is too coarse for the {ax} lobe "
                                 f"({lobe:.3e} m); use <= {lobe / 20:.3e} m")
            if ext < 4 * lobe:
                raise ValueError(f"KBProbe.extent_{ax}_m = {ext} m is smaller than 4 lobes ({4 * lobe:.3e} m)")
        if len(self.centre_m) != 2 or not all(math.isfinite(c) for c in self.centre_m):
            raise ValueError(f"KBProbe.centre_m must be 2 finite numbers (p1, p2), got {self.centre_m!r}")

    @property
    def wavelength_m(self) -> float:
        """λ in metres."""
        return wavelength_m_from_kev(self.energy_kev)

    # -- 1D focal fields -----------------------------------------------------
    def _field_1d(self, na: float, coma: float, spherical: float, extent: float) -> tuple[np.ndarray, np.ndarray]:
        lam = self.wavelength_m
        du = self.grid_step_m
        n = 1 << int(math.ceil(math.log2(4 * extent / du)))      # FFT window >= 4 × extent
        f = np.fft.fftfreq(n, d=du)                               # spatial frequency (1/m)
        f_edge = na / lam
        rho = f / f_edge
        pupil = (np.abs(rho) <= 1.0).astype(complex)
        phase = (-math.pi * lam * self.defocus_m * f_edge ** 2 * rho ** 2 + coma * rho ** 3 + spherical * rho ** 4)
        pupil *= np.exp(1j * phase)
        # field(u) = ∫ pupil(f) e^{+2πi f u} df (own 1D FFT, centred)
        fld = np.fft.fftshift(np.fft.ifft(pupil)) * n
        u = (np.arange(n) - n // 2) * du
        u = u - u[int(np.argmax(np.abs(fld)))]                   # central-lobe maximum at u = 0
        keep = np.abs(u) <= extent / 2
        u, fld = u[keep], fld[keep]
        # cosine taper over the outer 10 % of the kept half-extent
        edge = 0.1 * extent / 2
        a = np.clip((extent / 2 - np.abs(u)) / edge, 0.0, 1.0)
        fld = fld * (0.5 - 0.5 * np.cos(math.pi * a))
        norm = math.sqrt(float(np.sum(np.abs(fld) ** 2)) * du)
        return u, fld / norm

    @cached_property
    def _v(self) -> tuple[np.ndarray, np.ndarray]:
        return self._field_1d(self.na_v, self.coma_v_rad, self.spherical_v_rad, self.extent_v_m)

    @cached_property
    def _h(self) -> tuple[np.ndarray, np.ndarray]:
        return self._field_1d(self.na_h, self.coma_h_rad, self.spherical_h_rad, self.extent_h_m)

    @staticmethod
    def _interp(grid: tuple[np.ndarray, np.ndarray], pts: np.ndarray) -> np.ndarray:
        u, f = grid
        pts = np.asarray(pts, float)
        re = np.interp(pts, u, f.real, left=0.0, right=0.0)
        im = np.interp(pts, u, f.imag, left=0.0, right=0.0)
        return re + 1j * im

    def field_v(self, p1_m: np.ndarray) -> np.ndarray:
        """Vertical focal field p_V(p1) (1/√m), zero beyond ``extent_v_m``/2."""
        return self._interp(self._v, np.asarray(p1_m, float) - self.centre_m[0])

    def field_h(self, p2_m: np.ndarray) -> np.ndarray:
        """Horizontal focal field p_H(p2) (1/√m), zero beyond ``extent_h_m``/2."""
        return self._interp(self._h, np.asarray(p2_m, float) - self.centre_m[1])

    def field_perp(self, p1_m: np.ndarray, p2_m: np.ndarray) -> np.ndarray:
        """P⊥(p1, p2) = p_V(p1) p_H(p2) (1/m), broadcasting the two inputs."""
        return self.field_v(p1_m) * self.field_h(p2_m)

    def field_3d(self, x_m: np.ndarray, y_m: np.ndarray, z_m: np.ndarray, *,
                 theta_bragg_rad: float, rocking_rad: float = 0.0) -> np.ndarray:
        """P(r) = P⊥(p1·r, p2·r) at sample-frame points (invariant along k̂_i)."""
        ax = probe_axes(theta_bragg_rad, rocking_rad)
        x, y, z = (np.asarray(a, float) for a in (x_m, y_m, z_m))
        a = ax["p1"][0] * x + ax["p1"][1] * y + ax["p1"][2] * z
        b = ax["p2"][0] * x + ax["p2"][1] * y + ax["p2"][2] * z
        return self.field_perp(a, b)

    def fwhm_m(self) -> tuple[float, float]:
        """Intensity FWHM of the central lobe, (H, V) in metres."""
        uh, fh = self._h
        uv, fv = self._v
        return (_fwhm_central(uh, np.abs(fh) ** 2), _fwhm_central(uv, np.abs(fv) ** 2))


@dataclass(frozen=True, kw_only=True)
class SiemensStar:
    """Siemens star: ``n_spokes`` opaque-ish spokes of thickness ``thickness_m``.

    Transmission T = exp(−(μ/2 + i k δ) t) inside the spokes (μ = 4πβ/λ), 1 elsewhere;
    spokes where cos(n φ) > 0 for ``inner_radius_m`` <= r <= ``radius_m``. δ, β: those of
    ``material`` at ``energy_kev`` from xraydb (:func:`analysis.optical_constants.optical_constants`;
    gold at 8 keV: δ = 4.73e-5, β = 4.62e-6) unless ``delta``/``beta`` are given.
    """

    thickness_m: float = 0.5e-6
    n_spokes: int = 36
    radius_m: float = 10e-6
    inner_radius_m: float = 0.1e-6
    delta: float | None = None
    """Refractive decrement of the spokes; None: ``material``'s at ``energy_kev`` (:attr:`refractive_decrement`)."""
    beta: float | None = None
    """Absorption index of the spokes; None: ``material``'s at ``energy_kev`` (:attr:`absorption_index`)."""
    energy_kev: float = 8.0
    centre_m: tuple[float, float] = (0.0, 0.0)
    material: str = "Au"
    """Spoke material, a name or formula xraydb knows with its density."""

    def __post_init__(self) -> None:
        for name in ("thickness_m", "radius_m", "energy_kev"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"SiemensStar.{name} must be a finite number > 0, got {v!r}")
        if not (isinstance(self.n_spokes, int) and self.n_spokes >= 1):
            raise ValueError(f"SiemensStar.n_spokes must be an integer >= 1, got {self.n_spokes!r}")
        if not 0 <= self.inner_radius_m < self.radius_m:
            raise ValueError(f"SiemensStar.inner_radius_m must lie in [0, radius_m), got {self.inner_radius_m}")
        if (self.delta is not None and self.delta < 0) or (self.beta is not None and self.beta < 0):
            raise ValueError(f"SiemensStar delta, beta must be >= 0, got ({self.delta}, {self.beta})")
        if self.delta is None or self.beta is None:
            optical_constants(self.material, self.energy_kev)     # an unknown material fails here, by name

    @property
    def refractive_decrement(self) -> float:
        """δ of the spokes: ``delta``, or ``material``'s at ``energy_kev`` (xraydb)."""
        return optical_constants(self.material, self.energy_kev).delta if self.delta is None else float(self.delta)

    @property
    def absorption_index(self) -> float:
        """β of the spokes: ``beta``, or ``material``'s at ``energy_kev`` (xraydb)."""
        return optical_constants(self.material, self.energy_kev).beta if self.beta is None else float(self.beta)

    def transmission(self, v_m: np.ndarray, h_m: np.ndarray) -> np.ndarray:
        """Complex transmission at transverse points (v, h) in metres."""
        lam = wavelength_m_from_kev(self.energy_kev)
        k = 2 * math.pi / lam
        mu = 4 * math.pi * self.absorption_index / lam
        v = np.asarray(v_m, float) - self.centre_m[0]
        h = np.asarray(h_m, float) - self.centre_m[1]
        r = np.hypot(v, h)
        phi = np.arctan2(v, h)
        spoke = (np.cos(self.n_spokes * phi) > 0) & (r <= self.radius_m) & (r >= self.inner_radius_m)
        t_in = complex(np.exp(-(mu / 2 + 1j * k * self.refractive_decrement) * self.thickness_m))
        return np.where(spoke, t_in, 1.0 + 0j)
