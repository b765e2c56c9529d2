"""Replay a recorded run through the live reconstruction and keep its final result (``pxm replay --jsonl``).

Every scan leaves its documents in DATA_DIR/documents/<uid>.jsonl; replaying one reproduces what the
live pipeline did during the scan (docs/decisions/0005-live-replay-determinism.md).

Run: ``python examples/05_replay_recorded_run.py [WORK_DIR]`` (reuses 01's runs in WORK_DIR, else simulates).
"""

# %%
from _beamtime import small_beamtime, work_dir

import pxm

work = work_dir()
server, uids = small_beamtime(work)
server.stop()                                           # a JSONL replay needs no server
recording = work / "data" / "documents" / f"{uids['bragg_ptychography']}.jsonl"

# %% The live recipe: 6 ePIE sweeps (the command's default); -o writes the final result
replayed = pxm.replay(recording, output=work / "replayed.h5")
for s in replayed.summaries:
    m = s["metrics"]
    print(f"run {s['uid'][:8]}: {m['n_frames_used']} of {m['n_frames_measured']} frames used, "
          f"{m['n_iterations']} iterations, final cost {m['final_cost']:.4g}")
assert replayed.written is not None
print(f"wrote {replayed.written.results}")
