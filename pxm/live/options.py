"""What the live pipeline reconstructs, when, and where it publishes; the recipes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.bragg.engine import Recipe, SupportSchedule
from analysis.geometry import DetectorLayout

BRAGG_PLAN = "raster_rocking_scan"


def live_recipe(n_epie_iterations: int = 6, n_ml_iterations: int = 0, *, thickness_m: float = 0.5e-6) -> Recipe:
    """Short fixed-slab recipe (no shrink-wrap) for previews and the demo's final result."""
    sched = SupportSchedule(thickness_schedule_m=((0, thickness_m),), shrinkwrap_start_iter=None)
    return Recipe(n_epie_iterations=n_epie_iterations, n_ml_iterations=n_ml_iterations, support=sched)


@dataclass(frozen=True, kw_only=True)
class LiveOptions:
    """What the live pipeline reconstructs, when, and where it publishes."""

    recipe: Recipe = field(default_factory=live_recipe)
    """Recipe of the final reconstruction (run from scratch on all usable frames, so replay reproduces it)."""
    preview_iterations: int = 2
    """Engine iterations between two looks at the queue while previewing."""
    start_fraction: float = 0.25
    """Start the live engine once this fraction of all frames is usable (see :func:`select_usable`)."""
    min_angles: int = 3
    """...and, for angle-layer data, at least this many complete rocking angles at every position."""
    min_positions: int = 2
    """...and, for complete-position data, at least this many positions with every angle."""
    rebuild_growth: float = 0.25
    """After a failed engine start, retry once the usable frames grew by this fraction (a running
    engine takes every new frame in place, :meth:`analysis.bragg.engine.Reconstruction.update_frames`)."""
    preview_interval_s: float = 1.0
    """Least time between two preview writes."""
    publish_previews: bool = True
    """Write previews to Tiled while the scan runs."""
    reconstruct_live: bool = True
    """Run the engine before the stop document (False: assemble only, reconstruct at stop)."""
    final: bool = True
    """Reconstruct and publish the final result after the stop document."""
    resolution: bool = False
    """At stop, also reconstruct two binomial half-data sets and publish their FSC resolutions
    (docs/dataset-format.md, Half-data resolution; three times the final reconstruction time). The PRTF needs K ≥ 6
    more runs from random
    starts: ``pxm reconstruct --prtf K`` on the run after the beamtime."""
    backend: str = "auto"
    """Array backend of the live and final engines: ``"auto"`` (CuPy when a GPU is usable, else NumPy;
    ``PXM_BACKEND`` overrides it), ``"numpy"`` or ``"cupy"`` (:func:`analysis.xp.backend`)."""
    frame_timeout_s: float = 30.0
    """At stop, wait this long for announced frames to appear in the HDF5 file before masking them."""
    position_tolerance_um: float = 0.02
    """Event read-backs farther than this from every pattern position are rejected (reported)."""
    angle_tolerance_fraction: float = 0.25
    """...and farther than this fraction of a rocking step from every pattern angle."""
    strain_remove_ramp: bool = False
    """Remove a linear phase ramp before the strain (False keeps a uniform strain visible)."""
    initial_probe_p2: np.ndarray | None = field(default=None, compare=False, repr=False)
    """(N2, N3) complex start of the probe section P2 (e.g. a known probe); None: the model probe of
    :func:`pxm.reconstruction.initial_probe`."""
    initial_probe_file: Path | None = None
    """Probe file (``pxm probe``'s forward ptychography of a spiral run, or any file ``pxm reconstruct
    --probe-file`` takes) whose probe starts the live and final engines, resampled onto P2 as ``pxm
    reconstruct`` does; the probe source (results provenance) names the file and its spiral run's uid.
    Used when ``initial_probe_p2`` is None."""
    use_na_mask: bool = True
    """Constrain the probe to the seed's KB NA during ePIE (the live pipeline serves the seed's instrument;
    this holds for ``initial_probe_p2`` too). False: no mask, unless ``probe_na_mask_rad`` gives one."""
    probe_na_mask_rad: tuple[float, float] | None = None
    """(V, H) NA of the ePIE probe mask (rad) in place of the KB NA, e.g. for other optics."""
    detector_layout: DetectorLayout = field(default_factory=DetectorLayout)
    """Full-detector chip layout; the ROI's chip gaps are masked."""
    figures_dir: Path | None = None
    """Write PNG figures of the final result here."""
    sample_support: bool = False
    """Resolve the slab thickness and tilt from the start document's ``sample`` as ``pxm reconstruct`` does
    (:func:`analysis.bragg.recipes.resolve_sample`; ``recipe``'s schedule scaled to ``sample.thickness_m``, the tilt
    from ``tilt_x_deg``/``tilt_y_deg``). False (default): ``recipe`` as given (``live_recipe``: a fixed 0.5 µm
    slab)."""

    def __post_init__(self) -> None:
        if not 0 < self.start_fraction <= 1 or self.rebuild_growth <= 0:
            raise ValueError("LiveOptions: start_fraction must be in (0, 1] and rebuild_growth > 0")
        if self.preview_iterations < 1 or self.min_angles < 1 or self.min_positions < 1:
            raise ValueError("LiveOptions: preview_iterations, min_angles and min_positions must be >= 1")
        if self.backend not in ("auto", "numpy", "cupy"):
            raise ValueError(f"LiveOptions.backend: {self.backend!r}, expected 'auto', 'numpy' or 'cupy'")


def session_recipe(start: Mapping[str, Any], options: LiveOptions) -> Recipe:
    """The recipe of one run: ``options.recipe``, resolved against ``start["sample"]`` when ``sample_support``.

    Parameters
    ----------
    start
        The run's start document.
    options
        The live options.

    Returns
    -------
    Recipe
        The recipe the live and final engines of this run use (``sources`` say where the support came from).
    """
    if not options.sample_support:
        return options.recipe
    from analysis.bragg.recipes import resolve_sample

    return resolve_sample(options.recipe, recipe_name="live", sample=start.get("sample") or {})
