"""Exchange formats: a dataset file as NeXus/CXI for other codes and back, a results file as VTK for ParaView
(``pxm export-cxi``, ``pxm import-cxi``, ``pxm export-vtk``; docs/interop.md).

Run: ``python examples/10_exchange_formats.py [WORK_DIR]`` (uses 02's scan.h5 and results.h5 in WORK_DIR, else
simulates, exports and reconstructs first).
"""

# %%
import numpy as np
from _beamtime import small_beamtime, work_dir

import pxm

work = work_dir()
scan, results = work / "scan.h5", work / "results.h5"
if not (scan.is_file() and results.is_file()):          # example 02 writes both; else make them here
    server, uids = small_beamtime(work)
    with server:
        pxm.export(server.client(), uids["bragg_ptychography"], scan)
    pxm.write_results(pxm.reconstruct(scan, recipe="quick"), results)

# %% Raw scan → NXcxi_ptycho (frames, positions, angles, detector and source in SI units), checked on writing
cxi = pxm.export_cxi(scan, work / "scan.cxi")
print(f"{cxi.lines()[0]} ({cxi.path.stat().st_size / 1e6:.1f} MB)")

# %% ... and back: what another facility's CXI file would give, ready for pxm.reconstruct
imported = pxm.import_cxi(cxi.path, work / "scan-from-cxi.h5")
print("\n".join(imported.lines()))                      # what was read, and how any gap was filled
back = imported.dataset
original = pxm.load_dataset(scan)
print(f"imported: frames {tuple(back.frames.shape)}, {back.geometry.n_angles} angles, "
      f"{back.geometry.energy_kev:.4g} keV")
print(f"round trip: max |frames - original| = {np.max(np.abs(back.frames - original.frames)):.3g}, "
      f"same geometry: {back.geometry == original.geometry}")

# %% Results → VTK image data in the sample frame (object amplitude/phase, strain, tilts) for ParaView
vtk = pxm.export_vtk(results, work / "results.vti")
for line in vtk.lines():
    print(line)
