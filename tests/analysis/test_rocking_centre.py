"""The engine places q3 from the recorded rocking offsets, not from the frame index (even angle counts).

``plans.rocking_angles_deg`` centres an even number of angles between two of them, half a step off the
model's centred q3 grid (frame N//2 at q3 = 0). Seed Eq 1 with q → q + δû is the model's transform of
ψ·e^{−iδû·r}, so the engine fits ρ' = ρ·e^{−iδû·r} and reports ρ (analysis.geometry.rocking_shift_phase).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from analysis.bragg.engine import Reconstruction
from analysis.bragg.operators.fourier import FoldedFourier3D
from analysis.diffractometer import GEOMETRY_PRESETS
from analysis.geometry import BraggGeometry, rocking_shift_phase, rocking_shift_steps
from plans.patterns import rocking_angles_deg
from testing.bragg_sim import (
    SEED_LIKE_SAMPLE,
    SimProblem,
    make_simulator,
    model_frames,
    raster,
    small_geometry,
    small_probe,
    truth_p2,
)


@pytest.mark.parametrize(("n_angles", "want"), [(8, 0.5), (9, 0.0)])
def test_shift_of_centred_angles(n_angles, want):
    g = small_geometry(n_px=16, n_angles=n_angles)
    offs = rocking_angles_deg(0.0, g.rocking_step_deg, n_angles)
    assert rocking_shift_steps(g, offs) == pytest.approx(want, abs=1e-12)
    # the index convention (frame N//2 on θ_B) is on the grid, a reversed scan too
    on_grid = (np.arange(n_angles) - n_angles // 2) * g.rocking_step_deg
    assert rocking_shift_steps(g, on_grid) == pytest.approx(0.0, abs=1e-12)
    assert rocking_shift_steps(g, on_grid[::-1]) == pytest.approx(0.0, abs=1e-12)


def _geometry(kind: str, upsampling: int) -> BraggGeometry:
    if kind == "symmetric":
        return small_geometry(n_px=12, n_angles=6, upsampling=upsampling)
    d = GEOMETRY_PRESETS["asymmetric-out-of-plane"](rocking_step_deg=0.012, detector_distance_m=0.35)
    g = dataclasses.replace(d.bragg_geometry(n_rows_px=12, n_cols_px=12, n_angles=6), upsampling=upsampling)
    assert abs(g.rocking_direction[1]) > 0.1                     # û has an e2 part: the r2 shear ramp is exercised
    return g


@pytest.mark.parametrize("kind", ["symmetric", "out-of-plane"])
@pytest.mark.parametrize("upsampling", [2, 4])
def test_phase_equals_the_operators_offset_planes(kind, upsampling):
    """Measured planes m3 = U k + m0 (FoldedFourier3D, m0 fine planes = m0/U steps) = the ramp on the m0 = 0 grid."""
    g = _geometry(kind, upsampling)
    rng = np.random.default_rng(3)
    shape = g.recon_shape
    psi = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    for m0 in range(1, upsampling):
        shifted = FoldedFourier3D.from_geometry(g, m0=m0).forward(psi)
        ramped = FoldedFourier3D.from_geometry(g).forward(psi * rocking_shift_phase(g, shape, m0 / upsampling))
        c = np.vdot(ramped, shifted) / np.vdot(ramped, ramped)          # a constant phase only
        assert abs(abs(c) - 1) < 1e-9
        assert np.abs(shifted - c * ramped).max() < 1e-9 * np.abs(shifted).max()


SHIFTS = np.arange(-0.5, 1.01, 0.125)
"""Trial placements of the recorded curve on the model's q3 grid, in measured steps."""


def _residual_curve(n_angles: int) -> tuple[Reconstruction, np.ndarray, float]:
    """Relative residual of the model's frames of the simulator's truth against the simulator's frames (angles
    from ``plans.rocking_angles_deg``) for each trial shift in :data:`SHIFTS`, and with the engine's placement."""
    g = small_geometry(n_px=16, n_angles=n_angles)
    probe = small_probe()
    sim, _, roi = make_simulator(SEED_LIKE_SAMPLE, geometry=g, probe=probe)
    stage = raster(2, 0.15e-6)
    offs = rocking_angles_deg(0.0, g.rocking_step_deg, n_angles)
    frames = np.stack([[sim.expected_counts(stage_xyz_m=tuple(s), rocking_offset_deg=float(a), exposure_s=0.2, roi=roi)
                        for a in offs] for s in stage])
    p2 = truth_p2(g, probe)
    p = SimProblem(geometry=g, simulator=sim, frames=frames, mask=np.ones((16, 16), bool), stage_xyz_m=stage,
                   rocking_offsets_deg=offs, probe_p2=p2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # the small window undersamples the probe tails
        rec = Reconstruction(g, frames.astype(np.float32), p.mask, stage, offs, p2)
    res = rec.result()
    truth = p.truth_object(rec.state.object.shape, res.origin_vox).astype(np.complex128)

    def residual(obj: np.ndarray) -> float:
        pred = model_frames(g, rec.op, p2, obj, res.offsets_vox, res.shifts_px)
        scale = float(np.sum(pred * frames) / np.sum(pred * pred))
        return float(np.linalg.norm(scale * pred - frames) / np.linalg.norm(frames))

    curve = np.array([residual(truth * rocking_shift_phase(g, truth.shape, sh)) for sh in SHIFTS])
    return rec, curve, residual(rec.model_object(truth))


def test_even_count_frames_match_the_simulator_half_a_step_off():
    rec, curve, placed = _residual_curve(10)
    assert rec.rocking_shift_steps == pytest.approx(0.5)
    assert SHIFTS[np.argmin(curve)] == pytest.approx(0.5, abs=0.13), curve       # the simulator's truth fits there
    by_index = curve[np.flatnonzero(SHIFTS == 0.0)[0]]                             # frame N//2 on θ_B (the old engine)
    assert placed == pytest.approx(curve.min(), rel=1e-6)
    assert placed < 0.6 * by_index, (placed, by_index)


def test_odd_count_needs_no_shift():
    rec, curve, placed = _residual_curve(9)
    assert rec.rocking_shift_steps == 0.0
    assert SHIFTS[np.argmin(curve)] == pytest.approx(0.0, abs=0.13), curve
    assert placed == pytest.approx(curve[np.flatnonzero(SHIFTS == 0.0)[0]], rel=1e-9)


def test_result_reports_the_sample_frame_object():
    g = small_geometry(n_px=16, n_angles=8)
    offs = rocking_angles_deg(0.0, g.rocking_step_deg, 8)
    stage = raster(2, 0.15e-6)
    frames = np.ones((len(stage), 8, 16, 16), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = Reconstruction(g, frames, np.ones((16, 16), bool), stage, offs, truth_p2(g, small_probe()))
    rng = np.random.default_rng(0)
    rho = (rng.normal(size=rec.state.object.shape) + 1j * rng.normal(size=rec.state.object.shape)).astype(np.complex64)
    rec.state.object = rec.model_object(rho)
    assert not np.allclose(rec.state.object, rho)
    np.testing.assert_allclose(rec.result().object, rho, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="model_object: shape"):
        rec.model_object(rho[:-1])
