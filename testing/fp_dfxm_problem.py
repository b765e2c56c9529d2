"""The small FP-DFXM problem of the solver tests: a (002) geometry on a coarse detector and a square angle grid."""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.dfxm import FPDFXMGeometry, Reflection

FP_REFLECTION = Reflection(hkl=(0, 0, 2), d_spacing_m=2.018e-10)
"""The (002) reflection of the FP-DFXM tests (d = 2.018 Å)."""

__all__ = ["FP_REFLECTION", "fp_geometry", "fp_angle_grid"]


def fp_geometry(**overrides: Any) -> FPDFXMGeometry:
    """16 px detector, U = 3, 40 nm pixels, the (002) reflection; keyword arguments override any field."""
    base: dict[str, Any] = dict(reflection=FP_REFLECTION, n_px=16, upsampling=3, pixel_size_m=40e-9)
    base.update(overrides)
    return FPDFXMGeometry(**base)


def fp_angle_grid(geom: FPDFXMGeometry, n_side: int = 5, step_px: int = 4) -> np.ndarray:
    """(n_side², 2) illumination angles (rad) on a square grid, ``step_px`` pupil pixels apart, centred on 0."""
    k = (np.arange(n_side) - (n_side - 1) / 2) * step_px * geom.angle_per_freq_px_rad
    rr, cc = np.meshgrid(k, k, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1)
