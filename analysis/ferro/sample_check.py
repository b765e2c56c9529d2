"""Checks that a results file's sample matches the material and reflection an inversion is asked for.

An LGD inversion of a strain map is only meaningful for the material and reflection the map was
measured on: inverting a tungsten (220) map with BaTiO3 coefficients returns numbers, not physics.
:func:`reflection_mismatches` compares what a results file records
(:class:`analysis.sample_record.SampleRecord`) with the asked material and hkl:

* material: the recorded name against the registry name (case and spaces ignored; ``PbZrO3-AFE``
  also matches ``PbZrO3``);
* hkl: the recorded Miller indices must equal the asked ones;
* d-spacing (checked even when no material name is recorded): the recorded d (the strain maps'
  reference lattice) must lie within ``tolerance`` (1 %) of the range the material can have at that
  reflection, d_hkl = a/|hkl| of the cubic parent stretched by its own stress-free spontaneous strains
  along ĝ (tetragonal variants along x, y, z at ``temperature_k``), so that a c- or a-domain reference
  lattice still matches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from analysis.ferro.energy import spontaneous_strain
from analysis.ferro.materials import LGDCoefficients, get_material
from analysis.ferro.minimise import spontaneous_polarization_c_per_m2
from analysis.ferro.tensors import projected_strain, reflection_unit_vector
from analysis.sample_record import SampleRecord

__all__ = ["D_SPACING_TOLERANCE", "d_spacing_range_m", "reflection_mismatches"]

D_SPACING_TOLERANCE = 0.01
"""Relative margin around the material's d_hkl range (1 %)."""


def _norm(name: str) -> str:
    return re.sub(r"\s+", "", name).lower()


def d_spacing_range_m(material: str | LGDCoefficients, hkl: Sequence[float], *, temperature_k: float = 298.0,
                      tolerance: float = D_SPACING_TOLERANCE) -> tuple[float, float, float]:
    """d_hkl of the cubic parent and the range of d a sample of ``material`` can show at ``hkl``.

    Parameters
    ----------
    material
        Registry name or coefficients (with ``parent_lattice_m``).
    hkl
        Reflection in the parent cubic frame.
    temperature_k
        Temperature of the spontaneous polarization (K).
    tolerance
        Relative margin added on both sides.

    Returns
    -------
    tuple of float
        (d_parent, d_min, d_max) in metres.

    Raises
    ------
    ValueError
        If the material has no ``parent_lattice_m`` or hkl is not a reflection.
    """
    m = get_material(material)
    reflection_unit_vector(hkl)                            # a zero or malformed hkl is named here
    if m.parent_lattice_m is None:
        raise ValueError(f"material {m.name!r}: no cubic parent lattice constant (parent_lattice_m) to check "
                         "the reflection's d-spacing against")
    d_parent = m.parent_lattice_m / float(np.linalg.norm(np.asarray(hkl, float)))
    ps = spontaneous_polarization_c_per_m2(m, temperature_k)
    eps = [0.0] + [float(projected_strain(spontaneous_strain(ps * np.eye(3)[i], m), hkl)) for i in range(3)]
    return d_parent, d_parent * (1 + min(eps)) * (1 - tolerance), d_parent * (1 + max(eps)) * (1 + tolerance)


def reflection_mismatches(recorded: SampleRecord, material: str | LGDCoefficients, hkl: Sequence[float], *,
                          temperature_k: float = 298.0, tolerance: float = D_SPACING_TOLERANCE) -> list[str]:
    """What in ``recorded`` contradicts inverting for ``material`` at ``hkl`` (empty: nothing does).

    Parameters
    ----------
    recorded
        What the results file records (:func:`analysis.sample_record.recorded_sample`).
    material, hkl
        The asked material and reflection (parent cubic frame).
    temperature_k, tolerance
        As in :func:`d_spacing_range_m`.

    Returns
    -------
    list of str
        One phrase per mismatch, e.g. ``"material 'W' is not BaTiO3"``.

    Raises
    ------
    ValueError
        For an unknown material or a zero/invalid hkl (named as such).
    """
    m = get_material(material)
    reflection_unit_vector(hkl)
    asked_hkl = tuple(float(v) for v in hkl)
    out: list[str] = []
    if recorded.material is not None:
        names = {_norm(m.name), _norm(m.name.split("-")[0])}
        if _norm(recorded.material) not in names:
            out.append(f"material {recorded.material!r} is not {m.name}")
    if recorded.hkl is not None and not np.allclose(recorded.hkl, asked_hkl, rtol=0, atol=1e-6):
        out.append("hkl (" + " ".join(f"{v:g}" for v in recorded.hkl) + ") is not ("
                   + " ".join(f"{v:g}" for v in asked_hkl) + ")")
    d = recorded.d_spacing_m
    if d is None and recorded.lattice_constant_m is not None and recorded.hkl is not None:
        d = recorded.lattice_constant_m / math.sqrt(sum(v * v for v in recorded.hkl))
    if d is not None and m.parent_lattice_m is not None:
        d_parent, lo, hi = d_spacing_range_m(m, asked_hkl, temperature_k=temperature_k, tolerance=tolerance)
        if not lo <= d <= hi:
            out.append(f"d = {d * 1e10:.4f} Å is {100 * (d / d_parent - 1):+.1f} % off {m.name} "
                       f"d_{''.join(f'{v:g}' for v in asked_hkl)} = {d_parent * 1e10:.4f} Å (a = "
                       f"{m.parent_lattice_m * 1e10:.3f} Å; accepted {lo * 1e10:.4f}–{hi * 1e10:.4f} Å: "
                       f"its spontaneous strains ± {100 * tolerance:g} %)")
    return out
