"""What one Bragg-ptychography reconstruction produced: :class:`Outcome`, and the results file it is written to.

:func:`analysis.bragg.pipeline.reconstruct` returns an :class:`Outcome`; the results file
(``docs/dataset-format.md`` §2), the publication to Tiled (``pxm.publication.publish_outcome``) and the figures
(:func:`save_outcome_figures`) all read it, never the file back. The file is written in two stages so that
nothing computed is lost: :func:`write_outcome` (what the iterations produced, ``/@status`` "iterations
complete") before any post-processing, then ``write_outcome(..., stage="postprocessing")`` adds strain maps,
post-processing metrics and the resolution curves, and :func:`finish_results` sets the final status.
"""

# Why this module is long: the Outcome and its results file: the two-stage writer, the reader and the figures of one
# value, kept together so the value and the file cannot drift apart (docs/dataset-format.md §2).

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from analysis.bragg.engine import FreeCostHistory, Recipe, ReconstructionResult
from analysis.bragg.resolution import PRTFEstimate, ResolutionEstimate, save_resolution, write_resolution
from analysis.metrics import ConvergenceVerdict
from analysis.strain import StrainMaps

if TYPE_CHECKING:
    from analysis.bragg.operators.scan import ObjectPlacement
    from analysis.figure_style import FigureFooter
    from analysis.geometry import BraggGeometry

__all__ = ["Outcome", "PHASE_NAMES", "POSTPROCESSING_STEPS", "error_line", "software_info", "write_outcome",
           "finish_results", "save_outcome_figures", "outcome_footer"]

PHASE_NAMES = {"epie": "ePIE", "ml": "ML",
               "thin_layer": "thin layer (R-factor: pxm's grid model; cost: R-factor of the lattice model fitted)"}
"""Display names of the engine's phases."""
POSTPROCESSING_STEPS = {"strain": "strain maps", "fsc": "half-data FSC", "prtf": "PRTF runs",
                        "truth_error": "error against the truth", "resolution": "resolution curves",
                        "free_cost": "free-cost record", "cxi": "CXI export", "figures": "figures",
                        "publish": "publication to Tiled"}
"""Post-processing steps whose failure is recorded (``/postprocessing_errors``) instead of ending the run."""


def error_line(exc: BaseException) -> str:
    """``Type: message`` on one line (for ``/postprocessing_errors`` and the warning the CLI prints).

    Parameters
    ----------
    exc
        The exception that stopped a step.

    Returns
    -------
    str
        Its type name and its message with all whitespace runs collapsed to one space.
    """
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def software_info() -> dict[str, str]:
    """Versions of pxm and of the key libraries, for provenance.

    Returns
    -------
    dict of str to str
        ``name``, ``version`` (of pxm) and ``numpy``, ``scipy``, ``h5py``; "unknown" where not installed.
    """
    from importlib import metadata

    out = {"name": "pxm"}
    for pkg in ("pxm", "numpy", "scipy", "h5py"):
        try:
            out[pkg if pkg != "pxm" else "version"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg if pkg != "pxm" else "version"] = "unknown"
    return out


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one reconstruction produced: the engine's result, strain, metrics, resolution and provenance."""

    result: ReconstructionResult = field(repr=False)
    """Object, probe, background, support, cost history, R-factors and placement (NumPy arrays)."""
    metrics: dict[str, Any]
    """Scalar summary for ``/metrics`` (docs/dataset-format.md §2): counts, costs, R-factors, convergence,
    free cost, E_ρ against a truth, strain voxels and resolutions."""
    timings_s: dict[str, float]
    """Wall times of the stages (``setup_s``, ``iterations_s``, ``strain_s``, ``fsc_s``, ``prtf_s``, ...)."""
    recipe: Recipe
    """The recipe that ran."""
    recipe_name: str = "custom"
    """Its name (a preset, a TOML file, ``"live"``, ...)."""
    probe_source: str = "given"
    """One line: where the initial probe came from and what was done to it."""
    strain: StrainMaps | None = field(default=None, repr=False)
    """Strain/tilt maps; None before post-processing or when it failed (``postprocessing_errors["strain"]``)."""
    resolution: ResolutionEstimate | None = None
    """Half-data FSC (``PipelineOptions.fsc``)."""
    prtf: PRTFEstimate | None = None
    """PRTF of K runs from random starts (``PipelineOptions.prtf_runs``)."""
    convergence: ConvergenceVerdict | None = None
    """The convergence verdict of the run (:func:`analysis.metrics.convergence`)."""
    postprocessing_errors: dict[str, str] = field(default_factory=dict)
    """Post-processing step (:data:`POSTPROCESSING_STEPS`) → the one-line error that stopped it."""
    n_ranks: int = 1
    """MPI ranks the positions were split across (1: one process)."""
    device: str = "CPU"
    """Where the engine's arrays lived (:func:`analysis.xp.device_description`)."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """``/provenance`` of the results: the scan's provenance, software, recipe name, probe source, dataset,
    sample name, phases, MPI ranks and device."""
    sample: dict[str, Any] = field(default_factory=dict)
    """The scan's sample description (name, material, thickness_m, ...)."""
    extra_datasets: dict[str, Any] = field(default_factory=dict, repr=False)
    """Further arrays for the results file, written as ``/<name>`` with the iterations (e.g. the thin-layer
    recipe's ``lattice/object``, ``lattice/vectors_lab_m``); names must not collide with the standard layout."""

    # --- views ------------------------------------------------------------------------------------
    @property
    def object(self) -> np.ndarray:
        """(N1', N2', N3') complex ρ on the object grid."""
        return self.result.object

    @property
    def probe(self) -> np.ndarray:
        """(N2, N3) complex probe section P2."""
        return self.result.probe

    @property
    def background(self) -> np.ndarray:
        """(ANGLE, N1, N2) background b (photons)."""
        return self.result.background

    @property
    def support(self) -> np.ndarray:
        """The final support S (bool, object grid)."""
        return self.result.support

    @property
    def geometry(self) -> BraggGeometry:
        """The geometry the engine ran on (the recipe's up-sampling)."""
        return self.result.geometry

    @property
    def placement(self) -> ObjectPlacement | None:
        """Where each voxel of the object sits (None when the engine recorded no origin)."""
        return self.result.placement if self.result.origin_vox is not None else None

    @property
    def status(self) -> str:
        """``/@status`` of a complete results file: "complete" or "complete with post-processing errors"."""
        return "complete with post-processing errors" if self.postprocessing_errors else "complete"

    def strain_arrays(self) -> dict[str, np.ndarray]:
        """``strain_zz``, ``omega_x``, ``omega_y`` (the published names), empty when there are no strain maps."""
        maps = self.strain
        if maps is None:
            return {}
        return {"strain_zz": maps.eps_zz, "omega_x": maps.omega_x_rad, "omega_y": maps.omega_y_rad}

    def arrays(self) -> dict[str, Any]:
        """The arrays and scalar dicts of a result (live final result; Tiled: ``pxm.publication.outcome_dataset``)."""
        res = self.result
        return {"object": res.object, "probe": res.probe, "background": res.background, **self.strain_arrays(),
                "error": np.asarray(res.costs, float),
                "error_phase": np.asarray([p == "ml" for p in res.phases], np.int8),
                "r_factor_history": np.asarray(res.r_factor_history, float),
                "metrics": self.metrics, "timings_s": self.timings_s}

    def quality_lines(self) -> list[str]:
        """One line per phase: R-factor, cost, free cost and free R-factor, E_ρ against the truth where known.

        The closing line of ``pxm reconstruct`` is ``convergence.summary()``.
        """
        m = self.metrics
        lines = []
        for ph in dict.fromkeys(self.result.phases):
            parts = [f"R-factor {m.get(f'r_factor_{ph}', float('nan')):.4g}",
                     f"cost {m.get(f'final_{ph}_cost', float('nan')):.4g}"]
            if f"free_cost_{ph}" in m:
                parts.append(f"free cost {m[f'free_cost_{ph}']:.4g}")
            if f"free_r_factor_{ph}" in m:
                parts.append(f"free R-factor {m[f'free_r_factor_{ph}']:.4g}")
            if f"truth_e_rho_{ph}" in m:
                parts.append(f"E_rho vs truth {m[f'truth_e_rho_{ph}']:.4g}")
            lines.append(f"{PHASE_NAMES.get(ph, ph)}: " + ", ".join(parts))
        return lines


# ------------------------------------------------------------------------------------------ results file
def write_outcome(outcome: Outcome, path: str | Path, *,
                  stage: Literal["iterations", "postprocessing"] = "iterations") -> dict[str, str]:
    """Write ``outcome`` to the results file ``path`` (docs/dataset-format.md §2), one stage at a time.

    Parameters
    ----------
    outcome
        The reconstruction.
    path
        The results HDF5 file.
    stage
        ``"iterations"``: create the file with what the iterations produced (object with its placement,
        probe, background, cost history, metrics, parameters, timings, geometry, provenance, ``/free_cost``),
        ``/@status`` "iterations complete". ``"postprocessing"``: add strain maps, the post-processing metrics
        and timings and the ``/resolution`` curves to that file (status unchanged: :func:`finish_results`).

    Returns
    -------
    dict of str to str
        The post-processing errors: ``outcome.postprocessing_errors`` plus ``"resolution"`` if its curves could
        not be written (stage "postprocessing"); empty for stage "iterations".
    """
    import h5py

    from analysis.dataset import append_results, write_results

    t0 = time.perf_counter()
    res = outcome.result
    if stage == "iterations":
        write_results(path, object=res.object, probe=res.probe, voxel_size_m=res.geometry.voxel_size_m,
                      background=res.background, metrics=outcome.metrics,
                      parameters=dataclasses.asdict(outcome.recipe), timings_s=outcome.timings_s,
                      error_history=res.costs, geometry=res.geometry, provenance=outcome.provenance,
                      placement=outcome.placement, status="iterations complete",
                      postprocessing_errors=outcome.postprocessing_errors or None, support=res.support)
        with h5py.File(path, "a") as f:
            if res.free is not None:
                _write_free_cost(f, res.free)
            for name, value in outcome.extra_datasets.items():
                f[name] = value
            if res.r_factor_history:
                d = f.create_dataset("r_factor_history", data=np.asarray(res.r_factor_history, float))
                d.attrs["description"] = ("R-factor after each iteration (aligned with /error_history), NaN where "
                                          "not computed; docs/dataset-format.md §2")
            f["timings"].attrs["write_s"] = time.perf_counter() - t0
        return {}
    if stage != "postprocessing":
        raise ValueError(f"write_outcome: stage {stage!r}, expected 'iterations' or 'postprocessing'")
    errors = dict(outcome.postprocessing_errors)
    append_results(path, strain=None if outcome.strain is None else {"reconstruction": outcome.strain},
                   metrics=outcome.metrics, timings_s=outcome.timings_s)
    if outcome.resolution is not None or outcome.prtf is not None:
        try:
            with h5py.File(path, "a") as f:
                write_resolution(f, outcome.resolution, outcome.prtf)
        except Exception as exc:                        # noqa: BLE001 - reported, the file stays valid
            errors["resolution"] = error_line(exc)
    _add_write_time(path, time.perf_counter() - t0)
    return errors


def finish_results(path: str | Path, errors: dict[str, str], *, write_s: float = 0.0) -> None:
    """Close the two-stage write: ``/postprocessing_errors`` (step → line) and the final ``/@status``.

    Parameters
    ----------
    path
        The results file of :func:`write_outcome`.
    errors
        Every post-processing error (the outcome's, the file's, CXI, figures, ...); empty when all went well.
    write_s
        Seconds to add to ``/timings@write_s``.
    """
    from analysis.dataset import append_results

    _add_write_time(path, write_s)
    append_results(path, postprocessing_errors=errors or None,
                   status="complete with post-processing errors" if errors else "complete")


def _add_write_time(path: str | Path, seconds: float) -> None:
    import h5py

    with h5py.File(path, "a") as f:
        t = f.require_group("timings")
        t.attrs["write_s"] = float(t.attrs.get("write_s", 0.0)) + seconds


def _write_free_cost(f: Any, h: FreeCostHistory) -> None:
    """``/free_cost``: held-out (free) and work cost per check, per entry (docs/dataset-format.md §2)."""
    g = f.require_group("free_cost")
    g.attrs["method"] = "held-out data: seed Eq 4 amplitude cost on entries kept out of every update, per entry"
    for k in ("fraction", "unit", "n_free_entries", "n_work_entries", "best_free_cost"):
        g.attrs[k] = getattr(h, k)
    g.attrs["best_iteration"] = -1 if h.best_iteration is None else int(h.best_iteration)
    g.attrs["stopped_phases"] = ",".join(h.stopped_phases)
    g.attrs["restored_phases"] = ",".join(h.restored_phases)
    g.create_dataset("iteration", data=np.asarray(h.iterations, np.int64))
    g.create_dataset("phase", data=np.asarray(h.phases, dtype="S4"))
    g.create_dataset("free_cost", data=np.asarray(h.free_costs, float))
    g.create_dataset("work_cost", data=np.asarray(h.work_costs, float))


# ------------------------------------------------------------------------------------------ figures
LIT_FRACTION = 0.05
"""The strain figure draws the support's voxels where Σ_j |P_j|² is at least this fraction of its maximum there:
where the data constrain ρ. Elsewhere the maps (``illuminated_support``, 1 %) show mostly the flat start; the demo's
truth scores use the stricter 20 % of the true probe (``pxm.demo.truth_scores``)."""


def lit_region(result: ReconstructionResult, fraction: float = LIT_FRACTION) -> np.ndarray:
    """The support S where Σ_j |P_j|² of the final probe at its positions is ≥ ``fraction`` of its maximum on S.

    Parameters
    ----------
    result
        The engine's result (probe, view offsets and sub-pixel shifts, geometry).
    fraction
        Threshold relative to the maximum, in (0, 1).

    Returns
    -------
    numpy.ndarray
        Bool, the object's shape.
    """
    from analysis.bragg.solvers.model import BraggModel

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"lit_region: fraction must lie in (0, 1), got {fraction}")
    shape = tuple(int(n) for n in result.object.shape)
    op = BraggModel.from_geometry(result.geometry, (shape[0], shape[1], shape[2]))
    probe = np.asarray(result.probe)
    w = np.zeros(shape)
    for off, shift in zip(result.offsets_vox, result.shifts_px, strict=True):
        pj = op.probe_at(probe, np.asarray(shift))
        w[op.view(np.asarray(off))] += pj.real ** 2 + pj.imag ** 2
    sup = np.asarray(result.support, bool)
    top = float(w[sup].max()) if sup.any() else 0.0
    return sup & (w >= fraction * top) if top > 0 else np.zeros(shape, bool)


def outcome_footer(outcome: Outcome) -> FigureFooter:
    """The figures' footer of ``outcome``: raw run uid, recipe (name and iterations), date, pxm version.

    Returns
    -------
    FigureFooter
    """
    from analysis.figure_style import FigureFooter, pxm_version

    prov = outcome.provenance
    uid = str(prov.get("raw_uid") or prov.get("run_uid") or prov.get("uid") or "")
    n_epie = sum(1 for ph in outcome.result.phases if ph == "epie")
    n_ml = sum(1 for ph in outcome.result.phases if ph == "ml")
    version = (prov.get("software_info") or {}).get("version") if isinstance(prov.get("software_info"), dict) else None
    return FigureFooter(run_uid=uid, recipe=f"{outcome.recipe_name} ({n_epie} ePIE + {n_ml} ML)",
                        date_utc=str(prov.get("date_utc") or ""), software=f"pxm {version or pxm_version()}",
                        extra=str(outcome.sample.get("name") or ""))


def save_outcome_figures(outcome: Outcome, directory: str | Path, errors: dict[str, str], *, prefix: str = "",
                         title_prefix: str = "", convergence: bool = True) -> list[Path]:
    """The PNGs of ``outcome`` that could be drawn: object, probe, strain, convergence, resolution.

    Parameters
    ----------
    outcome
        The reconstruction.
    directory
        Folder for the PNGs (created).
    errors
        A figure that fails adds ``name: error`` to ``errors["figures"]`` (the folder failing: the error).
    prefix
        Prepended to every file name (e.g. ``"live_"``).
    title_prefix
        Prepended to every title (e.g. ``"live: "``).
    convergence
        Also draw the cost history (and the resolution curves when there are some).

    Returns
    -------
    list of Path
        The files written.
    """
    from analysis.figure_frames import sample_frame
    from analysis.figures import save_convergence, save_object_slices, save_probe, save_strain_slices

    res = outcome.result
    vox = res.geometry.voxel_size_m
    strain = outcome.strain
    footer = outcome_footer(outcome)
    theta = res.geometry.theta_bragg_rad
    place = outcome.placement
    frame = (sample_frame(res.object.shape, place.voxel_size_m, axes_lab=place.axes_lab, origin_m=place.origin_m)
             if place is not None and res.object.ndim == 3 else
             sample_frame(res.object.shape, vox, geometry=res.geometry) if res.object.ndim == 3 else None)
    makers: dict[str, Callable[[Path], Path]] = {
        "object.png": lambda p: save_object_slices(p, res.object, title=f"{title_prefix}object ρ", voxel_size_m=vox,
                                                   frame=frame, footer=footer),
        "probe.png": lambda p: save_probe(p, res.probe, pixel_size_m=(vox[1], vox[2]), axis_names=("r2", "r3"),
                                          title=f"{title_prefix}probe P2" + ("" if title_prefix else " (r2, r3)"),
                                          amplitude_unit="√photons per voxel, arb. scale", footer=footer)}
    if strain is not None:
        centre_m = (place.position_m(np.asarray(strain.eps_zz.shape) // 2)
                    if place is not None and tuple(strain.eps_zz.shape) == tuple(res.object.shape) else None)
        lit = (lit_region(res, LIT_FRACTION) if tuple(strain.eps_zz.shape) == tuple(res.object.shape)
               and res.origin_vox is not None else None)
        makers["strain.png"] = lambda p: save_strain_slices(
            p, strain, title=f"{title_prefix}strain", theta_bragg_rad=theta, centre_position_m=centre_m,
            footer=footer, geometry=res.geometry, region=lit,
            region_note=f"lit crystal: Σ_j|P_j|² ≥ {LIT_FRACTION:.0%} of its maximum" if lit is not None
            else "every mapped voxel")
    if convergence:
        makers["convergence.png"] = lambda p: save_convergence(p, res.costs, res.phases, r_factors=res.r_factors,
                                                               r_factor_history=res.r_factor_history or None,
                                                               recipe=res.recipe, footer=footer,
                                                               title=f"{title_prefix}convergence")
        if outcome.resolution is not None or outcome.prtf is not None:
            makers["resolution.png"] = lambda p: save_resolution(p, outcome.resolution, outcome.prtf,
                                                                 footer=footer)
    d = Path(directory)
    paths: list[Path] = []
    failed = []
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        errors["figures"] = error_line(exc)
        return paths
    for name, make in makers.items():
        try:
            paths.append(make(d / f"{prefix}{name}"))
        except Exception as exc:                        # noqa: BLE001
            failed.append(f"{name}: {error_line(exc)}")
    if failed:
        errors["figures"] = "; ".join(failed)
    return paths
