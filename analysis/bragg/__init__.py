"""Bragg ptychography, end to end: the validated scan, the one reconstruction pipeline, its outcome, resolution.

* :class:`~analysis.bragg.scan.BraggScan` — frames, mask, stage positions, rocking offsets, frame validity;
* :func:`~analysis.bragg.pipeline.reconstruct` — engine, strain, metrics, optional FSC/PRTF → :class:`Outcome`;
* :class:`~analysis.bragg.outcome.Outcome` — written to the results file, published, drawn;
* :mod:`analysis.bragg.resolution` — half-data FSC and PRTF.
"""

from analysis.bragg.outcome import Outcome, write_outcome
from analysis.bragg.pipeline import PipelineOptions, reconstruct
from analysis.bragg.scan import BraggScan

__all__ = ["BraggScan", "Outcome", "PipelineOptions", "reconstruct", "write_outcome"]
