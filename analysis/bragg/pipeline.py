"""The one Bragg-ptychography reconstruction: scan + recipe + probe → :class:`~analysis.bragg.outcome.Outcome`.

``pxm reconstruct``, the live pipeline's final result, the tests and the benchmarks call :func:`reconstruct`:
it builds the engine (:func:`build_engine`), iterates the whole recipe, computes the quality metrics (R-factor
per phase, cost, free cost, convergence, E_ρ against a truth), then the post-processing (strain/tilt maps,
optional half-data FSC and PRTF), whose failures are recorded in the outcome, never raised.

The initial probe is scaled in exactly one place: the engine's constructor, when ``recipe.match_initial_scale``
(√(Σ ω I / Σ ω |Ψ|²) over every measured frame; :class:`analysis.bragg.engine.Reconstruction`). The factor is
``metrics["initial_probe_scale"]``. Callers pass the probe as made (model or file), unscaled.
"""

# Why this module is long: the one reconstruction pipeline (engine, strain, metrics, resolution → Outcome) that the
# CLI, the live final result, the tests and the benchmarks call; its steps are one sequence.

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.bragg.engine import ReconstructionResult
from analysis.bragg.outcome import Outcome, error_line, software_info
from analysis.bragg.resolution import PRTFEstimate, ResolutionEstimate, half_data_resolution, prtf_resolution
from analysis.bragg.scan import BraggScan
from analysis.bragg.solvers.distributed import Communicator
from analysis.bragg.solvers.options import Execution
from analysis.geometry import BraggGeometry
from analysis.metrics import ConvergenceVerdict, convergence, random_phase_prtf
from analysis.sample_record import sample_record
from analysis.strain import StrainOptions
from analysis.xp import array_module, backend, device_description

__all__ = ["PipelineOptions", "TruthObject", "recipe_geometry", "build_engine", "iterate", "reconstruct",
           "prtf_reconstructions", "run_metrics", "free_cost_metrics", "convergence_metrics", "THIN_LAYER",
           "reconstruct_thin_layer", "DEFAULT", "ROUTE_RULE", "lattice_route_reason", "lattice_model_r_factor",
           "reconstruct_default"]

THIN_LAYER = "thin-layer"
"""Recipe name of the lattice route (:func:`reconstruct_thin_layer`, docs/recipes.md)."""

DEFAULT = "default"
"""Recipe name of ``pxm reconstruct``'s default (:func:`reconstruct_default`)."""

ROUTE_RULE = ("default recipe: where the lattice route applies (a line scan along y, a known probe file, one "
              "process, every frame) both routes run and the one with the lower R-factor on the lattice model "
              "(exact there; the grid object goes onto the lattice by the exact inverse transfer, one global "
              "factor and its own background fitted) is kept")
"""The rule of :func:`reconstruct_default`, stored in ``/metrics`` (``route_rule``) and stated in docs/recipes.md."""

TruthObject = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""ρ_true at sample-frame points x, y, z in metres (arrays of one shape), e.g. ``BraggSimulator.truth_object``."""


_BAR_LABEL = "pxm reconstruct"
"""Label of the progress bars."""


@dataclass(frozen=True, kw_only=True)
class PipelineOptions:
    """How :func:`reconstruct` runs, besides the recipe: probe mask, backend, post-processing, progress."""

    probe_na_rad: tuple[float, float] | None = None
    """(V, H) NA of the ePIE probe mask (the engine's ``probe_na_rad``); None: no mask."""
    execution: Execution = dataclasses.field(default_factory=Execution)
    """Array backend, fused CPU/GPU kernels, FFTW planning effort, kept exit waves
    (docs/decisions/0008-execution-options.md)."""
    strain: StrainOptions = dataclasses.field(default_factory=StrainOptions)
    """Options of the strain maps (``pxm reconstruct``: the defaults; the live pipeline keeps the ramp)."""
    fsc: bool = False
    """Also reconstruct two binomial half-data sets and their FSC
    (docs/dataset-format.md, Half-data resolution); triples the run time."""
    fsc_split_seed: int = 0
    """Seed of the binomial photon split."""
    fsc_illumination_fraction: float = 0.1
    """FSC mask: voxels in both supports where Σ_j |P_j|² ≥ this fraction of its maximum."""
    prtf_runs: int = 0
    """K > 0: also K reconstructions from random starts and their PRTF (K >= 6)."""
    prtf_seed: int = 0
    """Seed of the PRTF runs' random starts (run k: ``prtf_seed + k``)."""
    progress: bool = False
    """Show a tqdm bar on stderr (rank 0 only under MPI), labelled ``pxm reconstruct``."""

    def __post_init__(self) -> None:
        if self.prtf_runs < 0:
            raise ValueError(f"PipelineOptions.prtf_runs must be >= 0, got {self.prtf_runs}")
        if self.prtf_runs and random_phase_prtf(self.prtf_runs) >= float(np.exp(-1.0)):
            raise ValueError(f"PipelineOptions.prtf_runs: {self.prtf_runs} runs with unrelated phases already "
                             "average above the 1/e threshold; use at least 6")
        if not 0.0 < self.fsc_illumination_fraction < 1.0:
            raise ValueError(f"PipelineOptions.fsc_illumination_fraction must lie in (0, 1), "
                             f"got {self.fsc_illumination_fraction}")


def recipe_geometry(geometry: BraggGeometry, recipe: Any) -> BraggGeometry:
    """``geometry`` with the recipe's up-sampling U (the grid the probe and the object live on).

    Parameters
    ----------
    geometry
        The scan's geometry.
    recipe
        A :class:`analysis.bragg.engine.Recipe`; ``recipe.upsampling`` None keeps ``geometry.upsampling``.

    Returns
    -------
    BraggGeometry
        The geometry the engine runs on; make the initial probe on its ``recon_shape[1:]``.
    """
    if recipe.upsampling is not None and recipe.upsampling != geometry.upsampling:
        return dataclasses.replace(geometry, upsampling=recipe.upsampling)
    return geometry


def build_engine(scan: BraggScan, recipe: Any, probe: np.ndarray, *, probe_na_rad: tuple[float, float] | None = None,
                 comm: Communicator | None = None,
                 frame_valid: np.ndarray | None = None, execution: Execution | None = None) -> Any:
    """An :class:`analysis.bragg.engine.Reconstruction` on ``scan``; the engine scales the probe
    (``match_initial_scale``).

    Parameters
    ----------
    scan
        Frames, mask, stage positions and rocking offsets.
    recipe
        The :class:`analysis.bragg.engine.Recipe`.
    probe
        (N2, N3) complex initial P2 on ``recipe_geometry(scan.geometry, recipe).recon_shape[1:]``.
    probe_na_rad
        (V, H) NA of the ePIE probe mask, or None.
    comm
        MPI communicator, or None.
    frame_valid
        (POS, ANGLE) bool overriding ``scan.frame_valid`` (e.g. the live engine), or None.
    execution
        How the engine runs (array backend, fused kernels, FFTW effort, kept exit waves); None: the defaults.

    Returns
    -------
    analysis.bragg.engine.Reconstruction
        The engine, before its first iteration.
    """
    from analysis.bragg.engine import Reconstruction  # looked up at call time: tests may wrap the class

    fv = scan.frame_valid if frame_valid is None else frame_valid
    return Reconstruction(scan.geometry, scan.frames, scan.mask, scan.stage_xyz_m, scan.rocking_offsets_deg, probe,
                          recipe=recipe, probe_na_rad=probe_na_rad, frame_valid=fv, comm=comm,
                          xp=backend((execution or Execution()).backend), execution=execution)


def iterate(rec: Any, *, progress: bool = False, label: str = "pxm reconstruct",
            on_phase_end: Callable[[Any, str], None] | None = None) -> Any:
    """Iterate the whole recipe of ``rec`` (one iteration at a time, with a tqdm bar when ``progress``).

    Parameters
    ----------
    rec
        An :class:`analysis.bragg.engine.Reconstruction`.
    progress
        Show the bar on stderr.
    label
        The bar's description.
    on_phase_end
        Called as ``on_phase_end(rec, phase)`` once after each phase ('epie', 'ml') ends.

    Returns
    -------
    analysis.bragg.engine.Reconstruction
        ``rec``, iterated until ``rec.remaining_iterations`` is 0 (fewer iterations when the free-data rule stops).
    """
    from tqdm import tqdm

    done: set[str] = set()
    with tqdm(total=rec.recipe.n_iterations, desc=label, unit="it", disable=not progress, dynamic_ncols=True) as bar:
        while rec.remaining_iterations > 0:
            rec.iterate(1)
            bar.update(1)
            if on_phase_end is not None:
                for phase in set(rec.phase_r_factors) - done - {"initial"}:
                    done.add(phase)
                    on_phase_end(rec, phase)
            ph, cost = rec.last_step                  # not rec.result(): no copy of ρ/P2 per iteration
            phase = "ML" if ph == "ml" else "ePIE"
            bar.set_postfix_str(f"{phase} cost {cost:.4g}" if rec.iteration % 10 == 0
                                or rec.remaining_iterations == 0 else phase, refresh=False)
    return rec


def reconstruct(scan: BraggScan, recipe: Any, probe: np.ndarray, *, comm: Communicator | None = None,
                options: PipelineOptions = PipelineOptions(), recipe_name: str = "custom",
                probe_source: str = "given", truth_object: TruthObject | None = None,
                checkpoint: Callable[[Outcome], Any] | None = None) -> Outcome:
    """Run the engine on ``scan``, then the quality metrics and the post-processing; return the :class:`Outcome`.

    The probe is scaled in one place only: by the engine, when ``recipe.match_initial_scale`` (the default),
    so that the model predicts the measured counts over all frames; the factor is
    ``metrics["initial_probe_scale"]``.

    Parameters
    ----------
    scan
        The validated scan (under MPI: this rank's share, :meth:`BraggScan.from_share`).
    recipe
        The :class:`analysis.bragg.engine.Recipe` (support, shrink-wrap, schedule).
    probe
        (N2, N3) complex initial P2 on ``recipe_geometry(scan.geometry, recipe)``, unscaled.
    comm
        MPI communicator (``docs/mpi.md``; ``recipe.epie.n_batches`` >= 1), or None. Every rank returns the same
        result; FSC and PRTF are not available then.
    options
        Probe mask, backend, strain options, FSC/PRTF, progress bar.
    recipe_name, probe_source
        Recorded in the outcome and its provenance.
    truth_object
        ρ_true at sample-frame points (x, y, z) in metres: E_ρ against it at each phase's end
        (``truth_e_rho_<phase>``, ``truth_e_rho``); a failure is recorded as ``truth_error``.
    checkpoint
        Called with the outcome before any post-processing (write the results there: nothing is lost if a
        step below fails).

    Returns
    -------
    Outcome
        Result, metrics, timings, strain maps, resolution, convergence, post-processing errors, provenance.

    Raises
    ------
    ValueError
        FSC/PRTF requested under MPI; a share without its communicator; what the engine cannot take.
    """
    t0 = time.perf_counter()
    if comm is not None or scan.is_share:
        if options.fsc or options.prtf_runs:
            raise ValueError("reconstruct_dataset: the FSC half-data runs and the PRTF runs are not available under "
                             "MPI; drop --fsc / --prtf")
        if comm is None:
            raise ValueError(f"reconstruct_dataset: the share holds {scan.frames.shape[0]} of "
                             f"{scan.n_positions} positions; pass the communicator it was read for")
        options = dataclasses.replace(options, progress=options.progress and comm.rank == 0)
    rec = build_engine(scan, recipe, probe, probe_na_rad=options.probe_na_rad,
                       comm=comm, execution=options.execution)
    if scan.positions is not None and not np.array_equal(rec.positions, scan.positions):
        raise ValueError(f"reconstruct_dataset: the share holds positions {scan.positions[:4]}... but this rank "
                         f"owns {rec.positions[:4]}...; read it with read_dataset_share(path, rank=, size=)")
    t_setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    errors: dict[str, str] = {}
    truth_errors: dict[str, float] = {}
    truth_grid: list[np.ndarray] = []

    def _phase_done(r: Any, phase: str) -> None:            # error against the truth at each phase's end
        if truth_object is None or "truth_error" in errors:
            return
        try:
            if not truth_grid:
                truth_grid.append(_truth_on_grid(truth_object, r))
            truth_errors[phase] = _truth_object_error(r, truth_grid[0])
        except Exception as exc:                        # noqa: BLE001 - reported, never fatal
            errors["truth_error"] = error_line(exc)

    iterate(rec, progress=options.progress, label=_BAR_LABEL, on_phase_end=_phase_done)
    t_iter = time.perf_counter() - t1
    res = rec.result()
    metrics: dict[str, Any] = {**run_metrics(res, n_angles=scan.n_angles),
                               "initial_probe_scale": float(rec.initial_probe_scale), **free_cost_metrics(res)}
    verdict = convergence(res.costs, res.phases, res.r_factors)
    metrics.update(convergence_metrics(verdict))
    metrics.update({f"truth_e_rho_{k}": v for k, v in truth_errors.items()})
    if truth_errors:
        metrics["truth_e_rho"] = truth_errors[res.phases[-1]] if res.phases[-1] in truth_errors else float("nan")
    timings = {"setup_s": t_setup, "iterations_s": t_iter,
               "per_iteration_mean_s": float(np.mean(res.timings_s)) if res.timings_s else 0.0}
    n_ranks = 1 if comm is None else int(comm.size)
    device = device_description(array_module(rec.state.object))
    provenance = {**scan.provenance, "software": "pxm", "software_info": software_info(), "recipe_name": recipe_name,
                  "probe_source": probe_source, "dataset": scan.source, "sample_name": scan.sample.get("name"),
                  "sample": sample_record(scan.sample, scan.geometry),   # material/hkl/d: pxm polarization's gate
                  "phases": list(res.phases), "mpi_ranks": n_ranks, "device": device}
    outcome = Outcome(result=res, metrics=dict(metrics), timings_s=dict(timings), recipe=recipe,
                      recipe_name=recipe_name, probe_source=probe_source, convergence=verdict,
                      postprocessing_errors=dict(errors), n_ranks=n_ranks, device=device,
                      provenance={k: v for k, v in provenance.items() if v is not None}, sample=dict(scan.sample))
    if checkpoint is not None:
        checkpoint(outcome)                             # nothing computed so far is lost if a step below fails
    strain, resolution, prtf_est = _postprocess(rec, scan, recipe, probe, options, metrics, timings, errors)
    return dataclasses.replace(outcome, strain=strain, resolution=resolution, prtf=prtf_est, metrics=metrics,
                               timings_s=timings, postprocessing_errors=errors)


def reconstruct_thin_layer(scan: BraggScan, recipe: Any, probe: np.ndarray, *, lattice_probe: np.ndarray | None = None,
                           lattice_probe_geometry: BraggGeometry | None = None, thin_layer: Any = None,
                           options: PipelineOptions = PipelineOptions(), recipe_name: str = THIN_LAYER,
                           probe_source: str = "given", checkpoint: Callable[[Outcome], Any] | None = None) -> Outcome:
    """A thin crystalline layer with a known probe, on the detector lattice, returned as the usual :class:`Outcome`.

    :func:`analysis.bragg.solvers.lattice.reconstruct_thin_layer` (difference map, slab picked by the data) runs on the
    lattice dual to the measured q at U = 1; its object goes onto pxm's grid at U = 1 exactly
    (:func:`analysis.bragg.solvers.lattice.detector_lattice_to_grid`: y line scans only, anything else is refused).
    The engine is built on that grid with ``recipe`` (0 iterations, probe held, no scale matching, b = 0) only to
    state the result in pxm's model: ``r_factor`` is pxm's sheared-grid model on the grid object (one global
    factor fitted: ``lattice_to_grid_scale``), ``r_factor_lattice_model`` the lattice model's (the one the map
    fitted; also the phase's "cost"). Then checkpoint, strain, as for :func:`reconstruct`. The results keep the
    lattice object and its placement as ``/lattice/*``.

    Parameters
    ----------
    scan
        The whole scan (no MPI share).
    recipe
        The engine's recipe on the grid: :func:`analysis.bragg.recipes.thin_layer_recipe`.
    probe
        (N2, N3) P2 on the U = 1 grid, the known probe (held).
    lattice_probe, lattice_probe_geometry
        The same probe on a finer geometry (any U; the probe file's own P2 at the dataset's U), used for the
        lattice probe; None: ``probe`` on the U = 1 grid.
    thin_layer
        :class:`analysis.bragg.solvers.lattice.ThinLayerOptions`, or None: the defaults with thicknesses from the sample
        (:meth:`~analysis.bragg.solvers.lattice.ThinLayerOptions.for_sample`) and, when ``recipe.n_epie_iterations`` > 0
        (``--iterations N``), N map iterations on the chosen slab.
    options, recipe_name, probe_source, checkpoint
        As for :func:`reconstruct` (no FSC, no PRTF).

    Returns
    -------
    Outcome
        Object on pxm's grid, metrics (both R-factors, the slab chosen), strain, provenance.
    """
    import warnings

    from analysis.bragg.engine import UndersampledWarning
    from analysis.bragg.ptypy_bragg import lattice_transfer
    from analysis.bragg.solvers import lattice as lat_dm

    if scan.is_share:
        raise ValueError(f"{THIN_LAYER} recipe: runs in one process on the whole scan; drop --mpi")
    if options.fsc or options.prtf_runs:
        raise ValueError(f"{THIN_LAYER} recipe: the FSC and PRTF runs need the engine's iterations; drop --fsc/--prtf")
    g = recipe_geometry(scan.geometry, recipe)
    if g.upsampling != 1:
        raise ValueError(f"{THIN_LAYER} recipe: the detector lattice is the grid at U = 1, got U = {g.upsampling}; "
                         "drop --upsampling")
    t0 = time.perf_counter()
    lattice = lat_dm.DetectorLattice.from_geometry(g)
    lscan = lat_dm.lattice_scan(lattice, scan.stage_xyz_m)
    lat_dm.check_line_scan(lattice, lscan)                  # before any work: one line for a scan it cannot map
    if scan.frame_valid is not None and not np.all(scan.frame_valid):
        raise ValueError(f"{THIN_LAYER} recipe: the scan has missing frames; the lattice map needs every frame")
    with warnings.catch_warnings():                     # the sampling check sizes pxm's grid model, not the lattice's
        warnings.simplefilter("ignore", UndersampledWarning)
        rec = build_engine(scan, recipe, probe, probe_na_rad=options.probe_na_rad,
                           execution=options.execution)
    res0 = rec.result()
    transfer = lattice_transfer(g, g.theta_bragg_deg, res0.object.shape, res0.origin_vox, res0.offsets_vox)
    t_setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    if recipe.n_ml_iterations:
        raise ValueError(f"{THIN_LAYER} recipe: no ML refinement on the lattice; drop --ml")
    finish = {"n_iterations": int(recipe.n_epie_iterations)} if recipe.n_epie_iterations else {}   # --iterations N
    opts = thin_layer if thin_layer is not None else lat_dm.ThinLayerOptions.for_sample(dict(scan.sample), **finish)
    frames, mask = np.asarray(scan.frames, float), np.asarray(scan.mask, bool)
    if g.rocking_step_deg < 0:
        frames, mask = frames[:, ::-1], (mask[::-1] if mask.ndim == 3 else mask)
    found = lat_dm.reconstruct_thin_layer(
        frames, mask, scan.stage_xyz_m, g, probe if lattice_probe is None else lattice_probe,
        g if lattice_probe_geometry is None else lattice_probe_geometry, sample=dict(scan.sample), options=opts)
    t_iter = time.perf_counter() - t1
    grid_obj = lat_dm.detector_lattice_to_grid(found.search.object, lattice, lscan, transfer)
    xp = array_module(rec.state.object)
    r_initial = float(rec.r_factor())
    scale = _fit_scale(rec, grid_obj)                   # the lattice's unnormalised FFT vs pxm's operator
    grid_obj = grid_obj * scale
    rec.state.object = xp.asarray(rec.model_object(grid_obj), dtype=rec.state.object.dtype)
    amp = np.abs(grid_obj)
    rec.state.support = xp.asarray(amp >= 0.1 * amp.max(initial=0.0))
    r_grid = float(rec.r_factor())
    search = found.search
    hist = tuple(float(v) for v in search.r_history)
    phase = "thin_layer"
    res = dataclasses.replace(rec.result(), costs=hist, phases=(phase,) * len(hist),
                              timings_s=(t_iter / max(len(hist), 1),) * len(hist),
                              r_factors={"initial": r_initial, phase: r_grid},
                              r_factor_history=(float("nan"),) * (len(hist) - 1) + (r_grid,) if hist else ())
    c = search.chosen
    metrics: dict[str, Any] = {**run_metrics(res, n_angles=scan.n_angles),
                               "initial_probe_scale": 1.0, "r_factor_lattice_model": float(c.r_factor),
                               f"final_{phase}_cost": float(c.r_factor),
                               "lattice_to_grid_scale": scale,
                               "lattice_slab_thickness_m": c.thickness_m, "lattice_slab_offset_m": c.offset_m,
                               "lattice_slab_voxels": c.n_voxels, "lattice_slabs_tried": len(search.trials),
                               "lattice_score": search.score,
                               "lattice_ml_iterations": (0 if search.refinement is None
                                                         else int(search.refinement.n_iterations)),
                               "lattice_map_iterations": int(len(search.trials) * opts.n_search_iterations
                                                             + opts.n_iterations),
                               "n_iterations": int(len(search.trials) * opts.n_search_iterations
                                                   + opts.n_iterations)}
    if search.refinement is not None:
        metrics.update({"lattice_ml_nll_start": float(search.refinement.nll_start),
                        "lattice_ml_nll_end": float(search.refinement.nll_end)})
    verdict = convergence(hist, (phase,) * len(hist), {"initial": hist[0] if hist else float("nan"),
                                                       phase: float(min(hist, default=float("nan")))})
    verdict = dataclasses.replace(verdict, reason=verdict.reason.replace(
        "ePIE: cost", f"lattice map: R-factor per {min(10, max(opts.n_iterations, 1))} iterations"))
    metrics.update(convergence_metrics(verdict))
    timings = {"setup_s": t_setup, "iterations_s": t_iter,
               "per_iteration_mean_s": t_iter / max(metrics["lattice_map_iterations"], 1)}
    device = device_description(array_module(rec.state.object))
    provenance = {**scan.provenance, "software": "pxm", "software_info": software_info(), "recipe_name": recipe_name,
                  "probe_source": probe_source, "dataset": scan.source, "sample_name": scan.sample.get("name"),
                  "sample": sample_record(scan.sample, scan.geometry), "phases": [phase], "mpi_ranks": 1,
                  "device": device, "lattice_route": (
                      "difference map on the detector lattice, slab picked by the data "
                      "(analysis.bragg.solvers.lattice); /object is its exact image on pxm's U = 1 grid")}
    extra = {"lattice/object": search.object.astype(np.complex64), "lattice/support": search.support,
             "lattice/vectors_lab_m": lattice.vectors_lab_m, "lattice/origin_lab_m": lscan.origin_lab_m,
             "lattice/view_starts": lscan.starts, "lattice/slab_normal_lab": found.normal,
             "lattice/trials_r_factor": np.array([t.r_factor for t in search.trials], float),
             "lattice/trials_thickness_m": np.array([t.thickness_m for t in search.trials], float),
             "lattice/trials_offset_m": np.array([t.offset_m for t in search.trials], float)}
    outcome = Outcome(result=res, metrics=dict(metrics), timings_s=dict(timings), recipe=recipe,
                      recipe_name=recipe_name, probe_source=probe_source, convergence=verdict,
                      postprocessing_errors={}, n_ranks=1, device=device,
                      provenance={k: v for k, v in provenance.items() if v is not None}, sample=dict(scan.sample),
                      extra_datasets=extra)
    if checkpoint is not None:
        checkpoint(outcome)
    errors: dict[str, str] = {}
    strain, _, _ = _postprocess(rec, scan, recipe, probe, options, metrics, timings, errors)
    return dataclasses.replace(outcome, strain=strain, metrics=metrics, timings_s=timings,
                               postprocessing_errors=errors)


def _fit_scale(rec: Any, obj: np.ndarray) -> float:
    """The real factor s > 0 with the lowest R-factor of s·``obj`` in the engine's model (a bounded search on log s).

    The lattice map's model is an unnormalised FFT of ρ·P; pxm's operator has its own normalisation, so the same
    object fits the same data up to one global factor.
    """
    from scipy.optimize import minimize_scalar

    dtype = rec.state.object.dtype
    xp = array_module(rec.state.object)

    def r_at(log_s: float) -> float:
        rec.state.object = xp.asarray(rec.model_object(obj * 10.0 ** log_s), dtype=dtype)
        return float(rec.r_factor())

    grid = np.arange(-4.0, 6.01, 1.0)
    k = int(np.argmin([r_at(v) for v in grid]))
    fit = minimize_scalar(r_at, bounds=(grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]), method="bounded",
                          options={"xatol": 1e-3})
    return float(10.0 ** fit.x)


def _postprocess(rec: Any, scan: BraggScan, recipe: Any, probe: np.ndarray, options: PipelineOptions,
                 metrics: dict[str, Any], timings: dict[str, float], errors: dict[str, str],
                 ) -> tuple[Any, ResolutionEstimate | None, PRTFEstimate | None]:
    """Strain maps, half-data FSC and PRTF; fills ``metrics``, ``timings`` and ``errors`` in place."""
    from analysis import strain as strain_module  # looked up at call time: tests replace strain_from_geometry

    res = rec.result()
    strain = resolution = prtf_est = None
    t2 = time.perf_counter()
    try:
        strain = strain_module.strain_from_geometry(res.object, res.geometry, support=res.support,
                                                    amplitude_reference=rec.illuminated_support(),
                                                    options=options.strain)
        metrics["valid_strain_voxels"] = int(np.sum(np.asarray(strain.mask)))
    except Exception as exc:                            # noqa: BLE001 - reported in the results, never fatal
        errors["strain"] = error_line(exc)
    timings["strain_s"] = time.perf_counter() - t2
    if options.fsc:
        from analysis.metrics import binomial_split

        t3 = time.perf_counter()
        try:
            half_a, half_b = binomial_split(scan.frames, rng=np.random.default_rng(options.fsc_split_seed))
            halves = []
            for name, frames in (("half A", half_a), ("half B", half_b)):
                r_half = build_engine(scan.with_frames(frames), recipe, probe, probe_na_rad=options.probe_na_rad,
                                      execution=options.execution)
                halves.append(iterate(r_half, progress=options.progress, label=f"{_BAR_LABEL} {name}"))
            resolution = half_data_resolution(halves[0], halves[1], split_seed=options.fsc_split_seed,
                                              illumination_fraction=options.fsc_illumination_fraction)
            metrics.update(resolution.metrics())
        except Exception as exc:                        # noqa: BLE001
            errors["fsc"] = error_line(exc)
        timings["fsc_s"] = time.perf_counter() - t3
    if options.prtf_runs:
        t4 = time.perf_counter()
        try:
            runs = prtf_reconstructions(scan, recipe, probe, options)
            prtf_est = prtf_resolution(runs, seed=options.prtf_seed)
            metrics.update(prtf_est.metrics())
        except Exception as exc:                        # noqa: BLE001
            errors["prtf"] = error_line(exc)
        timings["prtf_s"] = time.perf_counter() - t4
    return strain, resolution, prtf_est


def prtf_reconstructions(scan: BraggScan, recipe: Any, probe: np.ndarray, options: PipelineOptions) -> list[Any]:
    """``options.prtf_runs`` reconstructions of the full data from random starts, for :func:`prtf_resolution`.

    Run k starts from the support with a white random phase (seed ``prtf_seed + k``) and visits the
    positions in its own random order (``recipe.rng_seed + 1 + k``); probe, recipe and data are the
    main run's. Random starts are what make the PRTF test uniqueness (Chapman et al. 2006).

    Parameters
    ----------
    scan, recipe, probe
        As for :func:`reconstruct`.
    options
        ``prtf_runs``, ``prtf_seed``, probe mask, backend, progress.

    Returns
    -------
    list of analysis.bragg.engine.Reconstruction
        The K iterated engines.
    """
    runs = []
    for k in range(options.prtf_runs):
        r = dataclasses.replace(recipe, rng_seed=recipe.rng_seed + 1 + k)
        rec = build_engine(scan, r, probe, probe_na_rad=options.probe_na_rad,
                           execution=options.execution)
        rng = np.random.default_rng(options.prtf_seed + k)
        phase = np.exp(2j * np.pi * rng.random(tuple(rec.state.object.shape)))
        xp = array_module(rec.state.object)
        rec.state.object = rec.state.object * xp.asarray(phase, dtype=rec.state.object.dtype)
        runs.append(iterate(rec, progress=options.progress,
                            label=f"{_BAR_LABEL} PRTF run {k + 1}/{options.prtf_runs}"))
    return runs


# ------------------------------------------------------------------------------------------ metrics
def free_cost_metrics(result: ReconstructionResult) -> dict[str, Any]:
    """Scalar summary of the held-out (free) data checks for ``/metrics``.

    Parameters
    ----------
    result
        The engine's result.

    Returns
    -------
    dict
        ``free_*`` keys; empty without held-out data.
    """
    h = result.free
    if h is None:
        return {}
    return {"free_fraction": float(h.fraction), "free_unit": h.unit, "free_entries": int(h.n_free_entries),
            "free_best_cost": float(h.best_free_cost), "free_best_iteration": int(h.best_iteration or 0),
            "free_final_cost": float(h.free_costs[-1]) if h.free_costs else float("nan"),
            "free_stopped_phases": ",".join(h.stopped_phases),
            # the last check per phase
            **{f"free_cost_{ph}": float(c) for ph, c in zip(h.phases, h.free_costs, strict=True)},
            **{f"free_r_factor_{k}": float(v) for k, v in result.free_r_factors.items()}}


def run_metrics(result: ReconstructionResult, *, n_angles: int) -> dict[str, Any]:
    """Counts, cost and R-factor per phase of a run for ``/metrics`` (docs/dataset-format.md §2, "Quality").

    ``final_<phase>_cost`` is the last cost of each phase; ``r_factor_initial``, ``r_factor_<phase>``:
    :meth:`analysis.bragg.engine.Reconstruction.r_factor` before the first iteration and at each phase's end;
    ``r_factor``: at the end of the last phase.

    Parameters
    ----------
    result
        The engine's result.
    n_angles
        Rocking angles of the scan.

    Returns
    -------
    dict
        The scalar metrics.
    """
    costs = np.asarray(result.costs, float)
    phases = np.asarray(result.phases)
    out: dict[str, Any] = {
        "n_iterations": int(result.iterations),
        "final_cost": float(costs[-1]) if costs.size else float("nan"),
        "final_epie_cost": float(costs[phases == "epie"][-1]) if np.any(phases == "epie") else float("nan"),
        "final_ml_cost": float(costs[phases == "ml"][-1]) if np.any(phases == "ml") else float("nan"),
        "n_positions": int(result.offsets_vox.shape[0]),
        "n_angles": int(n_angles),
        "support_voxels": int(np.sum(result.support)),
    }
    out.update({f"r_factor_{k}": float(v) for k, v in result.r_factors.items()})
    last = str(phases[-1]) if phases.size else None
    out["r_factor"] = float(result.r_factors.get(last, float("nan"))) if last else float("nan")
    return out


def convergence_metrics(verdict: ConvergenceVerdict) -> dict[str, Any]:
    """The convergence verdict for ``/metrics``: ``converged`` and how it was reached.

    Parameters
    ----------
    verdict
        Of :func:`analysis.metrics.convergence`.

    Returns
    -------
    dict
        ``converged`` and the ``convergence_*`` keys.
    """
    from analysis.metrics import ConvergenceRule

    return {"converged": bool(verdict.converged), "convergence_phase": verdict.phase,
            "convergence_relative_cost_change": float(verdict.relative_cost_change),
            "convergence_window_iterations": int(verdict.window_iterations),
            "convergence_reason": verdict.reason, "convergence_rule": ConvergenceRule().describe()}


def _truth_on_grid(truth_object: TruthObject, rec: Any) -> np.ndarray:
    """ρ_true at every voxel of the engine's object grid (positions from the result's placement)."""
    res_shape = tuple(int(n) for n in rec.state.object.shape)
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in res_shape), indexing="ij"), axis=-1)
    pos = rec.placement.position_m(idx)
    tru = np.asarray(truth_object(pos[..., 0], pos[..., 1], pos[..., 2]))
    if tru.shape != res_shape:
        raise ValueError(f"truth_object: returned shape {tru.shape} for points of shape {res_shape}; it must map "
                         "(x, y, z) arrays in metres to ρ of the same shape")
    return tru


def _truth_object_error(rec: Any, truth: np.ndarray) -> float:
    """E_ρ of the engine's current ρ against ``truth`` on the lit crystal.

    The region: |ρ_true| ≥ ½ max dilated by one voxel, ∧ Σ_j|P_j|² ≥ 20 % of its maximum (as the simulator
    tests' region).
    """
    from scipy.ndimage import binary_dilation

    from analysis.metrics import object_error
    from analysis.xp import to_numpy

    amp = np.abs(truth)
    w = rec.illumination()
    lit = binary_dilation(amp >= 0.5 * amp.max(), iterations=1) & (w >= 0.2 * w.max())
    if not lit.any():
        raise ValueError("truth_object: the true crystal is nowhere lit by the probe on this object grid")
    return float(object_error(to_numpy(rec.state.object), truth, support=lit).error)


# ------------------------------------------------------------------------------------------ the default's two routes
def lattice_route_reason(scan: BraggScan, *, probe_known: bool, comm: Communicator | None = None) -> str | None:
    """None when the lattice route can map ``scan`` (the default recipe then runs both routes); else why not.

    Parameters
    ----------
    scan
        The scan.
    probe_known
        A probe file (or ``--probe-run``) gives the probe: the lattice route holds it.
    comm
        MPI communicator: the lattice route runs in one process only.

    Returns
    -------
    str or None
        None, or one phrase: no probe file, MPI, missing frames, or not a line scan along y.
    """
    from analysis.bragg.solvers import lattice as lat_dm

    if not probe_known:
        return "no probe file (the lattice route holds a known probe)"
    if comm is not None or scan.is_share:
        return "MPI (the lattice route runs in one process)"
    if scan.frame_valid is not None and not np.all(scan.frame_valid):
        return "missing frames (the lattice route needs every frame)"
    g1 = dataclasses.replace(scan.geometry, upsampling=1)
    lattice = lat_dm.DetectorLattice.from_geometry(g1)
    try:
        lat_dm.check_line_scan(lattice, lat_dm.lattice_scan(lattice, scan.stage_xyz_m))
    except ValueError:
        return "not a line scan along y (the views differ along the detector rows or the beam)"
    return None


def _lattice_data(scan: BraggScan) -> tuple[np.ndarray, np.ndarray, Any, Any, bool]:
    """(amplitudes (POS, N1, N2, NM), mask (N1, N2, ·), lattice, lattice scan, flipped) of ``scan`` at U = 1."""
    from analysis.bragg.solvers import lattice as lat_dm

    g1 = dataclasses.replace(scan.geometry, upsampling=1)
    frames, mask = np.asarray(scan.frames, float), np.asarray(scan.mask, bool)
    flip = g1.rocking_step_deg < 0
    if flip:
        frames, mask = frames[:, ::-1], (mask[::-1] if mask.ndim == 3 else mask)
    amplitudes = np.sqrt(np.moveaxis(np.clip(frames, 0, None), 1, -1))
    m = np.moveaxis(mask, 0, -1) if mask.ndim == 3 else mask[:, :, None]
    lattice = lat_dm.DetectorLattice.from_geometry(g1)
    return amplitudes, m, lattice, lat_dm.lattice_scan(lattice, scan.stage_xyz_m), flip


def lattice_model_r_factor(scan: BraggScan, result: ReconstructionResult) -> tuple[float, float]:
    """(R, s): the R-factor of a grid result (object, probe, background) on the lattice model, one factor s fitted.

    The grid object goes onto the detector lattice by the exact inverse transfer
    (:func:`analysis.bragg.solvers.lattice.grid_to_detector_lattice`; at U the object is U views long along n3 and
    the model folds it onto the measured planes), the result's own P2 is carried along k̂_i to the lattice, and its
    background is added: R = Σ|√I − √(s²|Ψ|² + b)| / Σ√I over the measured pixels, s fitted (the lattice FFT is
    unnormalised). The truth through this gives R 5×10⁻⁸ on ptypy's CI subset at U = 1, 2 and 3. Line scans along y.

    Parameters
    ----------
    scan
        The scan the result was made from.
    result
        A result on pxm's grid (any U).

    Returns
    -------
    tuple of float
        The R-factor and the fitted factor.
    """
    from analysis.bragg.ptypy_bragg import lattice_transfer
    from analysis.bragg.solvers import lattice as lat_dm
    from analysis.xp import to_numpy

    amplitudes, mask, lattice, lscan, flip = _lattice_data(scan)
    g = result.geometry
    obj = to_numpy(result.object)
    transfer = lattice_transfer(g, g.theta_bragg_deg, obj.shape, np.asarray(result.origin_vox, float),
                                np.asarray(result.offsets_vox))
    ext = lat_dm.grid_to_detector_lattice(obj, lattice, lscan, transfer)
    wide = lat_dm.DetectorLattice(vectors_lab_m=lattice.vectors_lab_m,
                                  view_shape=(*lattice.view_shape[:2], int(ext.shape[2])))
    probe = lat_dm.lattice_probe_from_p2(wide, g, to_numpy(result.probe))
    model = lat_dm.lattice_model_amplitudes(ext, probe, lattice, lscan)
    bg = np.asarray(to_numpy(result.background), float)
    bg = np.moveaxis(bg[::-1] if flip else bg, 0, -1)
    return lat_dm.fitted_r_factor(model, amplitudes, mask, bg)


def _lattice_result_r_factor(scan: BraggScan, outcome: Outcome, probe: np.ndarray, probe_geometry: BraggGeometry,
                             ) -> tuple[float, float]:
    """(R, s) of the lattice route's object (``/lattice/object``), held probe (:func:`lattice_model_r_factor`)."""
    from analysis.bragg.solvers import lattice as lat_dm

    amplitudes, mask, lattice, lscan, _ = _lattice_data(scan)
    obj = np.asarray(outcome.extra_datasets["lattice/object"], complex)
    lp = lat_dm.lattice_probe_from_p2(lattice, probe_geometry, probe)
    return lat_dm.fitted_r_factor(lat_dm.lattice_model_amplitudes(obj, lp, lattice, lscan), amplitudes, mask)


def reconstruct_default(scan: BraggScan, recipe: Any, probe: np.ndarray, *, lattice_probe_u1: np.ndarray,
                        options: PipelineOptions = PipelineOptions(), recipe_name: str = DEFAULT,
                        probe_source: str = "given", truth_object: TruthObject | None = None,
                        checkpoint: Callable[[Outcome], Any] | None = None) -> Outcome:
    """The default recipe where the lattice route applies: both routes, the lower R on the lattice model kept.

    :func:`reconstruct` (the grid route, ``recipe``) and :func:`reconstruct_thin_layer` (the lattice route, the
    known probe held) run on the same scan; each result is scored on the lattice model, where the model is exact
    (:func:`lattice_model_r_factor` for the grid object with its own probe and background; the lattice object with
    the held probe; one global factor fitted for each). Not pxm's grid model: there, on ptypy's case, a wrong
    object has a lower R (0.055) than the truth (0.080). The winner is returned with ``route``,
    ``route_r_factor_lattice_model_grid``/``_lattice``, ``route_rule`` and the loser's E against the truth where
    known in its metrics. Call it only where :func:`lattice_route_reason` is None.

    Parameters
    ----------
    scan, recipe, options, recipe_name, probe_source, truth_object
        As for :func:`reconstruct`.
    probe
        (N2, N3) P2 on ``recipe_geometry(scan.geometry, recipe)``: the grid route's start and the lattice route's
        probe (carried to the lattice from this U).
    lattice_probe_u1
        The same probe on the U = 1 grid (the lattice route's grid, where its object is put).
    checkpoint
        Called with the grid route's outcome before its post-processing, and again with the winner.

    Returns
    -------
    Outcome
        The winning route's outcome.
    """
    from analysis.bragg.recipes import thin_layer_recipe

    t0 = time.perf_counter()
    grid = reconstruct(scan, recipe, probe, options=options, recipe_name=recipe_name, probe_source=probe_source,
                       truth_object=truth_object, checkpoint=checkpoint)
    t_grid = time.perf_counter() - t0
    g_probe = recipe_geometry(scan.geometry, recipe)
    t1 = time.perf_counter()
    layer = reconstruct_thin_layer(scan, thin_layer_recipe(), lattice_probe_u1, lattice_probe=probe,
                                   lattice_probe_geometry=g_probe, options=options, recipe_name=recipe_name,
                                   probe_source=f"{probe_source}, held fixed")
    t_layer = time.perf_counter() - t1
    r_grid, s_grid = lattice_model_r_factor(scan, grid.result)
    r_layer, s_layer = _lattice_result_r_factor(scan, layer, probe, g_probe)
    won = "lattice" if r_layer < r_grid else "grid"
    line = (f"route: {won} (R-factor on the lattice model: lattice route {r_layer:.4g}, grid route {r_grid:.4g}; "
            f"on pxm's grid model: lattice route {layer.metrics.get('r_factor', float('nan')):.4g}, grid route "
            f"{grid.metrics.get('r_factor', float('nan')):.4g})")
    route = {"route": won, "route_line": line, "route_rule": ROUTE_RULE,
             "route_r_factor_lattice_model_grid": r_grid, "route_r_factor_lattice_model_lattice": r_layer,
             "route_lattice_model_scale_grid": s_grid, "route_lattice_model_scale_lattice": s_layer,
             "route_r_factor_grid_model_grid": float(grid.metrics.get("r_factor", float("nan"))),
             "route_r_factor_grid_model_lattice": float(layer.metrics.get("r_factor", float("nan")))}
    if "truth_e_rho" in grid.metrics:
        route["route_grid_truth_e_rho"] = float(grid.metrics["truth_e_rho"])
    winner = layer if won == "lattice" else grid
    timings = {**winner.timings_s, "grid_route_s": t_grid, "lattice_route_s": t_layer}
    out = dataclasses.replace(winner, metrics={**winner.metrics, **route}, timings_s=timings,
                              provenance={**winner.provenance, "route": line})
    if checkpoint is not None:
        checkpoint(out)                                 # the winner replaces the grid route's early write
    return out
