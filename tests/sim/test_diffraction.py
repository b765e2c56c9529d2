"""Bragg and transmission frames against analytic answers and a brute-force integral."""

import math

import numpy as np
import pytest

from analysis.geometry import DetectorLayout, Roi, seed_geometry
from sim import (
    BraggSimulator,
    CrystalSample,
    Dislocation,
    HomogeneousDisplacement,
    KBProbe,
    SiemensStar,
    Slab,
    TransmissionSimulator,
    seed_sample,
    tilted_sample,
)

GEOM = seed_geometry()
Q = GEOM.q_bragg_per_m
DQ = GEOM.dq_detector_per_m
NOGAP = DetectorLayout(gap_px=0)
ROI = Roi.centred(NOGAP, 64, 64)
PROBE = KBProbe()


def _soft_slab_sample(**hom):
    return CrystalSample(slab=Slab(thickness_m=0.45e-6, tilt_x_deg=0, tilt_y_deg=0, edge_width_m=60e-9),
                         homogeneous=HomogeneousDisplacement(**hom))


def _rocking_stack(sim, angles_deg, roi=ROI):
    return np.stack([sim.expected_counts(stage_xyz_m=(0, 0, 0), rocking_offset_deg=a, exposure_s=1.0,
                                         roi=roi, apply_mask=False) for a in angles_deg])


def _centroid_q(stack, angles_deg, roi=ROI, half_box=(6, 18, 18)):
    """Intensity-weighted lab q − Q (m⁻¹) in a box around the maximum (an analyst's centroid)."""
    ax = GEOM.lab_axes()
    k, r, c = np.unravel_index(np.argmax(stack), stack.shape)
    sl = tuple(slice(max(0, i - h), i + h + 1) for i, h in zip((k, r, c), half_box, strict=True))
    w = stack[sl]
    a = np.radians(np.asarray(angles_deg))[sl[0]]
    rows = np.arange(roi.row0_px, roi.row0_px + roi.n_rows_px)[sl[1]] - NOGAP.n_rows_px / 2
    cols = np.arange(roi.col0_px, roi.col0_px + roi.n_cols_px)[sl[2]] - NOGAP.n_cols_px / 2
    A, R, C = np.meshgrid(a, rows, cols, indexing="ij")
    q = (R[..., None] * DQ * ax["e1"] + C[..., None] * DQ * ax["e2"]
         + (A * Q)[..., None] * np.array([1.0, 0, 0]))
    return np.tensordot(w, q, axes=([0, 1, 2], [0, 1, 2])) / w.sum()


@pytest.mark.parametrize("OS, max_step_m", [(2, 20e-9), (8, None)])
def test_matches_brute_force_3d_integral(OS, max_step_m):
    """The sheared/folded FFT equals a direct ∫ P ρ e^{−iq·r} d³r at pixel q (flat Ewald)."""
    probe = KBProbe(extent_v_m=1.5e-6, extent_h_m=2.0e-6)
    smp = CrystalSample(slab=Slab(thickness_m=0.1e-6, tilt_x_deg=0, tilt_y_deg=0),
                        homogeneous=HomogeneousDisplacement(strain=1e-3, tilt_x_rad=1e-4),
                        dislocations=(Dislocation(point_m=(0.1e-6, 0, 0), line_direction=(0, 1, 0.3),
                                                  burgers_m=(1e-10, 0, 1.12e-10)),))
    sim = BraggSimulator(GEOM, smp, probe, layout=NOGAP, slice_step_m=5e-9, oversampling=OS,
                         max_step_m=max_step_m)
    roi = Roi.centred(NOGAP, 32, 32)
    stage, rock = (0.05e-6, -0.1e-6, 0.0), 0.004
    amp = sim.amplitude(stage_xyz_m=stage, rocking_offset_deg=rock, roi=roi)
    th, delta = GEOM.theta_bragg_rad, math.radians(rock)
    d, dz = 10e-9, 5e-9
    x = np.arange(-1.6e-6, 1.6e-6, d)
    y = np.arange(-1.1e-6, 1.1e-6, d) + 0.1e-6
    z = np.arange(-0.05e-6, 0.05e-6 - 1e-12, dz) + dz / 2
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    psi = (probe.field_3d(X + stage[0], Y + stage[1], Z + stage[2], theta_bragg_rad=th, rocking_rad=delta)
           * smp.complex_density(X, Y, Z, q_bragg_per_m=Q))
    ax = GEOM.lab_axes()
    ref, got = [], []
    for i, j in [(16, 16), (10, 20), (22, 9), (16, 27), (3, 16)]:
        qv = ((roi.row0_px + i - 258) * DQ * ax["e1"] + (roi.col0_px + j - 258) * DQ * ax["e2"]
              + Q * delta * np.array([1.0, 0, 0]))
        ref.append(np.sum(psi * np.exp(-1j * (qv[0] * X + qv[1] * Y + qv[2] * Z))) * d * d * dz)
        got.append(amp[i, j])
    ref, got = np.array(ref), np.array(got)
    assert np.abs(got - ref).max() < 0.015 * np.abs(ref).max()


def test_uniform_strain_moves_peak_by_minus_q_epsilon_along_qz():
    eps = 2e-4
    angles = np.arange(-0.05, 0.0301, 0.0025)
    c0 = _centroid_q(_rocking_stack(BraggSimulator(GEOM, _soft_slab_sample(), PROBE, layout=NOGAP, max_step_m=None),
                                    angles), angles)
    c1 = _centroid_q(_rocking_stack(BraggSimulator(GEOM, _soft_slab_sample(strain=eps), PROBE, layout=NOGAP,
                                                   max_step_m=None), angles), angles)
    shift = c1 - c0
    assert shift[2] == pytest.approx(-Q * eps, rel=0.05)
    assert abs(shift[0]) < 0.05 * Q * eps and abs(shift[1]) < 0.05 * Q * eps


def test_tilt_about_x_moves_peak_across_columns():
    t = 2e-4                                     # rad; peak at q_y = −|Q| t → −7.06 columns
    f0 = BraggSimulator(GEOM, tilted_sample(), PROBE, layout=NOGAP, max_step_m=None).expected_counts(
        stage_xyz_m=(0, 0, 0), rocking_offset_deg=0.0, exposure_s=1.0, roi=ROI, apply_mask=False)
    f1 = BraggSimulator(GEOM, tilted_sample(tilt_x_rad=t), PROBE, layout=NOGAP, max_step_m=None).expected_counts(
        stage_xyz_m=(0, 0, 0), rocking_offset_deg=0.0, exposure_s=1.0, roi=ROI, apply_mask=False)
    cols = np.arange(64)
    shift = (f1.sum(0) @ cols) / f1.sum() - (f0.sum(0) @ cols) / f0.sum()
    assert shift == pytest.approx(-Q * t / DQ, rel=0.05)
    rows = np.arange(64)
    assert abs((f1.sum(1) @ rows) / f1.sum() - (f0.sum(1) @ rows) / f0.sum()) < 0.2


def test_tilt_about_y_moves_peak_along_rocking_direction():
    t = 2e-4                                     # rad; Bragg condition at δ = −t
    angles = np.arange(-0.06, 0.0601, 0.0025)
    curves = []
    for tt in (0.0, t):
        stack = _rocking_stack(BraggSimulator(GEOM, tilted_sample(tilt_y_rad=tt), PROBE, layout=NOGAP, max_step_m=None),
                               angles)
        curves.append(stack.sum(axis=(1, 2)))
    cen = [np.sum(c * angles) / np.sum(c) for c in curves]
    assert math.radians(cen[1] - cen[0]) == pytest.approx(-t, rel=0.05)


def test_rocking_centre_offset_shifts_the_rocking_curve():
    angles = np.arange(-0.04, 0.0601, 0.0025)
    base = CrystalSample(slab=Slab(tilt_x_deg=0, tilt_y_deg=0))
    import dataclasses
    off = dataclasses.replace(base, rocking_centre_offset_deg=0.02)
    c = [(_rocking_stack(BraggSimulator(GEOM, s, PROBE, layout=NOGAP, max_step_m=None), angles).sum(axis=(1, 2)))
         for s in (base, off)]
    cen = [np.sum(ci * angles) / np.sum(ci) for ci in c]
    assert cen[1] - cen[0] == pytest.approx(0.02, abs=0.002)


def test_detector_arm_offset_shifts_rows():
    sim = BraggSimulator(GEOM, _soft_slab_sample(strain=1e-4), PROBE, layout=NOGAP, max_step_m=None)
    shift_px = 20
    arm_deg = math.degrees(shift_px * GEOM.pixel_size_m / GEOM.detector_distance_m)
    f0 = sim.expected_counts(stage_xyz_m=(0, 0, 0), rocking_offset_deg=0.0, exposure_s=1, roi=ROI)
    roi1 = Roi(row0_px=ROI.row0_px + shift_px, col0_px=ROI.col0_px, n_rows_px=64, n_cols_px=64)
    f1 = sim.expected_counts(stage_xyz_m=(0, 0, 0), rocking_offset_deg=0.0, detector_arm_offset_deg=arm_deg,
                             exposure_s=1, roi=roi1)
    np.testing.assert_allclose(f1, f0, rtol=1e-3, atol=1e-4 * f0.max())


def test_counts_follow_flux_times_exposure_and_scale():
    sim = BraggSimulator(GEOM, _soft_slab_sample(), PROBE, layout=NOGAP, flux_ph_per_s=1e9,
                         background_ph_per_px_per_s=0.5)
    kw = dict(stage_xyz_m=(0, 0, 0), rocking_offset_deg=0.0, roi=ROI)
    f1 = sim.expected_counts(exposure_s=0.2, flux_scale=1.0, **kw)
    f2 = sim.expected_counts(exposure_s=0.6, flux_scale=0.5, **kw)
    np.testing.assert_allclose(f2, 1.5 * f1, rtol=1e-12)
    assert np.all(sim.expected_counts(exposure_s=0.2, flux_scale=0.0, **kw) == 0)   # beam dump
    # absolute scale: r_e² |F|²/V² |A|² (p/D)² flux t + background
    amp = sim.amplitude(**kw)
    smp = sim.sample
    pred = (1e9 * 0.2 * (2.8179403262e-15 * smp.structure_factor_electrons / smp.unit_cell_volume_m3) ** 2
            * np.abs(amp.astype(complex)) ** 2 * (GEOM.pixel_size_m / GEOM.detector_distance_m) ** 2 + 0.1)
    np.testing.assert_allclose(f1, pred, rtol=1e-5)
    assert f1.max() > 100                      # a realistic Bragg peak, not a handful of photons


def test_frames_are_poisson_uint32_and_gaps_are_zero():
    sim = BraggSimulator(GEOM, _soft_slab_sample(), PROBE, flux_ph_per_s=1e8, background_ph_per_px_per_s=1.0,
                         max_step_m=None)
    roi = Roi.centred(DetectorLayout(), 32, 32)            # straddles the central chip gaps
    kw = dict(stage_xyz_m=(0, 0, 0), rocking_offset_deg=0.0, detector_arm_offset_deg=0.0,
              exposure_s=0.5, flux_scale=1.0, roi=roi)
    rng = np.random.default_rng(7)
    frames = np.stack([sim.frame(rng=rng, **kw) for _ in range(60)])
    assert frames.dtype == np.uint32 and frames.shape == (60, 32, 32)
    mask = DetectorLayout().mask()[roi.slices]
    assert not mask.all() and np.all(frames[:, ~mask] == 0)
    lam = sim.expected_counts(**{k: v for k, v in kw.items() if k != "detector_arm_offset_deg"})
    sel = mask & (lam > 3)
    assert sel.sum() > 50
    mean, var = frames[:, sel].mean(0), frames[:, sel].var(0, ddof=1)
    assert np.mean(var / lam[sel]) == pytest.approx(1.0, abs=0.1)
    assert np.mean(mean / lam[sel]) == pytest.approx(1.0, abs=0.05)


def test_full_detector_frame_shape_and_peak_at_centre():
    smp = CrystalSample(slab=Slab(thickness_m=0.1e-6, tilt_x_deg=0, tilt_y_deg=0, edge_width_m=20e-9))
    sim = BraggSimulator(GEOM, smp, KBProbe(), layout=NOGAP, oversampling=1, max_step_m=None)
    f = sim.expected_counts(stage_xyz_m=(0, 0, 0), rocking_offset_deg=0.0, exposure_s=1.0)
    assert f.shape == (516, 516)
    idx = np.arange(516)
    # centroid at the detector centre (the rectangular pupil gives a flat-topped peak)
    assert (f.sum(1) @ idx) / f.sum() == pytest.approx(258, abs=1.0)
    assert (f.sum(0) @ idx) / f.sum() == pytest.approx(258, abs=1.0)


def test_bad_input_raises_value_error_naming_the_problem():
    sim = BraggSimulator(GEOM, _soft_slab_sample(), PROBE)
    rng = np.random.default_rng(0)
    ok = dict(stage_xyz_m=(0.0, 0.0, 0.0), rocking_offset_deg=0.0, detector_arm_offset_deg=0.0,
              exposure_s=0.1, flux_scale=1.0, roi=None, rng=rng)
    with pytest.raises(ValueError, match="stage_xyz_m"):
        sim.frame(**{**ok, "stage_xyz_m": (float("nan"), 0.0, 0.0)})
    with pytest.raises(ValueError, match="exposure_s"):
        sim.frame(**{**ok, "exposure_s": -0.1})
    with pytest.raises(ValueError, match="flux_scale"):
        sim.frame(**{**ok, "flux_scale": float("inf")})
    with pytest.raises(ValueError, match="leave the"):
        sim.frame(**{**ok, "roi": Roi(row0_px=500, col0_px=0, n_rows_px=64, n_cols_px=64)})
    with pytest.raises(ValueError, match="rng"):
        sim.frame(**{**ok, "rng": 3})
    with pytest.raises(ValueError, match="rocking_offset_deg"):
        sim.frame(**{**ok, "rocking_offset_deg": float("nan")})
    with pytest.raises(ValueError, match="energy"):
        BraggSimulator(GEOM, _soft_slab_sample(), KBProbe(energy_kev=9.0))


def test_transmission_frames_sum_to_flux_times_exposure():
    probe = KBProbe()
    lay = DetectorLayout(gap_px=0)
    far = SiemensStar(centre_m=(1e-3, 1e-3))            # star out of the beam
    sim = TransmissionSimulator(probe, far, detector_distance_m=1.4, layout=lay, flux_ph_per_s=1e8)
    roi = Roi.centred(lay, 256, 256)
    f = sim.expected_counts(stage_xyz_m=(0, 0, 0), exposure_s=1.0, roi=roi)
    assert f.sum() == pytest.approx(1e8, rel=0.01)
    star = SiemensStar(thickness_m=1e-6)
    sim2 = TransmissionSimulator(probe, star, detector_distance_m=1.4, layout=lay, flux_ph_per_s=1e8)
    stage = (0.3e-6, -5.2e-6, 0.0)           # beam ~5 µm from the star centre: spokes ~0.9 µm period
    g = sim2.expected_counts(stage_xyz_m=stage, exposure_s=1.0, roi=roi)
    v = np.arange(-2.25e-6, 2.25e-6, 5e-9)
    h = np.arange(-2.5e-6, 2.5e-6, 5e-9)
    P = probe.field_perp(v[:, None], h[None, :])
    T = star.transmission(v[:, None] - stage[0], h[None, :] - stage[1])
    transmitted = np.sum(np.abs(P * T) ** 2) * 25e-18
    assert transmitted < 0.97
    assert g.sum() == pytest.approx(1e8 * transmitted, rel=0.02)
    frame = sim2.frame(stage_xyz_m=stage, exposure_s=1.0, flux_scale=1.0, roi=roi, rng=np.random.default_rng(1))
    assert frame.dtype == np.uint32 and frame.shape == (256, 256)


def test_cached_and_uncached_frames_are_equal():
    """The tiled ρ cache (grown, shrunk or absent) gives the same amplitudes to float32 rounding."""
    smp = seed_sample()
    probe = KBProbe(extent_v_m=2.0e-6, extent_h_m=2.5e-6)
    roi = Roi.centred(NOGAP, 48, 40)
    kw = dict(layout=NOGAP, slice_step_m=10e-9)
    cached = BraggSimulator(GEOM, smp, probe, **kw)
    small = BraggSimulator(GEOM, smp, probe, cache_bytes=40 * 2 ** 20, **kw)   # shrinks to the frame's tiles
    uncached = BraggSimulator(GEOM, smp, probe, cache_bytes=0, **kw)
    for stage, rock in [((0.0, 0.0, 0.0), 0.012), ((0.3e-6, -0.2e-6, 0.0), 0.03),
                        ((-1.2e-6, 0.9e-6, 0.0), -0.01), ((0.05e-6, 0.0, 0.0), 0.0)]:
        ref = uncached.amplitude(stage_xyz_m=stage, rocking_offset_deg=rock, roi=roi)
        for sim in (cached, small):
            got = sim.amplitude(stage_xyz_m=stage, rocking_offset_deg=rock, roi=roi)
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_nearby_scan_point_reuses_the_cached_sample():
    sim = BraggSimulator(GEOM, seed_sample(), KBProbe(extent_v_m=2.0e-6, extent_h_m=2.5e-6), layout=NOGAP)
    roi = Roi.centred(NOGAP, 32, 32)
    sim.amplitude(stage_xyz_m=(0.0, 0.0, 0.0), rocking_offset_deg=0.0, roi=roi)
    calls = []
    inner = sim._eval_tiles
    sim._eval_tiles = lambda *a: (calls.append(a), inner(*a))
    sim.amplitude(stage_xyz_m=(0.1e-6, -0.1e-6, 0.0), rocking_offset_deg=0.01, roi=roi)
    assert calls == []
