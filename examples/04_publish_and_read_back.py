"""Reconstruct a run straight from Tiled, publish the result to /processed and read it back with the plain
Tiled client (``pxm reconstruct --run UID --publish``).

Run: ``python examples/04_publish_and_read_back.py [WORK_DIR]`` (reuses 01's runs in WORK_DIR, else simulates).
"""

# %%
import numpy as np
from _beamtime import small_beamtime, work_dir
from tiled.client import from_uri

import pxm

work = work_dir()
server, uids = small_beamtime(work)
with server:
    client = server.client()
    uid = uids["bragg_ptychography"]

    # %% A run of /raw is accepted as it is (exported in memory); "quick" takes seconds
    outcome = pxm.reconstruct(client["raw"][uid], recipe="quick")
    key = pxm.publish(outcome, client, raw_uid=uid)
    print(f"published /processed/{key}")

    # %% Anyone with the URL and key reads it with tiled alone (no pxm needed)
    result = from_uri(server.uri, api_key=server.config.api_key)["processed"][key]
    rho = result["object"][:]
    print(f"read back: object {rho.shape}, raw_uid {result.metadata['raw_uid'][:8]}, "
          f"arrays {sorted(result)[:6]}")
    print(f"max |published - computed| = {np.max(np.abs(rho - np.asarray(outcome.result.object))):.3g}")
