"""Export a run from Tiled to a dataset file, reconstruct it and write the results file
(``pxm export``, ``pxm reconstruct DATASET.h5 -o RESULTS.h5``).

Run: ``python examples/02_export_and_reconstruct.py [WORK_DIR]`` (reuses 01's runs in WORK_DIR, else simulates).
"""

# %%
from _beamtime import small_beamtime, work_dir

import pxm

work = work_dir()
server, uids = small_beamtime(work)

# %% Export the Bragg-ptychography run: frames, angles, positions, mask, geometry, sample
with server:
    client = server.client()
    dataset = pxm.export(client, uids["bragg_ptychography"], work / "scan.h5")
print(f"exported {work / 'scan.h5'}: frames {tuple(dataset.frames.shape)}")

# %% Read it back (any dataset file: exported, or imported from CXI/ptypy) and reconstruct.
# recipe="quick" runs in seconds; leave the recipe out for the command's default (200 ePIE + 100 ML sweeps).
dataset = pxm.load_dataset(work / "scan.h5")
outcome = pxm.reconstruct(dataset, recipe="quick")
print(f"reconstructed: {outcome.metrics['n_iterations']} iterations, final cost {outcome.metrics['final_cost']:.4g}")
for line in outcome.quality_lines():
    print(line)

# %% The results file of `pxm reconstruct -o` (docs/dataset-format.md §2)
written = pxm.write_results(outcome, work / "results.h5")
print(f"wrote {written.results}; post-processing errors: {written.errors or 'none'}")
