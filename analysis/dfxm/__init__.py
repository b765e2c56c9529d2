"""FP-DFXM: Fourier-ptychographic dark-field X-ray microscopy (Carlsen et al., Opt. Express 2022; docs/fp-dfxm.md).

One room of the three sciences under ``analysis`` (Bragg ptychography, FP-DFXM,
ferroelectric polarization); it shares only ``analysis.xp`` and ``analysis.geometry`` with the
others and imports neither the Bragg engine nor ``analysis.ferro`` (import-linter contract in pyproject.toml).

Modules, one concern each:

* :mod:`~analysis.dfxm.geometry` — CRL objective, reflection, FP sampling (numbers and grids only);
* :mod:`~analysis.dfxm.metadata` — geometry ↔ JSON metadata (start documents, Tiled);
* :mod:`~analysis.dfxm.zernike` — Noll Zernike polynomials;
* :mod:`~analysis.dfxm.forward` — spectral overlap, spectrum shifts, pupil, the linear operator A;
* :mod:`~analysis.dfxm.vortices` — phase vortices (dislocation cores);
* :mod:`~analysis.dfxm.start` — the start object from the diversity scan;
* :mod:`~analysis.dfxm.epry` — Zernike-EPRY reconstruction (:func:`reconstruct_fp_dfxm`);
* :mod:`~analysis.dfxm.readout` — instrument misalignment from the pupil;
* :mod:`~analysis.dfxm.strain` — strain and tilt from the Bragg phase, phase-error metric.

The public names of all of them are re-exported here: ``from analysis.dfxm import FPOptions``.
"""

from analysis.dfxm.epry import FPOptions, FPResult, reconstruct_fp_dfxm
from analysis.dfxm.forward import (
                                   FPDFXMOperator,
                                   aberrated_pupil,
                                   check_overlap,
                                   pupil_amplitude,
                                   shifts_to_pixels,
                                   spectral_overlap,
)
from analysis.dfxm.geometry import (
                                   CLASSICAL_ELECTRON_RADIUS_M,
                                   CRLObjective,
                                   FPDFXMGeometry,
                                   Reflection,
                                   be_refractive_decrement,
)
from analysis.dfxm.metadata import (
                                   FP_GEOMETRY_KIND,
                                   fp_geometry_from_metadata,
                                   fp_geometry_to_metadata,
                                   reflection_from_metadata,
)
from analysis.dfxm.readout import (
                                   MisalignmentReadout,
                                   crl_tilt_from_pupil_center_rad,
                                   estimate_pupil_center_rad,
                                   misalignment_readout,
)
from analysis.dfxm.start import DiversityStart, initial_object_from_diversity
from analysis.dfxm.strain import StrainTiltMaps, phase_error_rms_rad, strain_tilt_from_phase
from analysis.dfxm.vortices import PhaseVortex, find_phase_vortices, vortex_phase_rad
from analysis.dfxm.zernike import ZERNIKE_NAMES, noll_to_nm, zernike, zernike_basis

__all__ = [
    # geometry, metadata, Zernikes
    "CLASSICAL_ELECTRON_RADIUS_M", "CRLObjective", "Reflection", "FPDFXMGeometry", "be_refractive_decrement",
    "FP_GEOMETRY_KIND", "fp_geometry_to_metadata", "fp_geometry_from_metadata", "reflection_from_metadata",
    "noll_to_nm", "zernike", "zernike_basis", "ZERNIKE_NAMES",
    # forward model
    "spectral_overlap", "check_overlap", "shifts_to_pixels", "pupil_amplitude", "aberrated_pupil", "FPDFXMOperator",
    # reconstruction
    "FPOptions", "FPResult", "reconstruct_fp_dfxm", "initial_object_from_diversity", "DiversityStart",
    "PhaseVortex", "find_phase_vortices", "vortex_phase_rad",
    # read-outs
    "estimate_pupil_center_rad", "MisalignmentReadout", "misalignment_readout", "crl_tilt_from_pupil_center_rad",
    "StrainTiltMaps", "strain_tilt_from_phase", "phase_error_rms_rad",
]
