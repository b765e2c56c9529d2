"""Polarization maps of a ferroelectric from the strain map of a results file (``pxm polarization RESULTS.h5
--material BaTiO3 --hkl 0 0 2``), and the material check that stops a wrong inversion.

The results file here holds the strain a (002) reconstruction of a BaTiO3 film with 90° c/a domains gives:
the Landau-Ginzburg-Devonshire spontaneous strain of each domain projected on the reflection, written with
the same writer as ``pxm reconstruct``. The inversion must give back |P| = Ps in both domains.

Run: ``python examples/09_polarization.py [WORK_DIR]`` (also tries 02's W results in WORK_DIR if present).
"""

# %%
import numpy as np
from _beamtime import work_dir

import pxm
from analysis.dataset import write_results
from analysis.ferro import equilibrium_polarization, projected_strain, spontaneous_strain
from analysis.strain import StrainMaps

work = work_dir()
work.mkdir(parents=True, exist_ok=True)

# %% Ps of BaTiO3 and the strain along (002) of c domains (P ∥ z) and a domains (P ∥ x)
ps = float(np.linalg.norm(equilibrium_polarization("BaTiO3", np.zeros((3, 3)), np.array([0.0, 0.0, 0.25]))))
eps = np.full((8, 12, 4), float(projected_strain(spontaneous_strain(np.array([0.0, 0.0, ps]), "BaTiO3"), (0, 0, 2))))
eps[:, 6:, :] = float(projected_strain(spontaneous_strain(np.array([ps, 0.0, 0.0]), "BaTiO3"), (0, 0, 2)))
maps = StrainMaps(eps_zz=eps, omega_x_rad=np.zeros_like(eps), omega_y_rad=np.zeros_like(eps),
                  amplitude=np.ones_like(eps), mask=np.ones(eps.shape, bool), voxel_size_m=(20e-9,) * 3,
                  origin_m=(0.0,) * 3, frame="sample")
results = work / "batio3-results.h5"
write_results(results, object=np.ones(eps.shape, np.complex64), probe=np.ones((4, 4), np.complex64),
              voxel_size_m=(20e-9,) * 3, strain=maps,
              provenance={"raw_uid": "0" * 32, "sample_name": "BaTiO3 film with c/a domains (model strain)"})
print(f"strain along (002): c domains {eps[0, 0, 0]:+.3e}, a domains {eps[0, -1, 0]:+.3e}; Ps = {ps:.4f} C/m²")

# %% Invert: one reflection fixes |P| but leaves symmetry-equivalent directions (reported, not guessed)
pol = pxm.polarization_maps(results, material="BaTiO3", hkl=(0, 0, 2))
if pol.warning:
    print(f"warning: {pol.warning}")
mag = pol.maps.magnitude_c_per_m2
print(f"wrote {pol.path}:{pol.group}: {pol.summary['voxels']} voxels")
print(f"|P| c domains {np.nanmean(mag[:, :6]):.4f}, a domains {np.nanmean(mag[:, 6:]):.4f} C/m²; "
      f"max | |P| - Ps | = {np.nanmax(np.abs(mag - ps)):.2e} C/m²")

# %% The material check: a tungsten (220) results file is not BaTiO3 (002), and pxm says so in one line
w_results = work / "results.h5"                         # example 02's reconstruction of the simulated W crystal
if w_results.is_file():
    try:
        pxm.polarization_maps(w_results, material="BaTiO3", hkl=(0, 0, 2))
    except pxm.PxmError as exc:
        print(f"refused: {exc.cli_line}")
