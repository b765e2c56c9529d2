"""Metrics: E_ρ invariances, registration, FSC, PRTF, R-factor, strain RMSE, binomial split
(docs/dataset-format.md, Half-data resolution and Quality of a run)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from analysis.metrics import (
    ConvergenceRule,
    binomial_split,
    convergence,
    fourier_shell_correlation,
    fourier_shift,
    half_bit_threshold,
    object_error,
    probe_error,
    prtf,
    r_factor,
    random_phase_prtf,
    register_shift,
    strain_rmse,
)
from analysis.strain import StrainMaps


def _object(shape, seed=0):
    """Smooth complex object inside a soft-edged support, zero near the borders (band-limited-ish)."""
    rng = np.random.default_rng(seed)
    amp = ndimage.gaussian_filter(rng.random(shape), 2.0)
    amp = 0.5 + (amp - amp.min()) / np.ptp(amp)
    ph = ndimage.gaussian_filter(rng.standard_normal(shape), 2.5)
    ph *= 2.0 / np.abs(ph).max()
    grid = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    r = np.sqrt(sum(g**2 for g in grid))
    env = ndimage.gaussian_filter((r < 0.6).astype(float), 1.5)
    return env * amp * np.exp(1j * ph), r < 0.6


def _ramp(shape, kappa):
    n = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    return np.exp(1j * sum(k * a for k, a in zip(kappa, n, strict=True)))


@pytest.mark.parametrize("shape,shift,kappa", [((64, 72), (2.37, -1.61), (0.21, -0.13)),
                                               ((32, 36, 28), (1.3, -0.45, 0.77), (0.1, 0.05, -0.2))])
def test_object_error_zero_for_phase_ramp_shift(shape, shift, kappa):
    truth, support = _object(shape)
    est = (0.6 * np.exp(1.9j)) * _ramp(shape, kappa) * fourier_shift(truth, shift)
    res = object_error(est, truth, support=ndimage.binary_dilation(support))
    print(f"E_rho {shape}: {res.error:.2e}, shift {res.shift_px}")
    assert res.error < 1e-3
    np.testing.assert_allclose(res.shift_px, -np.array(shift), atol=2e-3)
    np.testing.assert_allclose(res.ramp_rad_per_px, kappa, atol=1e-4)
    assert abs(abs(res.scale) - 1 / 0.6) < 1e-3
    # a genuine error is seen: 5 % complex noise on the support
    rng = np.random.default_rng(3)
    noisy = truth + 0.05 * np.abs(truth[support]).mean() * (rng.standard_normal(shape)
                                                            + 1j * rng.standard_normal(shape))
    assert object_error(noisy, truth, support=support).error > 0.02


def test_register_shift_integer_and_subpixel():
    truth, _ = _object((48, 40), seed=5)
    a = np.abs(truth)
    assert register_shift(a, np.roll(a, (-3, 5), axis=(0, 1))) == pytest.approx((3.0, -5.0), abs=1e-3)
    s = register_shift(a, fourier_shift(a, (0.25, -0.6)))
    assert s == pytest.approx((-0.25, 0.6), abs=2e-3)
    with pytest.raises(ValueError, match="shapes differ"):
        register_shift(a, a[:-1])


def test_probe_error_zero_for_scaled_copy_and_positive_otherwise():
    n = 64
    f = np.fft.fftfreq(n)
    pupil = (np.abs(f)[:, None] < 0.12) & (np.abs(f)[None, :] < 0.2)
    probe = np.fft.fftshift(np.fft.ifft2(pupil * np.exp(1j * 30 * (f[:, None] ** 2 + f[None, :] ** 2))))
    est = 2.5j * probe * _ramp(probe.shape, (0.05, -0.02))
    assert probe_error(est, probe).error < 1e-6
    assert probe_error(est, probe, intensity_weighted=True).error < 1e-6
    assert probe_error(np.abs(probe), probe).error > 0.05


def test_fsc_identical_is_one_and_noise_is_zero():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((48, 48, 48)) + 1j * rng.standard_normal((48, 48, 48))
    same = fourier_shell_correlation(a, a.copy(), voxel_size_m=10e-9)
    np.testing.assert_allclose(same.value[np.isfinite(same.value)], 1.0, atol=1e-12)
    assert math.isnan(same.crossing_frequency)  # never falls below ½-bit
    b = rng.standard_normal((48, 48, 48)) + 1j * rng.standard_normal((48, 48, 48))
    ind = fourier_shell_correlation(a, b, voxel_size_m=10e-9)
    big = ind.n_voxels > 200
    assert np.abs(ind.value[big]).mean() < 0.05
    assert np.all(np.abs(ind.value[big]) < 5 / np.sqrt(ind.n_voxels[big]))
    assert ind.crossing_frequency < 2 * ind.frequency[1]  # crosses at once


def test_fsc_resolution_of_a_low_pass_pair():
    """Signal band-limited to |k| < 0.2 cycles/voxel + independent noise: crossing near 0.2/voxel."""
    rng = np.random.default_rng(2)
    n = 64
    k = np.sqrt(sum(g**2 for g in np.meshgrid(*(np.fft.fftfreq(n),) * 2, indexing="ij")))
    sig = np.fft.ifft2((k < 0.2) * np.fft.fft2(rng.standard_normal((n, n)))) * 20
    a = sig + rng.standard_normal((n, n))
    b = sig + rng.standard_normal((n, n))
    res = fourier_shell_correlation(a, b, voxel_size_m=1.0)
    assert 0.17 < res.crossing_frequency < 0.23
    assert res.resolution == pytest.approx(1 / res.crossing_frequency)


def test_fsc_shells_run_to_the_inscribed_sphere_and_cones_to_their_axis_nyquist():
    """Anisotropic voxels (10, 20, 40 nm): full shells stop at the coarsest axis's Nyquist frequency,
    a cone runs to the box's edge along its own axis; a signal band-limited along e1 to 0.3 cycles
    per voxel (33 nm period) is resolved there by the e1 cone, beyond the full shells' reach (80 nm)."""
    rng = np.random.default_rng(3)
    shape, vox = (64, 32, 16), (10e-9, 20e-9, 40e-9)
    a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    full = fourier_shell_correlation(a, a, voxel_size_m=vox)
    assert full.finest_period == pytest.approx(2 * 40e-9, rel=0.05)
    along = {ax: fourier_shell_correlation(a, a, voxel_size_m=vox, cone_axis=np.eye(3)[ax]) for ax in range(3)}
    for ax in range(3):
        assert along[ax].finest_period == pytest.approx(2 * vox[ax], rel=0.1)
    diag = fourier_shell_correlation(a, a, voxel_size_m=vox, cone_axis=(1.0, 1.0, 0.0))
    assert diag.finest_period == pytest.approx(2 * 20e-9 * np.sqrt(0.5), rel=0.1)  # e2 reaches its edge first
    # signal band-limited along e1 to |f1| < 0.3 cycles/voxel, plus independent noise
    f1 = np.abs(np.fft.fftfreq(shape[0]))[:, None, None]
    sig = np.fft.ifftn((f1 < 0.3) * np.fft.fftn(a)) * 10
    b1 = sig + rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    b2 = sig + rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    e1 = fourier_shell_correlation(b1, b2, voxel_size_m=vox, cone_axis=(1, 0, 0))
    assert e1.resolution == pytest.approx(10e-9 / 0.3, rel=0.1)
    with pytest.raises(ValueError, match="cone_axis"):
        fourier_shell_correlation(a, a, cone_axis=(0, 0))


def test_half_bit_threshold_limits():
    assert half_bit_threshold(1) == pytest.approx(1.0, abs=1e-3)
    assert half_bit_threshold(1e12) == pytest.approx(0.2071 / 1.2071, rel=1e-5)


def test_prtf_measures_phase_consistency_not_counts():
    """Modulus-constrained PRTF (Chapman et al.): amplitudes cancel; phases with noise σ(q) give e^{-σ²/2}
    (plus the finite-K bias), the cone about the noisy axis crosses 1/e where predicted, the other does not."""
    rng = np.random.default_rng(3)
    n, k_runs = 64, 64
    q0 = (np.arange(n) - n // 2)[:, None] * np.ones((1, n))            # centred frequency along axis 0
    amp = 0.5 + rng.random((n, n))
    inten = amp ** 2
    sigma = np.sqrt(2.0) * np.abs(q0) / 24.0                             # e^{-σ²/2} = 1/e at |q0| = 24
    runs = (amp * (0.3 + rng.random((k_runs, n, n)))) * np.exp(1j * sigma * rng.standard_normal((k_runs, n, n)))
    along = prtf(runs, inten, cone_axis=(1, 0))
    across = prtf(runs, inten, cone_axis=(0, 1))
    # with K runs E|⟨e^{iφ}⟩|² = ρ² + (1 − ρ²)/K: 1/e is met at ρ = 0.349, |q0| = 24.6
    assert 22 < 1 / along.resolution < 28, 1 / along.resolution
    assert np.isnan(across.resolution) and np.nanmin(across.value) > 0.75
    raw = prtf(runs, inten, cone_axis=(0, 1), modulus_constraint=False)    # without it the amplitudes enter:
    ratio = np.asarray(raw.value) / np.asarray(across.value)               # here their mean factor, 0.8
    assert np.all((ratio[1:] > 0.7) & (ratio[1:] < 0.9)), ratio
    # unrelated phases: the K-run floor, 2/π for two runs; only K >= 6 can fall below 1/e
    assert random_phase_prtf(2) == pytest.approx(2 / math.pi, abs=1e-5)
    mc = np.abs(np.exp(2j * np.pi * rng.random((40000, 8))).mean(axis=1)).mean()
    assert random_phase_prtf(8) == pytest.approx(mc, abs=5e-3)
    assert random_phase_prtf(6) < 1 / math.e < random_phase_prtf(5)
    unrelated = prtf(amp * np.exp(2j * np.pi * rng.random((8, n, n))), inten)
    assert np.nanmean(unrelated.value[1:]) == pytest.approx(random_phase_prtf(8), abs=0.02)


def test_prtf_on_a_sheared_q_grid():
    """On a sheared grid (q = i0 b0 + i1 b1, b1 = (0.6, 1)) phase noise that depends on the physical |q| crosses
    1/e at the physical radius predicted, in full shells and in cones about either physical axis; read as an
    orthogonal grid of the same steps it would not."""
    rng = np.random.default_rng(5)
    n, k_runs = 64, 64
    basis = np.array([[1.0, 0.0], [0.6, 1.0]])
    i0, i1 = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
    q_abs = np.hypot(i0 * basis[0, 0] + i1 * basis[1, 0], i0 * basis[0, 1] + i1 * basis[1, 1])
    sigma = np.sqrt(2.0) * q_abs / 18.0                     # e^{-σ²/2} = 1/e at |q| = 18; 18.4 with K = 64
    runs = np.exp(1j * sigma * rng.standard_normal((k_runs, n, n)))
    inten = np.ones((n, n))
    for axis in (None, (1, 0), (0, 1)):
        c = prtf(runs, inten, q_basis=basis, cone_axis=axis)
        assert 17.0 < 1 / c.resolution < 20.0, (axis, 1 / c.resolution)
    ortho = prtf(runs, inten, dq_per_m=1.0, cone_axis=(0, 1))   # the shear ignored: a cone of the wrong q-points
    assert 1 / ortho.resolution < 16.5, 1 / ortho.resolution                  # measured 15.7 against 18.2
    with pytest.raises(ValueError, match="q basis"):
        prtf(runs, inten, q_basis=np.array([[1.0, 0.0], [2.0, 0.0]]))


def test_prtf_and_r_factor():
    rng = np.random.default_rng(1)
    psi = rng.standard_normal((32, 32)) + 1j * rng.standard_normal((32, 32))
    inten = np.abs(psi) ** 2
    same = prtf(np.stack([psi, psi.copy()]), inten)
    np.testing.assert_allclose(same.value[same.n_voxels > 0], 1.0, atol=1e-12)
    # runs must be phase-aligned: a 0.3 rad offset between two runs gives cos(0.15)
    off = prtf(np.stack([psi, psi * np.exp(0.3j)]), inten)
    np.testing.assert_allclose(off.value[off.n_voxels > 0], math.cos(0.15), atol=1e-12)
    # runs with random phases average to ~1/√K
    runs = np.abs(psi)[None] * np.exp(2j * np.pi * rng.random((16, 32, 32)))
    rnd = prtf(runs, inten, dq_per_m=1.6e6)
    assert np.nanmean(rnd.value) < 0.4 and rnd.frequency[1] == pytest.approx(1.6e6)
    assert r_factor(inten, inten) == 0.0
    assert r_factor(inten, 1.21 * inten) == pytest.approx(0.1)
    mask = np.ones((32, 32), bool)
    mask[:, 10:12] = False
    bad = inten.copy()
    bad[:, 10:12] = 1e6
    assert r_factor(inten, bad, mask=mask) == 0.0


def test_strain_rmse_reports_offset_separately():
    rng = np.random.default_rng(0)
    shape = (20, 20, 20)
    mask = np.zeros(shape, bool)
    mask[3:-3, 3:-3, 3:-3] = True
    t = np.where(mask, 3e-4, np.nan)
    noise = 1e-5 * rng.standard_normal(shape)

    def mk(e):
        return StrainMaps(eps_zz=e, omega_x_rad=np.where(mask, 0.0, np.nan), omega_y_rad=np.where(mask, 0.0, np.nan),
                          amplitude=mask.astype(float), mask=mask, voxel_size_m=(1e-8,) * 3, origin_m=(0.0,) * 3)

    res = strain_rmse(mk(t + 2e-5 + noise), mk(t), erode_voxels=2)
    assert res.n_voxels == 10**3
    assert res.eps_zz_offset == pytest.approx(2e-5, abs=2e-6)
    assert res.eps_zz_rmse_centred == pytest.approx(1e-5, rel=0.1)
    assert res.eps_zz_rmse == pytest.approx(math.hypot(2e-5, 1e-5), rel=0.1)
    with pytest.raises(ValueError, match="erod"):
        strain_rmse(mk(t), mk(t), erode_voxels=8)


def test_binomial_split():
    rng = np.random.default_rng(0)
    counts = rng.poisson(50.0, size=(8, 16, 16)).astype(np.float32)
    a, b = binomial_split(counts, rng=rng)
    np.testing.assert_array_equal(a + b, counts)
    assert a.dtype == counts.dtype and np.all(a >= 0) and np.all(b >= 0)
    assert abs(a.sum() / counts.sum() - 0.5) < 0.01
    with pytest.raises(ValueError, match="non-negative integers"):
        binomial_split(np.array([1.5, 2.0]), rng=rng)
    with pytest.raises(ValueError, match="NaN"):
        binomial_split(np.array([np.nan]), rng=rng)


def test_convergence_rule_on_the_last_phase():
    """Cost flat over the last 10 % (≥ 2) of the last phase and R-factor not rising: converged; otherwise not."""
    epie = list(np.linspace(1.0, 0.2, 20))
    flat_ml = list(100.0 * (1 + 0.02 * np.exp(-np.arange(30) / 3.0)))     # settles to 100
    phases = ["epie"] * 20 + ["ml"] * 30
    r = {"initial": 0.9, "epie": 0.3, "ml": 0.25}
    v = convergence(epie + flat_ml, phases, r)
    assert v.converged and v.phase == "ml" and v.window_iterations == 3
    assert abs(v.relative_cost_change) < 1e-3 and "R-factor 0.3 → 0.25" in v.reason
    assert v.summary().startswith("converged: yes (ML: cost changed")
    falling = list(100.0 * np.exp(-np.arange(30) / 10.0))                  # −26 % over the last 3 iterations
    v = convergence(epie + falling, phases, r)
    assert not v.converged and v.relative_cost_change == pytest.approx(math.exp(-0.3) - 1, rel=1e-9)
    v = convergence(epie + flat_ml, phases, {**r, "ml": 0.31})             # cost flat, R rises 0.30 → 0.31
    assert not v.converged and "(rising)" in v.reason
    v = convergence(epie + flat_ml[:2], phases[:22], r)                    # 2 ML iterations cannot be judged
    assert not v.converged and "too few to judge (needs 3)" in v.reason
    v = convergence(epie, phases[:20], {"initial": 0.9, "epie": 0.3})       # ePIE only: from the initial R
    assert v.phase == "epie" and v.r_factor_start == 0.9 and v.window_iterations == 2
    assert convergence(epie, phases[:20], r, ConvergenceRule(max_relative_cost_change=0.35)).converged  # −29.6 %
    with pytest.raises(ValueError, match="phase labels"):
        convergence(epie, phases, r)
