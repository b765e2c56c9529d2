"""Ferroelectric domains by FP-DFXM: a BaTiO3 film with c/a domains, one FP-DFXM scan per domain variant, the
strain of each inverted to polarization (Landau-Ginzburg-Devonshire) and the maps published
(``pxm dfxm-demo --ferroelectric``; docs/polarization.md).

Run: ``python examples/12_ferroelectric.py [WORK_DIR]`` (its own server on WORK_DIR/fe-data).
"""

# %%
import numpy as np
from _beamtime import work_dir

import pxm

work = work_dir()

with pxm.serve(work / "fe-data") as server:
    client = server.client()

    # %% Two FP-DFXM scans (2θ set for the c and for the a variant), 3 x 3 diversity grid of 16 x 16 px frames;
    # each reconstructed (Zernike-EPRY), inverted with the one-reflection LGD model, merged and published
    fe = pxm.simulate_ferroelectric(server, n_px=16, grid=3, step_px=3, iterations=20)
    for variant, uid in fe.uids.items():
        run = client["raw"][uid]
        print(f"{variant} variant: run {uid[:8]}, {run['primary']['cam_image'].shape[0]} frames, "
              f"d_ref {run.metadata['start']['reflection']['d_spacing_m'] * 1e10:.4f} Å")

    # %% |P| against the simulator's LGD truth, and the c/a label of each inverted pixel
    res = fe.result
    mag = res.maps.magnitude_c_per_m2
    lit = np.isfinite(mag)
    fine = res.truth.strain_g.shape[0] // mag.shape[0]     # the simulator's grid is finer than the image's
    mag_true, label_true = res.truth.on_object_grid(fine)
    err = mag[lit] - mag_true[lit]
    print(f"{int(lit.sum())} of {lit.size} pixels inverted; |P| mean {mag[lit].mean():.4f} C/m²")
    print(f"|P| error vs truth: rms {np.sqrt(np.mean(err ** 2)):.2e} C/m²; c/a label right on "
          f"{np.mean(res.variant_label[lit] == label_true[lit]):.1%} of the inverted pixels")

    # %% The published maps, read back with the plain Tiled client
    node = client["processed"][fe.polarization_key]
    back = node["magnitude_c_per_m2"][:]
    print(f"published /processed/{fe.polarization_key} beside {len(node.metadata['raw_runs'])} raw runs; "
          f"max |published - computed| = {np.nanmax(np.abs(back - mag)):.3g} C/m²")
