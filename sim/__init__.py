"""pxm.sim — physics behind the simulated devices (docs/decisions/0001-rooms.md).

Crystal sample ground truth (:mod:`sim.sample`), KB probe and Siemens star
(:mod:`sim.probe`), and FrameSource implementations (:mod:`sim.diffraction`).
Imports numpy/scipy and ``analysis.geometry`` only.
"""

from sim.diffraction import CLASSICAL_ELECTRON_RADIUS_M, BraggSimulator, TransmissionSimulator
from sim.probe import KBProbe, SiemensStar, probe_axes
from sim.sample import (
    CrystalSample,
    Dislocation,
    GrainBoundary,
    HomogeneousDisplacement,
    ImplantedLayer,
    Slab,
    SurfaceLayers,
    seed_sample,
    tilted_sample,
    uniform_strain_sample,
)

__all__ = [
    "BraggSimulator", "TransmissionSimulator", "CLASSICAL_ELECTRON_RADIUS_M",
    "KBProbe", "SiemensStar", "probe_axes",
    "CrystalSample", "Slab", "GrainBoundary", "HomogeneousDisplacement", "ImplantedLayer",
    "SurfaceLayers", "Dislocation", "seed_sample", "uniform_strain_sample", "tilted_sample",
]
