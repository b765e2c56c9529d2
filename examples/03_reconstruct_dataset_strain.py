"""Reconstruct a dataset file with the spiral's probe and look at the strain (``pxm reconstruct DATASET.h5
--probe-file PROBE.h5``); score it against the simulator's truth.

Run: ``python examples/03_reconstruct_dataset_strain.py [WORK_DIR]`` (reuses 01/02's files in WORK_DIR, else
simulates and exports first).
"""

# %%
import numpy as np
from _beamtime import SMALL, probe_file, small_beamtime, work_dir

import pxm
from pxm.demo import DemoOptions, demo_probe, demo_sample, truth_scores
from pxm.reconstruction import scan_of

work = work_dir()
scan = work / "scan.h5"
if not scan.is_file():                                  # example 02 exports it; else do it here
    server, uids = small_beamtime(work)
    with server:
        pxm.export(server.client(), uids["bragg_ptychography"], scan)

# %% The default recipe (the command's) scaled to 40 ePIE sweeps, started from the forward-ptychography probe
dataset = pxm.load_dataset(scan)
outcome = pxm.reconstruct(dataset, iterations=40, probe=probe_file(work))
print(f"probe: {outcome.probe_source}")
for line in outcome.quality_lines():
    print(line)

# %% Strain ε_zz along the Bragg vector, in the lit crystal (the strain map's mask)
strain = outcome.strain
assert strain is not None, outcome.postprocessing_errors
eps = np.asarray(strain.eps_zz)[np.asarray(strain.mask, bool)]
print(f"strain map {np.shape(strain.eps_zz)} voxels of {tuple(round(v * 1e9, 1) for v in strain.voxel_size_m)} nm; "
      f"lit voxels {eps.size}, mean ε_zz {eps.mean():+.2e}, spread {eps.std():.2e}")

# %% Against the truth the simulator used (the demo's sample and KB probe, at the scan's stage positions)
probe = demo_probe(DemoOptions(**SMALL), outcome.result.geometry.energy_kev)
scores = truth_scores(outcome, demo_sample(), probe, scan_of(dataset).stage_xyz_m)
print(f"strain RMSE vs truth: {scores['strain_rmse']:.3e} (true strain RMS {scores['truth_rms']:.3e}, "
      f"{scores['n_strain_voxels']} voxels); E_rho {scores['e_rho']:.3f}")
