"""Bragg ptychography, end to end: the validated scan, the one reconstruction pipeline, its outcome, resolution.

* :class:`~analysis.bragg.scan.BraggScan` — frames, mask, stage positions, rocking offsets, frame validity;
* :func:`~analysis.bragg.pipeline.reconstruct` — engine, strain, metrics, optional FSC/PRTF → :class:`Outcome`;
* :class:`~analysis.bragg.outcome.Outcome` — written to the results file, published, drawn;
* :mod:`analysis.bragg.resolution` — half-data FSC and PRTF.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analysis.bragg.outcome import Outcome, write_outcome
    from analysis.bragg.pipeline import PipelineOptions, reconstruct
    from analysis.bragg.scan import BraggScan

# Loaded on first use (PEP 562), so that importing one engine module (analysis.bragg.operators, ...)
# does not run the whole pipeline: shared modules such as analysis.dataset import engine pieces.
_LAZY = {
    "BraggScan": "analysis.bragg.scan",
    "Outcome": "analysis.bragg.outcome",
    "PipelineOptions": "analysis.bragg.pipeline",
    "reconstruct": "analysis.bragg.pipeline",
    "write_outcome": "analysis.bragg.outcome",
}


def __getattr__(name: str) -> object:
    """The names above, imported from their module when first asked for."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BraggScan", "Outcome", "PipelineOptions", "reconstruct", "write_outcome"]
