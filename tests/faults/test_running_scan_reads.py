"""A reader polling a *running* scan's frames gets the frames so far, never an HTTP 500 (issue 15).

One scan process (real RunEngine, TiledWriter batch size 1) writes into the session's real ``tiled serve``
process while a reader polls the run's ``mpx_image`` with :func:`pxm.recover.read_frames_so_far` every
0.2 s. Each read must serve the frames announced so far, each once and in order (the frames encode their
sequence number), and the server's log must show no 500 for the run. A bare ``[:]`` raced TiledWriter's
shape updates and met "The shape expected from the structure … does not match the actual data shape"
(HTTP 500, retried in vain by the client): docs/reliability.md, "Many writers".
"""

from __future__ import annotations

from pxm.catalog import ensure_layout
from testing.concurrent_scan import check_run_complete, run_concurrent_scans

N_RASTER, N_ANGLES = 3, 5                  # 45 frames: the reader gets several polls of the running scan


def test_polling_a_running_scans_frames_serves_the_frames_so_far_without_a_500(tiled_service):
    key = tiled_service.config.api_key
    log_before = tiled_service.log_path.read_text(errors="replace")
    outcome = run_concurrent_scans(tiled_service.uri, key, tiled_service.config.data_dir, n_writers=1,
                                   n_raster=N_RASTER, n_angles=N_ANGLES, timeout_s=240)
    assert outcome.errors == (), outcome.errors[:5]       # includes any failed or inconsistent read
    assert outcome.live_array_errors == 0
    assert outcome.live_array_reads >= 3, outcome          # the reader really read the scan while it ran
    (run,) = outcome.runs
    raw, _ = ensure_layout(tiled_service.client())
    check_run_complete(raw, run["uid"], N_RASTER * N_RASTER * N_ANGLES)
    new_log = tiled_service.log_path.read_text(errors="replace")[len(log_before):]
    errors = [line for line in new_log.splitlines() if run["uid"] in line and "500 Internal Server Error" in line]
    assert errors == [], errors[:3]
