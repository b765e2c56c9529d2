"""FP-DFXM analysis: operator contract, Zernikes, geometry, bad input, strain known answer
(Carlsen et al., Opt. Express 2022; docs/fp-dfxm.md)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from analysis.dfxm import (
    CRLObjective,
    FPDFXMGeometry,
    FPDFXMOperator,
    FPOptions,
    aberrated_pupil,
    check_overlap,
    find_phase_vortices,
    initial_object_from_diversity,
    noll_to_nm,
    phase_error_rms_rad,
    pupil_amplitude,
    reconstruct_fp_dfxm,
    spectral_overlap,
    strain_tilt_from_phase,
    zernike,
)
from testing.fp_dfxm_problem import FP_REFLECTION, fp_angle_grid, fp_geometry
from testing.operator_contract import check_adjoint

REFL = FP_REFLECTION


_geom = fp_geometry
_grid = fp_angle_grid


def test_crl_numbers_match_spec():
    o = CRLObjective()
    assert o.delta == pytest.approx(1.178e-6, rel=2e-3)
    assert o.lenslet_focal_length_m == pytest.approx(21.2, rel=5e-3)
    assert o.phi_rad == pytest.approx(8.684e-3, rel=2e-3)
    assert o.focal_length_m == pytest.approx(0.192, rel=5e-3)
    assert o.sample_distance_m == pytest.approx(0.208, rel=5e-3)
    assert o.detector_distance_m == pytest.approx(4.72, rel=5e-3)
    assert o.na_rms_rad == pytest.approx(0.296e-3, rel=2e-2)


def test_overlap_formula():
    assert spectral_overlap(0.0, 1.0) == pytest.approx(1.0)
    assert spectral_overlap(0.64, 1.0) == pytest.approx(0.60, abs=0.01)     # docs/fp-dfxm.md, Sampling
    assert spectral_overlap(2.5, 1.0) == 0.0


def test_zernike_noll_order_and_orthonormality():
    assert [noll_to_nm(j) for j in (1, 2, 3, 4, 5, 6, 7, 8, 11)] == [
        (0, 0), (1, 1), (1, -1), (2, 0), (2, -2), (2, 2), (3, -1), (3, 1), (4, 0)]
    x = np.linspace(-1, 1, 401)
    xx, yy = np.meshgrid(x, x)
    m = xx**2 + yy**2 <= 1
    zs = [zernike(j, xx, yy)[m] for j in range(1, 12)]
    gram = np.array([[np.mean(a * b) for b in zs] for a in zs])
    assert np.allclose(gram, np.eye(11), atol=0.02)


def test_operator_adjoint_contract(xp):
    geom = _geom()
    pupil = xp.asarray(aberrated_pupil(geom, {4: 0.3, 7: 0.2}))
    op = FPDFXMOperator(geom, _grid(geom), pupil, image_shifts_m=np.full((25, 2), 7e-9))
    rtol = 1e-12 if xp is np else 1e-5
    check_adjoint(op, op.in_shape, op.out_shape, xp=xp, rtol=rtol)


def test_reconstruction_recovers_known_pupil_on_operator_data():
    geom = _geom(n_px=32, upsampling=3)
    rng = np.random.default_rng(0)
    n = geom.hr_n_px
    k = np.fft.fftfreq(n)
    lp = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 0.08**2))
    obj = np.exp(1j * 1.5 * np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * lp)) * 8)
    obj *= 1 + 0.3 * np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * lp)) * 8
    true = {4: 0.4, 6: -0.3, 8: 0.2}
    shifts = _grid(geom, 5, 6)
    op = FPDFXMOperator(geom, shifts, aberrated_pupil(geom, true))
    frames = np.abs(op.forward(obj)) ** 2
    res = reconstruct_fp_dfxm(frames, shifts, geom,
                              options=FPOptions(n_iterations=120, zernike_indices=(4, 5, 6, 7, 8)))
    for j, c in res.zernike_rad.items():
        assert abs(c - true.get(j, 0.0)) < 0.05, res.zernike_rad
    assert res.error_history[-1] < 0.1 * res.error_history[0]


def test_diversity_centre_of_mass_start_recovers_slow_phase():
    """The per-pixel centre of mass over κ_j is the local phase gradient; integrated, it gives the slow phase."""
    geom = _geom(n_px=32, upsampling=3)
    shifts = _grid(geom, 5, 6)
    x = np.arange(geom.hr_n_px) / geom.hr_n_px
    obj = np.exp(1j * 4.0 * np.sin(2 * np.pi * x)[:, None] * np.cos(2 * np.pi * x)[None, :])   # ±4 rad, smooth
    frames = np.abs(FPDFXMOperator(geom, shifts, pupil_amplitude(geom).astype(complex)).forward(obj)) ** 2
    init = initial_object_from_diversity(frames, shifts, geom).object
    err_init = phase_error_rms_rad(init, obj)
    err_flat = phase_error_rms_rad(np.ones_like(obj), obj)
    assert err_init < 0.25 and err_init < 0.15 * err_flat, (err_init, err_flat)     # measured 0.20 vs 1.80
    assert np.mean(np.abs(init)) == pytest.approx(1.0, rel=0.1)
    with pytest.raises(ValueError, match="initial_phase"):
        FPOptions(initial_phase="random")


def test_phase_vortices_found_with_winding_and_position():
    """Residues of n·atan2 vortices: winding and core position (within a plaquette), dark exterior ignored."""
    r, c = np.mgrid[0:96, 0:96].astype(float)
    cores = [(30.3, 60.7, 1), (62.0, 25.5, -1), (70.4, 70.2, 1)]
    phase = sum(n * np.arctan2(r - r0, c - c0) for r0, c0, n in cores)
    amp = np.ones_like(r)
    for r0, c0, _ in cores:
        amp *= 1 - np.exp(-((r - r0) ** 2 + (c - c0) ** 2) / 4.0)
    grain = (np.abs(r - 48) < 40) & (np.abs(c - 48) < 40)
    rng = np.random.default_rng(1)
    noise = np.exp(2j * np.pi * rng.random(r.shape))                 # dark exterior: random phase, many residues
    obj = np.where(grain, amp * np.exp(1j * phase), 1e-3 * noise)
    found = sorted(find_phase_vortices(obj), key=lambda v: v.row_px)
    assert [v.winding for v in found] == [1, -1, 1]
    for v, (r0, c0, _) in zip(found, sorted(cores), strict=True):
        assert np.hypot(v.row_px - r0, v.col_px - c0) <= 0.75
    assert find_phase_vortices(np.exp(1j * 0.01 * r * c)) == ()
    with pytest.raises(ValueError, match="window_px"):
        find_phase_vortices(obj, window_px=1)


@pytest.mark.parametrize("change, match", [
    (dict(frames_shape=(25, 16, 15)), "frames: shape"),
    (dict(nan=True), "NaN"),
    (dict(shifts_shape=(24, 2)), "shifts_rad: shape"),
    (dict(step_px=20), "spectral overlap"),
    (dict(off_grid=True), "off the grid"),
])
def test_bad_input_errors(change, match):
    geom = _geom()
    shifts = _grid(geom, 5, change.get("step_px", 3))
    frames = np.ones(change.get("frames_shape", (25, 16, 16)))
    if change.get("nan"):
        frames[3, 2, 2] = np.nan
    if "shifts_shape" in change:
        shifts = shifts[:24]
    if change.get("off_grid"):
        shifts = shifts + 0.4 * geom.angle_per_freq_px_rad
    with pytest.raises(ValueError, match=match):
        reconstruct_fp_dfxm(frames, shifts, geom, options=FPOptions(n_iterations=1))


def test_missing_reflection_and_bad_options():
    with pytest.raises(ValueError, match="reflection metadata"):
        FPDFXMGeometry(n_px=16)
    g = FPDFXMGeometry(n_px=16, mode="transmission")
    with pytest.raises(ValueError, match="no reflection metadata"):
        strain_tilt_from_phase(np.ones((8, 8), complex), g, pixel_size_m=10e-9)
    with pytest.raises(ValueError, match="zernike_indices"):
        FPOptions(zernike_indices=(2, 4))
    with pytest.raises(ValueError, match="n_px"):
        dataclasses.replace(g, n_px=15)
    with pytest.raises(ValueError, match="overlap"):
        check_overlap(np.array([[0.0, 0.0], [5e-3, 0.0]]), g, min_overlap=0.6)


def test_strain_and_tilt_known_answer():
    """φ = |G|(q_2θ·row + q_roll·col)Δx → ε = −cosθ q_2θ, δφ = −sinθ q_2θ (docs/fp-dfxm.md, Strain, q_rock' = 0)."""
    geom = _geom()
    dx = 10e-9
    q2t, qroll = -1.2e-4, 0.7e-4
    r = np.arange(64)[:, None] * dx
    c = np.arange(64)[None, :] * dx
    obj = np.exp(1j * REFL.g_per_m * (q2t * r + qroll * c))
    maps = strain_tilt_from_phase(obj, geom, pixel_size_m=dx)
    th = REFL.bragg_angle_rad(17.0)
    inner = (slice(1, -1), slice(1, -1))
    assert np.allclose(maps.q_2theta[inner], q2t, rtol=1e-9)
    assert np.allclose(maps.q_roll[inner], qroll, rtol=1e-9)
    assert np.allclose(maps.strain[inner], -math.cos(th) * q2t, rtol=1e-9)
    assert np.allclose(maps.tilt_rock_rad[inner], -math.sin(th) * q2t, rtol=1e-9)


def test_phase_error_metric_ignores_global_phase_and_ramp():
    r = np.arange(32)[:, None]
    c = np.arange(32)[None, :]
    truth = np.exp(1j * np.sin(r / 3.0) * np.cos(c / 5.0))
    est = truth * np.exp(1j * (0.7 + 0.05 * r - 0.03 * c))
    assert phase_error_rms_rad(est, truth) < 1e-9
    assert phase_error_rms_rad(est, truth, remove_ramp=False) > 0.1
