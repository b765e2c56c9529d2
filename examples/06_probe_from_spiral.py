"""Retrieve the beam's probe from the Siemens-star spiral run by forward ptychography
(``pxm probe RUN_UID -o PROBE.h5``).

The probe file is what ``pxm reconstruct --probe-file`` (and ``pxm.reconstruct(..., probe=...)``) start from.

Run: ``python examples/06_probe_from_spiral.py [WORK_DIR]`` (reuses 01's runs in WORK_DIR, else simulates).
"""

# %%
import numpy as np
from _beamtime import SMALL, probe_file, small_beamtime, work_dir

import pxm
from analysis.bragg.probe_file import read_probe_file

work = work_dir()
server, uids = small_beamtime(work)
with server:
    client = server.client()

    # %% Forward ptychography (ePIE) of the spiral: as many sweeps as the beamtime used for its own probe file
    spiral = pxm.probe(client, uids["forward_ptychography"], output=work / "probe-api.h5",
                       iterations=SMALL["probe_iterations"])
print(f"wrote {spiral.path}: probe {spiral.probe.shape}, pixel {spiral.pixel_size_m * 1e9:.2f} nm, "
      f"error {spiral.error_history[0]:.4g} -> {spiral.error_history[-1]:.4g} in {len(spiral.error_history)} sweeps")

# %% Where the beam is: intensity-weighted centre and RMS width of the retrieved probe (pixels from the centre)
intensity = np.abs(spiral.probe) ** 2
rows, cols = np.indices(intensity.shape)
centre = [float((intensity * a).sum() / intensity.sum()) for a in (rows, cols)]
width_nm = [float(np.sqrt((intensity * (a - c) ** 2).sum() / intensity.sum())) * spiral.pixel_size_m * 1e9
            for a, c in zip((rows, cols), centre, strict=True)]
print(f"beam centre {centre[0] - intensity.shape[0] // 2:+.1f}, {centre[1] - intensity.shape[1] // 2:+.1f} px; "
      f"RMS width {width_nm[0]:.0f} x {width_nm[1]:.0f} nm (V x H)")

# %% The same code as the beamtime's own probe file (pxm demo): the same probe, to the last bit
same = read_probe_file(probe_file(work)).probe
print(f"max |probe - beamtime's probe file| = {np.max(np.abs(spiral.probe - same)):.3g}")
