"""Named recipes, recipe files (TOML) and the sample-dependent choices of a reconstruction (docs/recipes.md).

* :data:`PRESETS` — ``seed`` (the seed's Methods), ``quick`` (seconds, CI) and ``baseline`` (fixed probe,
  U = 1); :func:`recipe_by_name` picks one and scales its whole schedule to other iteration counts;
* :func:`recipe_with` / :func:`read_recipe_file` — any :class:`~analysis.bragg.engine.Recipe` field from a nested
  mapping (TOML tables ``epie``, ``ml``, ``support``, ``free``); unknown keys are refused by name;
* :func:`resolve_sample` — slab thickness and tilt, and the sampling check's T, from what the user gave,
  else the dataset's ``/sample``, else the data (:mod:`analysis.bragg.thickness`); each choice says where it came
  from (``Recipe.sources``).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from analysis.bragg.engine import Recipe, SupportSchedule, fixed_probe_baseline, scaled_recipe, seed_recipe
from analysis.bragg.solvers.support import slab_normal, slab_tilts_deg
from analysis.bragg.thickness import ThicknessEstimate

__all__ = ["PRESETS", "DEFAULT_ML_SMOOTHNESS", "DEFAULT_EPIE_ITERATIONS", "default_recipe", "quick_recipe",
           "recipe_by_name", "schedule_iterations", "thin_layer_recipe", "recipe_with", "read_recipe_file",
           "GivenSupport", "resolve_sample", "support_line", "shrinkwrap_line"]


def quick_recipe() -> Recipe:
    """A few ePIE sweeps and one ML iteration on a fixed slab, no shrink-wrap: seconds on a tiny dataset (CI)."""
    sched = SupportSchedule(thickness_schedule_m=((0, 0.5e-6),), shrinkwrap_start_iter=None)
    return Recipe(n_epie_iterations=3, n_ml_iterations=1, support=sched)


DEFAULT_ML_SMOOTHNESS = 0.01
"""Strength s of the ML smoothness prior in the ``default`` recipe (docs/decisions/0002, docs/seed-schedule.md)."""


DEFAULT_EPIE_ITERATIONS = 200
"""ePIE sweeps of the ``default`` recipe: the seed's schedule scaled to 200 (+ 100 ML). The seed's 1000 sweeps
fit noise and model error after their best state (docs/benchmarks.md, "Quality by recipe")."""


def default_recipe() -> Recipe:
    """``pxm reconstruct``'s default: the seed's schedule scaled to :data:`DEFAULT_EPIE_ITERATIONS` sweeps (thickness
    steps, shrink-wrap, probe start and ML count scaled with it: 200 ePIE + 100 ML) with the ML smoothness prior
    s = :data:`DEFAULT_ML_SMOOTHNESS`.

    On data no model describes exactly (every measurement) the seed's ML cost alone trades the mismatch and the
    noise for voxel-scale structure of ρ, and its 1000 sweeps fit noise long after the best state: its last
    state ends far worse than its best (docs/benchmarks.md, "Quality by recipe"; docs/decisions/0002). The
    illumination-weighted prior (:mod:`analysis.bragg.solvers.smoothness`) and the shorter schedule stop that;
    ``seed`` stays the seed's literal schedule.
    """
    r = scaled_recipe(seed_recipe(), n_epie_iterations=DEFAULT_EPIE_ITERATIONS)
    return dataclasses.replace(r, ml=dataclasses.replace(r.ml, smoothness=DEFAULT_ML_SMOOTHNESS))


def thin_layer_recipe() -> Recipe:
    """``--recipe thin-layer``'s engine recipe: the grid at U = 1 where the lattice object is put (probe held, no
    iterations, no probe scaling, b = 0); the work is the lattice route's
    (:func:`analysis.bragg.pipeline.reconstruct_thin_layer`, docs/recipes.md).
    """
    from analysis.bragg.engine import with_fixed_probe

    r = Recipe(n_epie_iterations=0, n_ml_iterations=0, upsampling=1, match_initial_scale=False, background_init=0.0,
               allow_undersampled=True)
    return with_fixed_probe(r)


PRESETS: Mapping[str, Callable[[], Recipe]] = types.MappingProxyType(
    {"default": default_recipe, "seed": seed_recipe, "quick": quick_recipe, "baseline": fixed_probe_baseline,
     "thin-layer": thin_layer_recipe})
"""The named recipes of ``pxm reconstruct --recipe``."""


def schedule_iterations(recipe: Recipe, *, n_epie_iterations: int | None = None,
                        n_ml_iterations: int | None = None) -> Recipe:
    """``recipe`` run for other iteration counts, its whole schedule scaled
    (:func:`~analysis.bragg.engine.scaled_recipe`).

    A new ePIE count scales every sweep breakpoint (thickness steps, shrink-wrap window and period, probe
    start, NA-mask stop) and, unless ``n_ml_iterations`` is given, the ML count; 0 sweeps runs ML only.
    """
    if n_epie_iterations is not None and n_epie_iterations < 0:
        raise ValueError(f"iterations: {n_epie_iterations} ePIE sweeps; give a number >= 0")
    if n_ml_iterations is not None and n_ml_iterations < 0:
        raise ValueError(f"iterations: {n_ml_iterations} ML iterations; give a number >= 0")
    if n_epie_iterations is not None and n_epie_iterations > 0 and recipe.n_epie_iterations > 0:
        return scaled_recipe(recipe, n_epie_iterations=n_epie_iterations, n_ml_iterations=n_ml_iterations)
    kw: dict[str, Any] = {k: v for k, v in (("n_epie_iterations", n_epie_iterations),
                                            ("n_ml_iterations", n_ml_iterations)) if v is not None}
    return dataclasses.replace(recipe, **kw) if kw else recipe


def recipe_by_name(name: str, *, n_epie_iterations: int | None = None, n_ml_iterations: int | None = None) -> Recipe:
    """``seed``, ``quick`` or ``baseline`` (:data:`PRESETS`), its schedule scaled to other iteration counts."""
    if name not in PRESETS:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(PRESETS)}")
    return schedule_iterations(PRESETS[name](), n_epie_iterations=n_epie_iterations, n_ml_iterations=n_ml_iterations)


# ------------------------------------------------------------------------------------------ recipe files
_NOT_SETTABLE = frozenset({"sources"})
_EXECUTION_KEYS = frozenset({"cpu_fused", "fftw_effort", "keep_exit_waves"})   # moved to solvers.options.Execution
_NONE_WORDS = ("none", "never")


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (types.UnionType, typing.Union):
        return " or ".join('"none"' if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return "an array" if args and args[-1] is Ellipsis else f"an array of {len(args)}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` (from TOML) as type ``tp``; ValueError naming ``where`` and the expected type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ValueError(f"{where}: expected {_describe(tp)}, got {value!r}")
    if origin in (types.UnionType, typing.Union):
        if type(None) in args and isinstance(value, str) and value.lower() in _NONE_WORDS:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ValueError:
                pass
        raise bad
    if origin is Literal:
        if value in args:
            return value
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        if args and args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise bad


def _replace(obj: Any, overrides: Mapping[str, Any], where: str) -> Any:
    """``dataclasses.replace(obj, ...)`` from a nested mapping, every key and type checked."""
    if not isinstance(overrides, Mapping):
        raise ValueError(f"{where}: expected a table of options, got {overrides!r}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj) if f.name not in _NOT_SETTABLE]
    kw: dict[str, Any] = {}
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else key
        if key in _EXECUTION_KEYS:
            raise ValueError(f"{path!r} is an execution setting, not part of a recipe; remove it from the recipe "
                             "(PXM_CPU_KERNELS=0 turns the fused CPU kernels off; "
                             "docs/decisions/0008-execution-options.md)")
        if key not in names:
            table = f"[{where}]" if where else "the top level"
            raise ValueError(f"unknown key {path!r}; {table} takes {', '.join(names)}")
        current = getattr(obj, key)
        kw[key] = (_replace(current, value, path) if dataclasses.is_dataclass(current)
                   else _coerce(value, hints[key], path))
    try:
        return dataclasses.replace(obj, **kw)
    except ValueError as exc:
        raise ValueError(f"{where or 'recipe'}: {exc}") from None


def recipe_with(recipe: Recipe, overrides: Mapping[str, Any], *, source: str = "recipe") -> Recipe:
    """``recipe`` with the fields in ``overrides`` replaced (tables ``epie``, ``ml``, ``support``, ``free``).

    Optional fields take the string ``"none"`` for None (``support.shrinkwrap_start_iter = "never"``).
    Errors name ``source`` and the key: ``recipe.toml: unknown key 'support.thicknes_m'; [support] takes ...``.
    """
    try:
        return _replace(recipe, overrides, "")
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """The TOML table of a recipe file (apply it with :func:`recipe_with`); errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such recipe file")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p}: not valid TOML ({exc}); see docs/recipes.md") from None


# ------------------------------------------------------------------------------------------ the sample
@dataclass(frozen=True, kw_only=True)
class GivenSupport:
    """What the user fixed on the command line or in a recipe file (the rest comes from the sample or the data)."""

    thickness_m: float | None = None
    """Crystal thickness T (m) given by the user (``--thickness-m``): the schedule is scaled to it."""
    thickness_source: str = "from --thickness-m"
    """Where ``thickness_m`` came from, for the output."""
    schedule_source: str | None = None
    """Set when the recipe file wrote ``support.thickness_schedule_m``: used as written (not scaled)."""
    tilt_source: str | None = None
    """Set when the tilt was given (``--tilt-deg`` or the recipe file): the recipe's tilt is kept."""
    sampling_source: str | None = None
    """Set when the recipe file wrote ``sampling_thickness_m``: kept for the sampling check."""

    def __post_init__(self) -> None:
        if self.thickness_m is not None and not (math.isfinite(self.thickness_m) and self.thickness_m > 0):
            raise ValueError(f"{self.thickness_source}: thickness {self.thickness_m} m; give a crystal thickness "
                             "> 0 in metres, e.g. 0.45e-6")


def _sample_number(sample: Mapping[str, Any], key: str) -> float | None:
    """A finite number under ``key`` of ``/sample`` (None when absent); ValueError when it is not one."""
    if key not in sample or sample[key] is None:
        return None
    v = sample[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ValueError(f"/sample {key}: {v!r} is not a finite number; fix the dataset's /sample or give the "
                         "value on the command line")
    return float(v)


def _sample_tilt(sample: Mapping[str, Any]) -> tuple[tuple[float, float], str] | None:
    """((tilt_x_deg, tilt_y_deg), source) from ``/sample``: ``tilt_x_deg`` + ``tilt_y_deg``, or
    ``surface_normal_lab``.
    """
    tx, ty = _sample_number(sample, "tilt_x_deg"), _sample_number(sample, "tilt_y_deg")
    if tx is not None or ty is not None:
        if tx is None or ty is None:
            raise ValueError("/sample: has only one of tilt_x_deg, tilt_y_deg; give both (or surface_normal_lab)")
        return (tx, ty), "from /sample tilt_x_deg, tilt_y_deg"
    if sample.get("surface_normal_lab") is not None:
        try:
            tilt = slab_tilts_deg(sample["surface_normal_lab"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"/sample surface_normal_lab: {exc}") from None
        return tilt, "from /sample surface_normal_lab"
    return None


def _um(x: float) -> str:
    return f"{x * 1e6:.2f}"


def support_line(recipe: Recipe, thickness_note: str, tilt_note: str) -> str:
    """``support: slab 0.45/0.63/0.81 µm from sweeps 0/100/200 (note), tilt (5.5°, -2.0°) (note)``."""
    s = recipe.support
    if s.kind == "none":
        region = ("the whole object grid" if s.illumination_fraction == 0
                  else f"the illuminated region, Σ|P_j|² ≥ {s.illumination_fraction:g} of its maximum")
        return f"support: none ({region})"
    sched = s.thickness_schedule_m
    th = "/".join(_um(t) for _, t in sched)
    when = "" if len(sched) == 1 else " from sweeps " + "/".join(str(int(i)) for i, _ in sched)
    return (f"support: slab {th} µm{when} ({thickness_note}), tilt ({s.tilt_x_deg:.1f}°, {s.tilt_y_deg:.1f}°) "
            f"({tilt_note})")


def shrinkwrap_line(recipe: Recipe) -> str:
    """``shrink-wrap: 15 % of max|ρ| (σ 0 voxels) every 5 sweeps in 300–500`` or ``shrink-wrap: never``."""
    s = recipe.support
    if s.shrinkwrap_start_iter is None or s.shrinkwrap_start_iter > s.shrinkwrap_stop_iter \
            or s.shrinkwrap_start_iter >= recipe.n_epie_iterations:
        return "shrink-wrap: never"
    stop = min(s.shrinkwrap_stop_iter, recipe.n_epie_iterations - 1)
    return (f"shrink-wrap: {s.shrinkwrap_threshold * 100:g} % of max|ρ| (σ {s.shrinkwrap_sigma_vox:g} voxels) "
            f"every {'sweep' if s.shrinkwrap_every == 1 else f'{s.shrinkwrap_every} sweeps'} in "
            f"{s.shrinkwrap_start_iter}–{stop}")


def resolve_sample(recipe: Recipe, *, recipe_name: str, sample: Mapping[str, Any], given: GivenSupport = GivenSupport(),
                   estimate: Callable[[Any], ThicknessEstimate] | None = None) -> Recipe:
    """The recipe with the slab thickness, tilt and sampling-check T of this sample, each with its source.

    Thickness T: ``given`` (``--thickness-m``), else ``/sample`` ``thickness_m``, else ``estimate(normal)``
    (the data), else none. The slab schedule is the recipe's, scaled so its first step is T (the seed's
    0.5/0.7/0.9 µm becomes T/1.4T/1.8T); a schedule written in the recipe file is kept as written unless T
    was given. Tilt: ``given``, else ``/sample`` (``tilt_x_deg`` + ``tilt_y_deg`` or ``surface_normal_lab``),
    else untilted. The sampling check uses T (``sampling_thickness_m``, unless the file set it). The lines
    saying where each choice came from go into ``Recipe.sources``.
    """
    s = recipe.support
    if given.tilt_source is not None:
        tilt, tilt_note = (s.tilt_x_deg, s.tilt_y_deg), given.tilt_source
    else:
        found = _sample_tilt(sample)
        tilt, tilt_note = found if found is not None else ((0.0, 0.0), "default: untilted")
    t_m, t_note = given.thickness_m, given.thickness_source
    est_note = ""
    if t_m is None:
        t_m, t_note = _sample_number(sample, "thickness_m"), "from /sample thickness_m"
        if t_m is not None and not t_m > 0:
            raise ValueError(f"/sample thickness_m: {t_m} m; a crystal thickness must be > 0 (or give --thickness-m)")
    if t_m is None and estimate is not None:
        est = estimate(slab_normal(*tilt))
        if est.thickness_m is not None:
            t_m = est.thickness_m
            t_note = (f"estimated from the data: autocorrelation along k_in, {est.percentile:g}th percentile of "
                      f"{est.n_positions_used} positions; /sample has no thickness_m")
        else:
            est_note = f"; no estimate from the data: {est.reason}"
    sources = []
    if s.kind == "slab":
        if t_m is not None and (given.schedule_source is None or given.thickness_m is not None):
            f = t_m / s.thickness_schedule_m[0][1]
            sched = tuple((int(i), float(t) * f) for i, t in s.thickness_schedule_m)
            note = t_note if len(sched) == 1 else f"T = {_um(t_m)} µm {t_note}; steps of recipe {recipe_name}"
        elif given.schedule_source is not None:
            sched, note = s.thickness_schedule_m, f"as written in {given.schedule_source}"
        else:
            sched = s.thickness_schedule_m
            note = f"recipe {recipe_name} as written: /sample has no thickness_m{est_note}"
        s = dataclasses.replace(s, thickness_schedule_m=sched, tilt_x_deg=tilt[0], tilt_y_deg=tilt[1])
        recipe = dataclasses.replace(recipe, support=s)
        sources.append(support_line(recipe, note, tilt_note))
    else:
        sources.append(support_line(recipe, "", ""))
    sources.append(shrinkwrap_line(recipe))
    if given.sampling_source is not None and recipe.sampling_thickness_m is not None:
        check = f"sampling check: T = {_um(recipe.sampling_thickness_m)} µm (as written in {given.sampling_source})"
    elif t_m is not None:
        recipe = dataclasses.replace(recipe, sampling_thickness_m=t_m)
        check = f"sampling check: T = {_um(t_m)} µm ({t_note})"
    elif s.kind == "slab":
        check = (f"sampling check: T = {_um(s.max_thickness_m)} µm (the widest slab: /sample has no "
                 f"thickness_m{est_note})")
    else:
        check = f"sampling check: none (support 'none' and no crystal thickness{est_note})"
    if recipe.allow_undersampled:
        check += "; allow_undersampled: a failure only warns"
    sources.append(check)
    return dataclasses.replace(recipe, sources=tuple(sources))
