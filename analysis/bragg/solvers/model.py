"""Shared pieces of the Bragg solvers: the forward-model bundle, the data and the state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from analysis.bragg.operators.fourier import FoldedFourier3D, _fft_kw
from analysis.bragg.operators.probe import ProbeExtrusion, extrusion_slope_px
from analysis.geometry import BraggGeometry
from analysis.xp import Array, DeviceCopies, array_module, fft_module, to_numpy


class BraggModel:
    """Bilinear forward model Ψ_j = F_meas(P_j · ρ[o_j + box]), P_j = B Shift_{g_j} P2
    (seed Eq 1; docs/geometry.md, Operators).

    Holds the folded transform, the extrusion and the optional NA mask; all shapes are
    fixed here. Object ``(NO1, NO2, NO3)``, probe P2 ``(N2, N3)``, box ``(N1P, N2, N3)``,
    measured field ``(N1, N2, NM)``.
    """

    def __init__(self, fourier: FoldedFourier3D, extrusion: ProbeExtrusion,
                 object_shape: tuple[int, int, int], na_mask: np.ndarray | None = None) -> None:
        if tuple(fourier.box_shape) != tuple(extrusion.box_shape):
            raise ValueError(f"BraggModel: Fourier box {fourier.box_shape} != extrusion box {extrusion.box_shape}")
        if extrusion.shift_px != (0.0, 0.0):
            raise ValueError("BraggModel: pass an extrusion without shift; per-position shifts are applied here")
        if any(o < b for o, b in zip(object_shape, fourier.box_shape, strict=True)):
            raise ValueError(f"BraggModel: object_shape {object_shape} smaller than the box {fourier.box_shape}")
        self.fourier = fourier
        self.extrusion = extrusion
        self.box_shape = tuple(fourier.box_shape)
        self.probe_shape = tuple(fourier.box_shape[1:])
        self.data_shape = tuple(fourier.out_shape)
        self.object_shape = tuple(int(v) for v in object_shape)
        if na_mask is not None and tuple(na_mask.shape) != self.probe_shape:
            raise ValueError(f"BraggModel: na_mask shape {na_mask.shape}, expected {self.probe_shape}")
        self.na_mask = na_mask
        self.fused_cpu: dict[str, Any] = {}
        """Buffers and FFTW plans of :mod:`analysis.bragg.solvers.fused_cpu`, made on first use: the shared
        ``"transform"`` and the ``"epie"`` and ``"ml"`` paths built on it."""
        self._w2 = 2j * np.pi * np.fft.fftfreq(self.probe_shape[0])       # 2πi f of shift2d's phase ramps
        self._w3 = 2j * np.pi * np.fft.fftfreq(self.probe_shape[1])
        self._on_device = DeviceCopies()

    @classmethod
    def from_geometry(cls, geometry: BraggGeometry, object_shape: tuple[int, int, int],
                      na_mask: np.ndarray | None = None) -> BraggModel:
        """Model on ``geometry.recon_shape`` with U = ``geometry.upsampling``."""
        return cls(FoldedFourier3D.from_geometry(geometry),
                   ProbeExtrusion(geometry.recon_shape, extrusion_slope_px(geometry)), object_shape, na_mask)

    def view(self, offset: np.ndarray) -> tuple[slice, slice, slice]:
        """Slices of the object array covered by the box at ``offset`` (3 ints)."""
        return cast("tuple[slice, slice, slice]",
                    tuple(slice(int(o), int(o) + s) for o, s in zip(offset, self.box_shape, strict=True)))

    def shift2d(self, p2: Array, shift_px: np.ndarray, inverse: bool = False) -> Array:
        """Shift_g P2 (or Shift_{−g}) by a Fourier phase ramp; ``(N2, N3)`` → ``(N2, N3)``."""
        if shift_px[0] == 0.0 and shift_px[1] == 0.0:
            return p2
        xp = array_module(p2)
        fft = fft_module(xp)
        sgn = 1.0 if inverse else -1.0
        w2 = self._on_device.get("w2", self._w2, xp, p2.dtype)
        w3 = self._on_device.get("w3", self._w3, xp, p2.dtype)
        ph = xp.exp(w2 * (sgn * float(shift_px[0])))[:, None] * xp.exp(w3 * (sgn * float(shift_px[1])))[None, :]
        kw = _fft_kw(xp)
        return fft.ifft2(fft.fft2(p2, **kw) * ph, overwrite_x=True, **kw)

    def probe_at(self, p2: Array, shift_px: np.ndarray) -> Array:
        """P_j = B Shift_g P2: ``(N2, N3)`` → ``(N1P, N2, N3)``."""
        return self.extrusion.forward(self.shift2d(p2, shift_px))

    def probe_adjoint(self, p3: Array, shift_px: np.ndarray) -> Array:
        """Shift_{−g} B^H P3 (sum along k_i): ``(N1P, N2, N3)`` → ``(N2, N3)``."""
        return self.shift2d(self.extrusion.adjoint(p3), shift_px, inverse=True)


@dataclass(frozen=True, kw_only=True)
class BraggData:
    """Measured intensities in the operator's layout and the scan bookkeeping."""

    intensities: Array = field(repr=False)
    """(POS, N1, N2, NM) float: photon counts I_j on the measured planes."""
    mask: Array = field(repr=False)
    """(N1, N2, NM) bool: ω, True on valid measured pixels."""
    offsets_vox: np.ndarray = field(repr=False)
    """(POS, 3) int64: view offsets o_j."""
    shifts_px: np.ndarray = field(repr=False)
    """(POS, 2) float64: sub-pixel probe shifts g_j."""
    frame_valid: Array | None = field(default=None, repr=False)
    """None (every frame measured), (POS, NM) bool per frame, or (POS, N1, N2, NM) bool per
    pixel: False on frames not yet measured or missing, which are left free like virtual
    planes (seed Eq 13 with ω = 0)."""
    _sum: list[float] = field(default_factory=list, init=False, repr=False, compare=False)
    _has: list[np.ndarray] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fv = self.frame_valid
        if fv is None:
            return
        pos, n1, n2, nm = (int(v) for v in self.intensities.shape)
        if tuple(fv.shape) not in ((pos, nm), (pos, n1, n2, nm)):
            raise ValueError(f"BraggData.frame_valid: shape {tuple(fv.shape)}, expected ({pos}, {nm}) "
                             f"or ({pos}, {n1}, {n2}, {nm})")

    @property
    def n_positions(self) -> int:
        """Number of scan positions J."""
        return int(self.intensities.shape[0])

    def mask_at(self, j: int) -> Array:
        """ω_j ``(N1, N2, NM)`` bool: the detector mask ∧ the validity of position j's frames (Eq 13)."""
        fv = self.frame_valid
        if fv is None:
            return self.mask
        if fv.ndim == 2:
            return self.mask & fv[j][None, None, :]
        return self.mask & fv[j]

    def has_data(self, j: int) -> bool:
        """Whether position j has at least one valid frame (positions without any are skipped)."""
        fv = self.frame_valid
        if fv is None:
            return True
        if not self._has:                       # once per instance, one copy to the host (see measured_sum)
            xp = array_module(fv)
            self._has.append(to_numpy(xp.any(fv.reshape(fv.shape[0], -1), axis=1)))
        return bool(self._has[0][j])

    def measured_sum(self) -> float:
        """Σ_j Σ ω_j I_j: the normalisation of the amplitude misfit.

        Computed once per instance: the arrays are treated as read-only (new frames make a new
        BraggData with ``dataclasses.replace``, which starts a fresh cache).
        """
        if not self._sum:
            self._sum.append(self._measured_sum())
        return self._sum[0]

    def _measured_sum(self) -> float:
        xp = array_module(self.intensities)
        if self.frame_valid is None:
            return float(xp.sum(xp.where(self.mask[None], self.intensities, 0.0)))
        return float(sum(xp.sum(xp.where(self.mask_at(j), self.intensities[j], 0.0), dtype=xp.float64)
                         for j in range(self.n_positions)))


@dataclass(kw_only=True)
class BraggState:
    """Reconstruction variables; solvers return an updated state (arrays may be updated in place)."""

    object: Array = field(repr=False)
    """(NO1, NO2, NO3) complex: ρ on the orthogonal r-grid."""
    probe: Array = field(repr=False)
    """(N2, N3) complex: oblique probe section P2."""
    background: Array = field(repr=False)
    """(N1, N2, NM) float: incoherent background b (0 where ω = 0)."""
    support: Array = field(repr=False)
    """(NO1, NO2, NO3) bool: S, the thickness support (∧ shrink-wrap)."""
    iteration: int = 0
    """Number of completed sweeps / ML iterations."""
    ml_memory: Any = field(default=None, repr=False)
    """Conjugate-gradient memory of :mod:`analysis.bragg.solvers.ml` (None outside ML)."""
    dm_memory: Any = field(default=None, repr=False)
    """Exit waves of :mod:`analysis.bragg.solvers.dm` (None outside difference-map sweeps)."""


def normalise_scale(state: BraggState) -> BraggState:
    """Fix the ρ/P scale ambiguity: mean |ρ| on S = 1, P2 compensated (seed Eqs 5–11, 13)."""
    xp = array_module(state.object)
    s = state.support
    n = int(xp.count_nonzero(s))
    if n == 0:
        return state
    m = float(xp.sum(xp.abs(state.object) * s)) / n
    if m > 0:
        state.object *= 1.0 / m
        state.probe *= m
    return state
