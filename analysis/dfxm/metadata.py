"""FP-DFXM geometry ↔ JSON metadata (start documents, Tiled), without touching the geometry classes.

``fp_geometry_to_metadata`` writes every constructor field of :class:`FPDFXMGeometry`
(objective, reflection) plus derived numbers for readers; ``fp_geometry_from_metadata``
rebuilds the geometry and raises a clear ValueError when keys, notably the reflection,
are missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from analysis.dfxm.geometry import CRLObjective, FPDFXMGeometry, Reflection

__all__ = ["FP_GEOMETRY_KIND", "fp_geometry_to_metadata", "fp_geometry_from_metadata", "reflection_from_metadata"]

FP_GEOMETRY_KIND = "fp_dfxm"
"""Value of ``geometry.kind`` in an FP-DFXM start document."""

_OBJECTIVE_KEYS = ("energy_kev", "n_lenslets", "apex_radius_m", "lenslet_pitch_m", "attenuation_per_m",
                   "magnification")


def fp_geometry_to_metadata(geometry: FPDFXMGeometry) -> dict[str, Any]:
    """JSON-ready dict of ``geometry`` (constructor fields + ``derived`` numbers)."""
    o = geometry.objective
    refl = geometry.reflection
    derived: dict[str, Any] = {
        "wavelength_m": geometry.wavelength_m,
        "na_rms_rad": o.na_rms_rad,
        "aperture_half_angle_rad": o.aperture_half_angle_rad,
        "sample_distance_m": o.sample_distance_m,
        "detector_distance_m": o.detector_distance_m,
        "angle_per_freq_px_rad": geometry.angle_per_freq_px_rad,
        "alpha0_rad": geometry.alpha0_rad,
        "hr_n_px": geometry.hr_n_px,
        "hr_pixel_size_m": geometry.hr_pixel_size_m,
        "lens_delta": o.delta,
        "lens_mu_per_m": o.mu_per_m,
        "lens_density_g_per_cm3": o.lens_optics.density_g_per_cm3,
        "optical_constants_source": o.lens_optics.source,
    }
    if refl is not None:
        derived["bragg_angle_deg"] = math.degrees(geometry.bragg_angle_rad)
        derived["g_per_m"] = refl.g_per_m
    return {
        "kind": FP_GEOMETRY_KIND,
        "mode": geometry.mode,
        "pixel_size_m": geometry.pixel_size_m,
        "n_px": geometry.n_px,
        "upsampling": geometry.upsampling,
        "pupil_center_rad": [float(v) for v in geometry.pupil_center_rad],
        "zernike_radius_rad": geometry.zernike_radius_rad,
        "objective": {**{k: getattr(o, k) for k in _OBJECTIVE_KEYS}, "lens_material": o.lens_material,
                      "lens_density_g_per_cm3": o.lens_density_g_per_cm3},
        "reflection": None if refl is None else {"hkl": [int(v) for v in refl.hkl], "d_spacing_m": refl.d_spacing_m},
        "derived": derived,
    }


def reflection_from_metadata(md: Mapping[str, Any] | None) -> Reflection:
    """Rebuild a :class:`Reflection` from ``{"hkl": [h, k, l], "d_spacing_m": d}``; clear ValueError otherwise."""
    if not isinstance(md, Mapping) or "hkl" not in md or "d_spacing_m" not in md:
        raise ValueError(f"reflection metadata missing or incomplete ({md!r}); FP-DFXM needs "
                         "reflection={'hkl': [h, k, l], 'd_spacing_m': d} (analysis.dfxm.Reflection)")
    hkl = tuple(int(v) for v in md["hkl"])
    if len(hkl) != 3:
        raise ValueError(f"reflection metadata: hkl must be three Miller indices, got {md['hkl']!r}")
    return Reflection(hkl=hkl, d_spacing_m=float(md["d_spacing_m"]))


def fp_geometry_from_metadata(md: Mapping[str, Any]) -> FPDFXMGeometry:
    """Inverse of :func:`fp_geometry_to_metadata` (``derived`` is ignored)."""
    if not isinstance(md, Mapping):
        raise TypeError(f"FP-DFXM geometry metadata must be a mapping, got {type(md).__name__}")
    if md.get("kind") != FP_GEOMETRY_KIND:
        raise ValueError(f"geometry metadata kind is {md.get('kind')!r}, expected {FP_GEOMETRY_KIND!r} "
                         "(written by analysis.dfxm.fp_geometry_to_metadata)")
    missing = [k for k in ("mode", "pixel_size_m", "n_px", "upsampling", "objective") if k not in md]
    if missing:
        raise ValueError(f"FP-DFXM geometry metadata lacks {missing}")
    obj_md = md["objective"]
    missing = [k for k in _OBJECTIVE_KEYS if k not in obj_md]
    if missing:
        raise ValueError(f"FP-DFXM geometry metadata: objective lacks {missing}")
    objective_kw: dict[str, Any] = {k: (int(obj_md[k]) if k == "n_lenslets" else float(obj_md[k]))
                                    for k in _OBJECTIVE_KEYS if k != "attenuation_per_m"}
    if obj_md["attenuation_per_m"] is not None:           # None: the lens material's μ at the energy (xraydb)
        objective_kw["attenuation_per_m"] = float(obj_md["attenuation_per_m"])
    if obj_md.get("lens_material") is not None:           # absent before 2026-12: a Be lens
        objective_kw["lens_material"] = str(obj_md["lens_material"])
    if obj_md.get("lens_density_g_per_cm3") is not None:
        objective_kw["lens_density_g_per_cm3"] = float(obj_md["lens_density_g_per_cm3"])
    objective = CRLObjective(**objective_kw)
    refl_md = md.get("reflection")
    if md["mode"] == "bragg" and refl_md is None:
        raise ValueError("FP-DFXM geometry metadata: mode 'bragg' but no reflection; add "
                         "reflection={'hkl': [h, k, l], 'd_spacing_m': d}")
    reflection = None if refl_md is None else reflection_from_metadata(refl_md)
    zr = md.get("zernike_radius_rad")
    center = md.get("pupil_center_rad", (0.0, 0.0))
    return FPDFXMGeometry(objective=objective, pixel_size_m=float(md["pixel_size_m"]), n_px=int(md["n_px"]),
                          upsampling=int(md["upsampling"]), mode=str(md["mode"]), reflection=reflection,
                          pupil_center_rad=(float(center[0]), float(center[1])),
                          zernike_radius_rad=None if zr is None else float(zr))
