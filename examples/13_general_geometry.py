"""Bragg ptychography in a general diffractometer geometry: an asymmetric out-of-plane reflection on a six-circle
diffractometer (η rocks; φ, ν, δ set), through the RunEngine into Tiled, exported, reconstructed on the
geometry's sheared grid and scored against the simulator's truth (``pxm demo --geometry NAME``; docs/geometry.md).

Run: ``python examples/13_general_geometry.py [WORK_DIR]`` (its own server on WORK_DIR/geometry-data).
"""

# %%
from _beamtime import work_dir

import pxm

work = work_dir()

with pxm.serve(work / "geometry-data") as server:
    client = server.client()

    # %% A strained (2e-4), tilted slab; 3 x 3 raster x 10 η angles of 20 x 20 px frames at the exact q of each pixel
    beamtime = pxm.simulate_general_geometry(server, geometry="asymmetric-out-of-plane")
    for line in beamtime.lines():                       # what `pxm demo --geometry NAME` prints at the end
        print(line)

    # %% The run in Tiled: the circles the plan drove and read back, and its frames
    run = client["raw"][beamtime.uid]
    angles = run.metadata["start"]["diffractometer_angles"]
    print(f"run {beamtime.uid[:8]}: rocking circle {angles['rocking_circle']}, read back (deg) {angles['read_deg']}, "
          f"frames {run['primary']['mpx_image'].shape}")

    # %% The verdict
    truth = beamtime.summary["truth"]["strain"]
    print(f"strain {beamtime.summary['strain_median']:.3e} found for {truth:.1e} true; RMSE {beamtime.strain_rmse:.2e} "
          f"in {beamtime.summary['n_voxels']} lit voxels")
