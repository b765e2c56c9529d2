"""Bragg-ptychography solvers: ``step(state, data, *, op, options)`` functions
(seed Eqs 1–13; Thibault & Guizar-Sicairos 2012).
"""

from analysis.solvers import dm, epie, ml, support
from analysis.solvers.model import BraggData, BraggModel, BraggState, normalise_scale
from analysis.solvers.options import EpieOptions, Execution, MLOptions

__all__ = ["dm", "epie", "ml", "support", "BraggData", "BraggModel", "BraggState", "normalise_scale",
           "EpieOptions", "Execution", "MLOptions"]
