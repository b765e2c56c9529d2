"""Bragg-ptychography solvers: ``step(state, data, *, op, options)`` functions
(seed Eqs 1–13; Thibault & Guizar-Sicairos 2012).
"""

from analysis.bragg.solvers import dm, epie, ml, support
from analysis.bragg.solvers.model import BraggData, BraggModel, BraggState, normalise_scale
from analysis.bragg.solvers.options import EpieOptions, Execution, MLOptions

__all__ = ["dm", "epie", "ml", "support", "BraggData", "BraggModel", "BraggState", "normalise_scale",
           "EpieOptions", "Execution", "MLOptions"]
