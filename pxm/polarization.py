"""``pxm polarization``: strain maps of a results file → polarization maps (file and Tiled).

The science is :func:`analysis.polarization.polarization_from_strain_maps` (one reflection,
per-voxel LGD minimisation, ambiguities reported). This module reads a results file written
by ``pxm reconstruct``, writes ``/polarization/<frame>`` into it, and can publish the maps to
``/processed/<raw_uid[:8]>-polarization-NNN`` with ``raw_uid`` and a back-link on the raw run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

POLARIZATION_SPEC = "PolarizationFromStrain"


@dataclass(frozen=True, kw_only=True)
class PolarizationMaps:
    """Polarization maps of one strain map, with what the single reflection leaves undetermined."""

    material: str
    hkl: tuple[float, float, float]
    strain_frame: str
    polarization_c_per_m2: np.ndarray
    """(..., 3) representative P (C/m²), NaN where no strain was measured."""
    magnitude_c_per_m2: np.ndarray
    """|P| (C/m²): determined by one reflection, unlike the direction."""
    n_equivalent: np.ndarray
    """Number of symmetry-equivalent P per voxel (2: ±P; 4: also the x/y variants)."""
    stress_along_g_pa: np.ndarray
    """Inferred uniaxial stress along the reflection (Pa)."""
    branch_gap_j_per_m3: np.ndarray
    """How much worse the best non-equivalent state fits (small: another state is nearly as good)."""
    voxel_size_m: tuple[float, ...]


def polarization_from_results(results_path: str | Path, *, material: str, hkl: tuple[float, float, float],
                              strain_frame: str | None = None) -> PolarizationMaps:
    """Invert the strain map ``strain_frame`` (default: the first) of a results file for ``material``."""
    from analysis.dataset import read_results
    from analysis.polarization import polarization_from_strain_maps

    res = read_results(results_path)
    strains = res.get("strain") or {}
    if not strains:
        raise ValueError(f"{results_path}: no /strain maps in the results file; run `pxm reconstruct` first")
    name = strain_frame or next(iter(strains))
    if name not in strains:
        raise ValueError(f"{results_path}: no strain map {name!r}; available: {sorted(strains)}")
    maps = strains[name]
    mask = np.asarray(maps.mask, bool) & np.isfinite(maps.eps_zz)
    if not mask.any():
        raise ValueError(f"{results_path}: strain map {name!r} has no valid voxel to invert")
    inv = polarization_from_strain_maps(replace(maps, mask=mask), hkl=hkl, material=material)
    p = np.asarray(inv.polarization_c_per_m2, float)
    return PolarizationMaps(
        material=material, hkl=tuple(float(v) for v in hkl), strain_frame=name, polarization_c_per_m2=p,
        magnitude_c_per_m2=np.linalg.norm(p, axis=-1), n_equivalent=np.asarray(inv.n_equivalent),
        stress_along_g_pa=np.asarray(inv.stress_along_g_pa)[..., 0],
        branch_gap_j_per_m3=np.asarray(inv.branch_gap_j_per_m3), voxel_size_m=tuple(maps.voxel_size_m))


def write_polarization(results_path: str | Path, maps: PolarizationMaps) -> str:
    """Write ``/polarization/<strain_frame>`` into the results file (replacing it); return the group path."""
    group = f"/polarization/{maps.strain_frame}"
    with h5py.File(results_path, "a") as f:
        if group in f:
            del f[group]
        g = f.create_group(group)
        g.attrs.update({"material": maps.material, "hkl": list(maps.hkl), "voxel_size_m": list(maps.voxel_size_m),
                        "convention": "Q44 engineering (Voigt); P up to the listed symmetry-equivalent images"})
        for name, unit in (("polarization_c_per_m2", "C/m^2"), ("magnitude_c_per_m2", "C/m^2"),
                           ("n_equivalent", "1"), ("stress_along_g_pa", "Pa"), ("branch_gap_j_per_m3", "J/m^3")):
            d = g.create_dataset(name, data=getattr(maps, name), compression="gzip")
            d.attrs["units"] = unit
    return group


def ambiguity_report(maps: PolarizationMaps, *, small_gap_j_per_m3: float = 1e5) -> dict[str, Any]:
    """What one reflection leaves undetermined in ``maps`` (spec §2.3), as JSON-ready numbers and sentences.

    ``n_equivalent_counts``: voxels per number of symmetry-equivalent P; ``branch_gap_j_per_m3``: min and
    median of the gap to the best non-equivalent state; ``n_small_gap``: voxels whose gap is below
    ``small_gap_j_per_m3`` (another polarization state fits ε_g almost as well there).
    """
    valid = np.isfinite(maps.magnitude_c_per_m2)
    n_eq = np.asarray(maps.n_equivalent)[valid]
    counts = {str(int(k)): int((n_eq == k).sum()) for k in np.unique(n_eq)}
    gap = np.asarray(maps.branch_gap_j_per_m3, float)[valid]
    finite_gap = gap[np.isfinite(gap)]
    undetermined = ["the sign of P: e0(−P) = e0(P), so 180° domains are not separated by strain"]
    if any(int(k) > 2 for k in counts):
        undetermined.append(f"where n_equivalent > 2: the components of P perpendicular to ĝ = {list(maps.hkl)} "
                            "(e.g. the x/y in-plane variant of a domains)")
    return {"n_voxels": int(valid.sum()), "n_equivalent_counts": counts, "undetermined": undetermined,
            "branch_gap_j_per_m3": {"min": float(finite_gap.min()) if finite_gap.size else None,
                                    "median": float(np.median(finite_gap)) if finite_gap.size else None},
            "small_gap_threshold_j_per_m3": small_gap_j_per_m3,
            "n_small_gap": int((finite_gap < small_gap_j_per_m3).sum()),
            "assumption": "one reflection: the unknown local stress is uniaxial along ĝ (spec §2.2)"}


def publish_polarization(processed: Any, raw_uid: str, maps: PolarizationMaps, *, raw_run: Any = None,
                         source: str | None = None, extra_metadata: dict[str, Any] | None = None,
                         extra_arrays: dict[str, np.ndarray] | None = None,
                         also_link_runs: Sequence[Any] = ()) -> Any:
    """Publish the maps to ``/processed/<uid8>-polarization-NNN``; return the container client.

    The metadata always carries :func:`ambiguity_report` (``extra_metadata`` may replace it).
    ``extra_arrays`` are written next to the maps; ``raw_run`` and every run in ``also_link_runs``
    get a back-link in their ``analysis`` metadata.
    """
    from tiled.structures.core import Spec

    from analysis.dataset import jsonable
    from pxm.publish import next_result_key

    key = next_result_key(processed, raw_uid, kind="polarization")
    md = {"raw_uid": raw_uid, "raw_uri": getattr(raw_run, "uri", None), "status": "complete",
          "algorithm": "LGD one-reflection inversion (analysis.polarization)", "source_results": source,
          "material": maps.material, "hkl": list(maps.hkl), "strain_frame": maps.strain_frame,
          "voxel_size_m": list(maps.voxel_size_m), "ambiguity": ambiguity_report(maps), **(extra_metadata or {})}
    node = processed.create_container(key, metadata=jsonable(md, nonfinite_to_none=True),
                                      specs=[Spec(POLARIZATION_SPEC, version="0.1")])
    for name in ("polarization_c_per_m2", "magnitude_c_per_m2", "stress_along_g_pa", "branch_gap_j_per_m3"):
        node.write_array(np.asarray(getattr(maps, name), np.float32), key=name)
    node.write_array(np.asarray(maps.n_equivalent, np.int16), key="n_equivalent")
    for name, value in (extra_arrays or {}).items():
        node.write_array(np.ascontiguousarray(value), key=name)
    for run in ([raw_run] if raw_run is not None else []) + list(also_link_runs):
        links = list(run.metadata.get("analysis", []) or [])
        links.append({"key": key, "kind": "polarization", "uri": getattr(node, "uri", None)})
        run.update_metadata(metadata={"analysis": links})
    return node


def summary(maps: PolarizationMaps) -> dict[str, Any]:
    """Numbers for the command line: voxels, |P| statistics, ambiguity counts."""
    valid = np.isfinite(maps.magnitude_c_per_m2)
    mag = maps.magnitude_c_per_m2[valid]
    return {"material": maps.material, "hkl": maps.hkl, "voxels": int(valid.sum()),
            "mean_abs_p_c_per_m2": float(mag.mean()) if mag.size else float("nan"),
            "max_abs_p_c_per_m2": float(mag.max()) if mag.size else float("nan"),
            "n_equivalent_values": sorted({int(v) for v in np.asarray(maps.n_equivalent)[valid].ravel()})}


__all__ = ["PolarizationMaps", "ambiguity_report", "polarization_from_results", "publish_polarization", "summary",
           "write_polarization"]
