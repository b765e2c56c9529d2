"""Bragg frames in any diffractometer geometry, by direct summation at the exact q of every pixel.

The simulator's own route for a general geometry (issue 19), independent of the engine's sheared
FFT: the kinematic amplitude

    A(q) = Σ_r P(r + s) ρ(r) e^{−i (q − Q)·r} δ³     (sign of docs/geometry.md, Operators)

is summed over a fine cubic grid (step ``step_m``, default 10 nm, finer than any reconstruction
voxel) of the sample frame, at the q of each detector pixel given by xrayutilities for the actual
angles (Ewald-sphere curvature and the rotation of the detector basis included, no paraxial or
linear-in-angle approximation). The incident beam, hence the probe P = P⊥(p1·r, p2·r), turns with
the rocking circle relative to the sample (:meth:`~analysis.diffractometer.Diffractometer.lab_to_sample`).

The crystal is a :class:`~sim.sample.CrystalSample` described in its reflection frame
(x', y', z' = Q̂, :func:`~analysis.diffractometer.reflection_axes`): ρ(r) = s e^{−i|Q| u_z'}.
The probe's transverse axes are p2 = −x_lab (horizontal), p3 = k̂_i and p1 = p2 × p3 in the lab,
which is pxm's (p1, p2) of :func:`sim.probe.probe_axes` in the symmetric case.

Cost: the probe and the slab are exactly zero beyond the probe's extent and outside the crystal, so the
sum runs over the smallest sub-box that holds their non-zero product (the same terms). ``summation="direct"``
factorises e^{−iq·r} over the Cartesian grid: one (n_pixels × Nz) by (Nz × Nx Ny) matrix product and two
cheaper contractions (complex128), n_pixels × Nx Ny Nz multiply-adds. The default ``summation="nufft"``
evaluates the same sum at the same exact q with FINUFFT's type-2 non-uniform FFT (an FFT of the
oversampled grid and an interpolation per pixel) to a relative accuracy ``nufft_eps`` = 10⁻¹² of the direct
sum (measured ≤ 3 × 10⁻¹³, tests/sim/test_general_geometry.py); that makes 64² and larger crops practical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from analysis.diffractometer import Diffractometer, reflection_axes
from analysis.geometry import BraggGeometry, Roi
from sim.diffraction import CLASSICAL_ELECTRON_RADIUS_M
from sim.probe import KBProbe
from sim.sample import CrystalSample

__all__ = ["GeneralBraggSimulator"]

def _nonzero_box(xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, w: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The smallest sub-grid (and its axes) of ``w`` (Nx, Ny, Nz) outside which ``w`` is exactly 0."""
    nz = w != 0
    ix, iy, iz = (np.flatnonzero(nz.any(axis=ax)) for ax in ((1, 2), (0, 2), (0, 1)))
    if ix.size == 0:
        return xs[:0], ys[:0], zs[:0], w[:0, :0, :0]
    sx, sy, sz = (slice(int(i[0]), int(i[-1]) + 1) for i in (ix, iy, iz))
    return xs[sx], ys[sy], zs[sz], w[sx, sy, sz]


def _nufft_sum(xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, w: np.ndarray, qf: np.ndarray, step_m: float,
               eps: float) -> np.ndarray:
    """Σ_{abc} w[a, b, c] e^{−i q·(xs[a], ys[b], zs[c])} for every row of ``qf`` (n, 3), by a type-2 NUFFT.

    On the uniform grid r = r_c + step·k (k centred integers, r_c the grid point at index N//2, FINUFFT's
    ordering), the sum is e^{−iq·r_c} Σ_k w_k e^{−i (step q)·k}: FINUFFT's type 2 at the points step·q,
    reduced to [−π, π) (exact: k is an integer).
    """
    import finufft  # only this route needs it

    rc = np.array([xs[xs.size // 2], ys[ys.size // 2], zs[zs.size // 2]])
    x = np.mod(qf * step_m + np.pi, 2 * np.pi) - np.pi
    c = finufft.nufft3d2(np.ascontiguousarray(x[:, 0]), np.ascontiguousarray(x[:, 1]),
                         np.ascontiguousarray(x[:, 2]), np.ascontiguousarray(w, dtype=np.complex128),
                         isign=-1, eps=eps, nthreads=1)   # one thread: a frame's transform is small
    return np.asarray(c) * np.exp(-1j * (qf @ rc))


@dataclass(frozen=True, kw_only=True)
class GeneralBraggSimulator:
    """Complex amplitudes of an N1 × N2 crop centred on the Bragg peak, any geometry (module docstring)."""

    diffractometer: Diffractometer
    sample: CrystalSample
    probe: KBProbe
    n_rows_px: int
    n_cols_px: int
    step_m: float = 10e-9
    """Fine grid step of the summation, metres."""
    half_extent_m: tuple[float, float, float] = (1.5e-6, 1.5e-6, 1.5e-6)
    """Half size of the summed box around the probe centre (sample-frame x, y, z), metres."""
    summation: Literal["nufft", "direct"] = "nufft"
    """How Σ_r w(r) e^{−iq·r} is evaluated at the pixels' q: ``"direct"``, the factorised direct sum
    (n_pixels × n_grid multiply-adds), or ``"nufft"``, FINUFFT's type-2 transform of the same grid to the
    same q (relative error ≤ ``nufft_eps`` of the direct sum; docs/geometry.md, Checks (tests))."""
    nufft_eps: float = 1e-12
    """Requested relative accuracy of the ``"nufft"`` summation."""
    flux_ph_per_s: float = 1e9
    """Incident flux for :meth:`frame` (counts = flux × exposure × r_e²|F|²/V_cell² × |A|² × (p/D)²)."""
    _refl: np.ndarray = field(init=False, repr=False)
    _q_bragg: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("n_rows_px", "n_cols_px"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"GeneralBraggSimulator.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not (math.isfinite(self.step_m) and self.step_m > 0):
            raise ValueError(f"GeneralBraggSimulator.step_m must be > 0 metres, got {self.step_m!r}")
        if self.summation not in ("nufft", "direct"):
            raise ValueError(f"GeneralBraggSimulator.summation must be 'nufft' or 'direct', got {self.summation!r}")
        if not (1e-15 <= self.nufft_eps <= 1e-3):
            raise ValueError(f"GeneralBraggSimulator.nufft_eps must lie in [1e-15, 1e-3], got {self.nufft_eps!r}")
        h = np.asarray(self.half_extent_m, float)
        if h.shape != (3,) or not np.all(h > 0):
            raise ValueError(f"GeneralBraggSimulator.half_extent_m must be 3 positive lengths, "
                             f"got {self.half_extent_m!r}")
        if abs(self.probe.energy_kev - self.diffractometer.energy_kev) > 1e-9:
            raise ValueError(f"probe energy {self.probe.energy_kev} keV != diffractometer energy "
                             f"{self.diffractometer.energy_kev} keV; build both at the same energy")
        g = self.geometry(n_angles=1)
        object.__setattr__(self, "_refl", reflection_axes(g))
        object.__setattr__(self, "_q_bragg", self.diffractometer.q_basis_per_m().q_bragg_per_m)

    def geometry(self, *, n_angles: int, upsampling: int = 1) -> BraggGeometry:
        """The engine's geometry of this crop (for comparisons and reconstructions)."""
        return self.diffractometer.bragg_geometry(n_rows_px=self.n_rows_px, n_cols_px=self.n_cols_px,
                                                  n_angles=n_angles, upsampling=upsampling)

    def probe_field(self, r_m: np.ndarray, rocking_offset_deg: float = 0.0) -> np.ndarray:
        """P(r) at sample-frame points ``(..., 3)`` (probe centred on r = 0) at a rocking offset."""
        m = self.diffractometer.lab_to_sample(rocking_offset_deg)
        beam = np.asarray(self.diffractometer.beam_direction, float)
        p3 = m @ (beam / np.linalg.norm(beam))
        h = m @ np.array([-1.0, 0.0, 0.0])
        p2 = h - (h @ p3) * p3
        p2 /= np.linalg.norm(p2)
        p1 = np.cross(p2, p3)
        r = np.asarray(r_m, float)
        return self.probe.field_perp(r @ p1, r @ p2)

    def object_field(self, r_m: np.ndarray) -> np.ndarray:
        """ρ(r) = s e^{−i|Q|u_z'} at sample-frame points ``(..., 3)`` (the simulator's truth)."""
        r = np.asarray(r_m, float) @ self._refl.T
        q = float(np.linalg.norm(self._q_bragg))
        return self.sample.complex_density(r[..., 0], r[..., 1], r[..., 2], q_bragg_per_m=q)

    def amplitude(self, *, stage_xyz_m: tuple[float, float, float], rocking_offset_deg: float) -> np.ndarray:
        """A(q) on the (n_rows_px, n_cols_px) crop, complex128 (m², probe in 1/m)."""
        s = np.asarray(stage_xyz_m, float)
        if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(np.abs(s) > 1e-3):
            raise ValueError(f"stage_xyz_m = {stage_xyz_m!r}: expected 3 finite positions in metres (|s| <= 1 mm)")
        if not (math.isfinite(rocking_offset_deg) and abs(rocking_offset_deg) <= 5):
            raise ValueError(f"rocking_offset_deg must be a finite angle within ±5°, got {rocking_offset_deg!r}")
        d = self.diffractometer
        q = d.q_exact_per_m(self.n_rows_px, self.n_cols_px, [rocking_offset_deg])[0] - self._q_bragg   # (N1, N2, 3)
        xs, ys, zs = (np.arange(-h, h + self.step_m / 2, self.step_m) - c
                      for h, c in zip(self.half_extent_m, s, strict=True))
        # P and ρ are exactly 0 beyond the probe's extent and outside the slab: sum only over the box that
        # holds their non-zero product (the same terms as the whole box, without the zeros; module docstring)
        p = self.probe_field(np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1) + s, rocking_offset_deg)
        xs, ys, zs, p = _nonzero_box(xs, ys, zs, p)
        if p.size == 0:
            return np.zeros(q.shape[:2], complex)
        w = p * self.object_field(np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1))   # (Nx, Ny, Nz)
        xs, ys, zs, w = _nonzero_box(xs, ys, zs, w)
        if w.size == 0:
            return np.zeros(q.shape[:2], complex)
        qf = q.reshape(-1, 3)
        if self.summation == "nufft":
            out = _nufft_sum(xs, ys, zs, w, qf, self.step_m, self.nufft_eps)
        else:
            # e^{-iq·r} factorises on the Cartesian grid: contract z (one matrix product), then y, then x
            ez = np.exp(-1j * qf[:, 2:3] * zs[None, :])
            t = (ez @ w.reshape(-1, zs.size).T).reshape(qf.shape[0], xs.size, ys.size)
            t = np.einsum("qij,qj->qi", t, np.exp(-1j * qf[:, 1:2] * ys[None, :]))
            out = np.einsum("qi,qi->q", t, np.exp(-1j * qf[:, 0:1] * xs[None, :]))
        return out.reshape(q.shape[:2]) * self.step_m ** 3

    @property
    def detector_shape(self) -> tuple[int, int]:
        """The simulated crop (rows, cols): the whole "detector" of this source."""
        return (self.n_rows_px, self.n_cols_px)

    def frame(self, *, stage_xyz_m: tuple[float, float, float], rocking_offset_deg: float,
              detector_arm_offset_deg: float, exposure_s: float, flux_scale: float,
              roi: Roi | None, rng: np.random.Generator) -> np.ndarray:
        """FrameSource.frame (devices/maxipix.py): Poisson counts, uint32, (n_rows_px, n_cols_px).

        The detector arms stay at the diffractometer's angles (``detector_arm_offset_deg`` must be 0) and
        ``roi`` must be None or the whole crop.
        """
        if detector_arm_offset_deg != 0:
            raise ValueError("GeneralBraggSimulator.frame: detector_arm_offset_deg must be 0; set the arm angles "
                             "in the Diffractometer")
        if roi is not None and (roi.shape != self.detector_shape or roi.row0_px or roi.col0_px):
            raise ValueError(f"GeneralBraggSimulator.frame: roi {roi} is not the whole {self.detector_shape} crop; "
                             "pass roi=None")
        if not (exposure_s >= 0 and flux_scale >= 0):
            raise ValueError(f"exposure_s ({exposure_s}) and flux_scale ({flux_scale}) must be >= 0")
        d = self.diffractometer
        scale = (CLASSICAL_ELECTRON_RADIUS_M ** 2
                 * (self.sample.structure_factor_electrons / self.sample.unit_cell_volume_m3) ** 2
                 * (d.pixel_size_m / d.detector_distance_m) ** 2)
        amp = self.amplitude(stage_xyz_m=stage_xyz_m, rocking_offset_deg=rocking_offset_deg)
        lam = self.flux_ph_per_s * flux_scale * exposure_s * scale * np.abs(amp) ** 2
        if lam.max() > 2e9:
            raise ValueError(f"GeneralBraggSimulator.frame: {lam.max():.3g} expected counts in a pixel overflow the "
                             "uint32 frame; lower flux_ph_per_s or exposure_s")
        return rng.poisson(lam).astype(np.uint32)

    def truth_on_points(self, r_m: np.ndarray) -> dict[str, Any]:
        """Ground truth at sample-frame points: ``rho`` and, in the reflection frame, ``strain`` (∂u_z'/∂z'),
        ``tilt_x_rad`` (∂u_z'/∂y') and ``tilt_y_rad`` (∂u_z'/∂x').
        """
        r = np.asarray(r_m, float) @ self._refl.T
        x, y, z = r[..., 0], r[..., 1], r[..., 2]
        return {"rho": self.object_field(r_m), "strain": self.sample.strain_zz(x, y, z),
                "tilt_x_rad": self.sample.tilt_x_rad(x, y, z), "tilt_y_rad": self.sample.tilt_y_rad(x, y, z)}
