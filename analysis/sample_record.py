"""What a results file says about its sample: material, reflection (hkl), d-spacing and lattice.

Inversions that depend on the material (``pxm polarization``: LGD coefficients of one material and
one reflection) must check that the results they read are of that material and reflection.
:func:`sample_record` makes the record a writer stores with the results; :func:`recorded_sample`
reads it back from a results file, falling back on what older results files already hold
(``/geometry`` hkl and ``d_spacing_m``, ``/provenance`` ``sample_name``).

Where the record lives in a results file (docs/dataset-format.md §2), first found wins per field:

1. ``/sample`` (attributes + ``json``, as the dataset's ``/sample``);
2. ``/provenance@json["sample"]`` (the record inside the provenance);
3. ``/geometry/hkl``, ``/geometry/d_spacing_m`` and ``/provenance@json["sample_name"]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from analysis.geometry import BraggGeometry

__all__ = ["SampleRecord", "sample_record", "recorded_sample"]

_LATTICE_KEYS = ("lattice_constant_m", "lattice_m", "parent_lattice_m")


def _float_or_none(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def _hkl_or_none(v: Any) -> tuple[float, float, float] | None:
    if v is None:
        return None
    try:
        a = np.asarray(v, float).ravel()
    except (TypeError, ValueError):
        return None
    if a.shape != (3,) or not np.all(np.isfinite(a)) or not np.any(a):
        return None
    return float(a[0]), float(a[1]), float(a[2])


def sample_record(sample: Mapping[str, Any] | None, geometry: BraggGeometry | None = None) -> dict[str, Any]:
    """The sample record a results file should carry: name, material, hkl, d-spacing and lattice.

    Parameters
    ----------
    sample
        The dataset's ``/sample`` (or the start document's ``sample``): ``name``, ``material``, ``hkl``,
        optionally ``lattice_constant_m`` (or ``lattice_m``), ``parent_d_spacing_m``.
    geometry
        The scan's geometry: its ``d_spacing_m`` (the reference lattice of the strain maps) and ``hkl``.

    Returns
    -------
    dict
        JSON-ready ``{"name", "material", "hkl", "d_spacing_m", "lattice_constant_m", "parent_d_spacing_m"}``
        with the keys that are known (``hkl`` from ``sample``, else from ``geometry``).
    """
    s = dict(sample or {})
    rec: dict[str, Any] = {}
    if s.get("name") is not None:
        rec["name"] = str(s["name"])
    if s.get("material") is not None:
        rec["material"] = str(s["material"])
    hkl = _hkl_or_none(s.get("hkl"))
    if hkl is None and geometry is not None and geometry.hkl is not None:
        hkl = _hkl_or_none(geometry.hkl)
    if hkl is not None:
        rec["hkl"] = [int(v) if float(v).is_integer() else float(v) for v in hkl]
    if geometry is not None:
        rec["d_spacing_m"] = float(geometry.d_spacing_m)
    lattice = next((x for x in (_float_or_none(s.get(k)) for k in _LATTICE_KEYS) if x is not None), None)
    if lattice is not None:
        rec["lattice_constant_m"] = lattice
    parent_d = _float_or_none(s.get("parent_d_spacing_m"))
    if parent_d is not None:
        rec["parent_d_spacing_m"] = parent_d
    return rec


@dataclass(frozen=True, kw_only=True)
class SampleRecord:
    """What one results file records about its sample (None: not recorded)."""

    path: str
    material: str | None = None
    hkl: tuple[float, float, float] | None = None
    d_spacing_m: float | None = None
    """The reference lattice's d_hkl of the strain maps (``/geometry/d_spacing_m``)."""
    lattice_constant_m: float | None = None
    name: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    """Field → where in the file it was read (``/sample``, ``/provenance sample``, ``/geometry``, ...)."""

    @property
    def empty(self) -> bool:
        """True when the file records none of material, hkl, d-spacing and lattice."""
        return self.material is None and self.hkl is None and self.d_spacing_m is None \
            and self.lattice_constant_m is None

    def describe(self) -> str:
        """One phrase: ``sample 'W foil', material 'W', hkl (2 2 0), d = 1.1191 Å (from /sample, /geometry)``."""
        parts = []
        if self.name is not None:
            parts.append(f"sample {self.name!r}")
        if self.material is not None:
            parts.append(f"material {self.material!r}")
        if self.hkl is not None:
            parts.append("hkl (" + " ".join(f"{v:g}" for v in self.hkl) + ")")
        if self.d_spacing_m is not None:
            parts.append(f"d = {self.d_spacing_m * 1e10:.4f} Å")
        if self.lattice_constant_m is not None:
            parts.append(f"a = {self.lattice_constant_m * 1e10:.4f} Å")
        where = sorted(set(self.sources.values()))
        return (", ".join(parts) or "no material, hkl or d-spacing") + (f" (from {', '.join(where)})" if where else "")


def _json_attr(group: Any) -> dict[str, Any]:
    raw = group.attrs.get("json") if group is not None else None
    if raw is None:
        return {}
    try:
        out = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def recorded_sample(results_path: str | Path) -> SampleRecord:
    """Read what the results file ``results_path`` records about its sample (module docstring: where).

    Parameters
    ----------
    results_path
        A results file of ``pxm reconstruct`` (``analysis.dataset.write_results``).

    Returns
    -------
    SampleRecord
        Material, hkl, d-spacing, lattice and name, each with where it was found; fields the file does not
        record are None.
    """
    found: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def take(key: str, value: Any, where: str) -> None:
        if key not in found and value is not None:
            found[key] = value
            sources[key] = where

    with h5py.File(results_path, "r") as f:
        layers: list[tuple[str, dict[str, Any]]] = []
        if "sample" in f:
            layers.append(("/sample", _json_attr(f["sample"]) or {k: v for k, v in f["sample"].attrs.items()}))
        prov = _json_attr(f["provenance"]) if "provenance" in f else {}
        if isinstance(prov.get("sample"), Mapping):
            layers.append(("/provenance sample", dict(prov["sample"])))
        for where, md in layers:
            take("material", None if md.get("material") is None else str(md["material"]), where)
            take("hkl", _hkl_or_none(md.get("hkl")), where)
            take("d_spacing_m", _float_or_none(md.get("d_spacing_m")), where)
            take("lattice_constant_m", next((x for x in (_float_or_none(md.get(k)) for k in _LATTICE_KEYS)
                                             if x is not None), None), where)
            take("name", None if md.get("name") is None else str(md["name"]), where)
        if "geometry" in f:
            g = f["geometry"]
            take("hkl", _hkl_or_none(g["hkl"][()]) if "hkl" in g else None, "/geometry")
            take("d_spacing_m", _float_or_none(g["d_spacing_m"][()]) if "d_spacing_m" in g else None, "/geometry")
        take("name", None if prov.get("sample_name") is None else str(prov["sample_name"]), "/provenance")
    return SampleRecord(path=str(results_path), sources=sources, **found)
