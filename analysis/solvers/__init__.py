"""Bragg-ptychography solvers: ``step(state, data, *, op, options)`` functions (spec 2–3)."""

from analysis.solvers import epie, ml, support
from analysis.solvers.model import BraggData, BraggModel, BraggState, normalise_scale
from analysis.solvers.options import EpieOptions, MLOptions

__all__ = ["epie", "ml", "support", "BraggData", "BraggModel", "BraggState", "normalise_scale",
           "EpieOptions", "MLOptions"]
