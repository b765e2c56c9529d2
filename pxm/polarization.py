"""``pxm polarization``: strain maps of a results file → polarization maps (file and Tiled).

The science is :func:`analysis.ferro.polarization_from_strain_maps` (one reflection,
per-voxel LGD minimisation, ambiguities reported). This module reads a results file written
by ``pxm reconstruct``, checks that the asked material and reflection match what the results record
about their sample (:func:`check_results_sample`; refused unless forced), writes ``/polarization/<frame>``
into a *new* file (never into the results file it read) and can publish the maps to
``/processed/<raw_uid[:8]>-polarization-NNN`` as an xarray dataset with dims, units and coordinates
(:func:`polarization_dataset`). The result names every raw run it depends on (``raw_uid``, ``raw_key``,
``raw_runs``); the raw runs are never written to, and :func:`find_polarization_results` finds the maps of a
run by a metadata query (docs/tiled-layout.md).
"""

# Why this module is long: the `pxm polarization` command: read results, check the sample, run the inversion, write
# and draw; one sequence over one results file.

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np

POLARIZATION_SPEC = "PolarizationFromStrain"
POLARIZATION_SPEC_VERSION = "0.2"
POLARIZATION_FILE_FORMAT = "pxm-polarization"
"""``/@format`` of the files :func:`write_polarization` writes."""


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
    origin_m: tuple[float, ...] | None = None
    """Lab (x, y, z) of voxel [0, 0, 0] of a 3D map (``StrainMaps.origin_m``: relative to the reconstruction's
    grid centre), None when not known (2D FP-DFXM maps are centred on the image's pixel N//2)."""
    grid_frame: str | None = None
    """``"sample"`` (axes x, y, z) or ``"reconstruction"`` (e1, e2, e3) for a 3D map (``StrainMaps.frame``);
    None for 2D maps (axes row, col of the object plane)."""
    sample_check: dict[str, Any] = field(default_factory=dict)
    """How the asked material/hkl compared with the results' sample (:func:`check_results_sample`)."""


def _hkl_text(hkl: Sequence[float]) -> str:
    return " ".join(f"{float(v):g}" for v in hkl)


def check_results_sample(results_path: str | Path, *, material: str, hkl: Sequence[float],
                         force: bool = False) -> dict[str, Any]:
    """Check that ``material`` and ``hkl`` match what the results file records about its sample.

    Compared: the recorded material name, hkl, and d-spacing (``/geometry/d_spacing_m``, checked even
    without a material name: within 1 % of the material's d_hkl range,
    :func:`analysis.ferro.sample_check.reflection_mismatches`).

    Parameters
    ----------
    results_path
        The results file.
    material, hkl
        The asked LGD material and reflection.
    force
        Invert anyway on a mismatch (the returned record says ``"forced"``).

    Returns
    -------
    dict
        ``status`` (``"match"``, ``"forced"``, or ``"unchecked"`` when the file records nothing to compare),
        ``recorded`` (what the file says), ``asked``, ``mismatches`` (phrases) and ``note`` (one line, or "").

    Raises
    ------
    ValueError
        On a mismatch without ``force``: one line naming what the results say and what was asked.
    """
    from analysis.ferro.sample_check import reflection_mismatches
    from analysis.sample_record import recorded_sample

    rec = recorded_sample(results_path)
    mismatches = reflection_mismatches(rec, material, hkl)
    asked = f"{material} ({_hkl_text(hkl)})"
    out: dict[str, Any] = {"recorded": rec.describe(), "asked": asked, "mismatches": mismatches, "note": ""}
    if mismatches:
        line = (f"{results_path} records {rec.describe()}; asked {asked}: " + "; ".join(mismatches))
        if not force:
            raise ValueError(f"{line}. Inverting a strain map with another material's LGD coefficients gives "
                             "numbers, not polarization; give the results' material and reflection, or pass "
                             "--force to invert anyway")
        out.update(status="forced", note=f"--force: {line}")
    elif rec.empty:
        out.update(status="unchecked", note=f"{results_path} records no material, hkl or d-spacing; cannot check "
                   f"that {asked} is its sample")
    else:
        out["status"] = "match"
    return out


def polarization_from_results(results_path: str | Path, *, material: str, hkl: tuple[float, float, float],
                              strain_frame: str | None = None, force: bool = False) -> PolarizationMaps:
    """Invert the strain map ``strain_frame`` (default: the first) of a results file for ``material``.

    The asked material and reflection are checked against the results' sample first
    (:func:`check_results_sample`; a mismatch raises ValueError unless ``force``).
    """
    from analysis.dataset import read_results
    from analysis.ferro import polarization_from_strain_maps

    check = check_results_sample(results_path, material=material, hkl=hkl, force=force)
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
        material=material, hkl=cast("tuple[float, float, float]", tuple(float(v) for v in hkl)), strain_frame=name,
        polarization_c_per_m2=p,
        magnitude_c_per_m2=np.linalg.norm(p, axis=-1), n_equivalent=np.asarray(inv.n_equivalent),
        stress_along_g_pa=np.asarray(inv.stress_along_g_pa)[..., 0],
        branch_gap_j_per_m3=np.asarray(inv.branch_gap_j_per_m3), voxel_size_m=tuple(maps.voxel_size_m),
        origin_m=tuple(float(v) for v in maps.origin_m), grid_frame=str(maps.frame), sample_check=check)


def default_output_path(results_path: str | Path, maps: PolarizationMaps) -> Path:
    """``<results stem>-polarization-<material>-<hkl>.h5`` beside the results file."""
    p = Path(results_path)
    hkl = "".join(f"{float(v):g}" for v in maps.hkl).replace("-", "m")
    return p.with_name(f"{p.stem}-polarization-{maps.material}-{hkl}.h5")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def write_polarization(output_path: str | Path, maps: PolarizationMaps, *,
                       source_results: str | Path | None = None) -> str:
    """Write ``/polarization/<strain_frame>`` into the polarization file ``output_path``; return the group path.

    Parameters
    ----------
    output_path
        A new file, or a polarization file written before (``/@format`` "pxm-polarization"), whose group of
        the same name is replaced. Never the results file the maps came from, nor any other HDF5 file.
    maps
        The maps.
    source_results
        The results file they were computed from (recorded in ``/@source_results``; refused as output).

    Returns
    -------
    str
        The group path, ``/polarization/<strain_frame>``.

    Raises
    ------
    ValueError
        If ``output_path`` is the source results file or an existing file that is not a polarization file.
    """
    out = Path(output_path)
    if source_results is not None and (_same_file(out, Path(source_results))
                                       or out.resolve() == Path(source_results).resolve()):
        raise ValueError(f"refusing to write the polarization maps into the results file {source_results} they "
                         "were computed from; give another output file (-o OUT.h5)")
    mode = "w"
    if out.exists():
        try:
            with h5py.File(out, "r") as f:
                fmt = f.attrs.get("format")
        except OSError as exc:
            raise ValueError(f"refusing to overwrite {out}: it exists and is not an HDF5 polarization file") from exc
        if fmt != POLARIZATION_FILE_FORMAT:
            raise ValueError(f"refusing to overwrite {out}: it exists and is not a polarization file "
                             f"(/@format {fmt!r}, expected {POLARIZATION_FILE_FORMAT!r}); give a new -o OUT.h5")
        mode = "a"
    group = f"/polarization/{maps.strain_frame}"
    with h5py.File(out, mode) as f:
        f.attrs["format"] = POLARIZATION_FILE_FORMAT
        f.attrs["created_utc"] = _dt.datetime.now(_dt.UTC).isoformat()
        if source_results is not None:
            f.attrs["source_results"] = str(Path(source_results).resolve())
        if group in f:
            del f[group]
        g = f.create_group(group)
        g.attrs.update({"material": maps.material, "hkl": list(maps.hkl), "voxel_size_m": list(maps.voxel_size_m),
                        "convention": "Q44 engineering (Voigt); P up to the listed symmetry-equivalent images",
                        "sample_check": str(maps.sample_check.get("status", "unchecked")),
                        "sample_recorded": str(maps.sample_check.get("recorded", ""))})
        if source_results is not None:
            g.attrs["source_results"] = str(Path(source_results).resolve())
        for name, unit in (("polarization_c_per_m2", "C/m^2"), ("magnitude_c_per_m2", "C/m^2"),
                           ("n_equivalent", "1"), ("stress_along_g_pa", "Pa"), ("branch_gap_j_per_m3", "J/m^3")):
            d = g.create_dataset(name, data=getattr(maps, name), compression="gzip")
            d.attrs["units"] = unit
    return group


def ambiguity_report(maps: PolarizationMaps, *, small_gap_j_per_m3: float = 1e5) -> dict[str, Any]:
    """What one reflection leaves undetermined in ``maps``
    (docs/polarization.md, Ambiguities), as JSON-ready numbers and sentences.

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
            "assumption": "one reflection: the unknown local stress is uniaxial along ĝ (docs/polarization.md)"}


_MAP_UNITS = {"polarization_c_per_m2": ("C/m^2", "representative polarization P (one of the n_equivalent images)"),
              "magnitude_c_per_m2": ("C/m^2", "|P|, determined by one reflection"),
              "n_equivalent": ("1", "number of symmetry-equivalent P per voxel (2: +-P; 4: also the x/y variants)"),
              "stress_along_g_pa": ("Pa", "inferred uniaxial stress along the reflection"),
              "branch_gap_j_per_m3": ("J/m^3", "energy gap to the best non-equivalent polarization state")}
_MAP_DTYPES = {"n_equivalent": np.int16}


def _grid_dims_coords(maps: PolarizationMaps) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Dims and coordinates (m) of the map grid: (row, col) for 2D maps, (x, y, z) or (e1, e2, e3) for 3D."""
    shape = np.shape(maps.magnitude_c_per_m2)
    vox = [float(v) for v in maps.voxel_size_m]
    coords: dict[str, Any] = {}
    if len(shape) == 2:
        dims: tuple[str, ...] = ("row", "col")
        for a, name in enumerate(dims):
            coords[name] = (name, (np.arange(shape[a]) - shape[a] // 2) * vox[a],
                            {"units": "m", "long_name": f"object-plane offset along the image {name}s from pixel N//2"})
        return dims, coords
    sample = maps.grid_frame == "sample"
    dims = ("x", "y", "z") if sample else tuple(f"e{a + 1}" for a in range(len(shape)))
    origin = [0.0] * len(shape) if maps.origin_m is None or not sample else [float(v) for v in maps.origin_m]
    for a, name in enumerate(dims):
        where = ("sample frame, from the reconstruction's grid centre" if sample and maps.origin_m is not None
                 else "from voxel 0")
        coords[name] = (name, origin[a] + np.arange(shape[a]) * vox[a],
                        {"units": "m", "long_name": f"position along {name} ({where})",
                         "frame": "sample" if sample else "reconstruction"})
    return dims, coords


def polarization_dataset(maps: PolarizationMaps, *,
                         extra_arrays: dict[str, np.ndarray] | None = None) -> Any:
    """The maps as an ``xarray.Dataset`` with dims, units and coordinates, as the Bragg results are published.

    Grid dims: ``row, col`` (2D FP-DFXM maps; m from the image's pixel N//2), ``x, y, z`` (a sample-frame
    strain map; m from its ``origin_m``) or ``e1, e2, e3`` (reconstruction frame; m from voxel 0).
    ``polarization_c_per_m2`` adds the dim ``p_component`` (P_x, P_y, P_z in the crystal axes). Arrays in
    ``extra_arrays`` of the grid's shape share its dims (units "1"); others get ``<name>_0, <name>_1, ...``.

    Parameters
    ----------
    maps
        The polarization maps.
    extra_arrays
        More arrays to store next to the maps (e.g. the c/a ``variant_label``).

    Returns
    -------
    xarray.Dataset
        In memory; :func:`publish_polarization` writes it with :func:`pxm.publication.publish_dataset`.
    """
    import xarray as xr

    from pxm.publication import LAYOUT_DOC

    dims, coords = _grid_dims_coords(maps)
    grid_shape = np.shape(maps.magnitude_c_per_m2)
    data: dict[str, Any] = {}
    for name, (unit, long_name) in _MAP_UNITS.items():
        values = np.asarray(getattr(maps, name), _MAP_DTYPES.get(name, np.float32))
        var_dims = (*dims, "p_component") if name == "polarization_c_per_m2" else dims
        attrs: dict[str, Any] = {"units": unit, "long_name": long_name}
        if name == "polarization_c_per_m2":
            attrs["components"] = "P_x P_y P_z along the crystal axes"
        data[name] = (var_dims, values, attrs)
    for name, value in (extra_arrays or {}).items():
        a = np.ascontiguousarray(value)
        extra_dims = dims if a.shape == grid_shape else tuple(f"{name}_{i}" for i in range(a.ndim))
        data[name] = (extra_dims, a, {"units": "1", "long_name": name.replace("_", " ")})
    attrs = {"title": f"pxm polarization maps ({maps.material}, hkl {_hkl_text(maps.hkl)})", "layout": LAYOUT_DOC,
             "convention": "Q44 engineering (Voigt); P up to the listed symmetry-equivalent images"}
    return xr.Dataset(data_vars=data, coords=coords, attrs=attrs)


def find_polarization_results(processed: Any, raw_uid: str) -> list[str]:
    """Keys of the polarization results that depend on the raw run ``raw_uid``, sorted (a metadata query).

    Every result lists its raw runs in ``metadata["raw_runs"]`` (uid → ``raw/<uid>``), so a result computed
    from several runs (the ferroelectric chain's c and a scans) is found from each of them.

    Parameters
    ----------
    processed
        The Tiled ``/processed`` container.
    raw_uid
        A raw run's uid.

    Returns
    -------
    list of str
        The matching keys.
    """
    from tiled.queries import Key

    return sorted(str(k) for k in processed.search(Key(f"raw_runs.{raw_uid}") == f"raw/{raw_uid}"))


def publish_polarization(processed: Any, raw_uid: str, maps: PolarizationMaps, *, raw_run: Any = None,
                         source: str | None = None, extra_metadata: dict[str, Any] | None = None,
                         extra_arrays: dict[str, np.ndarray] | None = None,
                         also_raw_uids: Sequence[str] = ()) -> Any:
    """Publish the maps to ``/processed/<uid8>-polarization-NNN`` as an xarray dataset; return its client.

    The raw runs are never written to: the result's metadata names them (``raw_uid``, ``raw_key`` of the
    first; ``raw_runs`` maps every uid it depends on to its Tiled key ``raw/<uid>``), and
    :func:`find_polarization_results` (or :func:`pxm.publication.find_results` with ``kind="polarization"`` for
    the first run) finds it. The metadata always carries :func:`ambiguity_report` (``extra_metadata`` may
    replace it); ``extra_arrays`` are written next to the maps (:func:`polarization_dataset`).

    Parameters
    ----------
    processed
        The Tiled ``/processed`` container.
    raw_uid
        The uid of the raw run the maps were computed from (the first, when several).
    maps
        The polarization maps.
    raw_run
        That run, when at hand: its start uid must be ``raw_uid`` (read, never written).
    source
        Where the strain maps came from (a results file, a command).
    extra_metadata, extra_arrays
        More metadata keys and arrays.
    also_raw_uids
        The uids of the other raw runs the maps depend on.

    Returns
    -------
    Any
        The Tiled client of the new container.
    """
    from analysis.bragg.outcome import software_info
    from pxm.publication import LAYOUT_DOC, next_result_key, publish_dataset

    start = ((getattr(raw_run, "metadata", None) or {}).get("start") or {}) if raw_run is not None else {}
    if start.get("uid") not in (None, raw_uid):
        raise ValueError(f"publish_polarization: raw_uid {raw_uid!r} but the raw run given is {start.get('uid')!r}; "
                         "pass the run the maps were computed from")
    uids = list(dict.fromkeys([raw_uid, *also_raw_uids]))
    key = next_result_key(processed, raw_uid, kind="polarization")
    md = {"raw_uid": raw_uid, "raw_key": f"raw/{raw_uid}", "kind": "polarization",
          "raw_runs": {u: f"raw/{u}" for u in uids}, "status": "complete",
          "algorithm": "LGD one-reflection inversion (analysis.ferro)", "source_results": source,
          "material": maps.material, "hkl": list(maps.hkl), "strain_frame": maps.strain_frame,
          "voxel_size_m": list(maps.voxel_size_m),
          "origin_m": None if maps.origin_m is None else list(maps.origin_m), "software": software_info(),
          "ambiguity": ambiguity_report(maps), "layout": LAYOUT_DOC,
          **({"sample_check": maps.sample_check} if maps.sample_check else {}), **(extra_metadata or {})}
    return publish_dataset(processed, key, polarization_dataset(maps, extra_arrays=extra_arrays), metadata=md,
                           specs=[(POLARIZATION_SPEC, POLARIZATION_SPEC_VERSION)])


def summary(maps: PolarizationMaps) -> dict[str, Any]:
    """Numbers for the command line: voxels, |P| statistics, ambiguity counts."""
    valid = np.isfinite(maps.magnitude_c_per_m2)
    mag = maps.magnitude_c_per_m2[valid]
    return {"material": maps.material, "hkl": maps.hkl, "voxels": int(valid.sum()),
            "mean_abs_p_c_per_m2": float(mag.mean()) if mag.size else float("nan"),
            "max_abs_p_c_per_m2": float(mag.max()) if mag.size else float("nan"),
            "n_equivalent_values": sorted({int(v) for v in np.asarray(maps.n_equivalent)[valid].ravel()})}


__all__ = ["POLARIZATION_FILE_FORMAT", "POLARIZATION_SPEC", "POLARIZATION_SPEC_VERSION", "PolarizationMaps",
           "ambiguity_report", "check_results_sample", "default_output_path", "find_polarization_results",
           "polarization_dataset", "polarization_from_results", "publish_polarization", "summary",
           "write_polarization"]
