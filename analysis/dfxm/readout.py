"""Instrument misalignment read from FP-DFXM data and the retrieved pupil (docs/fp-dfxm.md, CRL pupil and Algorithm).

Pupil centre from frame brightness, CRL tilt from the Gaussian-aperture centre, defocus,
astigmatism, coma and spherical aberration from the Noll coefficients of an :class:`FPResult`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from analysis.dfxm.epry import FPResult
from analysis.dfxm.geometry import FPDFXMGeometry
from analysis.xp import Array, array_module, to_numpy

__all__ = ["estimate_pupil_center_rad", "MisalignmentReadout", "misalignment_readout",
           "crl_tilt_from_pupil_center_rad"]


def estimate_pupil_center_rad(frames: Array, shifts_rad: Array) -> tuple[float, float]:
    """Pupil centre α_c from frame brightness: fit log ΣI_j = a + b·κ_j − c|κ_j|²
    (docs/fp-dfxm.md, Misalignment read-out).

    Valid when the object spectrum is concentrated near the Bragg peak (dark-field thin film),
    so ΣI_j ∝ |P(κ_j)|²; the vertex −b/2c is α_c.
    """
    xp = array_module(frames)
    s = np.asarray(shifts_rad, float)
    tot = to_numpy(xp.sum(frames, axis=(1, 2))).astype(float)
    if s.shape != (tot.shape[0], 2) or np.any(tot <= 0):
        raise ValueError("estimate_pupil_center_rad: need (FRAME, 2) shifts and frames with positive total counts")
    a = np.stack([np.ones(len(s)), s[:, 0], s[:, 1], -(s[:, 0] ** 2 + s[:, 1] ** 2)], axis=1)
    coef, *_ = np.linalg.lstsq(a * np.sqrt(tot)[:, None], np.log(tot) * np.sqrt(tot), rcond=None)
    if coef[3] <= 0:
        raise ValueError("estimate_pupil_center_rad: frame brightness is not peaked; the scan does not bracket "
                         "the pupil centre")
    return float(coef[1] / (2 * coef[3])), float(coef[2] / (2 * coef[3]))


@dataclass(frozen=True, kw_only=True)
class MisalignmentReadout:
    """Instrument misalignment read from the retrieved pupil (docs/fp-dfxm.md, Algorithm)."""

    pupil_center_rad: tuple[float, float]
    """(row, col) lens decentering / angular offset."""
    image_shift_m: np.ndarray = field(repr=False)
    """(FRAME, 2) residual image shift from per-frame tip/tilt."""
    defocus_m: float
    """Sample defocus Δz = 2√3 c₄ λ/(π α₀²)."""
    astigmatism_rad: tuple[float, float]
    """(Z5, Z6): CRL tilt / decentering."""
    coma_rad: tuple[float, float]
    """(Z7, Z8): CRL tilt / decentering."""
    spherical_rad: float
    """Z11: lenslet figure error."""
    crl_tilt_rad: tuple[float, float]
    """(pitch, yaw) CRL tilt that would put the absorption aperture at ``pupil_center_rad`` (no decentering)."""


def crl_tilt_from_pupil_center_rad(pupil_center_rad: tuple[float, float], geometry: FPDFXMGeometry, *,
                                   tilt_pivot_m: float | None = None) -> tuple[float, float]:
    """(pitch, yaw) CRL tilt τ = α_c / (dα_c/dτ) from the Gaussian-aperture centre (docs/fp-dfxm.md, CRL tilt).

    dα_c/dτ = Σh_n(z_n − z_p)/Σh_n² (:meth:`CRLObjective.pupil_shift_per_tilt`); a lens decentering
    moves α_c too, so subtract a known decentering first. ValueError when the pivot makes τ unobservable.
    """
    k = geometry.objective.pupil_shift_per_tilt(tilt_pivot_m=tilt_pivot_m)
    if abs(k) < 1e-6:
        raise ValueError(f"crl_tilt_from_pupil_center_rad: a tilt about pivot {tilt_pivot_m!r} m moves the aperture "
                         f"by only {k:.2e} rad/rad; the tilt is not observable from the pupil centre there")
    return float(pupil_center_rad[0]) / k, float(pupil_center_rad[1]) / k


def misalignment_readout(result: FPResult, geometry: FPDFXMGeometry, *,
                         tilt_pivot_m: float | None = None) -> MisalignmentReadout:
    """Convert retrieved Zernikes and pupil centre to misalignment quantities
    (docs/fp-dfxm.md, CRL pupil and Algorithm).
    """
    z = result.zernike_rad
    shifts = np.array([geometry.image_shift_m_from_tilt(float(t[0]), float(t[1])) for t in result.tip_tilt_rad])
    try:
        tilt = crl_tilt_from_pupil_center_rad(result.pupil_center_rad, geometry, tilt_pivot_m=tilt_pivot_m)
    except ValueError:
        tilt = (math.nan, math.nan)
    return MisalignmentReadout(pupil_center_rad=result.pupil_center_rad, image_shift_m=shifts, crl_tilt_rad=tilt,
                               defocus_m=geometry.defocus_m_from_z4(z.get(4, 0.0)),
                               astigmatism_rad=(z.get(5, 0.0), z.get(6, 0.0)), coma_rad=(z.get(7, 0.0), z.get(8, 0.0)),
                               spherical_rad=z.get(11, 0.0))
