"""``pxm reconstruct``'s recipe options: preset, recipe file, support, probe, U, and the sample's defaults.

The recipe is built in this order, each step overriding the one before (docs/recipes.md):
``--recipe`` preset → ``--recipe-file`` (TOML) → the options below → ``--iterations``/``--ml`` (the whole
schedule scaled) → the sample (:func:`analysis.bragg.recipes.resolve_sample`: ``/sample``, else the data).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:                                   # heavy imports stay inside the functions: `pxm --help` is fast
    from analysis.bragg.engine import Recipe
    from analysis.bragg.recipes import GivenSupport
    from analysis.dataset import BraggDataset, DatasetShare

__all__ = ["PRESET_NAMES", "add_recipe_arguments", "recipe_from_args", "resolve_for_dataset", "one_line_warnings"]

PRESET_NAMES = ("default", "seed", "quick", "baseline", "thin-layer")
"""The names of :data:`analysis.bragg.recipes.PRESETS`, for the parser."""

ILLUMINATED_FRACTION = 0.01
"""``--support illuminated``: S = [Σ_j |P_j|² ≥ this fraction of its maximum] (kind "none")."""


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The recipe options of ``pxm reconstruct``."""
    p.add_argument("--recipe", choices=PRESET_NAMES, default="default",
                   help="default: the seed's schedule scaled to 200 ePIE + 100 ML with the ML smoothness prior 0.01, "
                        "whose last state stays its best on simulated data (docs/benchmarks.md, quality by recipe); "
                        "seed: the seed's literal schedule (1000 ePIE + 500 ML, no prior; hours); baseline: fixed "
                        "probe, U = 1; quick: seconds (CI); thin-layer: a thin layer with the known probe "
                        "(--probe-file), difference map on the detector lattice, y line scans (docs/recipes.md)")
    p.add_argument("--recipe-file", default=None, metavar="F.toml",
                   help="TOML file setting any recipe option over the --recipe preset (tables epie, ml, support, "
                        "free; docs/recipes.md); unknown keys are refused")
    p.add_argument("--iterations", type=int, default=None, metavar="N",
                   help="ePIE sweeps: the whole schedule (thickness steps, shrink-wrap, probe start, NA mask, ML "
                        "count) is scaled by N / the recipe's sweeps")
    p.add_argument("--ml", type=int, default=None, metavar="M", help="ML iterations (overrides the scaled count)")
    p.add_argument("--support", choices=("slab", "none", "illuminated"), default=None,
                   help="thickness support: a tilted slab (default), none (the whole object grid) or the "
                        f"illuminated region (Σ|P_j|² ≥ {ILLUMINATED_FRACTION:g} of its maximum)")
    p.add_argument("--thickness-m", type=float, default=None, metavar="T",
                   help="crystal thickness (m): the slab schedule is scaled to it and the sampling check uses it "
                        "(default: /sample thickness_m, else estimated from the data)")
    p.add_argument("--tilt-deg", type=float, nargs=2, default=None, metavar=("X", "Y"),
                   help="slab tilt about x and y (degrees; default: /sample tilt_x_deg/tilt_y_deg or "
                        "surface_normal_lab, else untilted)")
    p.add_argument("--shrinkwrap-threshold", type=float, default=None, metavar="F",
                   help="shrink-wrap keeps |ρ| >= F · max|ρ| (seed 0.15)")
    p.add_argument("--shrinkwrap-sigma-vox", type=float, default=None, metavar="S",
                   help="smooth |ρ| by a Gaussian of S voxels before the shrink-wrap threshold (default 0 = none)")
    p.add_argument("--no-shrinkwrap", action="store_true", help="never shrink-wrap (the support stays the slab)")
    p.add_argument("--upsampling", type=int, default=None, metavar="U",
                   help="angular up-sampling U (default: the recipe's, else the dataset geometry's)")
    p.add_argument("--fixed-probe", action="store_true",
                   help="never update the probe (ePIE and ML), at any U; --recipe baseline is this at U = 1")
    p.add_argument("--allow-undersampled", action="store_true",
                   help="run even when the sampling check (seed Eq 12) fails, with a warning: for data known to fit "
                        "the model at this sampling (e.g. simulated with a periodic model)")


def recipe_from_args(args: argparse.Namespace) -> tuple[Recipe, GivenSupport]:
    """(recipe before the sample's defaults, what the user fixed) from the parsed options."""
    from analysis.bragg.engine import with_fixed_probe
    from analysis.bragg.recipes import PRESETS, GivenSupport, read_recipe_file, recipe_with, schedule_iterations

    recipe = PRESETS[args.recipe]()
    given: dict[str, Any] = {}
    if args.recipe_file is not None:
        table = read_recipe_file(args.recipe_file)
        recipe = recipe_with(recipe, table, source=str(args.recipe_file))
        sup = table.get("support", {})
        if "thickness_schedule_m" in sup:
            given["schedule_source"] = str(args.recipe_file)
        if "tilt_x_deg" in sup or "tilt_y_deg" in sup:
            given["tilt_source"] = f"as written in {args.recipe_file}"
        if "sampling_thickness_m" in table:
            given["sampling_source"] = str(args.recipe_file)
    sup_kw: dict[str, Any] = {}
    if args.support is not None:
        sup_kw["kind"] = "slab" if args.support == "slab" else "none"
        sup_kw["illumination_fraction"] = ILLUMINATED_FRACTION if args.support == "illuminated" else 0.0
    if args.tilt_deg is not None:
        sup_kw["tilt_x_deg"], sup_kw["tilt_y_deg"] = (float(v) for v in args.tilt_deg)
        given["tilt_source"] = "from --tilt-deg"
    if args.shrinkwrap_threshold is not None:
        sup_kw["shrinkwrap_threshold"] = args.shrinkwrap_threshold
    if args.shrinkwrap_sigma_vox is not None:
        sup_kw["shrinkwrap_sigma_vox"] = args.shrinkwrap_sigma_vox
    if args.no_shrinkwrap:
        sup_kw["shrinkwrap_start_iter"] = None
    kw: dict[str, Any] = {}
    if sup_kw:
        kw["support"] = dataclasses.replace(recipe.support, **sup_kw)
    if args.upsampling is not None:
        kw["upsampling"] = args.upsampling
    if args.allow_undersampled:
        kw["allow_undersampled"] = True
    recipe = dataclasses.replace(recipe, **kw) if kw else recipe
    if args.fixed_probe:
        recipe = with_fixed_probe(recipe)
    recipe = schedule_iterations(recipe, n_epie_iterations=args.iterations, n_ml_iterations=args.ml)
    if args.thickness_m is not None:
        given["thickness_m"] = args.thickness_m
    return recipe, GivenSupport(**given)


def _estimator(dataset: BraggDataset | DatasetShare, comm: Any) -> Any:
    """normal → :class:`ThicknessEstimate` of the dataset's frames (every rank's positions under MPI)."""
    import numpy as np

    from analysis.bragg.thickness import ThicknessEstimate, estimate_thickness_m
    from analysis.dataset import DatasetShare, scan_axes

    local = dataset.local if isinstance(dataset, DatasetShare) else dataset

    def estimate(normal: Any) -> ThicknessEstimate:
        if local.layout != "grid":
            return ThicknessEstimate(thickness_m=None, per_position_m=np.zeros(0), percentile=90.0,
                                     reason="flat layout (a partial scan)")
        _, offsets = scan_axes(local.rocking_angle_deg, local.stage_position_m, local.geometry)
        kw: dict[str, Any] = {}
        if comm is not None and isinstance(dataset, DatasetShare):
            kw = dict(comm=comm, positions=dataset.positions, n_positions=dataset.n_positions)
        return estimate_thickness_m(np.asarray(local.frames), np.asarray(local.detector_mask, bool), local.geometry,
                                    offsets, normal=normal, **kw)

    return estimate


def resolve_for_dataset(recipe: Recipe, given: GivenSupport, dataset: BraggDataset | DatasetShare, *,
                        recipe_name: str, comm: Any = None) -> Recipe:
    """The recipe with this dataset's thickness, tilt and sampling T; ``Recipe.sources`` says where each came from."""
    from analysis.bragg.recipes import resolve_sample

    return resolve_sample(recipe, recipe_name=recipe_name, sample=dataset.sample, given=given,
                          estimate=_estimator(dataset, comm))


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Inside: an :class:`~analysis.bragg.engine.UndersampledWarning` prints as one line ``pxm COMMAND: warning: ...``
    on stderr, once per command even when FSC/PRTF build more engines (other warnings as usual); the warning
    machinery is restored on exit.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("always", message="sampling condition")    # every command says it, not just the first
        shown = warnings.showwarning
        said: set[str] = set()

        def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            if category.__name__ == "UndersampledWarning":
                text = " ".join(str(message).split())
                if text not in said:
                    said.add(text)
                    print(f"pxm {command}: warning: {text}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
