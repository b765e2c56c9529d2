"""Bragg-ptychography reconstruction engine: recipes and an online ``Reconstruction``
(seed Methods; docs/seed-schedule.md).

The recipe follows the seed's Methods (Li et al., Nat. Commun. 12, 7059 (2021)): 1000
ePIE-type sweeps then 500 ML iterations; α, β, γ, μ = 1, 0.5, 0.1, 0.02; probe frozen for
5 sweeps; NA mask 1.5 × NA until sweep 1000; slab thickness 0.5/0.7/0.9 µm from sweeps
0/100/200; shrink-wrap at 15 % every 5 sweeps from 300 to 500.
"""

# Why this module is long: Reconstruction is one state machine (object, probe, background, support, schedule) whose
# iterate loop hands the same state to ePIE, DM and ML; the Recipe and options it validates are read in that loop.
# Splitting it would spread one invariant (what a state holds between solvers) over modules.

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

from analysis.bragg.operators.fourier import measured_band_mask
from analysis.bragg.operators.probe import probe_na_mask, probe_width_along_p1_m
from analysis.bragg.operators.scan import ObjectPlacement, object_placement, positions_to_voxels, view_grid
from analysis.bragg.solvers import distributed, epie, ml
from analysis.bragg.solvers.distributed import Communicator, ScanShare, SerialCommunicator, owned_positions
from analysis.bragg.solvers.free import FreeCostHistory, FreeDataMonitor, held_out_rows, split_data
from analysis.bragg.solvers.model import BraggData, BraggModel, BraggState
from analysis.bragg.solvers.options import EpieOptions, Execution, FreeDataOptions, MLOptions
from analysis.bragg.solvers.quality import r_factor_due, r_factor_sums
from analysis.bragg.solvers.smoothness import illumination_maps
from analysis.bragg.solvers.support import shrink_wrap, shrinkwrap_floor, slab_support, smoothed_amplitude
from analysis.dataset import DatasetShare, read_dataset_share, scan_axes
from analysis.geometry import BraggGeometry, rocking_shift_phase, rocking_shift_steps
from analysis.xp import COMPLEX, Array, backend, fft_module, to_numpy

__all__ = ["EpieOptions", "MLOptions", "FreeDataOptions", "FreeCostHistory", "SupportSchedule", "Recipe",
           "seed_recipe", "fixed_probe_baseline", "with_fixed_probe", "scaled_recipe", "sampling_check",
           "UndersampledWarning", "Reconstruction", "ReconstructionResult"]


@dataclass(frozen=True, kw_only=True)
class SupportSchedule:
    """Thickness support (a tilted slab, or none) and shrink-wrap (seed Methods; docs/recipes.md).

    The defaults are the seed's literal values, sized for the seed's foil; ``pxm reconstruct`` sets the
    thickness and tilt from the dataset's ``/sample`` or the data (:mod:`analysis.bragg.recipes`).
    """

    kind: Literal["slab", "none"] = "slab"
    """"slab": S = |n̂·(r − r_c)| ≤ T/2 (``thickness_schedule_m``, tilts); "none": no thickness support,
    S = the whole object grid or, with ``illumination_fraction`` > 0, the illuminated region."""
    thickness_schedule_m: tuple[tuple[int, float], ...] = ((0, 0.5e-6), (100, 0.7e-6), (200, 0.9e-6))
    """(first sweep, slab thickness in metres) pairs, in increasing sweep order (kind "slab")."""
    tilt_x_deg: float = 5.5
    """Slab tilt about x (right-handed), degrees: n̂ = R_y(tilt_y) R_x(tilt_x) ẑ."""
    tilt_y_deg: float = -2.0
    """Slab tilt about y (right-handed), degrees."""
    illumination_fraction: float = 0.0
    """Kind "none": 0 = S is the whole object grid; f > 0 = S = [Σ_j |P_j|² ≥ f · max] of the initial probe."""
    shrinkwrap_start_iter: int | None = 300
    """First sweep of shrink-wrap; None = never (no shrink-wrap)."""
    shrinkwrap_stop_iter: int = 500
    """Last sweep of shrink-wrap; S is fixed afterwards."""
    shrinkwrap_every: int = 5
    """Shrink-wrap every this many sweeps."""
    shrinkwrap_threshold: float = 0.15
    """S ← S ∧ (|ρ| ≥ threshold·max|ρ|)."""
    shrinkwrap_sigma_vox: float = 0.0
    """Gaussian smoothing σ (voxels) of |ρ| before the threshold; 0 = none (the seed's shrink-wrap)."""

    def __post_init__(self) -> None:
        if self.kind not in ("slab", "none"):
            raise ValueError(f"SupportSchedule.kind must be 'slab' or 'none', got {self.kind!r}")
        if not self.thickness_schedule_m:
            raise ValueError("SupportSchedule.thickness_schedule_m must hold at least one (sweep, thickness_m)")
        its = [int(i) for i, _ in self.thickness_schedule_m]
        if its != sorted(its) or its[0] != 0:
            raise ValueError(f"SupportSchedule.thickness_schedule_m: sweeps {its} must increase and start at 0")
        if any(not t > 0 for _, t in self.thickness_schedule_m):
            raise ValueError("SupportSchedule.thickness_schedule_m: thicknesses must be > 0 m")
        if not (abs(self.tilt_x_deg) < 60 and abs(self.tilt_y_deg) < 60):
            raise ValueError(f"SupportSchedule: tilts ({self.tilt_x_deg}°, {self.tilt_y_deg}°) must lie within "
                             "±60° (the slab normal stays close to Q)")
        if not 0.0 <= self.illumination_fraction < 1.0:
            raise ValueError(f"SupportSchedule.illumination_fraction must lie in [0, 1), "
                             f"got {self.illumination_fraction}")
        if self.shrinkwrap_start_iter is not None and self.shrinkwrap_start_iter < 0:
            raise ValueError(f"SupportSchedule.shrinkwrap_start_iter must be >= 0 or None (never), "
                             f"got {self.shrinkwrap_start_iter}")
        if self.shrinkwrap_every < 1 or not 0 <= self.shrinkwrap_threshold < 1:
            raise ValueError("SupportSchedule: shrinkwrap_every must be >= 1 and threshold in [0, 1)")
        if not self.shrinkwrap_sigma_vox >= 0:
            raise ValueError(f"SupportSchedule.shrinkwrap_sigma_vox must be >= 0, got {self.shrinkwrap_sigma_vox}")

    def thickness_m(self, iteration: int) -> float:
        """Slab thickness in force at ``iteration``."""
        t = self.thickness_schedule_m[0][1]
        for start, th in self.thickness_schedule_m:
            if iteration >= start:
                t = th
        return float(t)

    @property
    def max_thickness_m(self) -> float:
        """Largest scheduled thickness (the sampling check's T when the recipe names no sample thickness)."""
        return float(max(t for _, t in self.thickness_schedule_m))

    def shrinkwrap_due(self, iteration: int) -> bool:
        """Whether shrink-wrap runs before sweep ``iteration``."""
        start = self.shrinkwrap_start_iter
        return (start is not None and start <= iteration <= self.shrinkwrap_stop_iter
                and (iteration - start) % self.shrinkwrap_every == 0)

    def support_fixed_before(self, iteration: int) -> bool:
        """Whether the thickness schedule still sets S at ``iteration`` (before shrink-wrap starts)."""
        return self.shrinkwrap_start_iter is None or iteration < self.shrinkwrap_start_iter


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """The whole schedule: ePIE sweeps, ML iterations and support handling."""

    n_epie_iterations: int = 1000
    """Sweeps of the per-position update (seed Eqs 5–11, 13)."""
    n_ml_iterations: int = 500
    """ML-CG iterations after the sweeps (Thibault & Guizar-Sicairos 2012)."""
    epie: EpieOptions = field(default_factory=EpieOptions)
    """Options of :func:`analysis.bragg.solvers.epie.step`."""
    ml: MLOptions = field(default_factory=MLOptions)
    """Options of :func:`analysis.bragg.solvers.ml.step`."""
    support: SupportSchedule = field(default_factory=SupportSchedule)
    """Thickness schedule and shrink-wrap."""
    upsampling: int | None = None
    """Angular up-sampling U; None keeps ``geometry.upsampling``."""
    background_init: float = 0.1
    """Initial background b on valid measured pixels (photons)."""
    na_factor: float = 1.5
    """NA-mask size in units of the probe NA."""
    rng_seed: int = 0
    """Seed of the position order and batch assignment."""
    band_limit_object: bool = False
    """After every ePIE sweep, project ρ onto the measured sheared band |f1 − c f3| ≤ N1/(2N1')
    (:func:`analysis.bragg.operators.fourier.measured_band_mask`): out-of-band frequencies along
    r1 are never measured (N1' > N1), so this picks the minimum-norm object instead of
    letting the support alone set them."""
    match_initial_scale: bool = True
    """Rescale the initial P2 so that Σ ω|Ψ|² equals Σ ω I over all positions (the ρ/P scale
    is free, but ePIE and ML converge badly from a start that is off by orders of magnitude)."""
    free: FreeDataOptions = field(default_factory=FreeDataOptions)
    """Held-out ("free") data: fraction kept out of every update, free-cost checks, patience stop
    (:mod:`analysis.bragg.solvers.free`); the default (fraction 0) fits every entry, as the seed."""
    sampling_thickness_m: float | None = None
    """Crystal thickness T of the sampling check (seed Eq 12); None: the largest slab thickness of
    ``support`` (kind "slab"), no check for kind "none"."""
    allow_undersampled: bool = False
    """Run even when the sampling check fails (a warning instead of the error): for data known to fit
    the model at this sampling, e.g. simulated with a periodic model (docs/recipes.md)."""
    sources: tuple[str, ...] = ()
    """Where the sample-dependent choices came from, one line each (``pxm reconstruct`` prints them and
    the results' parameters keep them); not an option."""

    def __post_init__(self) -> None:
        if self.n_epie_iterations < 0 or self.n_ml_iterations < 0:
            raise ValueError("Recipe: iteration counts must be >= 0")
        if self.upsampling is not None and self.upsampling < 1:
            raise ValueError(f"Recipe.upsampling must be >= 1 or None, got {self.upsampling}")
        if self.background_init < 0 or not self.na_factor > 0:
            raise ValueError("Recipe: background_init must be >= 0 and na_factor > 0")
        if self.sampling_thickness_m is not None and not self.sampling_thickness_m > 0:
            raise ValueError(f"Recipe.sampling_thickness_m must be > 0 m or None, got {self.sampling_thickness_m}")

    @property
    def n_iterations(self) -> int:
        """Total iterations of the recipe."""
        return self.n_epie_iterations + self.n_ml_iterations


def seed_recipe() -> Recipe:
    """The seed's joint probe/object schedule (seed Methods; docs/seed-schedule.md)."""
    return Recipe()


def scaled_recipe(recipe: Recipe, *, n_epie_iterations: int, n_ml_iterations: int | None = None) -> Recipe:
    """``recipe`` with its ePIE sweep count and every sweep breakpoint scaled
    (seed Methods schedule; docs/seed-schedule.md).

    With f = n_epie_iterations / recipe.n_epie_iterations, the thickness-schedule starts, the
    shrink-wrap window and period, the first probe-update sweep and the NA-mask stop become
    round(f·sweep), and so do the difference-map sweeps (``epie.dm_iterations``). Breakpoints that were
    > 0 stay ≥ 1 (the probe stays frozen for at least one sweep, shrink-wrap runs at most every sweep);
    thickness steps that collapse onto one sweep keep the later thickness; a shrink-wrap that never runs
    (start None, or an old-style start past the recipe's last sweep such as 10 ** 6) becomes None.
    ``n_ml_iterations`` None scales the ML count by f as well (at least 1 if the recipe had any). E.g.
    ``scaled_recipe(seed_recipe(), n_epie_iterations=60, n_ml_iterations=20)``: thickness 0.5/0.7/0.9 µm
    from sweeps 0/6/12, shrink-wrap every sweep in 18–30, probe from sweep 1.
    """
    if n_epie_iterations < 1 or recipe.n_epie_iterations < 1:
        raise ValueError("scaled_recipe: both the recipe and n_epie_iterations need at least one ePIE sweep")
    f = n_epie_iterations / recipe.n_epie_iterations

    def sc(it: int) -> int:
        return 0 if it <= 0 else max(1, int(round(f * it)))

    sched = recipe.support
    start_sw = sched.shrinkwrap_start_iter          # an old-style large int (10 ** 6) past the run also means never
    never_wraps = start_sw is None or start_sw >= recipe.n_epie_iterations
    steps: dict[int, float] = {}
    for start, th in sched.thickness_schedule_m:
        steps[sc(int(start))] = float(th)
    support = dataclasses.replace(sched, thickness_schedule_m=tuple(sorted(steps.items())),
                                  shrinkwrap_start_iter=(None if start_sw is None or never_wraps else sc(start_sw)),
                                  shrinkwrap_stop_iter=sc(sched.shrinkwrap_stop_iter),
                                  shrinkwrap_every=max(1, int(round(f * sched.shrinkwrap_every))))
    epie_opts = dataclasses.replace(recipe.epie, probe_update_start_iter=sc(recipe.epie.probe_update_start_iter),
                                    na_mask_stop_iter=sc(recipe.epie.na_mask_stop_iter),
                                    dm_iterations=sc(recipe.epie.dm_iterations))
    if n_ml_iterations is None:
        n_ml_iterations = 0 if recipe.n_ml_iterations == 0 else max(1, int(round(f * recipe.n_ml_iterations)))
    return dataclasses.replace(recipe, n_epie_iterations=int(n_epie_iterations), n_ml_iterations=int(n_ml_iterations),
                               support=support, epie=epie_opts)


def fixed_probe_baseline() -> Recipe:
    """Same procedure with the probe never updated and no up-sampling (U = 1)."""
    return dataclasses.replace(with_fixed_probe(seed_recipe()), upsampling=1)


def with_fixed_probe(recipe: Recipe) -> Recipe:
    """``recipe`` with P2 never updated, in ePIE and in ML (any up-sampling U)."""
    return dataclasses.replace(recipe, epie=dataclasses.replace(recipe.epie, update_probe=False),
                               ml=dataclasses.replace(recipe.ml, update_probe=False))


class UndersampledWarning(UserWarning):
    """The sampling condition (seed Eq 12) fails and ``Recipe.allow_undersampled`` lets the run go on."""


def sampling_check(geometry: BraggGeometry, probe_width_m: float, recipe: Recipe) -> str | None:
    """Seed Eq 12 for the probe width and the recipe's crystal thickness: None when it holds (or cannot be
    checked), the message when it fails and ``recipe.allow_undersampled``; otherwise ValueError.

    T is ``recipe.sampling_thickness_m``, else the largest slab thickness (kind "slab"); kind "none"
    without a thickness is not checked.
    """
    t = recipe.sampling_thickness_m
    if t is None and recipe.support.kind == "slab":
        t = recipe.support.max_thickness_m
    if t is None:
        return None
    try:
        geometry.check_sampling(probe_width_m, t)
    except ValueError as exc:
        if not recipe.allow_undersampled:
            raise ValueError(f"{exc}; or, for data known to fit the model at this sampling (e.g. simulated with a "
                             "periodic model), allow it: pxm reconstruct --allow-undersampled "
                             "(Recipe.allow_undersampled)") from None
        return f"{exc}; going on (allow_undersampled): the result may alias along r3"
    return None


@dataclass(frozen=True, kw_only=True)
class ReconstructionResult:
    """Snapshot returned by :meth:`Reconstruction.result` (NumPy arrays)."""

    object: np.ndarray = field(repr=False)
    """(NO1, NO2, NO3) complex: ρ on the orthogonal r-grid."""
    probe: np.ndarray = field(repr=False)
    """(N2, N3) complex: oblique probe section P2."""
    background: np.ndarray = field(repr=False)
    """(ANGLE, N1, N2) float: background b on the measured planes."""
    support: np.ndarray = field(repr=False)
    """(NO1, NO2, NO3) bool: final support S."""
    offsets_vox: np.ndarray = field(repr=False)
    """(POS, 3) int: view offsets o_j."""
    shifts_px: np.ndarray = field(repr=False)
    """(POS, 2) float: sub-pixel probe shifts g_j."""
    costs: tuple[float, ...]
    """Cost per iteration (ePIE: normalised amplitude misfit; ML: the ML cost)."""
    phases: tuple[str, ...]
    """'epie' or 'ml' per iteration."""
    timings_s: tuple[float, ...]
    """Wall time per iteration, seconds."""
    iterations: int
    """Completed iterations."""
    geometry: BraggGeometry
    """Geometry actually used (U from the recipe)."""
    recipe: dict[str, Any] = field(repr=False)
    """``dataclasses.asdict(recipe)`` for metadata."""
    free: FreeCostHistory | None = None
    """Free (held-out) and work cost per check, best iteration, stopped phases; None without held-out data."""
    origin_vox: np.ndarray | None = field(default=None, repr=False)
    """(3,) float: object-grid coordinates of the probe centre at zero stage position (:attr:`placement`)."""
    r_factors: dict[str, float] = field(default_factory=dict)
    """R-factor on the fitted entries (:meth:`Reconstruction.r_factor`) before the first iteration
    (``"initial"``) and at the end of each completed phase (``"epie"``, ``"ml"``)."""
    free_r_factors: dict[str, float] = field(default_factory=dict)
    """The same on the held-out entries (empty without held-out data)."""
    r_factor_history: tuple[float, ...] = ()
    """R-factor after each iteration, aligned with ``costs``; NaN where not computed (recorded every
    ⌈n/20⌉-th iteration of a phase and at its end: :func:`analysis.bragg.solvers.quality.r_factor_due`)."""

    @property
    def placement(self) -> ObjectPlacement:
        """Where each voxel of ``object`` sits relative to the stage positions (sample frame, metres)."""
        if self.origin_vox is None:
            raise ValueError("ReconstructionResult.placement: origin_vox is missing; take the result from "
                             "Reconstruction.result()")
        return object_placement(self.geometry, self.origin_vox)


class Reconstruction:
    """Online Bragg-ptychography reconstruction (cf. Tike's ``Reconstruction``).

    Parameters
    ----------
    geometry : the BraggGeometry of the scan.
    frames : (POS, ANGLE, N1, N2) float32 photon counts, ANGLE in rocking order.
    mask : (N1, N2) or (ANGLE, N1, N2) bool, True on valid pixels.
    stage_xyz_m : (POS, 3) sample translations in metres.
    rocking_offsets_deg : (ANGLE,) rocking offsets from θ_B in degrees (steps of Δθ); their absolute values
        place q3: a curve off the model's centred grid (e.g. an even count centred between two angles) is fitted
        exactly through a phase ramp, :attr:`rocking_shift_steps`.
    probe : (N2, N3) complex initial oblique section P2 on ``geometry.recon_shape``.
    probe_na_rad : (NA_p1, NA_p2) for the NA mask; None disables it.
    probe_width_m : W for the sampling check; None estimates it from ``probe``.
    object_shape : fixed object grid; None sizes it from the positions plus ``margin_vox``.
    frame_valid : None (all frames measured), (POS, ANGLE) or (POS, ANGLE, N1, N2) bool, True
        on measured frames/pixels. Invalid frames are left free (seed Eq 13, ω = 0) and may hold
        anything (NaN included); positions with no valid frame are skipped. New data enters an
        existing reconstruction through :meth:`update_frames`.
    comm : None (one process, the recipe as written) or a
        :class:`~analysis.bragg.solvers.distributed.Communicator`: positions j ≡ rank (mod size) are this
        rank's, the ePIE phase runs the batched update with all-reduced sums
        (:func:`analysis.bragg.solvers.distributed.step`, ``recipe.epie.n_batches`` ≥ 1 batches, b fixed in
        a batch) and the ML phase all-reduces its costs, gradients and line-search sums. ``frames``
        and ``frame_valid`` then hold either every position (the rank keeps its own rows) or only
        this rank's, in increasing order (:meth:`from_file` reads only those); ``stage_xyz_m``
        always holds every position. Every rank ends with the same ρ, P2 and b. The 1-rank
        reference of a run on R ranks is the same call with
        :class:`~analysis.bragg.solvers.distributed.SerialCommunicator` (not ``comm=None``, whose
        sequential ePIE cannot be split across ranks).

    With ``recipe.free.fraction`` > 0 a random part of the measured entries is held out
    (:mod:`analysis.bragg.solvers.free`): ``data`` holds the fitted entries, ``held_out_data`` the others,
    ``all_data`` both; the free cost is checked during :meth:`iterate` (its time counts in the
    iteration's timing), which may end a phase early and return to the best state;
    :attr:`remaining_iterations` says how many iterations the recipe still has.
    """

    def __init__(self, geometry: BraggGeometry, frames: np.ndarray, mask: np.ndarray, stage_xyz_m: np.ndarray,
                 rocking_offsets_deg: np.ndarray, probe: np.ndarray, *, recipe: Recipe | None = None,
                 probe_na_rad: tuple[float, float] | None = None, probe_width_m: float | None = None,
                 object_shape: tuple[int, int, int] | None = None, margin_vox: int = 2,
                 frame_valid: np.ndarray | None = None, dtype: Any = COMPLEX, xp: ModuleType | None = None,
                 comm: Communicator | None = None, execution: Execution | None = None) -> None:
        recipe = seed_recipe() if recipe is None else recipe
        if comm is not None and recipe.epie.n_batches < 1 and recipe.n_epie_iterations > 0:
            raise ValueError("Reconstruction: a communicator needs recipe.epie.n_batches >= 1 (mini-batch rPIE, "
                             "docs/mpi.md; 1 = full batch); sequential ePIE (n_batches = 0) cannot be split across "
                             "ranks")
        if comm is not None and recipe.epie.dm_iterations > 0:
            raise ValueError("Reconstruction: difference-map sweeps (recipe.epie.dm_iterations > 0) run in one "
                             "process; set epie.dm_iterations = 0 to run under MPI")
        if not isinstance(geometry, BraggGeometry):
            raise ValueError(f"geometry: got {type(geometry).__name__}, expected a BraggGeometry; "
                             "build one with analysis.geometry.BraggGeometry(...) or from_metadata()")
        if recipe.upsampling is not None and recipe.upsampling != geometry.upsampling:
            geometry = dataclasses.replace(geometry, upsampling=recipe.upsampling)
        self.geometry = geometry
        self.recipe = recipe
        self.execution = Execution() if execution is None else execution
        """How it runs (array backend, fused kernels, FFTW effort, kept exit waves), apart from the physics in
        ``recipe``; ``xp`` given explicitly overrides ``execution.backend``."""
        xp = backend(self.execution.backend) if xp is None else xp
        self._xp = xp
        self._dtype = np.dtype(dtype)
        n1, n2, nm = geometry.n_rows_px, geometry.n_cols_px, geometry.n_angles
        self._comm = comm
        n_all = int(np.shape(stage_xyz_m)[0]) if np.ndim(stage_xyz_m) == 2 else -1
        n_rows = int(np.shape(frames)[0]) if np.ndim(frames) else 0
        self._rows = np.arange(n_rows) if comm is None else owned_positions(max(n_all, 0), comm)
        frames, frame_valid = self._own_rows(frames, frame_valid, n_all)
        fv = self._check_frame_valid(frame_valid, np.shape(frames))
        frames = self._check_frames(frames, fv)
        stage = self._check_stage(stage_xyz_m, frames.shape[0] if comm is None else n_all)
        offs = np.asarray(rocking_offsets_deg, float)
        if offs.shape != (nm,) or not np.all(np.isfinite(offs)):
            raise ValueError(f"rocking_offsets_deg: shape {offs.shape}, expected ({nm},) finite values in degrees")
        if nm > 1 and not np.allclose(np.diff(offs), geometry.rocking_step_deg, rtol=0.02,
                                      atol=1e-3 * abs(geometry.rocking_step_deg)):
            raise ValueError(f"rocking_offsets_deg: steps {np.diff(offs)[:3]}... do not match "
                             f"geometry.rocking_step_deg = {geometry.rocking_step_deg}; fix the geometry or the order")
        shift = rocking_shift_steps(geometry, offs)
        self.rocking_shift_steps = shift if abs(shift) >= 1e-3 else 0.0
        """Recorded rocking curve − model grid along q3, in measured steps (½ for an even count centred between
        two angles; :func:`~analysis.geometry.rocking_shift_steps`; below 10⁻³ of a step it is taken as 0).
        ``state.object`` holds the model-frame ρ' = ρ·e^{−iδ û·r}, starting from the flat slab mapped to it;
        :meth:`result` reports ρ, :meth:`model_object` maps ρ to ρ'."""
        m = np.asarray(mask)
        if m.shape == (n1, n2):
            m = np.broadcast_to(m[None], (nm, n1, n2))
        if m.shape != (nm, n1, n2):
            raise ValueError(f"mask: shape {m.shape}, expected ({n1}, {n2}) or ({nm}, {n1}, {n2})")
        if geometry.rocking_step_deg < 0:
            m = m[::-1]
        self._mask = xp.asarray(np.ascontiguousarray(np.moveaxis(m.astype(bool), 0, -1)))
        p2 = np.asarray(probe)
        if p2.shape != geometry.recon_shape[1:]:
            raise ValueError(f"probe: shape {p2.shape}, expected (N2, N3) = {geometry.recon_shape[1:]} "
                             f"for U = {geometry.upsampling}")
        if not np.all(np.isfinite(p2)) or not np.any(p2):
            raise ValueError("probe: contains NaN/inf or is zero everywhere")
        width = probe_width_along_p1_m(geometry, p2) if probe_width_m is None else float(probe_width_m)
        self.sampling_warning = sampling_check(geometry, width, recipe)
        if self.sampling_warning is not None:
            warnings.warn(self.sampling_warning, UndersampledWarning, stacklevel=2)
        self._grid = view_grid(geometry, stage, margin_vox=margin_vox, object_shape=object_shape)
        na = None
        if probe_na_rad is not None:
            na = probe_na_mask(geometry, probe_na_rad[0], probe_na_rad[1], recipe.na_factor)
        self.op = BraggModel.from_geometry(geometry, self._grid.object_shape, na_mask=na)
        nu = positions_to_voxels(geometry, stage) + self._grid.origin_vox[None, :]
        self._slab_centre = nu.mean(axis=0)
        self._stage = stage
        self._held_out = (held_out_rows(self._rows, self._mask.shape, recipe.free) if recipe.free.enabled
                          else None)
        self._set_data(BraggData(intensities=self._to_internal(frames), mask=self._mask,
                                 offsets_vox=self._grid.offsets_vox[self._rows],
                                 shifts_px=self._grid.shifts_px[self._rows], frame_valid=self._valid_internal(fv)))
        self._free_monitor = FreeDataMonitor(recipe.free, comm) if recipe.free.enabled else None
        self._n_ml_done = 0
        self._share = ScanShare(global_index=self._rows, batch_coords_vox=distributed.batch_coords_vox(
            self._grid.offsets_vox, self._grid.shifts_px))
        self._region: np.ndarray | None = None
        if recipe.support.kind == "none" and recipe.support.illumination_fraction > 0:
            w = illumination_maps(xp.asarray(p2, dtype=self._dtype), self.data, self.op, self._grid.object_shape)[0]
            w = to_numpy(w if comm is None else comm.allreduce_sum(w))
            self._region = w >= recipe.support.illumination_fraction * float(w.max())
        sup = self._slab(0)
        b = np.where(to_numpy(self._mask), recipe.background_init, 0.0).astype(self._dtype.type(0).real.dtype)
        start = sup if self.rocking_shift_steps == 0.0 else sup * self._shift_phase(sup.shape)   # flat ρ → ρ'
        self.state = BraggState(object=xp.asarray(start, dtype=self._dtype),
                                probe=xp.array(p2, dtype=self._dtype),         # a copy: the caller's P2 stays as given
                                background=xp.asarray(b), support=xp.asarray(sup))
        self.initial_probe_scale = 1.0
        """Factor the initial P2 was scaled by (``recipe.match_initial_scale``; the one place the probe is scaled)."""
        if recipe.match_initial_scale:
            self.initial_probe_scale = self._intensity_scale()
            self.state.probe *= self.initial_probe_scale
        self._rng = np.random.default_rng(recipe.rng_seed)
        self._costs: list[float] = []
        self._phases: list[str] = []
        self._times: list[float] = []
        self._r_factors: dict[str, float] = {}
        self._free_r_factors: dict[str, float] = {}
        self._r_history: list[float] = []
        self._thickness = recipe.support.thickness_m(0)
        self._band: Array | None = None

    @classmethod
    def from_share(cls, share: DatasetShare, probe: np.ndarray, *, comm: Communicator | None = None,
                   **kwargs: Any) -> Reconstruction:
        """Engine on one rank's :class:`~analysis.dataset.DatasetShare` (its positions' frames only).

        ``share`` must hold the positions :func:`~analysis.bragg.solvers.distributed.owned_positions` gives
        this rank; other keywords as in the constructor (``probe`` on the recipe's geometry).
        """
        want = owned_positions(share.n_positions, SerialCommunicator() if comm is None else comm)
        if not np.array_equal(share.positions, want):
            raise ValueError(f"from_share: the share holds positions {share.positions[:4]}... but rank "
                             f"{0 if comm is None else comm.rank} of {1 if comm is None else comm.size} owns "
                             f"{want[:4]}...; read it with read_dataset_share(path, rank=, size=)")
        stage, offsets = scan_axes(share.rocking_angle_deg, share.stage_position_m, share.geometry)
        return cls(share.geometry, np.asarray(share.local.frames, np.float32), share.local.detector_mask, stage,
                   offsets, probe, comm=comm, **kwargs)

    @classmethod
    def from_file(cls, path: str | Path, probe: np.ndarray, *, comm: Communicator | None = None,
                  **kwargs: Any) -> Reconstruction:
        """Engine on a dataset file (grid layout); with ``comm`` each rank reads only its own positions' frames."""
        c = SerialCommunicator() if comm is None else comm
        return cls.from_share(read_dataset_share(path, rank=c.rank, size=c.size), probe, comm=comm, **kwargs)

    @property
    def xp(self) -> ModuleType:
        """The array module the engine runs on (NumPy or CuPy)."""
        return self._xp

    @property
    def comm(self) -> Communicator:
        """The communicator (a :class:`SerialCommunicator` when none was given)."""
        return SerialCommunicator() if self._comm is None else self._comm

    @property
    def positions(self) -> np.ndarray:
        """(POS_LOCAL,) global indices of the positions whose frames this rank holds (rows of ``data``)."""
        return np.arange(self.data.n_positions) if self._comm is None else self._rows.copy()

    # --- validation -------------------------------------------------------------------
    def _own_rows(self, frames: Array, frame_valid: Array | None, n_all: int) -> tuple[Array, Array | None]:
        """The rows of ``frames``/``frame_valid`` this rank owns (unchanged without a communicator)."""
        if self._comm is None:
            return frames, frame_valid
        n = int(np.shape(frames)[0]) if np.ndim(frames) else -1
        if n == self._rows.size:
            return frames, frame_valid
        if n == n_all:
            return np.asarray(frames)[self._rows], None if frame_valid is None else np.asarray(frame_valid)[self._rows]
        raise ValueError(f"frames: {n} positions, expected every position ({n_all}, as stage_xyz_m) or this rank's "
                         f"{self._rows.size} (j ≡ {self._comm.rank} mod {self._comm.size})")

    def _check_frame_valid(self, frame_valid: np.ndarray | None, frames_shape: tuple[int, ...]) -> np.ndarray | None:
        """(POS, ANGLE) or (POS, ANGLE, N1, N2) bool, or None; shape checked against the frames."""
        if frame_valid is None:
            return None
        fv = np.asarray(frame_valid)
        if fv.dtype != bool:
            raise ValueError(f"frame_valid: dtype {fv.dtype}, expected bool (True on measured frames)")
        if len(frames_shape) != 4 or fv.shape not in (tuple(frames_shape[:2]), tuple(frames_shape)):
            raise ValueError(f"frame_valid: shape {fv.shape}, expected (POS, ANGLE) = {tuple(frames_shape[:2])} "
                             f"or (POS, ANGLE, N1, N2) = {tuple(frames_shape)}")
        return fv

    def _valid_internal(self, fv: np.ndarray | None) -> Array | None:
        """User-order validity → the solvers' (POS, NM) or (POS, N1, N2, NM) layout (None stays None)."""
        if fv is None:
            return None
        v = fv if fv.ndim == 2 else np.moveaxis(fv, 1, -1)
        if self.geometry.rocking_step_deg < 0:
            v = v[..., ::-1]
        return self._xp.asarray(np.ascontiguousarray(v))

    def _check_frames(self, frames: np.ndarray, frame_valid: np.ndarray | None = None) -> np.ndarray:
        g = self.geometry
        f = np.asarray(frames)
        want = (g.n_angles, g.n_rows_px, g.n_cols_px)
        if f.ndim != 4 or f.shape[1:] != want:
            raise ValueError(f"frames: shape {f.shape}, expected (n_positions, {want[0]}, {want[1]}, {want[2]}) "
                             "= (POS, ANGLE, N1, N2) from the geometry; check the ROI and n_angles")
        if frame_valid is not None:                     # invalid frames may hold anything: zero them
            bad = ~frame_valid if frame_valid.ndim == 4 else ~frame_valid[:, :, None, None]
            f = np.where(bad, np.zeros((), f.dtype), f)
        if not np.all(np.isfinite(f)):
            raise ValueError("frames: contain NaN or inf; mask bad pixels with the mask instead")
        if np.any(f < 0):
            raise ValueError(f"frames: {int(np.sum(f < 0))} negative counts; subtract dark frames before and clip at 0")
        return f

    def _check_stage(self, stage_xyz_m: np.ndarray, n_pos: int) -> np.ndarray:
        s = np.asarray(stage_xyz_m, float)
        if s.shape != (n_pos, 3) or not np.all(np.isfinite(s)):
            raise ValueError(f"stage_xyz_m: shape {s.shape}, expected ({n_pos}, 3) finite positions in metres")
        return s

    def _to_internal(self, frames: np.ndarray) -> Array:
        f = np.moveaxis(frames, 1, -1)                  # (POS, N1, N2, NM)
        if self.geometry.rocking_step_deg < 0:
            f = f[..., ::-1]
        return self._xp.asarray(np.ascontiguousarray(f), dtype=self._dtype.type(0).real.dtype)

    def _band_limit(self, obj: Array) -> Array:
        """ρ ← F⁻¹[M_band · F ρ] on the whole object grid (docs/geometry.md, Operators, band)."""
        xp = self._xp
        if self._band is None:
            self._band = xp.asarray(measured_band_mask(self.geometry, self._grid.object_shape))
        fft = fft_module(xp)
        return fft.ifftn(fft.fftn(obj) * self._band).astype(obj.dtype)

    def _intensity_scale(self) -> float:
        """√(Σ ω I / Σ ω |F_meas(P_j ρ_j)|²) over all positions (1 if the model predicts nothing)."""
        xp, op, d = self._xp, self.op, self.data
        pred = 0.0
        for j in range(d.n_positions):
            if not d.has_data(j):
                continue
            pj = op.probe_at(self.state.probe, d.shifts_px[j])
            psi = op.fourier.forward(pj * self.state.object[op.view(d.offsets_vox[j])])
            pred += xp.sum(xp.where(d.mask_at(j), psi.real ** 2 + psi.imag ** 2, 0.0), dtype=xp.float64)
        pred = self.comm.allreduce_scalar(float(pred))
        meas = self.comm.allreduce_scalar(d.measured_sum())
        return float(np.sqrt(meas / pred)) if pred > 0 and meas > 0 else 1.0

    def _slab(self, iteration: int) -> np.ndarray:
        """The thickness support in force at ``iteration``: the slab, or for kind "none" the grid or lit region."""
        s = self.recipe.support
        if s.kind == "none":
            shape = self._grid.object_shape
            return np.ones(shape, bool) if self._region is None else self._region.copy()
        return slab_support(self.geometry, self._grid.object_shape, self._slab_centre, s.thickness_m(iteration),
                            s.tilt_x_deg, s.tilt_y_deg)

    # --- public API ----------------------------------------------------------------------
    @property
    def iteration(self) -> int:
        """Completed iterations."""
        return self.state.iteration

    @property
    def last_step(self) -> tuple[str, float] | None:
        """(phase, cost) of the latest iteration without copying the state (None before the first)."""
        return (self._phases[-1], self._costs[-1]) if self._phases else None

    def add_frames(self, frames: np.ndarray, stage_xyz_m: np.ndarray, frame_valid: np.ndarray | None = None) -> None:
        """Append positions (POS_NEW, ANGLE, N1, N2) acquired live; they must fit the object grid.

        ``frame_valid`` as in the constructor, for the new positions only (None: all measured).
        Not available with a communicator (the positions' split is fixed when the engine is built).
        """
        if self._comm is not None:
            raise ValueError("add_frames: not supported with a communicator; build the engine on the whole scan")
        fv = self._check_frame_valid(frame_valid, np.shape(frames))
        f = self._check_frames(frames, fv)
        s = self._check_stage(stage_xyz_m, f.shape[0])
        vg = view_grid(self.geometry, s, object_shape=self._grid.object_shape, origin_vox=self._grid.origin_vox)
        xp = self._xp
        d = self._all_data
        old_fv, new_fv = d.frame_valid, self._valid_internal(fv)
        valid = None
        if old_fv is not None or new_fv is not None:
            per_pixel = any(v is not None and v.ndim == 4 for v in (old_fv, new_fv))
            shape = tuple(d.mask.shape) if per_pixel else (d.mask.shape[-1],)

            def _expand(v: Array | None, n: int) -> Array:
                if v is None:
                    return xp.ones((n,) + shape, dtype=bool)
                return xp.broadcast_to(v[:, None, None, :], (n,) + shape) if per_pixel and v.ndim == 2 else v

            valid = xp.concatenate([_expand(old_fv, d.n_positions), _expand(new_fv, f.shape[0])])
        if self._held_out is not None:
            new_rows = np.arange(d.n_positions, d.n_positions + f.shape[0])
            self._held_out = np.concatenate([self._held_out, held_out_rows(new_rows, d.mask.shape, self.recipe.free)])
        self._set_data(BraggData(intensities=xp.concatenate([d.intensities, self._to_internal(f)]), mask=d.mask,
                                 offsets_vox=np.concatenate([d.offsets_vox, vg.offsets_vox]),
                                 shifts_px=np.concatenate([d.shifts_px, vg.shifts_px]), frame_valid=valid))
        self._stage = np.concatenate([self._stage, s])

    def update_frames(self, frames: np.ndarray, frame_valid: np.ndarray | None = None) -> None:
        """Replace the data of the existing positions; object, probe, background and history carry over.

        ``frames`` (POS, ANGLE, N1, N2) for the same positions as now, ``frame_valid`` as in the
        constructor (None: every frame measured). Use it when frames arrive during the scan:
        the not-yet-measured ones stay free (seed Eq 13, ω = 0) until they are valid. With a
        communicator, every position's or this rank's rows (as in the constructor).
        """
        frames, frame_valid = self._own_rows(frames, frame_valid, self._share.n_positions)
        fv = self._check_frame_valid(frame_valid, np.shape(frames))
        f = self._check_frames(frames, fv)
        if f.shape[0] != self.data.n_positions:
            raise ValueError(f"update_frames: {f.shape[0]} positions, expected {self.data.n_positions} "
                             "(the positions of this reconstruction; append new ones with add_frames)")
        self._set_data(dataclasses.replace(self._all_data, intensities=self._to_internal(f),
                                           frame_valid=self._valid_internal(fv)))

    def _set_data(self, data: BraggData) -> None:
        """Keep ``data`` (every measured entry) and split it into the fitted and the held-out part."""
        self._all_data = data
        self.data, self._free_data = split_data(data, self._held_out)

    @property
    def all_data(self) -> BraggData:
        """Every measured entry, held-out ones included (``data`` is what the solvers fit)."""
        return self._all_data

    @property
    def held_out_data(self) -> BraggData | None:
        """Only the held-out entries (``recipe.free``), or None when nothing is held out."""
        return self._free_data

    @property
    def remaining_iterations(self) -> int:
        """Iterations of the recipe still to run (0 once the free-data rule has stopped the ML phase)."""
        r, mon = self.recipe, self._free_monitor
        if mon is not None and mon.finished:
            return 0
        epie_left = 0 if mon is not None and mon.epie_stopped else max(0, r.n_epie_iterations - self.state.iteration)
        return epie_left + max(0, r.n_ml_iterations - self._n_ml_done)

    def _apply_support_schedule(self, it: int) -> None:
        sched = self.recipe.support
        xp = self._xp
        th = sched.thickness_m(it)
        if sched.kind == "slab" and th != self._thickness and sched.support_fixed_before(it):
            self.state.support = xp.asarray(self._slab(it))
            self._thickness = th
        if sched.shrinkwrap_due(it):                    # never below a floor of the slab (shrinkwrap_floor)
            floor = shrinkwrap_floor(self._slab(it))
            amp = (self.state.object if sched.shrinkwrap_sigma_vox == 0
                   else smoothed_amplitude(self.state.object, sched.shrinkwrap_sigma_vox))
            self.state.support = shrink_wrap(amp, self.state.support, sched.shrinkwrap_threshold,
                                             min_voxels=max(1, floor))
            self.state.object *= self.state.support

    def iterate(self, n_iterations: int) -> Reconstruction:
        """Run ``n_iterations`` more iterations of the recipe (ePIE sweeps, then ML)."""
        if n_iterations < 0:
            raise ValueError(f"n_iterations must be >= 0, got {n_iterations}")
        r = self.recipe
        mon = self._free_monitor
        if n_iterations and not self._costs and "initial" not in self._r_factors:
            self._record_r_factors("initial")
        for _ in range(n_iterations):
            if mon is not None and mon.finished:
                break                                   # the free-data rule ended ML: the best state is kept
            it = self.state.iteration
            t0 = time.perf_counter()
            stats: epie.SweepStats | ml.MLStats
            if it < r.n_epie_iterations and not (mon is not None and mon.epie_stopped):
                self._apply_support_schedule(it)
                if self._comm is None:
                    self.state, stats = epie.step(self.state, self.data, op=self.op, options=r.epie, rng=self._rng,
                                                  execution=self.execution)
                else:
                    self.state, stats = distributed.step(self.state, self.data, op=self.op, options=r.epie,
                                                         comm=self._comm, rng=self._rng, share=self._share)
                if r.band_limit_object:
                    self.state.object = self._band_limit(self.state.object)
                self._phases.append("epie")
            else:
                if mon is not None and not mon.has_checks:  # ML from the start: its first state is the baseline
                    assert self._free_data is not None      # the monitor exists only with held-out entries
                    mon.evaluate(self.state, self.data, self._free_data, self.op, "ml")
                self.state, stats = ml.step(self.state, self.data, op=self.op, options=r.ml, comm=self._comm,
                                            execution=self.execution)
                self._n_ml_done += 1
                self._phases.append("ml")
            self._costs.append(float(stats.cost))
            if mon is not None:
                assert self._free_data is not None          # the monitor exists only with held-out entries
                ph = self._phases[-1]
                done, n = (self.state.iteration, r.n_epie_iterations) if ph == "epie" else (self._n_ml_done,
                                                                                           r.n_ml_iterations)
                self.state = mon.after_iteration(self.state, self.data, self._free_data, self.op, phase=ph,
                                                 n_done=done, n_phase=n)
            self._times.append(time.perf_counter() - t0)
            ph = self._phases[-1]
            self._r_history.append(float("nan"))
            if ph == "epie" and (self.state.iteration == r.n_epie_iterations or (mon is not None and mon.epie_stopped)):
                self._record_r_factors("epie")
            elif ph == "ml" and (self._n_ml_done == r.n_ml_iterations or (mon is not None and mon.finished)):
                self._record_r_factors("ml")
            elif r_factor_due(*((self.state.iteration, r.n_epie_iterations) if ph == "epie"
                                else (self._n_ml_done, r.n_ml_iterations))):
                self._r_history[-1] = self.r_factor()
        return self

    def r_factor(self, *, held_out: bool = False) -> float:
        """R = Σ ω|√I − √(|Ψ_j|² + b)| / Σ ω√I of the current state over the fitted entries
        (docs/dataset-format.md, Quality of a run).

        ``held_out``: over the held-out entries instead (NaN when nothing is held out). Summed over
        ranks under MPI; NaN when the entries hold no counts. 0 for a state that predicts the data,
        1 for ρ = 0 and b = 0.
        """
        data = self._free_data if held_out else self.data
        if data is None:
            return float("nan")
        num, den = r_factor_sums(self.state, data, self.op)
        num, den = self.comm.allreduce_scalar(num), self.comm.allreduce_scalar(den)
        return num / den if den > 0 else float("nan")

    @property
    def placement(self) -> ObjectPlacement:
        """Where each voxel of the object grid sits relative to the stage positions (sample frame, metres)."""
        return object_placement(self.geometry, self._grid.origin_vox)

    @property
    def phase_r_factors(self) -> dict[str, float]:
        """R-factors recorded so far: ``"initial"`` and each completed phase (a copy; see :meth:`result`)."""
        return dict(self._r_factors)

    def _record_r_factors(self, key: str) -> None:
        """R-factor (and the held-out one) of the current state under ``key`` (once per key)."""
        if key in self._r_factors:
            return
        self._r_factors[key] = self.r_factor()
        if key != "initial" and self._r_history:
            self._r_history[-1] = self._r_factors[key]          # the phase's closing value ends its history
        if self._free_data is not None:
            self._free_r_factors[key] = self.r_factor(held_out=True)

    def illumination(self) -> np.ndarray:
        """w = Σ_j |P_j|² of the current probe on the object grid (NumPy, float): where the data constrain ρ.

        Summed over all ranks under MPI (every rank gets the whole map).
        """
        w = illumination_maps(self.state.probe, self.data, self.op, tuple(self.state.object.shape))[0]
        if self._comm is not None:
            w = self._comm.allreduce_sum(w)
        return to_numpy(w)

    def illuminated_support(self, fraction: float = 0.01) -> np.ndarray:
        """S ∧ [w ≥ ``fraction`` · max w]: the support where the probe reached (masks for strain and figures).

        Voxels the probe barely reached are not constrained by the data; long ML runs can leave any
        amplitude there, which must not set amplitude thresholds (docs/seed-schedule.md).
        """
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"illuminated_support: fraction must lie in [0, 1), got {fraction}")
        w = self.illumination()
        return to_numpy(self.state.support) & (w >= fraction * w.max())

    def model_object(self, rho: np.ndarray) -> np.ndarray:
        """ρ on the object grid (sample frame, as :meth:`result` reports it) → the model frame of ``state.object``.

        ρ' = ρ·e^{−iδ û·r} with δ from :attr:`rocking_shift_steps` (identity when the recorded offsets sit on
        the model's q3 grid); use it to start ``state.object`` from a known ρ.
        """
        r = np.asarray(rho)
        if r.shape != tuple(self.state.object.shape):
            raise ValueError(f"model_object: shape {r.shape}, expected the object grid "
                             f"{tuple(self.state.object.shape)}")
        if self.rocking_shift_steps == 0.0:
            return r
        return r * self._shift_phase(r.shape)

    def _shift_phase(self, shape: tuple[int, ...]) -> np.ndarray:
        """e^{−iδ û·r} of :attr:`rocking_shift_steps` on an object grid of ``shape`` (engine dtype)."""
        g = self.geometry
        return rocking_shift_phase(g, (shape[0], shape[1], shape[2]), self.rocking_shift_steps).astype(self._dtype)

    def result(self) -> ReconstructionResult:
        """Current object (sample frame, the model frame's rocking shift undone), probe, background and histories."""
        b = np.moveaxis(to_numpy(self.state.background), -1, 0)
        if self.geometry.rocking_step_deg < 0:
            b = b[::-1]
        obj = to_numpy(self.state.object).copy()
        if self.rocking_shift_steps != 0.0:
            obj *= np.conj(self._shift_phase(obj.shape)).astype(obj.dtype)
        return ReconstructionResult(
            object=obj, probe=to_numpy(self.state.probe).copy(), background=b.copy(),
            support=to_numpy(self.state.support).copy(),
            offsets_vox=(self.data.offsets_vox if self._comm is None else self._grid.offsets_vox).copy(),
            shifts_px=(self.data.shifts_px if self._comm is None else self._grid.shifts_px).copy(),
            costs=tuple(self._costs), phases=tuple(self._phases),
            timings_s=tuple(self._times), iterations=self.state.iteration, geometry=self.geometry,
            recipe=dataclasses.asdict(self.recipe),
            free=None if self._free_monitor is None else self._free_monitor.history(),
            origin_vox=np.asarray(self._grid.origin_vox, float).copy(), r_factors=dict(self._r_factors),
            free_r_factors=dict(self._free_r_factors), r_factor_history=tuple(self._r_history))
