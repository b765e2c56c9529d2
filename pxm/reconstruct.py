"""``pxm reconstruct`` and ``pxm probe``: dataset → engine → results file, CXI and figures.

* :func:`recipe_by_name` (from :mod:`analysis.recipes`) — ``seed`` (Methods: 1000 ePIE + 500 ML),
  ``baseline`` (fixed probe, U = 1) and ``quick`` (a few iterations, for CI and smoke tests);
* :func:`initial_probe` — P2 from a probe file written by ``pxm probe`` (forward
  ptychography of the Siemens-star spiral) or from the KB rectangular-NA model;
* :func:`reconstruct_dataset` — checks the dataset against the engine before iterating,
  runs it with a tqdm bar, the quality metrics (R-factor per phase, convergence), then the
  post-processing (strain/tilt maps, FSC, PRTF), whose failures are recorded, not raised;
* :func:`write_reconstruction` / :func:`write_outputs` — results HDF5 (``docs/dataset-format.md`` §2)
  in two stages (the reconstruction first, then the post-processing), optional CXI and PNGs;
* :func:`probe_from_spiral_run` / :func:`write_probe_file` — ``pxm probe``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from analysis.dataset import BraggDataset, DatasetShare, scan_axes
from analysis.engine import FreeCostHistory, Recipe, ReconstructionResult
from analysis.geometry import BraggGeometry
from analysis.metrics import ConvergenceVerdict, ShellCurve, convergence, prtf, random_phase_prtf, shell_crossing
from analysis.probe_file import PROBE_FILE_FORMAT, read_probe_file, write_probe_file
from analysis.recipes import PRESETS, quick_recipe, recipe_by_name   # noqa: F401 - re-exported for existing callers
from analysis.solvers.distributed import Communicator
from analysis.strain import StrainMaps
from analysis.xp import array_module, backend, device_description

__all__ = ["RECIPES", "KB_NA_V_RAD", "KB_NA_H_RAD", "PROBE_FILE_FORMAT", "quick_recipe", "recipe_by_name",
           "ReconstructOptions", "ReconstructionOutcome", "ResolutionEstimate", "engine_inputs", "initial_probe",
           "half_data_resolution", "fsc_cone_axes", "PRTFEstimate", "prtf_resolution", "prtf_reconstructions",
           "reconstruct_dataset", "free_cost_metrics", "run_metrics", "convergence_metrics", "error_line",
           "PHASE_NAMES", "POSTPROCESSING_STEPS", "write_reconstruction", "write_outputs", "software_info",
           "write_probe_file",
           "read_probe_file", "probe_mask_na_rad", "probe_from_spiral_run"]

RECIPES = tuple(PRESETS)
KB_NA_V_RAD = 3.7e-4
"""Vertical NA of the seed's KB mirrors (rad)."""
KB_NA_H_RAD = 1.9e-4
"""Horizontal NA of the seed's KB mirrors (rad)."""


@dataclass(frozen=True, kw_only=True)
class ReconstructOptions:
    """Everything ``pxm reconstruct`` decides besides the recipe."""

    na_v_rad: float = KB_NA_V_RAD
    """Vertical NA of the model probe (no probe file) and of its NA mask (rad)."""
    na_h_rad: float = KB_NA_H_RAD
    """Horizontal NA of the model probe (no probe file) and of its NA mask (rad)."""
    defocus_m: float = 0.0
    """Defocus of the model probe (m)."""
    use_na_mask: bool = True
    """Model probe: constrain its angular spectrum to na_factor × (na_v_rad, na_h_rad) during ePIE (the
    model is the seed's KB optics). A probe from a file gets a mask only from ``probe_na_mask_rad``."""
    probe_na_mask_rad: tuple[float, float] | None = None
    """(V, H) NA of the mask during ePIE, for any probe (``--probe-na-mask``); None: a probe file gets no
    mask, the model probe its KB mask (``use_na_mask``)."""
    probe_recentre: bool = False
    """Probe file: move its intensity centroid to the centre of P2 (else its pixel N//2 is the beam axis)."""
    probe_blur_px: float = 0.0
    """Probe file: Gaussian low-pass of σ = this many P2 samples before resampling (0: none)."""
    progress: bool = True
    """Show a tqdm progress bar on stderr."""
    scale_probe_to_data: bool = True
    """Rescale the initial probe so the first view predicts the measured counts."""
    fsc: bool = False
    """Also reconstruct two half-data sets (binomial photon split, same recipe and seeds) and
    estimate the resolution by their FSC (spec 4.5); triples the run time."""
    fsc_split_seed: int = 0
    """Seed of the binomial photon split."""
    fsc_illumination_fraction: float = 0.1
    """FSC mask: voxels in both supports where Σ_j |P_j|² ≥ this fraction of its maximum."""
    prtf_runs: int = 0
    """K > 0: also run K more reconstructions of the full data from random starts (white random phase in
    the support, their own position order) and compute their PRTF (spec 4.5); K + 1 times the run time.
    K must be at least 6: fewer runs average even unrelated phases above the 1/e threshold."""
    prtf_seed: int = 0
    """Seed of the PRTF runs' random starts (run k: ``prtf_seed + k``)."""
    backend: str = "auto"
    """Array backend of the engine: ``"auto"`` (CuPy when a GPU is usable, else NumPy; the environment
    variable ``PXM_BACKEND`` overrides it), ``"numpy"`` or ``"cupy"`` (:func:`analysis.xp.backend`)."""

    def __post_init__(self) -> None:
        if self.prtf_runs < 0:
            raise ValueError(f"ReconstructOptions.prtf_runs must be >= 0, got {self.prtf_runs}")
        floor = random_phase_prtf(self.prtf_runs) if self.prtf_runs else 0.0
        if floor >= 1 / np.e:
            raise ValueError(f"ReconstructOptions.prtf_runs: {self.prtf_runs} runs with unrelated phases already "
                             f"average to PRTF {floor:.2f}, above the 1/e threshold; use at least 6")
        if self.backend not in ("auto", "numpy", "cupy"):
            raise ValueError(f"ReconstructOptions.backend: {self.backend!r}, expected 'auto', 'numpy' or 'cupy'")
        if not 0.0 < self.fsc_illumination_fraction < 1.0:
            raise ValueError(f"ReconstructOptions.fsc_illumination_fraction must lie in (0, 1), "
                             f"got {self.fsc_illumination_fraction}")
        if not (np.isfinite(self.probe_blur_px) and self.probe_blur_px >= 0):
            raise ValueError(f"ReconstructOptions.probe_blur_px: {self.probe_blur_px}, expected >= 0 P2 pixels "
                             "(0 = no blur)")
        na = self.probe_na_mask_rad
        if na is not None and (len(na) != 2 or not all(np.isfinite(v) and 0 < v < 1 for v in na)):
            raise ValueError(f"ReconstructOptions.probe_na_mask_rad: {na!r}, expected two NAs (V, H) in rad, "
                             "each in (0, 1), e.g. --probe-na-mask 3.7e-4 1.9e-4")


@dataclass(frozen=True, kw_only=True)
class ResolutionEstimate:
    """Half-data resolution (spec 4.5): FSC of two binomial-split reconstructions."""

    fsc: ShellCurve = field(repr=False)
    """FSC over full shells, frequencies in 1/m; ``resolution`` at the ½-bit threshold (m)."""
    fsc_directional: dict[str, ShellCurve] = field(repr=False)
    """FSC in ±20° cones about the lab/sample axes ``z`` (along Q, the ε_zz direction), ``y``, ``x``;
    each cone's shells run to the grid's Nyquist frequency along its axis."""
    mask_voxels: int
    """Voxels in the common FSC mask."""
    mask: Any = field(default=None, repr=False)
    """The common soft mask (object grid, values in [0, 1]) both halves were multiplied by."""
    split_seed: int
    """Seed of the binomial split."""

    def metrics(self) -> dict[str, float]:
        """Scalar summary for ``/metrics``: resolutions in metres.

        A resolution is NaN when its curve never crosses the threshold; then ``*_finest_period_m``,
        the finest period the curve examined, bounds it (grid-limited: finer than that).
        """
        out = {"fsc_resolution_m": float(self.fsc.resolution), "fsc_finest_period_m": float(self.fsc.finest_period),
               "fsc_mask_voxels": int(self.mask_voxels), "fsc_split_seed": int(self.split_seed)}
        for k, c in self.fsc_directional.items():
            out[f"fsc_resolution_{k}_m"] = float(c.resolution)
            out[f"fsc_finest_period_{k}_m"] = float(c.finest_period)
        return out

    def summary(self) -> str:
        """One line: the ½-bit FSC resolutions (all shells, z, y, x), in nm.

        A curve that never crosses reads "< P nm" with P its finest period (grid-limited).
        """
        cones = ", ".join(f"{k} {_resolution_nm(c)}" for k, c in self.fsc_directional.items())
        return f"half-data resolution: FSC (½-bit) all shells {_resolution_nm(self.fsc)}; {cones}"


@dataclass(frozen=True, kw_only=True)
class PRTFEstimate:
    """PRTF of K reconstructions of the full data from random starts (spec 4.5; Chapman et al. 2006).

    It measures how reproducibly phase retrieval lands on the same far-field phases, not the noise in
    the data (the runs fit the same noise): a PRTF above 1/e to the detector edge says the result does
    not depend on the start; the noise-limited resolution is the half-data FSC's.
    """

    prtf: ShellCurve = field(repr=False)
    """Over full shells of |q| on the measured planes (1/m), averaged over positions."""
    prtf_directional: dict[str, ShellCurve] = field(repr=False)
    """In ±20° cones about the lab/sample axes z (along Q), y, x, on the q-points of the measured frame
    (detector × rocking, sheared: :meth:`~analysis.geometry.BraggGeometry.measured_q_basis_per_m`)."""
    n_runs: int
    """K, the number of runs compared."""
    random_floor: float
    """PRTF of K runs with unrelated phases (:func:`analysis.metrics.random_phase_prtf`)."""
    seed: int
    """Seed of the random starts."""

    def metrics(self) -> dict[str, float]:
        """Scalar summary for ``/metrics`` (NaN resolution: never crosses; see ``prtf_finest_period_m``)."""
        out = {"prtf_resolution_m": float(self.prtf.resolution), "prtf_finest_period_m": float(self.prtf.finest_period),
               "prtf_runs": int(self.n_runs), "prtf_random_floor": float(self.random_floor),
               "prtf_seed": int(self.seed)}
        for k, c in self.prtf_directional.items():
            out[f"prtf_resolution_{k}_m"] = float(c.resolution)
            out[f"prtf_finest_period_{k}_m"] = float(c.finest_period)
        return out

    def summary(self) -> str:
        """One line: the 1/e PRTF resolutions (all shells, z, y, x) of the K runs, in nm."""
        cones = ", ".join(f"{k} {_resolution_nm(c)}" for k, c in self.prtf_directional.items())
        return (f"PRTF of {self.n_runs} runs from random starts (1/e): all shells {_resolution_nm(self.prtf)}; "
                f"{cones} (unrelated phases would give {self.random_floor:.2f})")


def _resolution_nm(c: ShellCurve) -> str:
    """"N nm" at the crossing, "< P nm" with P the finest period examined when it never crosses, or "no data"
    when no shell holds a voxel (e.g. a PRTF cone without counted pixels)."""
    if np.isfinite(c.resolution):
        return f"{c.resolution * 1e9:.0f} nm"
    return f"< {c.finest_period * 1e9:.0f} nm" if np.isfinite(c.finest_period) else "no data"


@dataclass(frozen=True, kw_only=True)
class ReconstructionOutcome:
    """What one reconstruction produced."""

    result: ReconstructionResult = field(repr=False)
    metrics: dict[str, Any]
    timings_s: dict[str, float]
    recipe: Recipe
    recipe_name: str
    probe_source: str
    strain: StrainMaps | None = field(default=None, repr=False)
    """Strain/tilt maps; None before post-processing or when it failed (``postprocessing_errors["strain"]``)."""
    resolution: ResolutionEstimate | None = None
    prtf: PRTFEstimate | None = None
    convergence: ConvergenceVerdict | None = None
    """The convergence verdict of the run (:func:`analysis.metrics.convergence`)."""
    postprocessing_errors: dict[str, str] = field(default_factory=dict)
    """Post-processing step (:data:`POSTPROCESSING_STEPS`) → the one-line error that stopped it."""
    n_ranks: int = 1
    """MPI ranks the positions were split across (1: one process)."""
    device: str = "CPU"
    """Where the engine's arrays lived (:func:`analysis.xp.device_description`)."""

    def quality_lines(self) -> list[str]:
        """One line per phase: R-factor, cost, free cost and free R-factor, E_ρ against the truth where known
        (the closing line is ``convergence.summary()``)."""
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


def software_info() -> dict[str, str]:
    """pxm and key library versions."""
    from importlib import metadata

    out = {"name": "pxm"}
    for pkg in ("pxm", "numpy", "scipy", "h5py"):
        try:
            out[pkg if pkg != "pxm" else "version"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg if pkg != "pxm" else "version"] = "unknown"
    return out


def engine_inputs(dataset: BraggDataset) -> dict[str, Any]:
    """frames (POS, ANGLE, N1, N2) float32, mask, stage_xyz_m (POS, 3), rocking_offsets_deg (ANGLE,).

    Raises ValueError for what the engine cannot take: a partial (flat) scan, positions that
    change with the angle by more than 10 nm, angles that differ between positions.
    """
    if dataset.layout != "grid":
        raise ValueError("dataset: flat layout (a partial scan); the reconstruction needs every position at every "
                         "angle (grid layout)")
    stage, offsets = scan_axes(dataset.rocking_angle_deg, dataset.stage_position_m, dataset.geometry)
    return dict(frames=np.asarray(dataset.frames, np.float32), mask=np.asarray(dataset.detector_mask, bool),
                stage_xyz_m=stage, rocking_offsets_deg=offsets)


# ------------------------------------------------------------------------------------------ probe files
def probe_mask_na_rad(options: ReconstructOptions, *, from_file: bool) -> tuple[float, float] | None:
    """(V, H) NA of the ePIE probe mask, or None: the user's NA, else the KB NA for the model probe only."""
    if options.probe_na_mask_rad is not None:
        return (float(options.probe_na_mask_rad[0]), float(options.probe_na_mask_rad[1]))
    if from_file or not options.use_na_mask:
        return None
    return (options.na_v_rad, options.na_h_rad)


def initial_probe(geometry: BraggGeometry, *, probe_file: str | Path | None = None,
                  options: ReconstructOptions = ReconstructOptions()) -> tuple[np.ndarray, str]:
    """(P2 on ``geometry.recon_shape[1:]``, one line: its source and what was done to it, NA mask included)."""
    from analysis.probe_file import p2_from_probe_file
    from analysis.probe_init import ProbeInitOptions, model_probe

    na = probe_mask_na_rad(options, from_file=probe_file is not None)
    na_text = "no NA mask" if na is None else f"NA mask {na[0]:g} (V) × {na[1]:g} (H) rad"
    if probe_file is not None:
        pf = read_probe_file(probe_file)
        init = ProbeInitOptions(recentre=options.probe_recentre, blur_px=options.probe_blur_px)
        try:
            p2, how = p2_from_probe_file(pf, geometry, options=init)
        except ValueError as exc:
            raise ValueError(f"{probe_file}: {exc}") from None
        run = f" (run {pf.metadata['raw_uid']})" if "raw_uid" in pf.metadata else ""
        return p2, f"file {probe_file}{run}, {pf.describe()}, {how}, {na_text}"
    if options.probe_recentre or options.probe_blur_px:
        raise ValueError("--probe-recentre and --probe-blur-px act on a probe file; give --probe-file or "
                         "--probe-run (the model probe is centred and band-limited already)")
    p2 = model_probe(geometry, na_v_rad=options.na_v_rad, na_h_rad=options.na_h_rad, defocus_m=options.defocus_m)
    return p2, (f"model: KB rectangular NA {options.na_v_rad:g} (V) × {options.na_h_rad:g} (H) rad (the seed's "
                f"optics) on P2 ({p2.shape[0]}×{p2.shape[1]}), {na_text}")


def _scale_probe(rec: Any) -> float:
    """Scale the engine's probe so view 0 predicts the measured counts of position 0; return the factor.

    Under MPI the rank holding position 0 computes the sums and every rank gets them by all-reduce.
    """
    st, d, op = rec.state, rec.data, rec.op
    xp = array_module(st.object)
    pred = meas = 0.0
    if rec.positions.size and rec.positions[0] == 0:            # this rank holds position 0 (as row 0)
        view = op.view(d.offsets_vox[0])
        psi = op.fourier.forward(op.probe_at(st.probe, d.shifts_px[0]) * st.object[view])
        mask = d.mask_at(0)                                     # fitted entries only: held-out data stays unseen
        pred = float(xp.sum(xp.where(mask, psi.real ** 2 + psi.imag ** 2, 0.0), dtype=xp.float64))
        meas = float(xp.sum(xp.where(mask, d.intensities[0], 0.0), dtype=xp.float64))
    pred, meas = rec.comm.allreduce_scalar(pred), rec.comm.allreduce_scalar(meas)
    if not (pred > 0 and meas > 0):
        return 1.0
    f = float(np.sqrt(meas / pred))
    st.probe = st.probe * st.probe.dtype.type(f)
    return f


# ------------------------------------------------------------------------------------------ run
def reconstruct_dataset(dataset: BraggDataset | DatasetShare, *, recipe: Recipe, recipe_name: str = "custom",
                        probe_file: str | Path | None = None, options: ReconstructOptions = ReconstructOptions(),
                        comm: Communicator | None = None,
                        checkpoint: Callable[[ReconstructionOutcome], Any] | None = None,
                        truth_object: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
                        ) -> ReconstructionOutcome:
    """Validate, build the engine, iterate the whole recipe (tqdm), then the quality metrics and post-processing.

    Quality (every run): R-factor per phase, cost, free cost, the convergence verdict
    (:func:`analysis.metrics.convergence`) and, with ``truth_object`` (ρ_true at sample-frame points
    x, y, z in metres, e.g. ``BraggSimulator.truth_object``), E_ρ against the truth per phase.
    ``checkpoint(outcome)`` is called with them before any post-processing (write the results there).
    Post-processing: strain maps; with ``options.fsc`` two reconstructions of a binomial photon split
    (``outcome.resolution``); with ``options.prtf_runs`` = K, K full-data runs from random starts
    (``outcome.prtf``). A failing step is recorded in ``outcome.postprocessing_errors``, never raised.
    With ``comm`` (MPI ranks, ``docs/mpi.md``) ``dataset`` is this rank's
    :class:`~analysis.dataset.DatasetShare`, the recipe needs ``epie.n_batches`` ≥ 1 and every rank
    returns the same result (the bar shows on rank 0 only); FSC is not available then.
    """
    from analysis.strain import strain_from_geometry

    t0 = time.perf_counter()
    if comm is not None or isinstance(dataset, DatasetShare):
        if not isinstance(dataset, DatasetShare):
            raise ValueError("reconstruct_dataset: with a communicator, pass this rank's DatasetShare "
                             "(analysis.dataset.read_dataset_share)")
        if options.fsc or options.prtf_runs:
            raise ValueError("reconstruct_dataset: the FSC half-data runs and the PRTF runs are not available under "
                             "MPI; drop --fsc / --prtf")
        if comm is None and dataset.positions.size != dataset.n_positions:
            raise ValueError(f"reconstruct_dataset: the share holds {dataset.positions.size} of "
                             f"{dataset.n_positions} positions; pass the communicator it was read for")
        stage, offsets = scan_axes(dataset.rocking_angle_deg, dataset.stage_position_m, dataset.geometry)
        inputs = dict(frames=np.asarray(dataset.local.frames, np.float32),
                      mask=np.asarray(dataset.local.detector_mask, bool), stage_xyz_m=stage,
                      rocking_offsets_deg=offsets)
        options = dataclasses.replace(options, progress=options.progress and (comm is None or comm.rank == 0))
    else:
        inputs = engine_inputs(dataset)
    geom = dataset.geometry
    if recipe.upsampling is not None and recipe.upsampling != geom.upsampling:
        geom = dataclasses.replace(geom, upsampling=recipe.upsampling)
    p2, source = initial_probe(geom, probe_file=probe_file, options=options)
    na = probe_mask_na_rad(options, from_file=probe_file is not None)
    rec, scale = _build_engine(geom, inputs, inputs["frames"], p2, recipe, na, options, comm)
    if isinstance(dataset, DatasetShare) and not np.array_equal(rec.positions, dataset.positions):
        raise ValueError(f"reconstruct_dataset: the share holds positions {dataset.positions[:4]}... but this rank "
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

    _iterate_with_bar(rec, recipe, options, "pxm reconstruct", on_phase_end=_phase_done)
    t_iter = time.perf_counter() - t1
    res = rec.result()
    metrics: dict[str, Any] = {**run_metrics(res, n_angles=int(inputs["frames"].shape[1])),
                               "initial_probe_scale": scale, **free_cost_metrics(res)}
    verdict = convergence(res.costs, res.phases, res.r_factors)
    metrics.update(convergence_metrics(verdict))
    metrics.update({f"truth_e_rho_{k}": v for k, v in truth_errors.items()})
    if truth_errors:
        metrics["truth_e_rho"] = truth_errors[res.phases[-1]] if res.phases[-1] in truth_errors else float("nan")
    timings = {"setup_s": t_setup, "iterations_s": t_iter,
               "per_iteration_mean_s": float(np.mean(res.timings_s)) if res.timings_s else 0.0}
    outcome = ReconstructionOutcome(result=res, metrics=dict(metrics), timings_s=dict(timings), recipe=recipe,
                                    recipe_name=recipe_name, probe_source=source, convergence=verdict,
                                    postprocessing_errors=dict(errors), n_ranks=1 if comm is None else int(comm.size),
                                    device=device_description(array_module(rec.state.object)))
    if checkpoint is not None:
        checkpoint(outcome)                             # nothing computed so far is lost if a step below fails
    strain = resolution = prtf_est = None
    t2 = time.perf_counter()
    try:
        strain = strain_from_geometry(res.object, res.geometry, support=res.support,
                                      amplitude_reference=rec.illuminated_support())
        metrics["valid_strain_voxels"] = int(np.sum(np.asarray(strain.mask)))
    except Exception as exc:                            # noqa: BLE001 - reported in the results, never fatal
        errors["strain"] = error_line(exc)
    timings["strain_s"] = time.perf_counter() - t2
    if options.fsc:
        from analysis.metrics import binomial_split

        t3 = time.perf_counter()
        try:
            half_a, half_b = binomial_split(inputs["frames"], rng=np.random.default_rng(options.fsc_split_seed))
            halves = []
            for name, frames in (("half A", half_a), ("half B", half_b)):
                r_half, _ = _build_engine(geom, inputs, frames, p2, recipe, na, options)
                halves.append(_iterate_with_bar(r_half, recipe, options, f"pxm reconstruct {name}"))
            resolution = half_data_resolution(halves[0], halves[1], split_seed=options.fsc_split_seed,
                                              illumination_fraction=options.fsc_illumination_fraction)
            metrics.update(resolution.metrics())
        except Exception as exc:                        # noqa: BLE001
            errors["fsc"] = error_line(exc)
        timings["fsc_s"] = time.perf_counter() - t3
    if options.prtf_runs:
        t4 = time.perf_counter()
        try:
            runs = prtf_reconstructions(geom, inputs, p2, recipe, na, options)
            prtf_est = prtf_resolution(runs, seed=options.prtf_seed)
            metrics.update(prtf_est.metrics())
        except Exception as exc:                        # noqa: BLE001
            errors["prtf"] = error_line(exc)
        timings["prtf_s"] = time.perf_counter() - t4
    return dataclasses.replace(outcome, strain=strain, resolution=resolution, prtf=prtf_est, metrics=metrics,
                               timings_s=timings, postprocessing_errors=errors)


def _build_engine(geom: BraggGeometry, inputs: dict[str, Any], frames: np.ndarray, p2: np.ndarray, recipe: Recipe,
                  na: tuple[float, float] | None, options: ReconstructOptions,
                  comm: Communicator | None = None) -> tuple[Any, float]:
    """A Reconstruction on ``frames`` (the full data or one half) and the initial probe scale applied."""
    from analysis.engine import Reconstruction

    rec = Reconstruction(geom, frames, inputs["mask"], inputs["stage_xyz_m"], inputs["rocking_offsets_deg"], p2,
                         recipe=recipe, probe_na_rad=na, comm=comm, xp=backend(options.backend))
    scale = _scale_probe(rec) if options.scale_probe_to_data else 1.0
    return rec, scale


def _iterate_with_bar(rec: Any, recipe: Recipe, options: ReconstructOptions, desc: str,
                      on_phase_end: Callable[[Any, str], None] | None = None) -> Any:
    """Iterate the whole recipe with a tqdm bar; returns ``rec``. ``on_phase_end(rec, phase)`` runs once
    after each phase ('epie', 'ml') ends (when the engine records its R-factor)."""
    from tqdm import tqdm

    done: set[str] = set()
    with tqdm(total=recipe.n_iterations, desc=desc, unit="it", disable=not options.progress,
              dynamic_ncols=True) as bar:
        while rec.remaining_iterations > 0:          # fewer than n_iterations when the free-data rule stops
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


def free_cost_metrics(result: ReconstructionResult) -> dict[str, Any]:
    """Scalar summary of the held-out (free) data checks for ``/metrics`` (empty without held-out data)."""
    h = result.free
    if h is None:
        return {}
    return {"free_fraction": float(h.fraction), "free_unit": h.unit, "free_entries": int(h.n_free_entries),
            "free_best_cost": float(h.best_free_cost), "free_best_iteration": int(h.best_iteration or 0),
            "free_final_cost": float(h.free_costs[-1]) if h.free_costs else float("nan"),
            "free_stopped_phases": ",".join(h.stopped_phases),
            **{f"free_cost_{ph}": float(c) for ph, c in zip(h.phases, h.free_costs)},   # the last check per phase
            **{f"free_r_factor_{k}": float(v) for k, v in result.free_r_factors.items()}}


PHASE_NAMES = {"epie": "ePIE", "ml": "ML"}
"""Display names of the engine's phases."""
POSTPROCESSING_STEPS = {"strain": "strain maps", "fsc": "half-data FSC", "prtf": "PRTF runs",
                        "truth_error": "error against the truth", "resolution": "resolution curves",
                        "free_cost": "free-cost record", "cxi": "CXI export", "figures": "figures",
                        "publish": "publication to Tiled"}
"""Post-processing steps whose failure is recorded (``/postprocessing_errors``) instead of ending the run."""


def error_line(exc: BaseException) -> str:
    """``Type: message`` on one line (for ``/postprocessing_errors`` and the warning the CLI prints)."""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def run_metrics(result: ReconstructionResult, *, n_angles: int) -> dict[str, Any]:
    """Counts, cost and R-factor per phase of a run for ``/metrics`` (docs/dataset-format.md §2, "Quality").

    ``final_<phase>_cost`` is the last cost of each phase; ``r_factor_initial``, ``r_factor_<phase>``:
    :meth:`analysis.engine.Reconstruction.r_factor` before the first iteration and at each phase's end;
    ``r_factor``: at the end of the last phase.
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
    """The convergence verdict for ``/metrics``: ``converged`` and how it was reached."""
    from analysis.metrics import ConvergenceRule

    return {"converged": bool(verdict.converged), "convergence_phase": verdict.phase,
            "convergence_relative_cost_change": float(verdict.relative_cost_change),
            "convergence_window_iterations": int(verdict.window_iterations),
            "convergence_reason": verdict.reason, "convergence_rule": ConvergenceRule().describe()}


def _truth_on_grid(truth_object: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], rec: Any) -> np.ndarray:
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
    """E_ρ of the engine's current ρ against ``truth`` on the lit crystal: |ρ_true| ≥ ½ max dilated by one
    voxel, ∧ Σ_j|P_j|² ≥ 20 % of its maximum (as the simulator tests' region)."""
    from scipy.ndimage import binary_dilation

    from analysis.metrics import object_error
    from analysis.xp import to_numpy

    amp = np.abs(truth)
    w = rec.illumination()
    lit = binary_dilation(amp >= 0.5 * amp.max(), iterations=1) & (w >= 0.2 * w.max())
    if not lit.any():
        raise ValueError("truth_object: the true crystal is nowhere lit by the probe on this object grid")
    return float(object_error(to_numpy(rec.state.object), truth, support=lit).error)


def fsc_cone_axes(geometry: BraggGeometry) -> dict[str, np.ndarray]:
    """Lab/sample axes z (along Q), y, x in the object's array coordinates (components along e1, e2, e3):
    the ``cone_axis`` of each directional FSC of :func:`half_data_resolution`."""
    lab = geometry.lab_axes()
    native = np.stack([lab["e1"], lab["e2"], lab["e3"]])  # rows: e_a in lab (x, y, z)
    return {name: native[:, i] for name, i in (("z", 2), ("y", 1), ("x", 0))}


def half_data_resolution(rec_a: Any, rec_b: Any, *, split_seed: int = 0, illumination_fraction: float = 0.1,
                         cone_half_angle_deg: float = 20.0) -> ResolutionEstimate:
    """FSC (½-bit) of two reconstructions of binomial half-data sets (spec 4.5).

    The common mask is S_A ∧ S_B ∧ [Σ_j |P_j|² ≥ ``illumination_fraction`` · max] (never-lit voxels keep
    the identical start object in both halves and would fake correlation), softened by a 1-voxel
    Gaussian. B is registered to A (sub-voxel shift, phase ramp, complex scale; :func:`object_error`).
    The native axes e1, e2, e3 are orthogonal, so voxel sizes give 1/m directly, and the cones about
    lab z, y, x have the axes (z·e1, z·e2, z·e3), … in array coordinates.
    """
    from scipy.ndimage import gaussian_filter

    from analysis.metrics import fourier_shell_correlation, object_error

    ra, rb = rec_a.result(), rec_b.result()
    ill = rec_a.illumination()
    hard = ra.support & rb.support & (ill >= illumination_fraction * ill.max())
    if not hard.any():
        raise ValueError("half_data_resolution: the supports of the halves do not overlap on the illuminated region")
    soft = gaussian_filter(hard.astype(float), 1.0)
    b_aligned = object_error(rb.object, ra.object, support=hard).aligned
    vox = ra.geometry.voxel_size_m
    fsc = fourier_shell_correlation(ra.object, b_aligned, voxel_size_m=vox, mask=soft)
    cones = {name: fourier_shell_correlation(ra.object, b_aligned, voxel_size_m=vox, mask=soft,
                                             cone_axis=axis, cone_half_angle_deg=cone_half_angle_deg)
             for name, axis in fsc_cone_axes(ra.geometry).items()}
    return ResolutionEstimate(fsc=fsc, fsc_directional=cones, mask_voxels=int(hard.sum()), mask=soft,
                              split_seed=split_seed)


def prtf_reconstructions(geometry: BraggGeometry, inputs: dict[str, Any], probe_p2: np.ndarray, recipe: Recipe,
                         na: tuple[float, float] | None, options: ReconstructOptions) -> list[Any]:
    """``options.prtf_runs`` reconstructions of the full data from random starts, for :func:`prtf_resolution`.

    Run k starts from the support with a white random phase (seed ``prtf_seed + k``) and visits the
    positions in its own random order (``recipe.rng_seed + 1 + k``); probe, recipe and data are the
    main run's. Random starts are what make the PRTF test uniqueness (Chapman et al. 2006).
    """
    runs = []
    for k in range(options.prtf_runs):
        r = dataclasses.replace(recipe, rng_seed=recipe.rng_seed + 1 + k)
        rec, _ = _build_engine(geometry, inputs, inputs["frames"], probe_p2, r, na, options)
        rng = np.random.default_rng(options.prtf_seed + k)
        phase = np.exp(2j * np.pi * rng.random(tuple(rec.state.object.shape)))
        xp = array_module(rec.state.object)
        rec.state.object = rec.state.object * xp.asarray(phase, dtype=rec.state.object.dtype)
        runs.append(_iterate_with_bar(rec, r, options, f"pxm reconstruct PRTF run {k + 1}/{options.prtf_runs}"))
    return runs


def prtf_resolution(runs: list[Any], *, seed: int = 0, cone_half_angle_deg: float = 20.0) -> PRTFEstimate:
    """PRTF (1/e) of K runs on the same data (spec 4.5): full shells of |q| and cones, averaged over positions.

    Per position, every run's far field Ψ_j^(k) = F(P_j^(k) ρ_j^(k)) on the measured planes is aligned in
    global phase to run 0's, then :func:`analysis.metrics.prtf` (modulus-constrained: the phase
    consistency |⟨e^{iφ_k}⟩| where I > 0) gives the shell values; shells are averaged over positions
    with their pixel counts as weights. |q| and the cones about z, y, x (:func:`fsc_cone_axes`, e-frame
    components) are taken on the true q-points of the measured frame, whose rocking axis is sheared
    (:meth:`~analysis.geometry.BraggGeometry.measured_q_basis_per_m`), in cycles per metre as the FSC's.
    """
    from analysis.xp import to_numpy

    if len(runs) < 2:
        raise ValueError(f"prtf_resolution: needs at least 2 runs, got {len(runs)}")
    op, data, g = runs[0].op, runs[0].data, runs[0].geometry
    basis = g.measured_q_basis_per_m()
    axes = {"all": None, **fsc_cone_axes(g)}
    sums: dict[str, list[Any]] = {}
    template: dict[str, ShellCurve] = {}
    for j in range(data.n_positions):
        if not data.has_data(j):
            continue
        psi = [to_numpy(op.fourier.forward(op.probe_at(r.state.probe, data.shifts_px[j])
                                           * r.state.object[op.view(data.offsets_vox[j])])) for r in runs]
        for k in range(1, len(psi)):
            c = np.vdot(psi[k], psi[0])
            psi[k] = psi[k] * (c / abs(c) if abs(c) > 0 else 1.0)
        stack, inten, mask = np.stack(psi), to_numpy(data.intensities[j]), to_numpy(data.mask_at(j))
        for name, axis in axes.items():
            c = prtf(stack, inten, mask=mask, q_basis=basis, cone_axis=axis, cone_half_angle_deg=cone_half_angle_deg)
            w = np.nan_to_num(c.value) * c.n_voxels
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0], acc[1] = acc[0] + w, acc[1] + c.n_voxels
            template[name] = c
    if not template:
        raise ValueError("prtf_resolution: no position has measured frames")
    curves = {}
    for name, (num, den) in sums.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            val = num / den
        t = template[name]
        curves[name] = ShellCurve(frequency=t.frequency, value=val, threshold=t.threshold, n_voxels=den,
                                  crossing_frequency=shell_crossing(np.asarray(t.frequency), val,
                                                                    np.asarray(t.threshold)))
    return PRTFEstimate(prtf=curves.pop("all"), prtf_directional=curves, n_runs=len(runs),
                        random_floor=random_phase_prtf(len(runs)), seed=seed)


def _provenance(outcome: ReconstructionOutcome, dataset: BraggDataset | DatasetShare,
                dataset_source: str | None) -> dict[str, Any]:
    res = outcome.result
    provenance = {**dataset.provenance, "software": "pxm", "software_info": software_info(),
                  "recipe_name": outcome.recipe_name, "probe_source": outcome.probe_source,
                  "dataset": dataset_source, "sample_name": dataset.sample.get("name"),
                  "phases": list(res.phases), "mpi_ranks": outcome.n_ranks, "device": outcome.device}
    return {k: v for k, v in provenance.items() if v is not None}


def write_reconstruction(outcome: ReconstructionOutcome, results_path: str | Path, *,
                         dataset: BraggDataset | DatasetShare, dataset_source: str | None = None) -> Path:
    """First stage of the results file: what the iterations produced, before any post-processing.

    Object (with its placement), probe, background, cost history, metrics (quality and convergence
    included), parameters, timings, geometry, provenance and ``/free_cost``; ``/@status`` is
    "iterations complete" until :func:`write_outputs` adds the post-processing.
    """
    import h5py

    from analysis.dataset import write_results

    t0 = time.perf_counter()
    res = outcome.result
    write_results(results_path, object=res.object, probe=res.probe, voxel_size_m=res.geometry.voxel_size_m,
                  background=res.background, metrics=outcome.metrics, parameters=dataclasses.asdict(outcome.recipe),
                  timings_s=outcome.timings_s, error_history=res.costs, geometry=res.geometry,
                  provenance=_provenance(outcome, dataset, dataset_source),
                  placement=res.placement if res.origin_vox is not None else None, status="iterations complete",
                  postprocessing_errors=outcome.postprocessing_errors or None)
    with h5py.File(results_path, "a") as f:
        if res.free is not None:
            _write_free_cost(f, res.free)
        f["timings"].attrs["write_s"] = time.perf_counter() - t0
    return Path(results_path)


def write_outputs(outcome: ReconstructionOutcome, results_path: str | Path, *, dataset: BraggDataset | DatasetShare,
                  dataset_source: str | None = None, cxi_path: str | Path | None = None,
                  figures_dir: str | Path | None = None, reconstruction_written: bool = False) -> dict[str, Any]:
    """Results HDF5 (+ CXI, PNGs); returns {"results": path, "cxi": path|None, "figures": [paths], "errors": {}}.

    Writes :func:`write_reconstruction` first (unless ``reconstruction_written``), then adds strain maps,
    post-processing metrics and resolution curves and writes the CXI file and figures. A step that fails
    is recorded (``errors``, ``/postprocessing_errors``: step → one line) with the errors already in
    ``outcome.postprocessing_errors``; the file stays readable and ``/@status`` says whether all went well.
    """
    import h5py

    from analysis.dataset import append_results, write_cxi

    res = outcome.result
    g = res.geometry
    vox = g.voxel_size_m
    if not reconstruction_written:
        write_reconstruction(outcome, results_path, dataset=dataset, dataset_source=dataset_source)
    t0 = time.perf_counter()
    errors = dict(outcome.postprocessing_errors)
    append_results(results_path, strain=None if outcome.strain is None else {"reconstruction": outcome.strain},
                   metrics=outcome.metrics, timings_s=outcome.timings_s)
    if outcome.resolution is not None or outcome.prtf is not None:
        try:
            with h5py.File(results_path, "a") as f:
                _write_resolution(f, outcome.resolution, outcome.prtf)
        except Exception as exc:                        # noqa: BLE001 - reported, the file stays valid
            errors["resolution"] = error_line(exc)
    out: dict[str, Any] = {"results": Path(results_path), "cxi": None, "figures": [], "errors": errors}
    if cxi_path is not None:
        try:
            write_cxi(cxi_path, res.object, pixel_size_m=vox, probe=res.probe, probe_pixel_size_m=vox[1:],
                      energy_kev=g.energy_kev, detector_distance_m=g.detector_distance_m,
                      detector_pixel_size_m=g.pixel_size_m,
                      title=f"pxm Bragg ptychography {dataset.sample.get('name', '')}",
                      process={"recipe": dataclasses.asdict(outcome.recipe),
                               "provenance": _provenance(outcome, dataset, dataset_source)})
            out["cxi"] = Path(cxi_path)
        except Exception as exc:                        # noqa: BLE001
            errors["cxi"] = error_line(exc)
    if figures_dir is not None:
        out["figures"] = _figures(outcome, Path(figures_dir), errors)
    with h5py.File(results_path, "r") as f:
        write_s = float(f["timings"].attrs.get("write_s", 0.0))
    append_results(results_path, postprocessing_errors=errors or None,
                   timings_s={"write_s": write_s + time.perf_counter() - t0},
                   status="complete with post-processing errors" if errors else "complete")
    return out


def _figures(outcome: ReconstructionOutcome, d: Path, errors: dict[str, str]) -> list[Path]:
    """The PNGs that could be drawn; a figure that fails adds ``name: error`` to ``errors["figures"]``."""
    from analysis.figures import save_convergence, save_object_slices, save_probe, save_strain_slices

    res = outcome.result
    vox = res.geometry.voxel_size_m
    makers: dict[str, Callable[[Path], Path]] = {
        "object.png": lambda p: save_object_slices(p, res.object, title="object ρ", voxel_size_m=vox),
        "probe.png": lambda p: save_probe(p, res.probe, pixel_size_m=(vox[1], vox[2]), title="probe P2 (r2, r3)")}
    if outcome.strain is not None:
        makers["strain.png"] = lambda p: save_strain_slices(p, outcome.strain)
    makers["convergence.png"] = lambda p: save_convergence(p, res.costs, res.phases)
    if outcome.resolution is not None or outcome.prtf is not None:
        makers["resolution.png"] = lambda p: save_resolution(p, outcome.resolution, outcome.prtf)
    paths, failed = [], []
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        errors["figures"] = error_line(exc)
        return paths
    for name, make in makers.items():
        try:
            paths.append(make(d / name))
        except Exception as exc:                        # noqa: BLE001
            failed.append(f"{name}: {error_line(exc)}")
    if failed:
        errors["figures"] = "; ".join(failed)
    return paths


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


def _write_resolution(f: Any, est: ResolutionEstimate | None, pr: PRTFEstimate | None) -> None:
    """``/resolution/{fsc, fsc_z, fsc_y, fsc_x}`` (half-data FSC) and ``/resolution/{prtf, prtf_z, prtf_y,
    prtf_x}`` (K runs from random starts): curves and crossings (docs/dataset-format.md §2)."""
    g = f.require_group("resolution")
    curves: dict[str, ShellCurve] = {}
    if est is not None:
        g.attrs["method"] = "binomial photon split, two half-data reconstructions (spec 4.5)"
        g.attrs["split_seed"] = int(est.split_seed)
        g.attrs["mask_voxels"] = int(est.mask_voxels)
        curves.update({"fsc": est.fsc, **{f"fsc_{k}": c for k, c in est.fsc_directional.items()}})
    if pr is not None:
        g.attrs["prtf_method"] = "K full-data reconstructions from random starts, modulus-constrained far fields"
        g.attrs["prtf_runs"] = int(pr.n_runs)
        g.attrs["prtf_random_floor"] = float(pr.random_floor)
        g.attrs["prtf_seed"] = int(pr.seed)
        curves.update({"prtf": pr.prtf, **{f"prtf_{k}": c for k, c in pr.prtf_directional.items()}})
    for name, c in curves.items():
        h = g.create_group(name)
        h.create_dataset("frequency_per_m", data=np.asarray(c.frequency, float))
        h.create_dataset("value", data=np.asarray(c.value, float))
        h.create_dataset("threshold", data=np.asarray(c.threshold, float))
        h.create_dataset("n_voxels", data=np.asarray(c.n_voxels, float))
        h.attrs["crossing_frequency_per_m"] = float(c.crossing_frequency)
        h.attrs["resolution_m"] = float(c.resolution)
        h.attrs["finest_period_m"] = float(c.finest_period)
        h.attrs["threshold_kind"] = "1/e" if name.startswith("prtf") else "half-bit"


def _plot_curves(ax: Any, curves: dict[str, ShellCurve], threshold_label: str) -> None:
    for name, c in curves.items():
        line, = ax.plot(np.asarray(c.frequency) * 1e-6, c.value, "-" if name == "all shells" else "--",
                        label=f"{name} ({_resolution_nm(c)})")
        ax.plot(np.asarray(c.frequency) * 1e-6, c.threshold, ":", color=line.get_color(), lw=0.8)
    ax.plot([], [], "k:", label=threshold_label)
    ax.legend(fontsize=8)


def save_resolution(path: Path, est: ResolutionEstimate | None, pr: PRTFEstimate | None = None) -> Path:
    """PNG: the half-data FSC (all shells and the z/y/x cones) with the ½-bit threshold, and/or the PRTF of
    the random-start runs with 1/e and the unrelated-phase level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in (est, pr) if p is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, p in zip(axes[0], panels):
        if isinstance(p, ResolutionEstimate):
            _plot_curves(ax, {"all shells": p.fsc, **p.fsc_directional}, "½-bit")
            ax.set_xlabel("spatial frequency (1/µm)")
            ax.set_ylabel("FSC")
            ax.set_title("FSC of two half-data reconstructions")
        else:
            _plot_curves(ax, {"all shells": p.prtf, **p.prtf_directional}, "1/e")
            ax.axhline(p.random_floor, color="0.5", lw=0.8, label=f"{p.n_runs} unrelated runs")
            ax.set_xlabel("|q| (1/µm)")
            ax.set_ylabel("PRTF")
            ax.set_title(f"PRTF of {p.n_runs} runs from random starts")
            ax.set_ylim(0, 1.05)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


# ------------------------------------------------------------------------------------------ pxm probe
def probe_from_spiral_run(run: Any, *, n_iterations: int = 100, algorithm: str = "epie",
                          detector_pixel_size_m: float = 55e-6) -> tuple[np.ndarray, float, dict[str, Any], Any]:
    """Forward ptychography of a ``spiral_probe_scan`` run: (probe (V, H), pixel m, metadata, error history).

    Stage x ↔ detector rows ↔ V and stage y ↔ columns ↔ H (``sim.TransmissionSimulator``);
    the starting probe is the KB rectangular NA.
    """
    from analysis.forward_ptycho import (ForwardGeometry, ForwardPtychoOptions, forward_ptychography,
                                         rectangular_na_probe)
    from analysis.geometry import DetectorLayout, Roi

    start = run.metadata.get("start") or {}
    uid = start.get("uid", "?")
    if start.get("plan_name") != "spiral_probe_scan":
        raise ValueError(f"run {uid}: plan_name is {start.get('plan_name')!r}, expected 'spiral_probe_scan'")
    gmd = start.get("geometry") or {}
    for key in ("energy_kev", "detector_distance_m"):
        if key not in gmd:
            raise ValueError(f"run {uid}: metadata key 'start.geometry.{key}' is missing")
    det = (start.get("detectors") or [None])[0]
    if det is None:
        raise ValueError(f"run {uid}: metadata key 'start.detectors' is missing")
    stream = run["primary"]
    frames = np.asarray(stream[f"{det}_image"][:], float)
    axes = (start.get("pattern") or {}).get("axes", {})
    xk, yk = axes.get("x"), axes.get("y")
    x = np.asarray(stream[xk][:], float) if xk and xk in stream else None
    y = np.asarray(stream[yk][:], float) if yk and yk in stream else None
    if x is None or y is None:
        pos = np.asarray((start.get("pattern") or {}).get("positions_um"), float)
        if pos.ndim != 2:
            raise ValueError(f"run {uid}: metadata key 'start.pattern.positions_um' is missing")
        x, y = pos[:, 0], pos[:, 1]
    positions_m = np.stack([x, y], axis=1) * 1e-6
    cfg = dict(stream.metadata).get("configuration", {}).get(det, {}).get("data", {})
    mask = None
    if f"{det}_roi_row0_px" in cfg:
        roi = Roi(row0_px=int(cfg[f"{det}_roi_row0_px"]), col0_px=int(cfg[f"{det}_roi_col0_px"]),
                  n_rows_px=int(cfg[f"{det}_roi_n_rows_px"]), n_cols_px=int(cfg[f"{det}_roi_n_cols_px"]))
        mask = DetectorLayout().mask()[roi.slices]
    fg = ForwardGeometry(energy_kev=float(gmd["energy_kev"]), detector_distance_m=float(gmd["detector_distance_m"]),
                         detector_pixel_size_m=detector_pixel_size_m)
    n = frames.shape[1]
    px = fg.object_pixel_size_m(n)
    p0 = rectangular_na_probe(frames.shape[1:], pixel_size_m=px, wavelength_m=fg.wavelength_m,
                              na_rows=KB_NA_V_RAD, na_cols=KB_NA_H_RAD)
    out = forward_ptychography(frames, positions_m, pixel_size_m=px, initial_probe=p0, mask=mask,
                               options=ForwardPtychoOptions(algorithm=algorithm, n_iterations=n_iterations))
    md = {"raw_uid": uid, "plan_name": "spiral_probe_scan", "n_iterations": n_iterations, "algorithm": algorithm,
          "energy_kev": fg.energy_kev, "detector_distance_m": fg.detector_distance_m}
    return np.asarray(out.probe), px, md, out.error_history
