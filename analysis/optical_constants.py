"""X-ray optical constants δ, β and μ of lens and sample materials, from xraydb at the actual energy.

One place for the numbers that used to be typed in by hand (a Be density, Be's attenuation at
17 keV, gold's δ and β at 8 keV). Values come from ``xraydb`` (Elam, Ravel and Sieber,
Radiat. Phys. Chem. 63, 121 (2002), with the Chantler f1/f2 tables; maintained at
https://github.com/xraypy/XrayDB):

* δ and β of n = 1 − δ + iβ from the forward-scattering factors f1, f2 (``xraydb.xray_delta_beta``);
  β describes photo-absorption only.
* μ, the linear attenuation coefficient of the transmitted intensity, from the *total* mass attenuation
  (photo-absorption + coherent + incoherent scattering, ``xraydb.material_mu(kind="total")``), as NIST
  tabulates μ/ρ (NIST SRD 126). Scattered photons leave the coherent beam, so this is the μ of a lens'
  Gaussian aperture exp(−μ r²/2R) (for Be above ~12 keV Compton scattering dominates it).

A material is a name xraydb knows (``"Be"``, ``"beryllium"``, ``"diamond carbon"``, ``"Au"``, ``"W"``)
with its density from the same database, or any chemical formula (``"BaTiO3"``) with
``density_g_per_cm3``. ``xraydb`` is imported on first use (its import takes a while).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from analysis.geometry import wavelength_m_from_kev

__all__ = ["OpticalConstants", "optical_constants", "material_density_g_per_cm3"]

_SOURCE = "xraydb (Elam, Ravel & Sieber 2002; Chantler f1, f2; total μ/ρ incl. coherent + incoherent scattering)"


@dataclass(frozen=True, kw_only=True)
class OpticalConstants:
    """Optical constants of one material at one photon energy."""

    material: str
    """The name asked for."""
    formula: str
    """Chemical formula used."""
    density_g_per_cm3: float
    """Mass density used (g/cm³)."""
    energy_kev: float
    """Photon energy (keV)."""
    delta: float
    """Refractive decrement δ (n = 1 − δ + iβ)."""
    beta: float
    """Absorption index β (photo-absorption)."""
    mu_per_m: float
    """Linear attenuation coefficient of the intensity (total: absorption + scattering), 1/m."""
    source: str = _SOURCE
    """Where the numbers come from."""

    @property
    def mu_photo_per_m(self) -> float:
        """Photo-absorption part of μ, 4πβ/λ (1/m)."""
        return 4 * math.pi * self.beta / wavelength_m_from_kev(self.energy_kev)


def _xraydb() -> Any:
    try:
        import xraydb
    except ImportError as exc:                   # pragma: no cover - a declared dependency
        raise RuntimeError("optical constants need the xraydb package (pip install xraydb)") from exc
    return xraydb


def material_density_g_per_cm3(material: str) -> float:
    """Density (g/cm³) of a material xraydb knows (name or formula of its materials table, or an element).

    Parameters
    ----------
    material
        A name or formula, e.g. ``"Be"``, ``"beryllium"``, ``"diamond carbon"``, ``"Au"``.

    Returns
    -------
    float
        The density from xraydb.

    Raises
    ------
    ValueError
        If xraydb has no density for ``material``.
    """
    return _formula_and_density(material)[1]


@functools.lru_cache(maxsize=64)
def _formula_and_density(material: str) -> tuple[str, float]:
    db = _xraydb()
    found = db.get_material(material)
    if found is not None:
        return str(found[0]), float(found[1])
    try:
        return material, float(db.atomic_density(material))
    except Exception as exc:                     # noqa: BLE001 - xraydb raises several kinds for unknown names
        raise ValueError(f"optical constants: xraydb has no density for {material!r}; pass density_g_per_cm3 "
                         "(any chemical formula works with a density, e.g. 'BaTiO3' with 6.02)") from exc


@functools.lru_cache(maxsize=256)
def _constants(material: str, energy_kev: float, density_g_per_cm3: float | None) -> OpticalConstants:
    db = _xraydb()
    if density_g_per_cm3 is None:
        formula, density = _formula_and_density(material)
    else:
        found = db.get_material(material)
        formula, density = (str(found[0]) if found is not None else material), float(density_g_per_cm3)
    energy_ev = 1e3 * energy_kev
    try:
        delta, beta, _ = db.xray_delta_beta(formula, density, energy_ev)
        mu_per_cm = db.material_mu(formula, energy_ev, density=density, kind="total")
    except Exception as exc:                     # noqa: BLE001 - xraydb's errors name the formula only
        raise ValueError(f"optical constants of {material!r} (formula {formula!r}) at {energy_kev} keV: "
                         f"{type(exc).__name__}: {exc}") from exc
    return OpticalConstants(material=material, formula=formula, density_g_per_cm3=density, energy_kev=energy_kev,
                            delta=float(delta), beta=float(beta), mu_per_m=100.0 * float(mu_per_cm))


def optical_constants(material: str, energy_kev: float, *, density_g_per_cm3: float | None = None) -> OpticalConstants:
    """δ, β and μ of ``material`` at ``energy_kev`` from xraydb (cached per material, energy and density).

    Parameters
    ----------
    material
        A name or formula xraydb knows, or any chemical formula together with ``density_g_per_cm3``.
    energy_kev
        Photon energy in keV (xraydb's tables cover about 0.1–800 keV).
    density_g_per_cm3
        Mass density; None takes xraydb's value for ``material``.

    Returns
    -------
    OpticalConstants
        δ, β, μ (1/m) with the formula and density used.

    Raises
    ------
    ValueError
        For a non-positive or non-finite energy or density, or a material xraydb cannot resolve.
    """
    if not (isinstance(energy_kev, (int, float)) and math.isfinite(energy_kev) and energy_kev > 0):
        raise ValueError(f"optical constants: energy_kev must be a finite number > 0, got {energy_kev!r}")
    if density_g_per_cm3 is not None and not (math.isfinite(density_g_per_cm3) and density_g_per_cm3 > 0):
        raise ValueError(f"optical constants: density_g_per_cm3 must be finite and > 0, got {density_g_per_cm3!r}")
    return _constants(str(material), float(energy_kev), None if density_g_per_cm3 is None else float(density_g_per_cm3))
