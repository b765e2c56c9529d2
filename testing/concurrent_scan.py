"""One raster × rocking-curve scan into a running Tiled server, as a process of its own (concurrency tests).

``python -m testing.concurrent_scan --tiled-uri URL --data-dir D --raster N --angles M --seed S``
(API key in ``$PXM_TILED_API_KEY``) runs a real RunEngine with pxm's wiring (TiledWriter with
batch size 1 and the JSONL copy, :func:`pxm.runengine.make_run_engine`) over the real plan
(:func:`plans.raster_rocking_scan`) on simulated devices whose frames encode their own sequence number
(:class:`devices.testing.EncodingFrameSource`, ``frame[0, 5]``). It prints one JSON line: the run uid, the
number of frames and the seconds the scan took, so a test can check that every frame, and each exactly
once, reached the catalog.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.geometry import BraggGeometry
from devices.sim_beamline import make_sim_beamline
from devices.testing import EncodingFrameSource
from plans.bragg import raster_rocking_scan
from plans.patterns import raster_positions_um, rocking_angles_deg
from pxm.catalog import connect, ensure_layout
from pxm.recover import read_frames_so_far
from pxm.runengine import make_run_engine, run_uids

FRAME_SHAPE_PX = (16, 16)
"""Frame size of the concurrency scans (small: the test is about the catalog, not the detector)."""


def scan_geometry(n_angles: int) -> BraggGeometry:
    """A small W(220)-like geometry with ``n_angles`` rocking angles of 0.01°."""
    return BraggGeometry(energy_kev=8.0, d_spacing_m=1.119e-10, detector_distance_m=1.4,
                         n_rows_px=FRAME_SHAPE_PX[0], n_cols_px=FRAME_SHAPE_PX[1], n_angles=n_angles,
                         rocking_step_deg=0.01, bragg_angle_deg=43.9, hkl=(2, 2, 0))


def run_scan(tiled_uri: str, api_key: str, data_dir: Path, *, n_raster: int, n_angles: int, seed: int
             ) -> dict[str, object]:
    """Run one scan into ``tiled_uri``; return ``{"uid", "n_frames", "scan_s"}``.

    Parameters
    ----------
    tiled_uri, api_key
        The running server and its key.
    data_dir
        Data folder of that server: detector files go to ``data_dir/raw/scan-<seed>`` (inside the
        server's readable storage), the documents to ``data_dir/documents``.
    n_raster, n_angles
        Raster points per axis and rocking angles: ``n_raster**2 * n_angles`` frames.
    seed
        Raster jitter seed; also names this writer's detector folder.
    """
    raw, _ = ensure_layout(connect(tiled_uri, api_key))
    geom = scan_geometry(n_angles)
    source: Any = EncodingFrameSource(FRAME_SHAPE_PX)   # a FrameSource (its shape is typed loosely)
    bl = make_sim_beamline(source, geometry=geom,
                           data_dir=Path(data_dir) / "raw" / f"scan-{seed}", exposure_s=0.001,
                           simulate_exposure=False, seed=seed)
    wiring = make_run_engine(raw_catalog=raw, documents_dir=Path(data_dir) / "documents")
    positions = raster_positions_um(n_raster, n_raster, 0.1, jitter_fraction=0.1, seed=seed)
    angles = rocking_angles_deg(geom.theta_bragg_deg, geom.rocking_step_deg, n_angles)
    sample = {"name": f"concurrency writer {seed}", "material": "W", "hkl": [2, 2, 0], "simulated": True}
    t0 = time.perf_counter()
    (uid,) = run_uids(wiring.RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geom,
                                                    positions_um=positions, angles_deg=angles, sample=sample,
                                                    exposure_s=0.001, md={"purpose": "concurrency-test"})))
    return {"uid": uid, "n_frames": len(positions) * len(angles), "scan_s": time.perf_counter() - t0}


@dataclass(frozen=True)
class ConcurrencyOutcome:
    """What :func:`run_concurrent_scans` measured."""

    runs: tuple[dict, ...]
    """Each writer's summary line (uid, n_frames, scan_s)."""
    wall_s: float
    """From the first writer's start to the last writer's end."""
    n_reads: int
    """Complete polls of the reader (every run's ``primary`` table read while the scans ran)."""
    n_published: int
    """Arrays the live consumer wrote to ``/processed`` while the scans ran."""
    errors: tuple[str, ...]
    """Failures of the reader and the consumer (empty when the server served them all)."""
    live_array_errors: int = 0
    """Reads of a running scan's frames that failed (each is also in ``errors``)."""
    live_array_reads: int = 0
    """Reads of a running scan's frames (:func:`pxm.recover.read_frames_so_far`) that served its frames so far."""

    @property
    def n_frames(self) -> int:
        """Frames written by all writers together."""
        return sum(int(r["n_frames"]) for r in self.runs)

    @property
    def frames_per_s(self) -> float:
        """Frames per second into the catalog, all writers together."""
        return self.n_frames / self.wall_s


def run_concurrent_scans(tiled_uri: str, api_key: str, data_dir: Path, *, n_writers: int = 4, n_raster: int = 3,
                         n_angles: int = 5, timeout_s: float = 240.0) -> ConcurrencyOutcome:
    """Run ``n_writers`` scan processes at once into one server, with a reader and a live consumer polling.

    The reader lists ``/raw`` and reads every new run's ``primary`` table and frames again and again; the consumer
    publishes a small array to ``/processed`` on each of its polls (what the live reconstruction does).
    Both run in threads of this process until the writers end. Raises RuntimeError naming the writer
    and its stderr when one fails or outlives ``timeout_s``.
    """
    import subprocess
    import threading

    raw, processed = ensure_layout(connect(tiled_uri, api_key))
    env = {**os.environ, "PXM_TILED_API_KEY": api_key}
    done = threading.Event()
    errors: list[str] = []
    counts = {"reads": 0, "published": 0, "live_array_errors": 0, "live_array_reads": 0}

    def read_run(uid: str) -> None:
        run = raw[uid]
        if "primary" not in run:
            return
        if run.metadata.get("stop") is not None:
            run["primary"].read()                  # a finished run reads back whole
            return
        # A running scan: its event rows so far, each once, and its frames so far, each once and in order
        # (read_frames_so_far: an explicit slice of the frames the client knows; a bare [:] can meet
        # Tiled's HTTP 500 while TiledWriter grows the array, docs/reliability.md).
        stream = run["primary"].base
        if "internal" not in stream:               # no event yet
            return
        seq = np.asarray(stream["internal"].read()["seq_num"])
        if len(np.unique(seq)) != len(seq):
            errors.append(f"reader: run {uid} shows duplicated rows while running: {seq.tolist()}")
        try:
            frames = read_frames_so_far(stream["mpx_image"])
        except Exception as exc:                   # noqa: BLE001 - every failure is a finding
            counts["live_array_errors"] += 1
            errors.append(f"reader: frames of running run {uid}: {exc!r}"[:300])
            return
        counts["live_array_reads"] += 1
        calls = np.asarray(frames[:, 0, 5], dtype=np.int64)
        if not np.array_equal(calls, np.arange(1, len(calls) + 1)):
            errors.append(f"reader: running run {uid} served frames {calls.tolist()}")

    existing = set(raw)                            # runs from before (a shared server): not polled

    def reader() -> None:
        while not done.is_set():
            try:
                for uid in [u for u in raw if u not in existing]:
                    read_run(uid)
                counts["reads"] += 1
            except Exception as exc:               # noqa: BLE001 - every failure is a finding
                errors.append(f"reader: {exc!r}"[:300])
            done.wait(0.2)

    def consumer() -> None:
        while not done.is_set():
            try:
                processed.write_array(np.full((8, 8), counts["published"], dtype=np.float32),
                                      metadata={"purpose": "concurrency-test preview"})
                counts["published"] += 1
            except Exception as exc:               # noqa: BLE001
                errors.append(f"consumer: {exc!r}"[:300])
            done.wait(0.5)

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=consumer, daemon=True)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "testing.concurrent_scan", "--tiled-uri", tiled_uri,
                               "--data-dir", str(data_dir), "--raster", str(n_raster), "--angles", str(n_angles),
                               "--seed", str(100 + i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(n_writers)]
    runs = []
    try:
        for i, proc in enumerate(procs):
            remaining = max(1.0, timeout_s - (time.perf_counter() - t0))
            try:
                out, err = proc.communicate(timeout=remaining)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"writer {i} did not finish within {timeout_s:.0f} s") from None
            if proc.returncode != 0:
                raise RuntimeError(f"writer {i} exited {proc.returncode}: {err.strip()[-1500:]}")
            runs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        wall_s = time.perf_counter() - t0
        done.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for t in threads:
            t.join(timeout=30)
    return ConcurrencyOutcome(runs=tuple(runs), wall_s=wall_s, n_reads=counts["reads"],
                              n_published=counts["published"], errors=tuple(errors),
                              live_array_errors=counts["live_array_errors"],
                              live_array_reads=counts["live_array_reads"])


def check_run_complete(raw: Any, uid: str, n_frames: int) -> None:
    """Assert run ``uid`` holds each of its ``n_frames`` frames exactly once, in order, and a success stop.

    Checks the ``primary`` table (``run["primary"].read()``: one row per frame, ``seq_num`` 1..n), the
    frames themselves (the encoded sequence ``frame[0, 5]`` is 1..n, so no frame is lost, repeated or
    swapped between runs) and the stop document (``exit_status`` success, ``num_events`` n).
    """
    run = raw[uid]
    run["primary"].read()                          # the whole stream reads back (raises if it does not)
    seq = np.asarray(run["primary"].base["internal"].read()["seq_num"])
    assert len(seq) == n_frames, f"run {uid}: {len(seq)} event rows for {n_frames} frames"
    assert np.array_equal(np.sort(seq), np.arange(1, n_frames + 1)), f"run {uid}: seq_num {seq.tolist()}"
    frames = run["primary"]["mpx_image"][:]
    assert frames.shape[0] == n_frames, f"run {uid}: frames {frames.shape}"
    calls = np.asarray(frames[:, 0, 5], dtype=np.int64)
    assert np.array_equal(calls, np.arange(1, n_frames + 1)), f"run {uid}: frame order {calls.tolist()}"
    stop = run.metadata["stop"]
    assert stop is not None and stop["exit_status"] == "success", f"run {uid}: stop {stop}"
    assert stop["num_events"]["primary"] == n_frames, f"run {uid}: stop num_events {stop['num_events']}"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: run one scan and print its JSON summary line."""
    p = argparse.ArgumentParser(prog="python -m testing.concurrent_scan")
    p.add_argument("--tiled-uri", required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--raster", type=int, default=4)
    p.add_argument("--angles", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = run_scan(args.tiled_uri, os.environ["PXM_TILED_API_KEY"], args.data_dir, n_raster=args.raster,
                   n_angles=args.angles, seed=args.seed)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
