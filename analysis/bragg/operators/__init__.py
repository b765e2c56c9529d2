"""Linear operators of 3D Bragg ptychography (docs/geometry.md, Operators)."""

from analysis.bragg.operators.fourier import FoldedFourier3D, ShearedFourier3D, shear_per_index_rad
from analysis.bragg.operators.probe import (
    ProbeExtrusion,
    SubpixelShift2D,
    apply_fourier_mask_2d,
    extrusion_slope_px,
    probe_na_mask,
    probe_width_along_p1_m,
)
from analysis.bragg.operators.scan import (
    ObjectPlacement,
    ViewGrid,
    object_placement,
    positions_to_voxels,
    split_probe_position,
    view_grid,
)

__all__ = [
    "FoldedFourier3D", "ShearedFourier3D", "shear_per_index_rad", "ProbeExtrusion", "SubpixelShift2D",
    "apply_fourier_mask_2d", "extrusion_slope_px", "probe_na_mask", "probe_width_along_p1_m",
    "ObjectPlacement", "ViewGrid", "object_placement", "positions_to_voxels", "split_probe_position", "view_grid",
]
