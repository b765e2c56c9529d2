"""``pxm reconstruct`` and ``pxm probe``: dataset → :func:`analysis.bragg.reconstruct` → results file, CXI and figures.

* :func:`recipe_by_name` (from :mod:`analysis.bragg.recipes`) — ``seed`` (Methods: 1000 ePIE + 500 ML),
  ``baseline`` (fixed probe, U = 1) and ``quick`` (a few iterations, for CI and smoke tests);
* :func:`initial_probe` — P2 from a probe file written by ``pxm probe`` (forward
  ptychography of the Siemens-star spiral) or from the KB rectangular-NA model;
* :func:`reconstruct_dataset` — the dataset as a validated :class:`~analysis.bragg.scan.BraggScan`, the
  initial probe, then the one pipeline :func:`analysis.bragg.pipeline.reconstruct` (engine, quality
  metrics, strain, FSC, PRTF; post-processing failures recorded, not raised);
* :func:`write_reconstruction` / :func:`write_outputs` — results HDF5 (``docs/dataset-format.md`` §2)
  in two stages (:func:`analysis.bragg.outcome.write_outcome`: the reconstruction first, then the
  post-processing), optional CXI and PNGs;
* :func:`probe_from_spiral_run` / :func:`write_probe_file` — ``pxm probe``.

The resolution science (FSC, PRTF) lives in :mod:`analysis.bragg.resolution`, the metrics and the
outcome in :mod:`analysis.bragg`; their names are re-exported here for existing callers.
"""

# Why this module is long: the `pxm reconstruct` command's one sequence: read, engine inputs, pipeline, write,
# publish.

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.bragg.engine import Recipe
from analysis.bragg.outcome import (
    PHASE_NAMES,
    POSTPROCESSING_STEPS,
    Outcome,
    error_line,
    finish_results,
    save_outcome_figures,
    software_info,
    write_outcome,
)
from analysis.bragg.pipeline import (
    DEFAULT,
    THIN_LAYER,
    PipelineOptions,
    TruthObject,
    convergence_metrics,
    free_cost_metrics,
    lattice_route_reason,
    recipe_geometry,
    reconstruct_default,
    reconstruct_thin_layer,
    run_metrics,
)
from analysis.bragg.pipeline import prtf_reconstructions as _prtf_runs
from analysis.bragg.pipeline import reconstruct as _reconstruct
from analysis.bragg.probe_file import PROBE_FILE_FORMAT, read_probe_file, write_probe_file
from analysis.bragg.recipes import PRESETS, quick_recipe, recipe_by_name  # noqa: F401 - re-exported for existing callers
from analysis.bragg.resolution import (
    PRTFEstimate,
    ResolutionEstimate,
    fsc_cone_axes,
    half_data_resolution,
    prtf_resolution,
    save_resolution,
)
from analysis.bragg.scan import BraggScan
from analysis.bragg.solvers.distributed import Communicator
from analysis.bragg.solvers.options import Execution
from analysis.dataset import BraggDataset, DatasetShare
from analysis.geometry import BraggGeometry
from analysis.metrics import random_phase_prtf

__all__ = ["RECIPES", "KB_NA_V_RAD", "KB_NA_H_RAD", "PROBE_FILE_FORMAT", "quick_recipe", "recipe_by_name",
           "ReconstructOptions", "ReconstructionOutcome", "ResolutionEstimate", "scan_of", "initial_probe",
           "half_data_resolution", "fsc_cone_axes", "PRTFEstimate", "prtf_resolution", "prtf_reconstructions",
           "reconstruct_dataset", "free_cost_metrics", "run_metrics", "convergence_metrics", "error_line",
           "PHASE_NAMES", "POSTPROCESSING_STEPS", "write_reconstruction", "write_outputs", "software_info",
           "save_resolution", "write_probe_file", "read_probe_file", "probe_mask_na_rad", "probe_from_spiral_run"]

RECIPES = tuple(PRESETS)
KB_NA_V_RAD = 3.7e-4
"""Vertical NA of the seed's KB mirrors (rad)."""
KB_NA_H_RAD = 1.9e-4
"""Horizontal NA of the seed's KB mirrors (rad)."""

ReconstructionOutcome = Outcome
"""What one reconstruction produced (:class:`analysis.bragg.outcome.Outcome`; the old name)."""


@dataclass(frozen=True, kw_only=True)
class ReconstructOptions:
    """Everything ``pxm reconstruct`` decides besides the recipe.

    There is no probe-scaling switch: the engine scales the initial probe, once, when the recipe's
    ``match_initial_scale`` is set (:mod:`analysis.bragg.pipeline`).
    """

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
    probe_label: str | None = None
    """Probe file: how ``probe_source`` names it in place of its path, e.g. the spiral run's Tiled key and uid
    when the file was temporary (``pxm reconstruct --probe-run``); None: its absolute path and run uid."""
    progress: bool = True
    """Show a tqdm progress bar on stderr."""
    fsc: bool = False
    """Also reconstruct two half-data sets (binomial photon split, same recipe and seeds) and
    estimate the resolution by their FSC (docs/dataset-format.md, Half-data resolution); triples the run time."""
    fsc_split_seed: int = 0
    """Seed of the binomial photon split."""
    fsc_illumination_fraction: float = 0.1
    """FSC mask: voxels in both supports where Σ_j |P_j|² ≥ this fraction of its maximum."""
    prtf_runs: int = 0
    """K > 0: also run K more reconstructions of the full data from random starts (white random phase in
    the support, their own position order) and compute their PRTF
    (docs/dataset-format.md, Half-data resolution); K + 1 times the run time.
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
        if floor >= float(np.exp(-1.0)):
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

    def pipeline_options(self, *, from_file: bool) -> PipelineOptions:
        """The :class:`~analysis.bragg.pipeline.PipelineOptions` of these options.

        Parameters
        ----------
        from_file
            The initial probe comes from a probe file (no KB NA mask unless ``probe_na_mask_rad``).

        Returns
        -------
        PipelineOptions
            Probe NA mask, backend, FSC, PRTF and progress of :func:`analysis.bragg.reconstruct`.
        """
        return PipelineOptions(probe_na_rad=probe_mask_na_rad(self, from_file=from_file),
                               execution=Execution(backend=self.backend),
                               fsc=self.fsc, fsc_split_seed=self.fsc_split_seed,
                               fsc_illumination_fraction=self.fsc_illumination_fraction, prtf_runs=self.prtf_runs,
                               prtf_seed=self.prtf_seed, progress=self.progress)



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
    from analysis.bragg.probe_file import p2_from_probe_file
    from analysis.bragg.probe_init import ProbeInitOptions, model_probe

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
        where = options.probe_label or f"file {Path(probe_file).resolve()}{run}"
        return p2, f"{where}, {pf.describe()}, {how}, {na_text}"
    if options.probe_recentre or options.probe_blur_px:
        raise ValueError("--probe-recentre and --probe-blur-px act on a probe file; give --probe-file or "
                         "--probe-run (the model probe is centred and band-limited already)")
    p2 = model_probe(geometry, na_v_rad=options.na_v_rad, na_h_rad=options.na_h_rad, defocus_m=options.defocus_m)
    return p2, (f"model: KB rectangular NA {options.na_v_rad:g} (V) × {options.na_h_rad:g} (H) rad (the seed's "
                f"optics) on P2 ({p2.shape[0]}×{p2.shape[1]}), {na_text}")


# ------------------------------------------------------------------------------------------ run
def scan_of(dataset: BraggDataset | DatasetShare, *, source: str | None = None) -> BraggScan:
    """The validated :class:`~analysis.bragg.scan.BraggScan` of a dataset (or of one MPI rank's share).

    Parameters
    ----------
    dataset
        A grid-layout dataset, or this rank's :class:`~analysis.dataset.DatasetShare`.
    source
        Where it was read from (results ``/provenance/dataset``).

    Returns
    -------
    BraggScan
        Frames, mask, mean stage positions and rocking offsets.

    Raises
    ------
    ValueError
        What the engine cannot take: a partial (flat) scan, positions that change with the angle by more
        than 10 nm, angles that differ between positions; and what has nothing to reconstruct: one rocking
        angle, frames without a photon.
    """
    if dataset.geometry.n_angles < 2:
        raise ValueError(f"{source or 'the dataset'}: one rocking angle; Bragg ptychography needs a rocking curve "
                         "(at least 2 angles, in practice a range of twice the probe's convergence) to resolve the "
                         "third dimension and the strain: measure the scan with more angles")
    if isinstance(dataset, DatasetShare):
        return BraggScan.from_share(dataset, source=source)
    frames = np.asarray(dataset.frames)
    if not np.any(frames[..., np.asarray(dataset.detector_mask, bool)] > 0):
        raise ValueError(f"{source or 'the dataset'}: no photons, every live pixel of every frame is 0; "
                         "nothing to reconstruct: check the beam, the shutter, the detector ROI and the exposure")
    return BraggScan.from_dataset(dataset, source=source)


def reconstruct_dataset(dataset: BraggDataset | DatasetShare, *, recipe: Recipe, recipe_name: str = "custom",
                        probe_file: str | Path | None = None, options: ReconstructOptions = ReconstructOptions(),
                        comm: Communicator | None = None, checkpoint: Callable[[Outcome], Any] | None = None,
                        truth_object: TruthObject | None = None, dataset_source: str | None = None) -> Outcome:
    """Validate the dataset, make the initial probe and run :func:`analysis.bragg.reconstruct` on them.

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
    The probe is scaled once, by the engine (``recipe.match_initial_scale``).

    Parameters
    ----------
    dataset
        The scan (grid layout), or this rank's share under MPI.
    recipe, recipe_name
        The recipe and its name.
    probe_file
        A probe file (``pxm probe``), or None for the KB model probe.
    options
        Probe, post-processing, backend and progress options.
    comm
        MPI communicator, or None.
    checkpoint
        Called with the outcome before post-processing.
    truth_object
        ρ_true at sample-frame points (x, y, z) in metres, or None.
    dataset_source
        Where the dataset was read from (``/provenance/dataset``).

    Returns
    -------
    Outcome
        The reconstruction, its metrics and post-processing.
    """
    if comm is not None and not isinstance(dataset, DatasetShare):
        raise ValueError("reconstruct_dataset: with a communicator, pass this rank's DatasetShare "
                         "(analysis.dataset.read_dataset_share)")
    if isinstance(dataset, DatasetShare) and (options.fsc or options.prtf_runs):
        raise ValueError("reconstruct_dataset: the FSC half-data runs and the PRTF runs are not available under "
                         "MPI; drop --fsc / --prtf")
    if recipe_name == THIN_LAYER:
        if probe_file is None:
            raise ValueError("--recipe thin-layer needs the known probe: give --probe-file F (or --probe-run UID)")
        if isinstance(dataset, DatasetShare):
            raise ValueError("--recipe thin-layer runs in one process on the whole scan; drop --mpi")
    scan = scan_of(dataset, source=dataset_source)
    p2, source = initial_probe(recipe_geometry(scan.geometry, recipe), probe_file=probe_file, options=options)
    if recipe_name == THIN_LAYER:
        fine = None if scan.geometry.upsampling == 1 else initial_probe(scan.geometry, probe_file=probe_file,
                                                                        options=options)[0]
        return reconstruct_thin_layer(scan, recipe, p2, lattice_probe=fine,
                                      lattice_probe_geometry=None if fine is None else scan.geometry,
                                      options=options.pipeline_options(from_file=True), recipe_name=recipe_name,
                                      probe_source=f"{source}, held fixed", checkpoint=checkpoint)
    popts = options.pipeline_options(from_file=probe_file is not None)
    if recipe_name == DEFAULT:                          # the exact model where it applies (docs/recipes.md)
        reason = ("--fsc/--prtf (they need the grid route's iterations)" if options.fsc or options.prtf_runs
                  else lattice_route_reason(scan, probe_known=probe_file is not None, comm=comm))
        if reason is None:
            p2_u1 = initial_probe(dataclasses.replace(scan.geometry, upsampling=1), probe_file=probe_file,
                                  options=options)[0]
            return reconstruct_default(scan, recipe, p2, lattice_probe_u1=p2_u1, options=popts,
                                       recipe_name=recipe_name, probe_source=source, truth_object=truth_object,
                                       checkpoint=checkpoint)
        route = {"route": "grid", "route_line": f"route: grid (lattice route not run: {reason})"}

        def with_route(o: Outcome) -> Any:              # the route is in the results from the first write
            return None if checkpoint is None else checkpoint(dataclasses.replace(o, metrics={**o.metrics, **route}))

        out = _reconstruct(scan, recipe, p2, comm=comm, options=popts, recipe_name=recipe_name, probe_source=source,
                           truth_object=truth_object, checkpoint=with_route)
        return dataclasses.replace(out, metrics={**out.metrics, **route})
    return _reconstruct(scan, recipe, p2, comm=comm, options=popts, recipe_name=recipe_name, probe_source=source,
                        truth_object=truth_object, checkpoint=checkpoint)


def prtf_reconstructions(geometry: BraggGeometry, inputs: dict[str, Any], probe_p2: np.ndarray, recipe: Recipe,
                         na: tuple[float, float] | None, options: ReconstructOptions) -> list[Any]:
    """``options.prtf_runs`` runs from random starts on engine inputs.

    :func:`analysis.bragg.pipeline.prtf_reconstructions` on the :class:`BraggScan` of ``inputs``.

    Parameters
    ----------
    geometry
        The scan's geometry.
    inputs
        ``frames``, ``mask``, ``stage_xyz_m``, ``rocking_offsets_deg`` (as the engine takes them).
    probe_p2, recipe, na
        Initial probe, recipe and ePIE NA mask (or None).
    options
        ``prtf_runs``, ``prtf_seed``, backend and progress.

    Returns
    -------
    list of analysis.bragg.engine.Reconstruction
        The iterated runs.
    """
    scan = BraggScan(geometry=geometry, frames=inputs["frames"], mask=np.asarray(inputs["mask"], bool),
                     stage_xyz_m=inputs["stage_xyz_m"], rocking_offsets_deg=inputs["rocking_offsets_deg"])
    popts = dataclasses.replace(options.pipeline_options(from_file=True), probe_na_rad=na)
    return _prtf_runs(scan, recipe, probe_p2, popts)


def _with_source(outcome: Outcome, dataset_source: str | None) -> Outcome:
    if dataset_source is None or outcome.provenance.get("dataset") == dataset_source:
        return outcome
    return dataclasses.replace(outcome, provenance={**outcome.provenance, "dataset": dataset_source})


def write_reconstruction(outcome: Outcome, results_path: str | Path, *,
                         dataset: BraggDataset | DatasetShare | None = None, dataset_source: str | None = None) -> Path:
    """First stage of the results file: what the iterations produced, before any post-processing.

    Object (with its placement), probe, background, cost history, metrics (quality and convergence
    included), parameters, timings, geometry, provenance and ``/free_cost``; ``/@status`` is
    "iterations complete" until :func:`write_outputs` adds the post-processing
    (:func:`analysis.bragg.outcome.write_outcome`). ``dataset`` is not needed (the outcome carries the
    provenance); ``dataset_source`` overrides ``/provenance/dataset``.
    """
    write_outcome(_with_source(outcome, dataset_source), results_path, stage="iterations")
    return Path(results_path)


def write_outputs(outcome: Outcome, results_path: str | Path, *, dataset: BraggDataset | DatasetShare | None = None,
                  dataset_source: str | None = None, cxi_path: str | Path | None = None,
                  figures_dir: str | Path | None = None, reconstruction_written: bool = False) -> dict[str, Any]:
    """Results HDF5 (+ CXI, PNGs); returns {"results": path, "cxi": path|None, "figures": [paths], "errors": {}}.

    Writes :func:`write_reconstruction` first (unless ``reconstruction_written``), then adds strain maps,
    post-processing metrics and resolution curves and writes the CXI file and figures. A step that fails
    is recorded (``errors``, ``/postprocessing_errors``: step → one line) with the errors already in
    ``outcome.postprocessing_errors``; the file stays readable and ``/@status`` says whether all went well.
    """
    from analysis.dataset import write_cxi

    outcome = _with_source(outcome, dataset_source)
    res = outcome.result
    g = res.geometry
    vox = g.voxel_size_m
    if not reconstruction_written:
        write_outcome(outcome, results_path, stage="iterations")
    errors = write_outcome(outcome, results_path, stage="postprocessing")
    t0 = time.perf_counter()
    out: dict[str, Any] = {"results": Path(results_path), "cxi": None, "figures": [], "errors": errors}
    if cxi_path is not None:
        try:
            write_cxi(cxi_path, res.object, pixel_size_m=vox, probe=res.probe, probe_pixel_size_m=vox[1:],
                      energy_kev=g.energy_kev, detector_distance_m=g.detector_distance_m,
                      detector_pixel_size_m=g.pixel_size_m,
                      title=f"pxm Bragg ptychography {outcome.provenance.get('sample_name', '')}",
                      process={"recipe": dataclasses.asdict(outcome.recipe), "provenance": outcome.provenance})
            out["cxi"] = Path(cxi_path)
        except Exception as exc:                        # noqa: BLE001
            errors["cxi"] = error_line(exc)
    if figures_dir is not None:
        out["figures"] = save_outcome_figures(outcome, Path(figures_dir), errors)
    finish_results(results_path, errors, write_s=time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------------------------------ pxm probe
def probe_from_spiral_run(run: Any, *, n_iterations: int = 100, algorithm: str = "epie",
                          detector_pixel_size_m: float = 55e-6,
                          allow_partial: bool = False) -> tuple[np.ndarray, float, dict[str, Any], Any]:
    """Forward ptychography of a ``spiral_probe_scan`` run: (probe (V, H), pixel m, metadata, error history).

    Stage x ↔ detector rows ↔ V and stage y ↔ columns ↔ H (``sim.TransmissionSimulator``);
    the starting probe is the KB rectangular NA. A partial run (no stop document, a stop other than
    success, frames missing) is refused before any computation with the one line of ``pxm probe`` and
    ``pxm export`` (:func:`pxm.run_export.check_run_whole`) unless ``allow_partial``.
    """
    from analysis.forward_ptycho import (
        ForwardGeometry,
        ForwardPtychoOptions,
        forward_ptychography,
        rectangular_na_probe,
    )
    from analysis.geometry import DetectorLayout, Roi

    start = run.metadata.get("start") or {}
    uid = start.get("uid", "?")
    if start.get("plan_name") != "spiral_probe_scan":
        raise ValueError(f"run {uid}: plan_name is {start.get('plan_name')!r}, expected 'spiral_probe_scan'")
    if not allow_partial:                                # pxm probe, reconstruct --probe-run, the demo: whole runs only
        from pxm.run_export import check_run_whole

        check_run_whole(run, uid)
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
