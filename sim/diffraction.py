"""Detector frames for Bragg and forward (transmission) ptychography.

Both simulators implement the FrameSource contract (docs/decisions/0001-rooms.md).

Bragg frames — an independent, finely sampled method (no inverse crime)
-------------------------------------------------------------------------------------
Kinematic amplitude (seed Eq 1, sign of docs/geometry.md, Operators), sample frame of :mod:`analysis.geometry`:

    A(q) = ∫ P(r + s) ρ(r) e^{−i q·r} d³r,   q = q1 e1 + q2 e2 + q3 x̂ (flat Ewald, docs/geometry.md, Operators)

with s the stage translation (the probe sits at r = −s), q1, q2 = pixel offsets × kp/D
from the Bragg peak, q3 = |Q| (rocking offset − sample misorientation). Since
e1·r = x sinθ − z cosθ, substitute σ = x sinθ − z cosθ at fixed z (x = (σ + z cosθ)/sinθ,
dx = dσ/sinθ):

    A = Σ_z (Δz/sinθ) Σ_{σ,y} ψ(σ, y, z) e^{−i q3 x(σ, z)} e^{−i(q1 σ + q2 y)} δσ δy.

The (σ, y) sum is one 2D FFT. Detector pixels sample q at spacing kp/D, so the field
is periodised with period λD/p (Poisson summation): we fold the exit field onto an
N1 × N2 grid with N = ``oversampling`` × (ROI size), i.e. δσ = λD/(p N1), finer than the
reconstruction grid (Δr1 = λD/(p N1')). A carrier e^{−i q_c·r} centres the FFT band on
the ROI. The probe is separable, P = p_V(p1·(r+s)) p_H(y + s_y), and p1·r is linear in
(σ, z), so the z-sum is a batched matrix–vector product with the sample ρ(σ, y, z).
ρ is sampled on a grid fixed to the sample (σ = n δσ, y = m δy, z = k Δz), so a stage
move only changes which grid points the probe lights and the probe values (evaluated
exactly at the shifted points); ρ is cached in lateral tiles, each holding only the
slab's z-extent over its columns (ρ = 0 outside), and a scan evaluates each tile once.
The probe rotates with the rocking angle relative to the sample (probe_axes).
Slab/grain-boundary edges are averaged over each Δz step along the integration line
(no staircase).

Counts per pixel: flux × flux_scale × exposure × r_e² |F|²/V_cell² × |A|² × (p/D)²
+ background × flux_scale × exposure, then Poisson. Peak at ``centre_px`` (default the
detector centre) at zero offsets; a detector-arm offset Δ(2θ) > 0 moves the pattern to
larger row indices by Δ(2θ) D/p. Approximations: flat Ewald sphere, kinematic, no
absorption/refraction, point-sampled pixels, ρ sampled on a Δz grid (default 10 nm).
"""

# Why this module is long: the Bragg and transmission frame sources of docs/decisions/0001-rooms.md: one physics
# model each, sharing the detector sampling and noise.

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sp_fft
from scipy.fft import next_fast_len

from analysis.geometry import BraggGeometry, DetectorLayout, Roi, wavelength_m_from_kev
from sim.probe import KBProbe, SiemensStar, probe_axes
from sim.sample import CrystalSample

__all__ = ["BraggSimulator", "TransmissionSimulator", "CLASSICAL_ELECTRON_RADIUS_M"]

CLASSICAL_ELECTRON_RADIUS_M = 2.8179403262e-15
"""r_e in metres (CODATA 2018)."""


# ----------------------------------------------------------------------- validation
def _check_positive(name: str, v: Any, *, allow_zero: bool = False) -> float:
    if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    if (v < 0) if allow_zero else (v <= 0):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    return float(v)


def _check_frame_args(stage_xyz_m: Any, exposure_s: Any, flux_scale: Any, roi: Roi | None,
                      layout: DetectorLayout, rng: Any | None = None) -> tuple[np.ndarray, Roi]:
    s = np.asarray(stage_xyz_m, dtype=float) if stage_xyz_m is not None else np.zeros(0)
    if s.shape != (3,):
        raise ValueError(f"stage_xyz_m: expected 3 numbers (x, y, z) in metres, got {stage_xyz_m!r}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"stage_xyz_m contains NaN or inf: {stage_xyz_m!r}; pass finite positions in metres")
    if np.any(np.abs(s) > 1e-3):
        raise ValueError(f"stage_xyz_m = {stage_xyz_m!r}: |position| > 1 mm; positions are in metres")
    _check_positive("exposure_s", exposure_s, allow_zero=True)
    _check_positive("flux_scale", flux_scale, allow_zero=True)
    if roi is None:
        roi = Roi(row0_px=0, col0_px=0, n_rows_px=layout.n_rows_px, n_cols_px=layout.n_cols_px)
    elif not isinstance(roi, Roi):
        raise ValueError(f"roi must be an analysis.geometry.Roi or None, got {type(roi).__name__}")
    roi.check_inside(layout)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}; "
                         "use numpy.random.default_rng(seed)")
    return s, roi


def _fold(a: np.ndarray, start: int, n: int, axis: int) -> np.ndarray:
    """Sum ``a`` (global indices start, start+1, ...) into n bins by index mod n along axis."""
    shift = start % n
    length = a.shape[axis]
    total = -(-(shift + length) // n) * n
    pad = [(0, 0)] * a.ndim
    pad[axis] = (shift, total - shift - length)
    b = np.pad(a, pad)
    shape = list(b.shape)
    shape[axis:axis + 1] = [total // n, n]
    return b.reshape(shape).sum(axis=axis)


def _background(layout: DetectorLayout, roi: Roi, level: float, variation: float) -> np.ndarray:
    r = np.arange(roi.row0_px, roi.row0_px + roi.n_rows_px) - layout.n_rows_px / 2
    c = np.arange(roi.col0_px, roi.col0_px + roi.n_cols_px) - layout.n_cols_px / 2
    if variation == 0:
        return np.full(roi.shape, level)
    w = max(layout.n_rows_px, layout.n_cols_px) / 3
    return level * (1 + variation * np.exp(-(r[:, None] ** 2 + c[None, :] ** 2) / (2 * w * w)))


def _to_counts(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(expected).astype(np.uint32)


# ----------------------------------------------------------------------- Bragg
_TILE_TARGET_M = 0.4e-6
"""Lateral edge of a cached ρ tile (rounded to a power of two of fine steps, 8..128)."""
_CACHE_GROW_M = 0.5e-6
"""Margin added around the cached tile region when it grows, so a scan does not regrow it each step."""
_POINTS_PER_BLOCK = 2_000_000
"""Sample points evaluated per vectorised block when filling tiles."""


@dataclass(frozen=True)
class _Sampling:
    """Fine sheared sampling of ρ (σ, y, z steps) and its tiling; the cache key.

    Tile (tn, tm) holds ρ at σ = (tn·tile_n + i) d1, y = (tm·tile_m + l) d2,
    z = (kbase(tn, tm) + j) dz for j < n_slices: only the slab's z-extent over the tile.
    """

    d1_m: float
    d2_m: float
    dz_m: float
    tile_n: int
    tile_m: int
    n_slices: int
    half_m: float


class BraggSimulator:
    """Bragg-ptychography frames of ``sample`` under ``probe`` (FrameSource).

    Parameters
    ----------
    geometry : BraggGeometry (energy, θ_B, D, pixel; its crop sizes are not used here)
    sample : CrystalSample
    probe : KBProbe (its energy must match the geometry's)
    layout : DetectorLayout, pixel size must equal the geometry's
    flux_ph_per_s : incident photons/s (at flux_scale 1)
    background_ph_per_px_per_s : incoherent background per pixel per second
    background_variation : relative amplitude of a broad bump on the background (0: flat)
    oversampling : fine-grid factor relative to the ROI (>= 2 recommended)
    slice_step_m : Δz of the sample integration (default 10 nm)
    max_step_m : upper bound on the lateral fine step δσ, δy (small ROIs would
        otherwise sample ρ too coarsely near dislocation cores); None: no bound
    centre_px : (row, col) of the Bragg peak at zero offsets (default detector centre)
    cache_bytes : memory allowed for the cached sampled sample (complex64 tiles); a
        scan whose whole region does not fit keeps the tiles around the current frame
    """

    def __init__(self, geometry: BraggGeometry, sample: CrystalSample, probe: KBProbe, *,
                 layout: DetectorLayout | None = None, flux_ph_per_s: float = 1e9,
                 background_ph_per_px_per_s: float = 0.0, background_variation: float = 0.0,
                 oversampling: int = 2, slice_step_m: float = 10e-9, max_step_m: float | None = 20e-9,
                 centre_px: tuple[float, float] | None = None, cache_bytes: int = 512 * 2 ** 20) -> None:
        if not isinstance(geometry, BraggGeometry):
            raise ValueError(f"geometry must be a BraggGeometry, got {type(geometry).__name__}")
        if not isinstance(sample, CrystalSample):
            raise ValueError(f"sample must be a CrystalSample, got {type(sample).__name__}")
        if not isinstance(probe, KBProbe):
            raise ValueError(f"probe must be a KBProbe, got {type(probe).__name__}")
        layout = layout if layout is not None else DetectorLayout()
        if not math.isclose(layout.pixel_size_m, geometry.pixel_size_m, rel_tol=1e-9):
            raise ValueError(f"layout.pixel_size_m = {layout.pixel_size_m} differs from geometry.pixel_size_m = "
                             f"{geometry.pixel_size_m}; use one pixel size")
        if not math.isclose(probe.energy_kev, geometry.energy_kev, rel_tol=1e-6):
            raise ValueError(f"probe.energy_kev = {probe.energy_kev} differs from geometry.energy_kev = "
                             f"{geometry.energy_kev}; build the probe at the geometry's energy")
        if not (isinstance(oversampling, (int, np.integer)) and oversampling >= 1):
            raise ValueError(f"oversampling must be an integer >= 1, got {oversampling!r}")
        self.geometry = geometry
        self.sample = sample
        self.probe = probe
        self.layout = layout
        self.flux_ph_per_s = _check_positive("flux_ph_per_s", flux_ph_per_s, allow_zero=True)
        self.background_ph_per_px_per_s = _check_positive("background_ph_per_px_per_s",
                                                          background_ph_per_px_per_s, allow_zero=True)
        if not (math.isfinite(background_variation) and background_variation > -1):
            raise ValueError(f"background_variation must be finite and > −1, got {background_variation!r}")
        self.background_variation = float(background_variation)
        self.oversampling = int(oversampling)
        self.slice_step_m = _check_positive("slice_step_m", slice_step_m)
        self.max_step_m = None if max_step_m is None else _check_positive("max_step_m", max_step_m)
        if centre_px is None:
            centre_px = (layout.n_rows_px / 2, layout.n_cols_px / 2)
        if len(centre_px) != 2 or not all(math.isfinite(c) for c in centre_px):
            raise ValueError(f"centre_px must be (row, col) finite numbers, got {centre_px!r}")
        self.centre_px = (float(centre_px[0]), float(centre_px[1]))
        self.cache_bytes = int(cache_bytes)
        self.detector_shape: tuple[int, int] = (layout.n_rows_px, layout.n_cols_px)
        t = geometry.theta_bragg_rad
        self._sin, self._cos = math.sin(t), math.cos(t)
        self._a_z = sample.slab.normal[0] * self._cos / self._sin + sample.slab.normal[2]
        if self._a_z < 0.2:
            raise ValueError("slab normal too far from z for the sheared integration (tilts too large)")
        self._window_m = geometry.wavelength_m * geometry.detector_distance_m / geometry.pixel_size_m
        self._scale = (CLASSICAL_ELECTRON_RADIUS_M ** 2
                       * (sample.structure_factor_electrons / sample.unit_cell_volume_m3) ** 2
                       * (geometry.pixel_size_m / geometry.detector_distance_m) ** 2)
        self._cache: dict[str, Any] = {}

    # -- sampled sample ----------------------------------------------------------
    def _sampling(self, d1: float, d2: float) -> _Sampling:
        """Fine (σ, y, z) steps and the tile layout of the cached ρ for these lateral steps."""
        dz = self.slice_step_m
        slab = self.sample.slab
        half = slab.thickness_m / 2 + slab.edge_width_m + 2 * dz
        n_vec = slab.normal
        a_sig, a_y = n_vec[0] / self._sin, n_vec[1]

        def tile(d: float) -> int:
            return int(min(128, max(8, 2 ** round(math.log2(_TILE_TARGET_M / d)))))

        tn, tm = tile(d1), tile(d2)
        spread = (2 * half + abs(a_sig) * (tn - 1) * d1 + abs(a_y) * (tm - 1) * d2) / self._a_z
        return _Sampling(d1_m=d1, d2_m=d2, dz_m=dz, tile_n=tn, tile_m=tm,
                         n_slices=math.ceil(spread / dz) + 2, half_m=half)

    def _kbase(self, smp: _Sampling, tn: np.ndarray, tm: np.ndarray) -> np.ndarray:
        """First z index of each tile's slices: the slab (±half) over the tile's columns."""
        n_vec = self.sample.slab.normal
        a_sig, a_y = n_vec[0] / self._sin, n_vec[1]
        nc_ = float(n_vec @ np.asarray(self.sample.slab.centre_m))
        sig0, sig1 = tn * smp.tile_n * smp.d1_m, (tn * smp.tile_n + smp.tile_n - 1) * smp.d1_m
        y0, y1 = tm * smp.tile_m * smp.d2_m, (tm * smp.tile_m + smp.tile_m - 1) * smp.d2_m
        top = np.maximum(a_sig * sig0, a_sig * sig1) + np.maximum(a_y * y0, a_y * y1)
        z_lo = (-smp.half_m - top + nc_) / self._a_z
        return np.floor(z_lo / smp.dz_m).astype(np.int64)

    def _eval_tiles(self, smp: _Sampling, tn: np.ndarray, tm: np.ndarray, out: np.ndarray) -> None:
        """ρ(σ, y, z) of tiles (tn[i], tm[i]) into out[i] (shape tile_n × tile_m × n_slices)."""
        bn, bm, K = smp.tile_n, smp.tile_m, smp.n_slices
        dz = smp.dz_m
        step = np.array([self._cos / self._sin * dz, 0.0, dz])
        q = self.geometry.q_bragg_per_m
        kb = self._kbase(smp, tn, tm)
        per = max(1, _POINTS_PER_BLOCK // (bn * bm * K))
        i_n, i_m, i_k = np.arange(bn), np.arange(bm), np.arange(K)
        for i in range(0, len(tn), per):
            sl = slice(i, i + per)
            sig = ((tn[sl, None] * bn + i_n) * smp.d1_m)[:, :, None, None]
            y = ((tm[sl, None] * bm + i_m) * smp.d2_m)[:, None, :, None]
            zz = ((kb[sl, None] + i_k) * dz)[:, None, None, :]
            x = (sig + zz * self._cos) / self._sin
            out[sl] = self.sample.complex_density(x, y, zz, q_bragg_per_m=q, line_step_m=step)

    def _rho_tiles(self, smp: _Sampling, tn0: int, tn1: int, tm0: int, tm1: int) -> tuple[np.ndarray, np.ndarray]:
        """ρ on tiles [tn0, tn1) × [tm0, tm1) as (a, b, tile_n, tile_m, n_slices) and their kbase (a, b).

        Tiles are cached in a rectangular tile region that grows (by ~0.5 µm) as the scan
        moves; only tiles not yet evaluated are computed. Above ``cache_bytes`` the region
        shrinks to the frame's own tiles, and without room even for those nothing is cached.
        """
        bn, bm, K = smp.tile_n, smp.tile_m, smp.n_slices
        tile_bytes = bn * bm * K * np.dtype(np.complex64).itemsize
        need = (tn0, tn1, tm0, tm1)
        TN, TM = np.meshgrid(np.arange(tn0, tn1), np.arange(tm0, tm1), indexing="ij")
        kbase = self._kbase(smp, TN, TM)
        c = self._cache
        if c.get("sampling") != smp:
            c.clear()
        reg = c.get("region")

        def inside(r: tuple[int, int, int, int] | None) -> bool:
            return r is not None and r[0] <= tn0 and tn1 <= r[1] and r[2] <= tm0 and tm1 <= r[3]

        def nbytes(r: tuple[int, int, int, int]) -> int:
            return (r[1] - r[0]) * (r[3] - r[2]) * tile_bytes

        if not inside(reg):
            gn = math.ceil(_CACHE_GROW_M / (bn * smp.d1_m))
            gm = math.ceil(_CACHE_GROW_M / (bm * smp.d2_m))
            u = need if reg is None else (min(tn0, reg[0]), max(tn1, reg[1]), min(tm0, reg[2]), max(tm1, reg[3]))
            new = None
            for cand in ((u[0] - gn, u[1] + gn, u[2] - gm, u[3] + gm),
                         (tn0 - gn, tn1 + gn, tm0 - gm, tm1 + gm), need):
                if nbytes(cand) <= self.cache_bytes:
                    new = cand
                    break
            if new is None:                                   # no room: evaluate this frame's tiles only
                c.clear()
                data = np.empty((tn1 - tn0, tm1 - tm0, bn, bm, K), np.complex64)
                self._eval_tiles(smp, TN.ravel(), TM.ravel(), data.reshape(-1, bn, bm, K))
                return data, kbase
            data = np.empty((new[1] - new[0], new[3] - new[2], bn, bm, K), np.complex64)
            done = np.zeros(data.shape[:2], bool)
            if reg is not None:                                # keep the evaluated overlap
                o = (max(new[0], reg[0]), min(new[1], reg[1]), max(new[2], reg[2]), min(new[3], reg[3]))
                if o[0] < o[1] and o[2] < o[3]:
                    dst = (slice(o[0] - new[0], o[1] - new[0]), slice(o[2] - new[2], o[3] - new[2]))
                    src = (slice(o[0] - reg[0], o[1] - reg[0]), slice(o[2] - reg[2], o[3] - reg[2]))
                    data[dst] = c["data"][src]
                    done[dst] = c["done"][src]
            c.clear()
            c.update(sampling=smp, region=new, data=data, done=done)
            reg = new
        assert reg is not None                                 # inside(reg), or the new region
        sel = (slice(tn0 - reg[0], tn1 - reg[0]), slice(tm0 - reg[2], tm1 - reg[2]))
        data, done = c["data"][sel], c["done"][sel]
        missing = np.nonzero(~done)
        if missing[0].size:
            block = np.empty((missing[0].size, bn, bm, K), np.complex64)
            self._eval_tiles(smp, TN[missing], TM[missing], block)
            data[missing] = block
            done[missing] = True
        return data, kbase

    # -- amplitude -----------------------------------------------------------------
    def amplitude(self, *, stage_xyz_m: tuple[float, float, float], rocking_offset_deg: float,
                  detector_arm_offset_deg: float = 0.0, roi: Roi | None = None) -> np.ndarray:
        """Complex kinematic amplitude A(q) (m², probe in 1/m) on the ROI pixels.

        See the module docstring for the method; q at pixel (row, col) is
        ((row − row_peak) e1 + (col − col_peak) e2) kp/D + |Q| δ x̂.
        """
        s, roi = _check_frame_args(stage_xyz_m, 0.0, 1.0, roi, self.layout)
        for name, v in (("rocking_offset_deg", rocking_offset_deg),
                        ("detector_arm_offset_deg", detector_arm_offset_deg)):
            if not (isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v)) or abs(v) > 5:
                raise ValueError(f"{name} must be a finite angle within ±5°, got {v!r}")
        g, pr = self.geometry, self.probe
        sn, cs = self._sin, self._cos
        dq = g.dq_detector_per_m
        nr, nc = roi.shape
        n_min = 1 if self.max_step_m is None else math.ceil(self._window_m / self.max_step_m)
        N1 = next_fast_len(max(self.oversampling * nr, n_min))
        N2 = next_fast_len(max(self.oversampling * nc, n_min))
        d1, d2, dz = self._window_m / N1, self._window_m / N2, self.slice_step_m
        row_pk = self.centre_px[0] + math.radians(detector_arm_offset_deg) * g.detector_distance_m / g.pixel_size_m
        col_pk = self.centre_px[1]
        j1c, j2c = nr // 2, nc // 2
        q1c = (roi.row0_px + j1c - row_pk) * dq
        q2c = (roi.col0_px + j2c - col_pk) * dq
        delta = math.radians(rocking_offset_deg - self.sample.rocking_centre_offset_deg)
        q3 = g.q_bragg_per_m * delta
        p1 = probe_axes(g.theta_bragg_rad, delta)["p1"]
        # probe V coordinate u = p1·(r + s) = A σ + B z + C on the sheared grid
        A_ = p1[0] / sn
        B_ = p1[0] * cs / sn + p1[2]
        C_ = float(p1 @ s)
        cv, ch = pr.centre_m
        ev, eh = pr.extent_v_m / 2, pr.extent_h_m / 2
        # lateral y range of the H probe
        m0 = math.floor((ch - s[1] - eh) / d2) - 1
        m1 = math.ceil((ch - s[1] + eh) / d2) + 2
        y_lo, y_hi = m0 * d2, (m1 - 1) * d2
        slab = self.sample.slab
        n_vec = slab.normal
        half = slab.thickness_m / 2 + slab.edge_width_m + 2 * dz
        nc_ = float(n_vec @ np.asarray(slab.centre_m))
        a_sig, a_y, a_z = n_vec[0] / sn, n_vec[1], self._a_z

        def sig_range(z_lo: float, z_hi: float) -> tuple[float, float]:
            vals = [(u - B_ * z - C_) / A_ for u in (cv - ev, cv + ev) for z in (z_lo, z_hi)]
            return min(vals), max(vals)

        def z_range(s_lo: float, s_hi: float) -> tuple[float, float]:
            vals = [(t - a_sig * sg - a_y * yy + nc_) / a_z
                    for t in (-half, half) for sg in (s_lo, s_hi) for yy in (y_lo, y_hi)]
            return min(vals), max(vals)

        s_lo, s_hi = sig_range(0.0, 0.0)
        for _ in range(3):
            z_lo, z_hi = z_range(s_lo, s_hi)
            s_lo, s_hi = sig_range(z_lo, z_hi)
        n0, n1 = math.floor(s_lo / d1) - 1, math.ceil(s_hi / d1) + 2
        smp = self._sampling(d1, d2)
        bn, bm, K = smp.tile_n, smp.tile_m, smp.n_slices
        tn0, tn1 = n0 // bn, -(-n1 // bn)
        tm0, tm1 = m0 // bm, -(-m1 // bm)
        rho, kbase = self._rho_tiles(smp, tn0, tn1, tm0, tm1)        # (a, b, bn, bm, K), (a, b)
        a, b = kbase.shape
        kmin = int(kbase.min())
        sig = np.arange(tn0 * bn, tn1 * bn) * d1
        y = np.arange(tm0 * bm, tm1 * bm) * d2
        z = np.arange(kmin, int(kbase.max()) + K) * dz
        u = A_ * sig[None, :] + B_ * z[:, None] + C_                  # (Nk, Nn)
        x = (sig[None, :] + z[:, None] * cs) / sn
        G = (pr.field_v(u) * np.exp(-1j * (q3 * x + q1c * sig[None, :]))).astype(np.complex64)
        # each tile's slices: G[kbase − kmin + j, n] → (a, b, bn, K)
        idx_k = (kbase - kmin)[:, :, None, None] + np.arange(K)
        idx_n = (np.arange(a)[:, None] * bn + np.arange(bn))[:, None, :, None]
        Gt = G[idx_k, idx_n]
        U = np.matmul(rho, Gt[..., None])[..., 0]                      # Σ_z ρ G  (a, b, bn, bm)
        U = U.transpose(0, 2, 1, 3).reshape(a * bn, b * bm)
        h = (pr.field_h(y + s[1]) * np.exp(-1j * q2c * y)).astype(np.complex64)
        psi = U * h[None, :]
        psi = _fold(_fold(psi, tn0 * bn, N1, 0), tm0 * bm, N2, 1)
        F = sp_fft.fft2(psi, workers=-1) * np.float32(dz / sn * d1 * d2)
        rows = (np.arange(nr) - j1c) % N1
        cols = (np.arange(nc) - j2c) % N2
        return F[np.ix_(rows, cols)]

    # -- counts ---------------------------------------------------------------------
    def expected_counts(self, *, stage_xyz_m: tuple[float, float, float], rocking_offset_deg: float,
                        detector_arm_offset_deg: float = 0.0, exposure_s: float, flux_scale: float = 1.0,
                        roi: Roi | None = None, apply_mask: bool = True) -> np.ndarray:
        """Expected photon counts (float64, ROI shape); gaps are 0 when ``apply_mask``."""
        s, roi = _check_frame_args(stage_xyz_m, exposure_s, flux_scale, roi, self.layout)
        dose = self.flux_ph_per_s * flux_scale * exposure_s
        amp = self.amplitude(stage_xyz_m=tuple(s), rocking_offset_deg=rocking_offset_deg,
                             detector_arm_offset_deg=detector_arm_offset_deg, roi=roi)
        lam = dose * self._scale * (amp.real.astype(float) ** 2 + amp.imag.astype(float) ** 2)
        lam += _background(self.layout, roi, self.background_ph_per_px_per_s * flux_scale * exposure_s,
                           self.background_variation)
        if apply_mask:
            lam *= self.layout.mask()[roi.slices]
        return lam

    def frame(self, *, stage_xyz_m: tuple[float, float, float], rocking_offset_deg: float,
              detector_arm_offset_deg: float, exposure_s: float, flux_scale: float,
              roi: Roi | None, rng: np.random.Generator) -> np.ndarray:
        """FrameSource.frame: Poisson counts, uint32, ROI shape (gaps read 0)."""
        _check_frame_args(stage_xyz_m, exposure_s, flux_scale, roi, self.layout, rng)
        lam = self.expected_counts(stage_xyz_m=stage_xyz_m, rocking_offset_deg=rocking_offset_deg,
                                   detector_arm_offset_deg=detector_arm_offset_deg, exposure_s=exposure_s,
                                   flux_scale=flux_scale, roi=roi)
        return _to_counts(lam, rng)

    # -- ground truth -----------------------------------------------------------------
    def truth_probe(self, p1_m: np.ndarray, p2_m: np.ndarray) -> np.ndarray:
        """True P⊥(p1, p2) (1/m) on given (broadcastable) probe-frame coordinates."""
        return self.probe.field_perp(p1_m, p2_m)

    def truth_object(self, x_m: np.ndarray, y_m: np.ndarray, z_m: np.ndarray) -> np.ndarray:
        """True complex ρ(r) = s e^{−i|Q|u_z} at sample-frame points (metres)."""
        return self.sample.complex_density(x_m, y_m, z_m, q_bragg_per_m=self.geometry.q_bragg_per_m)

    def truth_object_on_grid(self, shape: tuple[int, int, int], voxel_size_m: tuple[float, float, float],
                             centre_m: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
        """True ρ on an orthogonal (r1, r2, r3) grid of the e-frame (index N/2 at ``centre_m``)."""
        ax = self.geometry.lab_axes()
        r = [(np.arange(n) - n // 2) * d for n, d in zip(shape, voxel_size_m, strict=True)]
        R1, R2, R3 = np.meshgrid(*r, indexing="ij")
        pts = [centre_m[i] + R1 * ax["e1"][i] + R2 * ax["e2"][i] + R3 * ax["e3"][i] for i in range(3)]
        return self.truth_object(*pts)


# ----------------------------------------------------------------------- forward
class TransmissionSimulator:
    """Forward (Siemens-star) ptychography frames: far field of P⊥·T (FrameSource).

    Transverse coordinates: detector rows ↔ v (vertical, stage x), columns ↔ h
    (horizontal, stage y); stage z runs along the beam and is ignored (depth of focus).
    Counts = flux × flux_scale × exposure × |Ψ(f)|² (p/(λD))², Ψ = ∫ P⊥ T e^{−2πi f·r} dA,
    so Σ over all pixels ≈ flux × exposure × transmitted fraction. The two angle
    arguments of ``frame`` are ignored.
    """

    def __init__(self, probe: KBProbe, star: SiemensStar, *, energy_kev: float = 8.0,
                 detector_distance_m: float = 1.4, layout: DetectorLayout | None = None,
                 flux_ph_per_s: float = 1e9, background_ph_per_px_per_s: float = 0.0,
                 oversampling: int = 2, centre_px: tuple[float, float] | None = None) -> None:
        if not isinstance(probe, KBProbe) or not isinstance(star, SiemensStar):
            raise ValueError("TransmissionSimulator needs a KBProbe and a SiemensStar")
        _check_positive("energy_kev", energy_kev)
        if not math.isclose(probe.energy_kev, energy_kev, rel_tol=1e-6):
            raise ValueError(f"probe.energy_kev = {probe.energy_kev} differs from energy_kev = {energy_kev}")
        self.probe, self.star = probe, star
        self.energy_kev = float(energy_kev)
        self.detector_distance_m = _check_positive("detector_distance_m", detector_distance_m)
        self.layout = layout if layout is not None else DetectorLayout()
        self.flux_ph_per_s = _check_positive("flux_ph_per_s", flux_ph_per_s, allow_zero=True)
        self.background_ph_per_px_per_s = _check_positive("background_ph_per_px_per_s",
                                                          background_ph_per_px_per_s, allow_zero=True)
        if not (isinstance(oversampling, (int, np.integer)) and oversampling >= 1):
            raise ValueError(f"oversampling must be an integer >= 1, got {oversampling!r}")
        self.oversampling = int(oversampling)
        if centre_px is None:
            centre_px = (self.layout.n_rows_px / 2, self.layout.n_cols_px / 2)
        self.centre_px = (float(centre_px[0]), float(centre_px[1]))
        self.detector_shape: tuple[int, int] = (self.layout.n_rows_px, self.layout.n_cols_px)
        self._lam = wavelength_m_from_kev(energy_kev)
        self._window_m = self._lam * self.detector_distance_m / self.layout.pixel_size_m

    def amplitude(self, *, stage_xyz_m: tuple[float, float, float], roi: Roi | None = None) -> np.ndarray:
        """Far-field Ψ(f) = ∫ P⊥(r) T(r − s) e^{−2πi f·r} dA (m) on the ROI pixels."""
        s, roi = _check_frame_args(stage_xyz_m, 0.0, 1.0, roi, self.layout)
        nr, nc = roi.shape
        N1 = next_fast_len(self.oversampling * nr)
        N2 = next_fast_len(self.oversampling * nc)
        d1, d2 = self._window_m / N1, self._window_m / N2
        df = 1.0 / self._window_m                           # p/(λD)
        j1c, j2c = nr // 2, nc // 2
        f1c = (roi.row0_px + j1c - self.centre_px[0]) * df
        f2c = (roi.col0_px + j2c - self.centre_px[1]) * df
        pr = self.probe
        cv, ch = pr.centre_m
        n0 = math.floor((cv - pr.extent_v_m / 2) / d1) - 1
        n1 = math.ceil((cv + pr.extent_v_m / 2) / d1) + 2
        m0 = math.floor((ch - pr.extent_h_m / 2) / d2) - 1
        m1 = math.ceil((ch + pr.extent_h_m / 2) / d2) + 2
        v = np.arange(n0, n1) * d1
        h = np.arange(m0, m1) * d2
        pv = pr.field_v(v) * np.exp(-2j * math.pi * f1c * v)
        ph = pr.field_h(h) * np.exp(-2j * math.pi * f2c * h)
        psi = pv[:, None] * ph[None, :] * self.star.transmission(v[:, None] - s[0], h[None, :] - s[1])
        psi = _fold(_fold(psi, n0, N1, 0), m0, N2, 1)
        F = np.fft.fft2(psi) * (d1 * d2)
        rows = (np.arange(nr) - j1c) % N1
        cols = (np.arange(nc) - j2c) % N2
        return F[np.ix_(rows, cols)]

    def expected_counts(self, *, stage_xyz_m: tuple[float, float, float], exposure_s: float,
                        flux_scale: float = 1.0, roi: Roi | None = None, apply_mask: bool = True) -> np.ndarray:
        """Expected counts (float64, ROI shape)."""
        s, roi = _check_frame_args(stage_xyz_m, exposure_s, flux_scale, roi, self.layout)
        amp = self.amplitude(stage_xyz_m=tuple(s), roi=roi)
        dose = self.flux_ph_per_s * flux_scale * exposure_s
        lam = dose * np.abs(amp) ** 2 / self._window_m ** 2
        lam += self.background_ph_per_px_per_s * flux_scale * exposure_s
        if apply_mask:
            lam *= self.layout.mask()[roi.slices]
        return lam

    def frame(self, *, stage_xyz_m: tuple[float, float, float], rocking_offset_deg: float = 0.0,
              detector_arm_offset_deg: float = 0.0, exposure_s: float, flux_scale: float,
              roi: Roi | None, rng: np.random.Generator) -> np.ndarray:
        """FrameSource.frame (angles ignored): Poisson counts, uint32."""
        _check_frame_args(stage_xyz_m, exposure_s, flux_scale, roi, self.layout, rng)
        return _to_counts(self.expected_counts(stage_xyz_m=stage_xyz_m, exposure_s=exposure_s,
                                               flux_scale=flux_scale, roi=roi), rng)

    def truth_probe(self, v_m: np.ndarray, h_m: np.ndarray) -> np.ndarray:
        """True P⊥(v, h) (1/m)."""
        return self.probe.field_perp(v_m, h_m)

    def truth_object(self, v_m: np.ndarray, h_m: np.ndarray) -> np.ndarray:
        """True star transmission T(v, h)."""
        return self.star.transmission(v_m, h_m)
