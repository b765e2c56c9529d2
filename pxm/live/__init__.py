"""Live reconstruction: Bluesky documents → frames → an online engine → previews and results in Tiled.

:class:`LiveReconstructionCallback` is an ``event_model.DocumentRouter``. Its document
methods only parse and enqueue (microseconds); one worker thread per run reads the frames
from the detector's HDF5 file (SWMR), assembles the (POSITION, ANGLE) grid, runs
:class:`analysis.bragg.engine.Reconstruction`, writes previews to ``/processed/<uid8>-live-NNN``
(``status: "running"``) and, after the stop document, the final result through
:func:`pxm.publication.publish_outcome` (``status: "complete"``, docs/tiled-layout.md). The same callback runs in the
RunEngine process, behind a 0MQ ``RemoteDispatcher`` (``pxm live-consumer``) or on replayed
documents (``pxm replay``). Design notes: ``docs/live-pipeline.md``.

The package's modules:

* :mod:`pxm.live.frames` — Frame assembly: the grid of measured frames and the usable (position, angle) subset.
* :mod:`pxm.live.options` — What the live pipeline reconstructs, when, and where it publishes; the recipes.
* :mod:`pxm.live.previews` — Live previews: the xarray-style preview data set and its keys under /processed.
* :mod:`pxm.live.session` — One run's live session: frames in, previews while it runs, the final result at stop.
* :mod:`pxm.live.router` — The document router: a Bluesky callback that hands each run's documents to its session.
* :mod:`pxm.live.replay` — Document sources (JSONL files, Tiled) and replay of a recorded run through the pipeline.
"""

from __future__ import annotations

from pxm.live.frames import FrameGrid, select_usable
from pxm.live.options import LiveOptions, live_recipe
from pxm.live.previews import PREVIEW_SPEC
from pxm.live.replay import NO_STOP_REASON, REPLAY_TIMEOUT_S, jsonl_documents, replay_documents, tiled_documents
from pxm.live.router import LiveReconstructionCallback

__all__ = [
    "FrameGrid",
    "LiveOptions",
    "LiveReconstructionCallback",
    "NO_STOP_REASON",
    "PREVIEW_SPEC",
    "REPLAY_TIMEOUT_S",
    "jsonl_documents",
    "live_recipe",
    "replay_documents",
    "select_usable",
    "tiled_documents",
]
