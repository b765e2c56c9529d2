"""DFXM / FP-DFXM geometry: CRL objective, reflection and FP sampling (docs/fp-dfxm.md, Geometry, optics and sampling).

One definition shared by the simulator (``sim.dfxm``) and the reconstruction
(``analysis.dfxm.forward``, ``analysis.dfxm.epry``); it holds numbers and coordinate grids only, no forward model.

Axes: images are (ROW, COL) with rows vertical (in the scattering plane, Δ2θ, q_2θ)
and columns horizontal (ξ, q_roll). Angles in the pupil are α = (α_row, α_col) = (Δ2θ, ξ)
in radians; the spatial frequency is α/λ (docs/fp-dfxm.md, Reciprocal space and pupil). Low-resolution frames have
``n_px`` pixels of ``pixel_size_m`` (object plane); the FP object lives on an
``upsampling``-times finer grid with the same field of view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.geometry import wavelength_m_from_kev
from analysis.optical_constants import OpticalConstants, optical_constants

__all__ = [
    "CLASSICAL_ELECTRON_RADIUS_M",
    "CRLObjective",
    "Reflection",
    "FPDFXMGeometry",
    "be_refractive_decrement",
]

CLASSICAL_ELECTRON_RADIUS_M = 2.8179403262e-15
_AVOGADRO = 6.02214076e23
_BE_DENSITY_G_PER_M3 = 1.848e6
_BE_MOLAR_MASS_G = 9.0121831
_BE_Z = 4


def be_refractive_decrement(energy_kev: float) -> float:
    """Free-electron δ = r_e λ² n_e / (2π) of beryllium (docs/fp-dfxm.md, CRL pupil; 1.178e-6 at 17 keV).

    The high-energy limit (far above Be's K edge at 111 eV), kept as an independent check of the
    database values that :class:`CRLObjective` uses (:func:`analysis.optical_constants.optical_constants`).
    """
    lam = wavelength_m_from_kev(energy_kev)
    n_e = _BE_DENSITY_G_PER_M3 / _BE_MOLAR_MASS_G * _AVOGADRO * _BE_Z
    return CLASSICAL_ELECTRON_RADIUS_M * lam**2 * n_e / (2 * math.pi)


def _positive(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(obj, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{type(obj).__name__}.{name} must be a finite number > 0, got {v!r}")


@dataclass(frozen=True, kw_only=True)
class CRLObjective:
    """Compound refractive lens objective (docs/fp-dfxm.md, CRL pupil; defaults: ID06 Be lens, 17 keV, 88 lenslets,
    M = 17).

    δ and μ of the lens material at ``energy_kev`` come from xraydb
    (:func:`analysis.optical_constants.optical_constants`): Be at 17 keV gives δ = 1.179e-6 and
    μ = 48.6 m⁻¹ (docs/fp-dfxm.md, CRL pupil: ≈49.5 m⁻¹), at 8 keV δ = 5.33e-6 and μ = 208 m⁻¹.
    """

    energy_kev: float = 17.0
    n_lenslets: int = 88
    apex_radius_m: float = 50e-6
    """Lenslet apex radius R."""
    lenslet_pitch_m: float = 1.6e-3
    """Lenslet pitch T."""
    attenuation_per_m: float | None = None
    """Linear attenuation μ of the lens material, 1/m; None (default): xraydb's at ``energy_kev`` (:attr:`mu_per_m`)."""
    magnification: float = 17.0
    """|M| of the imaging condition K₁₂ = 0 (image inverted, K₁₁ = −M)."""
    lens_material: str = "Be"
    """Lens material, a name or formula xraydb knows (``"Be"``, ``"diamond carbon"``, ``"Al"``, ``"Si"``)."""
    lens_density_g_per_cm3: float | None = None
    """Lens density; None: xraydb's value for ``lens_material`` (Be: 1.85 g/cm³)."""

    def __post_init__(self) -> None:
        _positive(self, ("energy_kev", "apex_radius_m", "lenslet_pitch_m", "magnification"))
        if self.lens_density_g_per_cm3 is not None:
            _positive(self, ("lens_density_g_per_cm3",))
        if self.attenuation_per_m is not None:
            _positive(self, ("attenuation_per_m",))
        _ = self.lens_optics                               # a lens material or energy xraydb cannot resolve fails here
        if not isinstance(self.n_lenslets, int) or self.n_lenslets < 1:
            raise ValueError(f"CRLObjective.n_lenslets must be an int >= 1, got {self.n_lenslets!r}")
        if self.n_lenslets * self.phi_rad >= math.pi / 2:
            raise ValueError(f"CRLObjective: N·φ = {self.n_lenslets * self.phi_rad:.3f} ≥ π/2, the CRL focuses "
                             "inside itself; reduce n_lenslets or raise energy_kev")

    @property
    def wavelength_m(self) -> float:
        """λ in metres."""
        return wavelength_m_from_kev(self.energy_kev)

    @property
    def lens_optics(self) -> OpticalConstants:
        """δ, β, μ of the lens material at ``energy_kev`` (xraydb, cached)."""
        return optical_constants(self.lens_material, self.energy_kev, density_g_per_cm3=self.lens_density_g_per_cm3)

    @property
    def delta(self) -> float:
        """Refractive decrement δ of the lens material at ``energy_kev`` (xraydb)."""
        return self.lens_optics.delta

    @property
    def mu_per_m(self) -> float:
        """μ (1/m) of the aperture: ``attenuation_per_m`` if given, else the lens material's (xraydb)."""
        return self.lens_optics.mu_per_m if self.attenuation_per_m is None else float(self.attenuation_per_m)

    @property
    def lenslet_focal_length_m(self) -> float:
        """f = R/(2δ) of one lenslet."""
        return self.apex_radius_m / (2 * self.delta)

    @property
    def phi_rad(self) -> float:
        """φ = arccos(1 − T/2f) (docs/fp-dfxm.md, CRL pupil)."""
        return math.acos(1 - self.lenslet_pitch_m / (2 * self.lenslet_focal_length_m))

    def ray_matrix(self) -> np.ndarray:
        """M_N = [[cos Nφ, f sinφ sin Nφ], [−sin Nφ/(f sinφ), cos Nφ]] (Simons 2017)."""
        f, phi, n = self.lenslet_focal_length_m, self.phi_rad, self.n_lenslets
        return np.array([[math.cos(n * phi), f * math.sin(phi) * math.sin(n * phi)],
                         [-math.sin(n * phi) / (f * math.sin(phi)), math.cos(n * phi)]])

    @property
    def focal_length_m(self) -> float:
        """f_N = f φ cot(Nφ)."""
        return self.lenslet_focal_length_m * self.phi_rad / math.tan(self.n_lenslets * self.phi_rad)

    @property
    def sample_distance_m(self) -> float:
        """d1 from K₁₂ = 0 and K₁₁ = −M: d1 = (−1/M − M_N[1,1]) / M_N[1,0]."""
        m = self.ray_matrix()
        return (-1 / self.magnification - m[1, 1]) / m[1, 0]

    @property
    def detector_distance_m(self) -> float:
        """d2 = −(M₀₀ d1 + M₀₁)/(M₁₀ d1 + M₁₁)."""
        m, d1 = self.ray_matrix(), self.sample_distance_m
        return -(m[0, 0] * d1 + m[0, 1]) / (m[1, 0] * d1 + m[1, 1])

    def lenslet_ray_heights_m_per_rad(self) -> np.ndarray:
        """(N,) height h_n = d1 cos nφ + f sinφ sin nφ per radian of object-side angle in lenslet n
        (docs/fp-dfxm.md, CRL pupil).
        """
        f, phi, d1 = self.lenslet_focal_length_m, self.phi_rad, self.sample_distance_m
        n = np.arange(1, self.n_lenslets + 1)
        return d1 * np.cos(n * phi) + f * math.sin(phi) * np.sin(n * phi)

    def lenslet_positions_m(self, *, tilt_pivot_m: float | None = None) -> np.ndarray:
        """(N,) axial position z_n − z_p of lenslet centres relative to the tilt pivot (default: CRL centre).

        ``tilt_pivot_m`` is measured from the entrance face; lenslet n (1-based) sits at (n − ½)T.
        """
        z = (np.arange(self.n_lenslets) + 0.5) * self.lenslet_pitch_m
        pivot = 0.5 * self.n_lenslets * self.lenslet_pitch_m if tilt_pivot_m is None else float(tilt_pivot_m)
        if not math.isfinite(pivot):
            raise ValueError(f"tilt_pivot_m must be finite, got {tilt_pivot_m!r}")
        return z - pivot

    def pupil_shift_per_tilt(self, *, tilt_pivot_m: float | None = None) -> float:
        """dα_c/dτ = Σh_n(z_n − z_p)/Σh_n² of the Gaussian absorption aperture (docs/fp-dfxm.md, CRL tilt).

        A tilt τ moves lenslet n's axis by τ(z_n − z_p); the product of the shifted Gaussians
        Π exp(−μ|αh_n − τ(z_n − z_p)|²/2R) is one Gaussian of unchanged width centred there.
        """
        h = self.lenslet_ray_heights_m_per_rad()
        return float(np.sum(h * self.lenslet_positions_m(tilt_pivot_m=tilt_pivot_m)) / np.sum(h * h))

    @property
    def na_rms_rad(self) -> float:
        """Thick-lens Gaussian aperture NA_rms = √(R / (2μ Σₙ[d1 cos nφ + f sinφ sin nφ]²))
        (docs/fp-dfxm.md, CRL pupil).
        """
        s = float(np.sum(self.lenslet_ray_heights_m_per_rad() ** 2))
        return math.sqrt(self.apex_radius_m / (2 * self.mu_per_m * s))

    @property
    def aperture_half_angle_rad(self) -> float:
        """Physical aperture D/(2 d1) with D = 2√(R T) (docs/fp-dfxm.md, CRL pupil)."""
        return math.sqrt(self.apex_radius_m * self.lenslet_pitch_m) / self.sample_distance_m


@dataclass(frozen=True, kw_only=True)
class Reflection:
    """Bragg reflection metadata: Miller indices and d-spacing (needed for strain and tilt, docs/fp-dfxm.md, Strain)."""

    hkl: tuple[int, int, int]
    d_spacing_m: float

    def __post_init__(self) -> None:
        _positive(self, ("d_spacing_m",))
        if len(self.hkl) != 3 or tuple(self.hkl) == (0, 0, 0):
            raise ValueError(f"Reflection.hkl must be three Miller indices, not all zero; got {self.hkl!r}")

    @property
    def g_per_m(self) -> float:
        """|G| = 2π/d in rad/m."""
        return 2 * math.pi / self.d_spacing_m

    def bragg_angle_rad(self, energy_kev: float) -> float:
        """θ from λ = 2d sinθ; ValueError when the reflection is not reachable."""
        s = wavelength_m_from_kev(energy_kev) / (2 * self.d_spacing_m)
        if s >= 1:
            raise ValueError(f"Reflection {self.hkl}: λ/2d = {s:.3f} ≥ 1 at {energy_kev} keV; not reachable")
        return math.asin(s)


@dataclass(frozen=True, kw_only=True)
class FPDFXMGeometry:
    """FP-DFXM sampling: objective, object-plane pixel, frame size, upsampling, pupil centre and Zernike radius."""

    objective: CRLObjective = field(default_factory=CRLObjective)
    pixel_size_m: float = 40e-9
    """Raw-image pixel in the object plane (detector pixel / M); default 40 nm (docs/fp-dfxm.md, Sampling)."""
    n_px: int = 64
    """Frame size (square, n_px × n_px)."""
    upsampling: int = 4
    """High-resolution grid factor (docs/fp-dfxm.md, Sampling: ×3–4)."""
    mode: str = "bragg"
    """``"bragg"`` (dark field, needs ``reflection``) or ``"transmission"``."""
    reflection: Reflection | None = None
    pupil_center_rad: tuple[float, float] = (0.0, 0.0)
    """(row, col) angular centre α_c of the lens pupil relative to the optical axis."""
    zernike_radius_rad: float | None = None
    """Zernike normalisation radius α₀; default 3·NA_rms (docs/fp-dfxm.md, CRL pupil)."""

    def __post_init__(self) -> None:
        _positive(self, ("pixel_size_m",))
        if not isinstance(self.n_px, int) or self.n_px < 8 or self.n_px % 2:
            raise ValueError(f"FPDFXMGeometry.n_px must be an even int >= 8, got {self.n_px!r}")
        if not isinstance(self.upsampling, int) or self.upsampling < 1:
            raise ValueError(f"FPDFXMGeometry.upsampling must be an int >= 1, got {self.upsampling!r}")
        if self.mode not in ("bragg", "transmission"):
            raise ValueError(f"FPDFXMGeometry.mode: {self.mode!r}, expected 'bragg' or 'transmission'")
        if self.mode == "bragg" and self.reflection is None:
            raise ValueError("FPDFXMGeometry: mode 'bragg' needs reflection metadata (hkl, d_spacing_m); "
                             "pass reflection=Reflection(...) or use mode='transmission'")
        if self.reflection is not None:
            self.reflection.bragg_angle_rad(self.objective.energy_kev)
        if len(self.pupil_center_rad) != 2 or not all(math.isfinite(v) for v in self.pupil_center_rad):
            raise ValueError(f"FPDFXMGeometry.pupil_center_rad must be two finite angles, got {self.pupil_center_rad}")
        if self.zernike_radius_rad is not None:
            _positive(self, ("zernike_radius_rad",))

    @property
    def wavelength_m(self) -> float:
        """λ in metres."""
        return self.objective.wavelength_m

    @property
    def bragg_angle_rad(self) -> float:
        """θ of the reflection (ValueError in transmission mode without a reflection)."""
        if self.reflection is None:
            raise ValueError("FPDFXMGeometry.bragg_angle_rad: no reflection metadata; pass reflection=Reflection(...)")
        return self.reflection.bragg_angle_rad(self.objective.energy_kev)

    @property
    def alpha0_rad(self) -> float:
        """Zernike radius α₀."""
        return self.zernike_radius_rad if self.zernike_radius_rad is not None else 3 * self.objective.na_rms_rad

    @property
    def hr_n_px(self) -> int:
        """Size of the high-resolution object grid."""
        return self.n_px * self.upsampling

    @property
    def hr_pixel_size_m(self) -> float:
        """High-resolution object pixel."""
        return self.pixel_size_m / self.upsampling

    @property
    def angle_per_freq_px_rad(self) -> float:
        """Pupil angle per frequency pixel, λ/(n_px Δx)."""
        return self.wavelength_m / (self.n_px * self.pixel_size_m)

    def pupil_angles_rad(self) -> tuple[np.ndarray, np.ndarray]:
        """(α_row, α_col) grids (n_px, n_px) of the centred low-resolution frequency grid."""
        k = (np.arange(self.n_px) - self.n_px // 2) * self.angle_per_freq_px_rad
        return k[:, None] * np.ones((1, self.n_px)), np.ones((self.n_px, 1)) * k[None, :]

    def defocus_m_from_z4(self, z4_rad: float) -> float:
        """Δz = 2√3 c₄ λ / (π α₀²) (docs/fp-dfxm.md, CRL pupil)."""
        return 2 * math.sqrt(3) * z4_rad * self.wavelength_m / (math.pi * self.alpha0_rad**2)

    def image_shift_m_from_tilt(self, z2_rad: float, z3_rad: float) -> tuple[float, float]:
        """(row, col) image shift −c λ/(π α₀) of tip (Z2, columns) and tilt (Z3, rows)."""
        s = -self.wavelength_m / (math.pi * self.alpha0_rad)
        return s * z3_rad, s * z2_rad
