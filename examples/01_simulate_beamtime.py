"""Simulate a small beamtime into an embedded Tiled server and list its runs
(``pxm serve``, ``pxm demo``, ``pxm runs``).

Run: ``python examples/01_simulate_beamtime.py [WORK_DIR]`` (default: a new temporary folder). The other
examples reuse WORK_DIR's runs when given the same folder.
"""

# %%
import json

from _beamtime import SMALL, work_dir

import pxm

work = work_dir()

# %% A Tiled server with /raw and /processed; its web UI is at server.uri + "/ui/"
with pxm.serve(work / "data") as server:
    print(f"Tiled server: {server.uri}  (web UI {server.uri}/ui/)")

    # %% Alignment, a Siemens-star spiral and its forward ptychography (the probe file), then a 3 × 3 raster
    # × 17-angle Bragg-ptychography scan of 32 × 32 px frames. live=True would also reconstruct while it runs.
    beamtime = pxm.simulate_beamtime(server, **SMALL, live=False)
    print(f"probe file: {beamtime.probe_file}")
    (work / "beamtime.json").write_text(json.dumps({"uids": beamtime.uids, "probe_file": str(beamtime.probe_file)}))

    # %% What `pxm runs` lists
    client = server.client()
    for run in pxm.runs(client):
        print(f"{run.uid}  {run.plan_name:22s} {run.n_frames:4d} frames  {run.status}")

    # %% A run is a plain Tiled node: frames, positions and metadata
    bragg = client["raw"][beamtime.uids["bragg_ptychography"]]
    print(f"sample: {bragg.metadata['start']['sample']['name']}")
    print(f"bragg frames: {bragg['primary']['mpx_image'].shape[0]}")
