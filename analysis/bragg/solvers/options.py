"""Frozen option dataclasses of the Bragg solvers (seed Methods defaults; docs/seed-schedule.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class EpieOptions:
    """Per-position ePIE update of seed Eqs 5–11, 13."""

    alpha: float = 1.0
    """α of Eq 10: probe step weight (1 → scalar max|ρ|² normalisation)."""
    beta: float = 0.5
    """β of Eq 9: object step weight between |P|² and max|P|²."""
    gamma: float = 0.1
    """γ of Eq 11: background multiplicative step (0 freezes b)."""
    mu: float = 0.02
    """μ of Eq 4/9: thickness-support penalty, μ_j = μ·max|P_j|²."""
    update_probe: bool = True
    """Update P2 at all (False = fixed-probe baseline)."""
    probe_update_start_iter: int = 5
    """First sweep (0-based) at which P2 is updated; earlier sweeps keep it frozen."""
    na_mask_stop_iter: int = 1000
    """Apply the NA mask to P2 after every sweep with probe_update_start_iter ≤ it < this."""
    n_batches: int = 0
    """0: sequential ePIE; B > 0: mini-batch rPIE with B spatially spread batches (docs/mpi.md)."""
    dm_iterations: int = 0
    """The first this many sweeps run the difference map / RAAR on the exit waves instead of ePIE, probe held
    (:mod:`analysis.bragg.solvers.dm`; memory: one exit wave per position). 0 = ePIE from the start (the seed)."""
    dm_beta: float = 1.0
    """β of those sweeps: 1 = difference map, 0 < β < 1 = RAAR."""
    normalise_scale: bool = True
    """Rescale so mean |ρ| on S = 1 after each sweep (P2 compensated)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"EpieOptions.alpha must lie in [0, 1], got {self.alpha}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"EpieOptions.beta must lie in [0, 1], got {self.beta}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"EpieOptions.gamma must lie in [0, 1], got {self.gamma}")
        if self.mu < 0:
            raise ValueError(f"EpieOptions.mu must be >= 0, got {self.mu}")
        if self.dm_iterations < 0 or not 0.0 < self.dm_beta <= 1.0:
            raise ValueError(f"EpieOptions: dm_iterations must be >= 0 and dm_beta in (0, 1], got "
                             f"{self.dm_iterations} and {self.dm_beta}")
        if self.probe_update_start_iter < 0 or self.na_mask_stop_iter < 0 or self.n_batches < 0:
            raise ValueError("EpieOptions: iteration numbers and n_batches must be >= 0")


@dataclass(frozen=True, kw_only=True)
class MLOptions:
    """Maximum-likelihood refinement of Thibault & Guizar-Sicairos 2012 (Polak–Ribière CG, exact line search)."""

    noise_model: Literal["amplitude", "poisson"] = "amplitude"
    """Cost: amplitude-Gaussian (seed Eq 4) or Poisson."""
    mu: float = 0.02
    """Thickness-support penalty μ (μ_j = μ·max|P_j|², frozen when ML starts)."""
    update_probe: bool = True
    """Refine P2 together with ρ."""
    probe_scale: float | None = None
    """Preconditioner s on the probe gradient; None: ‖g_ρ‖²/‖g_P‖² at the first ML iteration."""
    support_mask_gradient: bool = False
    """Zero the object gradient outside S (hard support) instead of relying on μ only."""
    smoothness: float = 0.0
    """Strength s of the smoothness prior s Σ w|∇ρ|², w = Σ_j |P_j|² the current illumination
    (:mod:`analysis.bragg.solvers.smoothness`); 0 = the seed's cost (Eq 4) alone."""
    hold_probe_ramp: bool = True
    """Keep the probe's linear phase ramp (the centroid of |FFT P2|²) where ML found it: the probe
    gradient is projected onto directions that leave the centroid unchanged to first order
    (:func:`analysis.bragg.solvers.ml.hold_spectral_centroid`). ρ e^{ig·r}, P e^{−ig·r} (g ⊥ k_i) changes
    no |Ψ_j|², so without an NA mask the data let the pair drift, and the object's ramp shows as a
    uniform strain offset."""

    def __post_init__(self) -> None:
        if self.noise_model not in ("amplitude", "poisson"):
            raise ValueError(f"MLOptions.noise_model must be 'amplitude' or 'poisson', got {self.noise_model!r}")
        if self.mu < 0:
            raise ValueError(f"MLOptions.mu must be >= 0, got {self.mu}")
        if self.probe_scale is not None and not self.probe_scale > 0:
            raise ValueError(f"MLOptions.probe_scale must be > 0 or None, got {self.probe_scale}")
        if not self.smoothness >= 0:
            raise ValueError(f"MLOptions.smoothness must be >= 0, got {self.smoothness}")


@dataclass(frozen=True, kw_only=True)
class FreeDataOptions:
    """Held-out ("free") data cross-validation: R_free of crystallography, PyNX's free-pixel mask.

    A random fraction of the measured entries is held out of every update (ω = 0 there, seed
    Eq 13: Ψ left free; the ML cost drops them); the seed's amplitude cost (Eq 4 data term) on
    those entries alone, per entry, tracks whether the reconstruction still predicts data it
    has not fitted. Over-fitting shows as a free cost that rises while the fitted cost falls.
    """

    fraction: float = 0.0
    """Fraction of the measured entries (ω = 1) held out, in [0, 0.5); 0 = off (every entry fitted)."""
    unit: Literal["entry", "frame"] = "entry"
    """'entry': single (position, pixel, plane) detector-voxels drawn independently; 'frame': whole
    (position, rocking angle) frames."""
    seed: int = 0
    """Seed of the selection; position j draws from (seed, global index of j), so the set does not
    depend on the rank split or on when the position was added."""
    check_interval: int = 10
    """Iterations between free-cost evaluations (≥ 1); each phase's last iteration is checked too."""
    patience: int | None = 5
    """Stop the phase when the free cost has not improved for this many checks; None: never stop early."""
    stop_phases: tuple[Literal["epie", "ml"], ...] = ("epie", "ml")
    """Phases in which the patience rule may stop iterating."""
    restore_best: bool = True
    """At the end of each phase (stopped or complete) go back to the state with the lowest free cost."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 0.5:
            raise ValueError(f"FreeDataOptions.fraction must lie in [0, 0.5), got {self.fraction}")
        if self.unit not in ("entry", "frame"):
            raise ValueError(f"FreeDataOptions.unit must be 'entry' or 'frame', got {self.unit!r}")
        if self.check_interval < 1:
            raise ValueError(f"FreeDataOptions.check_interval must be >= 1, got {self.check_interval}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"FreeDataOptions.patience must be >= 1 or None, got {self.patience}")
        if any(p not in ("epie", "ml") for p in self.stop_phases):
            raise ValueError(f"FreeDataOptions.stop_phases: {self.stop_phases}, expected a subset of ('epie', 'ml')")

    @property
    def enabled(self) -> bool:
        """Whether any data is held out."""
        return self.fraction > 0.0


def _switch_on(name: str) -> bool:
    """An execution switch from the environment: on unless ``name`` is set to ``0``."""
    return os.environ.get(name, "1") != "0"


FftwEffort = Literal["FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT"]
"""FFTW planner effort names (pyFFTW's planner flags)."""


@dataclass(frozen=True, kw_only=True)
class Execution:
    """How a reconstruction runs, apart from what it computes (docs/decisions/0008-execution-options.md).

    Chosen once and passed beside the physics options (:class:`EpieOptions`, :class:`MLOptions`, the
    recipe); no field changes a number beyond float32 rounding. The environment switches are read here, when
    the value is made, and nowhere else in the engine: ``PXM_BACKEND`` (what ``backend="auto"`` means),
    ``PXM_CPU_KERNELS=0`` and ``PXM_GPU_KERNELS=0`` (the defaults of ``cpu_kernels`` and ``gpu_kernels``).
    """

    backend: str = "auto"
    """Array backend: ``"auto"`` (CuPy when a GPU is usable, else NumPy; ``PXM_BACKEND`` overrides it),
    ``"numpy"`` or ``"cupy"`` (:func:`analysis.xp.backend`)."""
    cpu_kernels: bool = field(default_factory=lambda: _switch_on("PXM_CPU_KERNELS"))
    """On NumPy complex64, run the ePIE sweeps and the ML transforms with the fused CPU kernels (Numba +
    FFTW, :mod:`analysis.bragg.solvers.fused_cpu`) when those import and the geometry allows; False: the plain
    array code. Same numbers to float32 rounding. Default: on unless ``PXM_CPU_KERNELS=0``."""
    gpu_kernels: bool = field(default_factory=lambda: _switch_on("PXM_GPU_KERNELS"))
    """On CuPy complex64, run the ePIE sweeps and the ML passes with the fused CUDA kernels
    (:mod:`analysis.bragg.solvers.fused_gpu`); False: the CuPy array code. Default: on unless
    ``PXM_GPU_KERNELS=0``."""
    fftw_effort: FftwEffort = "FFTW_MEASURE"
    """FFTW planner effort of the fused CPU path (MEASURE: seconds of planning once per reconstruction)."""
    keep_exit_waves: bool = True
    """ML keeps Ψ_j = F(P_j ρ_j) of every position: from the gradient pass for the line search, and from
    the accepted Armijo trial for the next gradient pass (checked by a key of ρ, P2 and the scan).
    Two forward transforms fewer per position and iteration; costs one crop set
    (POS × N1 × N2 × NM complex64, 4.3 GB at the seed's size)."""

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "numpy", "cupy"):
            raise ValueError(f"Execution.backend: {self.backend!r}, expected 'auto', 'numpy' or 'cupy'")
        if self.fftw_effort not in ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT"):
            raise ValueError(f"Execution.fftw_effort must be FFTW_ESTIMATE, FFTW_MEASURE or FFTW_PATIENT, "
                             f"got {self.fftw_effort!r}")
