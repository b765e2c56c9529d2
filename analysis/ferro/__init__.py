"""Ferroelectric polarization from strain with Landau–Ginzburg–Devonshire (LGD) potentials.

One room of the three sciences under ``analysis`` (Bragg ptychography, FP-DFXM,
ferroelectric polarization); it shares only ``analysis.xp`` with the others and imports
neither the Bragg engine nor ``analysis.dfxm`` (import-linter contract in pyproject.toml).
Equations, conventions and sources in ``docs/polarization.md``.

Modules, one concern each:

* :mod:`~analysis.ferro.materials` — LGD coefficient sets and their registry, α1(T);
* :mod:`~analysis.ferro.tensors` — cubic Q, S, C tensors, compliances, reflection directions;
* :mod:`~analysis.ferro.energy` — forward maps P → e0, f_L, G, F;
* :mod:`~analysis.ferro.minimise` — per-voxel damped Newton, spontaneous and equilibrium P;
* :mod:`~analysis.ferro.inversion` — P from the full strain tensor or from reflections.

The public names of all of them are re-exported here: ``from analysis.ferro import invert_reflections``.
"""

from analysis.ferro.energy import (
                                   gibbs_energy_j_per_m3,
                                   helmholtz_energy_j_per_m3,
                                   landau_energy_j_per_m3,
                                   spontaneous_strain,
)
from analysis.ferro.inversion import (
                                   FullStrainInversion,
                                   ReflectionInversion,
                                   invert_full_strain,
                                   invert_reflections,
                                   polarization_from_strain_maps,
)
from analysis.ferro.materials import MATERIALS, LGDCoefficients, alpha1_j_m_per_c2, get_material, modulation_period_m
from analysis.ferro.minimise import InversionOptions, equilibrium_polarization, spontaneous_polarization_c_per_m2
from analysis.ferro.tensors import (
                                   compliance_voigt_per_pa,
                                   directional_compliance_per_pa,
                                   projected_strain,
                                   reflection_unit_vector,
)

__all__ = [
    "LGDCoefficients",
    "MATERIALS",
    "get_material",
    "InversionOptions",
    "FullStrainInversion",
    "ReflectionInversion",
    "alpha1_j_m_per_c2",
    "landau_energy_j_per_m3",
    "spontaneous_strain",
    "gibbs_energy_j_per_m3",
    "helmholtz_energy_j_per_m3",
    "compliance_voigt_per_pa",
    "directional_compliance_per_pa",
    "reflection_unit_vector",
    "projected_strain",
    "equilibrium_polarization",
    "spontaneous_polarization_c_per_m2",
    "invert_full_strain",
    "invert_reflections",
    "polarization_from_strain_maps",
    "modulation_period_m",
]
