"""Put a run back into Tiled from the disk after an outage (``pxm recover``).

Every scan writes its documents twice: into Tiled and to DATA_DIR/documents/<uid>.jsonl, and its frames stay
in the detector's HDF5 files. Here Tiled loses the Bragg-ptychography run (its catalog entry is deleted, as
a server that died mid-scan would leave it missing); ``pxm.recover_runs`` finds it on disk and adds it again,
and a second call changes nothing (docs/reliability.md).

Run: ``python examples/07_recover_after_outage.py [WORK_DIR]`` (reuses 01's runs in WORK_DIR, else simulates).
"""

# %%
from _beamtime import small_beamtime, work_dir

import pxm

work = work_dir()
server, uids = small_beamtime(work)
uid = uids["bragg_ptychography"]
with server:
    client = server.client()
    frames_before = {r.uid: r.n_frames for r in pxm.runs(client)}[uid]

    # %% The outage: Tiled no longer has the run (the detector files and the JSONL copy stay on disk)
    client["raw"].delete_contents(uid, recursive=True, external_only=False)
    print(f"run {uid[:8]} in Tiled: {uid in client['raw']}")

    # %% What would be done, then do it (settle_s=0: no scan is writing now)
    for line in pxm.recover_runs(client, data_dir=work / "data", settle_s=0, dry_run=True).lines():
        print(f"dry run: {line}")
    report = pxm.recover_runs(client, data_dir=work / "data", settle_s=0)
    for line in report.lines():
        print(line)

    # %% The run is whole again, and recovering once more leaves everything alone
    frames_after = {r.uid: r.n_frames for r in pxm.runs(client)}[uid]
    print(f"frames of the run: {frames_before} before, {frames_after} after recovery")
    print(f"second pass: {pxm.recover_runs(client, data_dir=work / 'data', settle_s=0).tally}")
