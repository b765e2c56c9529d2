"""Fourier-ptychographic dark-field X-ray microscopy: a simulated FP-DFXM scan into Tiled, its Zernike-EPRY
reconstruction and publication (``pxm dfxm-demo``, ``pxm fp-reconstruct --run UID``).

Run: ``python examples/08_fp_dfxm.py [WORK_DIR]`` (its own server on WORK_DIR/fp-data).
"""

# %%
import numpy as np
from _beamtime import work_dir

import pxm

work = work_dir()
TRUE_ZERNIKE_RAD = {4: 0.4, 6: 0.3, 11: 0.3}
"""The simulated objective's aberrations (Noll index: rad; pxm.dfxm.DFXMDemoOptions)."""

with pxm.serve(work / "fp-data") as server:
    client = server.client()

    # %% A BaTiO3 (002) film imaged through an aberrated CRL; 5 x 5 rocking/rolling diversity of 32 x 32 px frames
    uid = pxm.simulate_fp_dfxm(server)
    run = client["raw"][uid]
    print(f"run {uid[:8]}: plan {run.metadata['start']['plan_name']}, frames {run['primary']['cam_image'].shape}")

    # %% Reconstruct object and pupil (Zernike-EPRY), read out the misalignment, publish to /processed
    fp = pxm.fp_reconstruct(client, uid, iterations=100)
    out = fp.result
    print(f"reconstructed in {out.elapsed_s:.1f} s, final error {out.result.error_history[-1]:.4g}; "
          f"published /processed/{fp.published_key}")
    print("Zernikes (rad, true -> found): " + ", ".join(
        f"Z{j} {TRUE_ZERNIKE_RAD.get(j, 0.0):+.2f} -> {c:+.2f}" for j, c in out.result.zernike_rad.items()))
    worst = max(abs(c - TRUE_ZERNIKE_RAD.get(j, 0.0)) for j, c in out.result.zernike_rad.items())
    print(f"largest Zernike error: {worst:.3f} rad")
    print(f"defocus {out.misalignment.defocus_m * 1e6:+.2f} µm")

    # %% The published result, read back with the plain Tiled client
    node = client["processed"][fp.published_key]
    strain = node["strain"][:]
    print(f"published strain map {strain.shape}: {int(np.isfinite(strain).sum())} lit pixels")
