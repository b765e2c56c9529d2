"""``pxm reconstruct`` and ``pxm probe``: dataset → engine → results file, CXI and figures.

* :func:`recipe_by_name` — ``seed`` (Methods: 1000 ePIE + 500 ML), ``baseline`` (fixed
  probe, U = 1) and ``quick`` (a few iterations, for CI and smoke tests);
* :func:`initial_probe` — P2 from a probe file written by ``pxm probe`` (forward
  ptychography of the Siemens-star spiral) or from the KB rectangular-NA model;
* :func:`reconstruct_dataset` — checks the dataset against the engine before iterating,
  runs it with a tqdm bar, computes strain/tilt maps and metrics;
* :func:`write_outputs` — results HDF5 (``docs/dataset-format.md`` §2), optional CXI and PNGs;
* :func:`probe_from_spiral_run` / :func:`write_probe_file` — ``pxm probe``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.dataset import BraggDataset, DatasetShare, scan_axes
from analysis.engine import (FreeCostHistory, Recipe, ReconstructionResult, SupportSchedule, fixed_probe_baseline,
                             seed_recipe)
from analysis.geometry import BraggGeometry
from analysis.metrics import ShellCurve, prtf, random_phase_prtf, shell_crossing
from analysis.solvers.distributed import Communicator
from analysis.strain import StrainMaps
from analysis.xp import array_module, backend, device_description

__all__ = ["RECIPES", "KB_NA_V_RAD", "KB_NA_H_RAD", "PROBE_FILE_FORMAT", "quick_recipe", "recipe_by_name",
           "ReconstructOptions", "ReconstructionOutcome", "ResolutionEstimate", "engine_inputs", "initial_probe",
           "half_data_resolution", "fsc_cone_axes", "PRTFEstimate", "prtf_resolution", "prtf_reconstructions",
           "reconstruct_dataset", "free_cost_metrics", "write_outputs", "software_info", "write_probe_file",
           "read_probe_file", "probe_from_spiral_run"]

RECIPES = ("seed", "quick", "baseline")
KB_NA_V_RAD = 3.7e-4
"""Vertical NA of the seed's KB mirrors (rad)."""
KB_NA_H_RAD = 1.9e-4
"""Horizontal NA of the seed's KB mirrors (rad)."""
PROBE_FILE_FORMAT = "pxm-probe"


def quick_recipe() -> Recipe:
    """A few ePIE sweeps and one ML iteration on a fixed slab: seconds on a tiny dataset (CI)."""
    sched = SupportSchedule(thickness_schedule_m=((0, 0.5e-6),), shrinkwrap_start_iter=10 ** 6,
                            shrinkwrap_stop_iter=10 ** 6)
    return Recipe(n_epie_iterations=3, n_ml_iterations=1, support=sched)


def recipe_by_name(name: str, *, n_epie_iterations: int | None = None, n_ml_iterations: int | None = None) -> Recipe:
    """``seed``, ``quick`` or ``baseline`` with optional iteration counts replaced."""
    makers = {"seed": seed_recipe, "quick": quick_recipe, "baseline": fixed_probe_baseline}
    if name not in makers:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    r = makers[name]()
    kw: dict[str, int] = {}
    if n_epie_iterations is not None:
        kw["n_epie_iterations"] = n_epie_iterations
    if n_ml_iterations is not None:
        kw["n_ml_iterations"] = n_ml_iterations
    return dataclasses.replace(r, **kw) if kw else r


@dataclass(frozen=True, kw_only=True)
class ReconstructOptions:
    """Everything ``pxm reconstruct`` decides besides the recipe."""

    na_v_rad: float = KB_NA_V_RAD
    """Vertical NA for the model probe and the NA mask (rad)."""
    na_h_rad: float = KB_NA_H_RAD
    """Horizontal NA for the model probe and the NA mask (rad)."""
    defocus_m: float = 0.0
    """Defocus of the model probe (m)."""
    use_na_mask: bool = True
    """Constrain the probe's angular spectrum to na_factor × NA during ePIE."""
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
    strain: StrainMaps = field(repr=False)
    metrics: dict[str, Any]
    timings_s: dict[str, float]
    recipe: Recipe
    recipe_name: str
    probe_source: str
    resolution: ResolutionEstimate | None = None
    prtf: PRTFEstimate | None = None
    n_ranks: int = 1
    """MPI ranks the positions were split across (1: one process)."""
    device: str = "CPU"
    """Where the engine's arrays lived (:func:`analysis.xp.device_description`)."""


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
def write_probe_file(path: str | Path, probe_vh: np.ndarray, *, pixel_size_m: float,
                     metadata: dict[str, Any] | None = None, error_history: Any = None) -> None:
    """HDF5 probe file: ``/probe`` (V, H) complex with attrs ``pixel_size_m``, ``axes``; ``/metadata`` JSON."""
    import json

    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["format"] = PROBE_FILE_FORMAT
        d = f.create_dataset("probe", data=np.asarray(probe_vh, np.complex128))
        d.attrs["pixel_size_m"] = float(pixel_size_m)
        d.attrs["axes"] = "p1 (vertical, V), p2 (horizontal, H); beam-plane probe"
        if error_history is not None:
            f.create_dataset("error_history", data=np.asarray(error_history, float))
        f.attrs["metadata"] = json.dumps(metadata or {}, default=str)


def read_probe_file(path: str | Path) -> tuple[np.ndarray, float, dict[str, Any]]:
    """(probe (V, H), pixel_size_m, metadata) from :func:`write_probe_file`; errors name the key."""
    import json

    import h5py

    if not Path(path).is_file():
        raise ValueError(f"{path}: no such probe file")
    with h5py.File(path, "r") as f:
        if "probe" not in f:
            raise ValueError(f"{path}: /probe: dataset missing; write it with `pxm probe`")
        d = f["probe"]
        if "pixel_size_m" not in d.attrs:
            raise ValueError(f"{path}: /probe@pixel_size_m: attribute missing")
        return d[()], float(d.attrs["pixel_size_m"]), json.loads(f.attrs.get("metadata", "{}"))


def initial_probe(geometry: BraggGeometry, *, probe_file: str | Path | None = None,
                  options: ReconstructOptions = ReconstructOptions()) -> tuple[np.ndarray, str]:
    """(P2 on ``geometry.recon_shape[1:]``, description of its source)."""
    from analysis.probe_init import ProbeInitOptions, model_probe, probe_from_perpendicular

    if probe_file is not None:
        p, px, md = read_probe_file(probe_file)
        p2 = probe_from_perpendicular(p, px, geometry, options=ProbeInitOptions(recentre=True))
        return p2, f"file:{probe_file}" + (f" (run {md['raw_uid']})" if "raw_uid" in md else "")
    p2 = model_probe(geometry, na_v_rad=options.na_v_rad, na_h_rad=options.na_h_rad, defocus_m=options.defocus_m)
    return p2, f"model: rectangular NA {options.na_v_rad:g} (V) × {options.na_h_rad:g} (H) rad"


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
                        comm: Communicator | None = None) -> ReconstructionOutcome:
    """Validate, build the engine, iterate the whole recipe (tqdm), compute strain and metrics.

    With ``options.fsc`` two more reconstructions of a binomial photon split follow (same recipe,
    probe and seeds) and their resolution goes into ``outcome.resolution`` and the metrics. With
    ``options.prtf_runs`` = K, K more full-data runs from random starts give ``outcome.prtf``.
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
    na = (options.na_v_rad, options.na_h_rad) if options.use_na_mask else None
    rec, scale = _build_engine(geom, inputs, inputs["frames"], p2, recipe, na, options, comm)
    if isinstance(dataset, DatasetShare) and not np.array_equal(rec.positions, dataset.positions):
        raise ValueError(f"reconstruct_dataset: the share holds positions {dataset.positions[:4]}... but this rank "
                         f"owns {rec.positions[:4]}...; read it with read_dataset_share(path, rank=, size=)")
    t_setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    _iterate_with_bar(rec, recipe, options, "pxm reconstruct")
    t_iter = time.perf_counter() - t1
    resolution = None
    t_fsc = 0.0
    if options.fsc:
        from analysis.metrics import binomial_split

        t3 = time.perf_counter()
        half_a, half_b = binomial_split(inputs["frames"], rng=np.random.default_rng(options.fsc_split_seed))
        halves = []
        for name, frames in (("half A", half_a), ("half B", half_b)):
            r_half, _ = _build_engine(geom, inputs, frames, p2, recipe, na, options)
            halves.append(_iterate_with_bar(r_half, recipe, options, f"pxm reconstruct {name}"))
        resolution = half_data_resolution(halves[0], halves[1], split_seed=options.fsc_split_seed,
                                          illumination_fraction=options.fsc_illumination_fraction)
        t_fsc = time.perf_counter() - t3
    prtf_est = None
    t_prtf = 0.0
    if options.prtf_runs:
        t4 = time.perf_counter()
        runs = prtf_reconstructions(geom, inputs, p2, recipe, na, options)
        prtf_est = prtf_resolution(runs, seed=options.prtf_seed)
        t_prtf = time.perf_counter() - t4
    res = rec.result()
    t2 = time.perf_counter()
    strain = strain_from_geometry(res.object, res.geometry, support=res.support,
                                  amplitude_reference=rec.illuminated_support())
    t_strain = time.perf_counter() - t2
    costs = np.asarray(res.costs, float)
    phases = np.asarray(res.phases)
    metrics: dict[str, Any] = {
        "n_iterations": int(res.iterations),
        "final_cost": float(costs[-1]) if costs.size else float("nan"),
        "final_epie_cost": float(costs[phases == "epie"][-1]) if np.any(phases == "epie") else float("nan"),
        "final_ml_cost": float(costs[phases == "ml"][-1]) if np.any(phases == "ml") else float("nan"),
        "n_positions": int(res.offsets_vox.shape[0]),
        "n_angles": int(inputs["frames"].shape[1]),
        "valid_strain_voxels": int(np.sum(np.asarray(strain.mask))),
        "support_voxels": int(np.sum(res.support)),
        "initial_probe_scale": scale,
        **free_cost_metrics(res),
    }
    timings = {"setup_s": t_setup, "iterations_s": t_iter, "strain_s": t_strain,
               "per_iteration_mean_s": float(np.mean(res.timings_s)) if res.timings_s else 0.0}
    if resolution is not None:
        metrics.update(resolution.metrics())
        timings["fsc_s"] = t_fsc
    if prtf_est is not None:
        metrics.update(prtf_est.metrics())
        timings["prtf_s"] = t_prtf
    return ReconstructionOutcome(result=res, strain=strain, metrics=metrics, timings_s=timings, recipe=recipe,
                                 recipe_name=recipe_name, probe_source=source, resolution=resolution, prtf=prtf_est,
                                 n_ranks=1 if comm is None else int(comm.size),
                                 device=device_description(array_module(rec.state.object)))


def _build_engine(geom: BraggGeometry, inputs: dict[str, Any], frames: np.ndarray, p2: np.ndarray, recipe: Recipe,
                  na: tuple[float, float] | None, options: ReconstructOptions,
                  comm: Communicator | None = None) -> tuple[Any, float]:
    """A Reconstruction on ``frames`` (the full data or one half) and the initial probe scale applied."""
    from analysis.engine import Reconstruction

    rec = Reconstruction(geom, frames, inputs["mask"], inputs["stage_xyz_m"], inputs["rocking_offsets_deg"], p2,
                         recipe=recipe, probe_na_rad=na, comm=comm, xp=backend(options.backend))
    scale = _scale_probe(rec) if options.scale_probe_to_data else 1.0
    return rec, scale


def _iterate_with_bar(rec: Any, recipe: Recipe, options: ReconstructOptions, desc: str) -> Any:
    """Iterate the whole recipe with a tqdm bar; returns ``rec``."""
    from tqdm import tqdm

    with tqdm(total=recipe.n_iterations, desc=desc, unit="it", disable=not options.progress,
              dynamic_ncols=True) as bar:
        while rec.remaining_iterations > 0:          # fewer than n_iterations when the free-data rule stops
            rec.iterate(1)
            bar.update(1)
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
            "free_stopped_phases": ",".join(h.stopped_phases)}


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


def write_outputs(outcome: ReconstructionOutcome, results_path: str | Path, *, dataset: BraggDataset | DatasetShare,
                  dataset_source: str | None = None, cxi_path: str | Path | None = None,
                  figures_dir: str | Path | None = None) -> dict[str, Any]:
    """Results HDF5 (+ CXI, PNGs); returns {"results": path, "cxi": path|None, "figures": [paths]}."""
    from analysis.dataset import write_cxi, write_results

    res = outcome.result
    g = res.geometry
    vox = g.voxel_size_m
    t0 = time.perf_counter()
    provenance = {**dataset.provenance, "software": "pxm", "software_info": software_info(),
                  "recipe_name": outcome.recipe_name, "probe_source": outcome.probe_source,
                  "dataset": dataset_source, "sample_name": dataset.sample.get("name"),
                  "phases": list(res.phases), "mpi_ranks": outcome.n_ranks, "device": outcome.device}
    provenance = {k: v for k, v in provenance.items() if v is not None}
    timings = dict(outcome.timings_s)
    write_results(results_path, object=res.object, probe=res.probe, voxel_size_m=vox, background=res.background,
                  strain={"reconstruction": outcome.strain}, metrics=outcome.metrics,
                  parameters=dataclasses.asdict(outcome.recipe), timings_s=timings, error_history=res.costs,
                  geometry=g, provenance=provenance)
    out: dict[str, Any] = {"results": Path(results_path), "cxi": None, "figures": []}
    if cxi_path is not None:
        write_cxi(cxi_path, res.object, pixel_size_m=vox, probe=res.probe, probe_pixel_size_m=vox[1:],
                  energy_kev=g.energy_kev, detector_distance_m=g.detector_distance_m,
                  detector_pixel_size_m=g.pixel_size_m, title=f"pxm Bragg ptychography {dataset.sample.get('name', '')}",
                  process={"recipe": dataclasses.asdict(outcome.recipe), "provenance": provenance})
        out["cxi"] = Path(cxi_path)
    if figures_dir is not None:
        out["figures"] = _figures(outcome, Path(figures_dir))
    # the write time goes into the file as well
    import h5py

    with h5py.File(results_path, "a") as f:
        if outcome.resolution is not None or outcome.prtf is not None:
            _write_resolution(f, outcome.resolution, outcome.prtf)
        if res.free is not None:
            _write_free_cost(f, res.free)
        f["timings"].attrs["write_s"] = time.perf_counter() - t0
    return out


def _figures(outcome: ReconstructionOutcome, d: Path) -> list[Path]:
    from analysis.figures import save_convergence, save_object_slices, save_probe, save_strain_slices

    d.mkdir(parents=True, exist_ok=True)
    res = outcome.result
    vox = res.geometry.voxel_size_m
    paths = [save_object_slices(d / "object.png", res.object, title="object ρ", voxel_size_m=vox),
             save_probe(d / "probe.png", res.probe, pixel_size_m=(vox[1], vox[2]), title="probe P2 (r2, r3)"),
             save_strain_slices(d / "strain.png", outcome.strain)]
    paths.append(save_convergence(d / "convergence.png", res.costs, res.phases))
    if outcome.resolution is not None or outcome.prtf is not None:
        paths.append(save_resolution(d / "resolution.png", outcome.resolution, outcome.prtf))
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
