"""The ML smoothness prior: gradients and line coefficients against finite differences, scale invariance,
and one ML step whose reported cost is data + μ + prior."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.bragg.solvers import Execution, MLOptions, ml
from analysis.bragg.solvers.smoothness import (
    PriorSums,
    illumination_maps,
    polynomial_value,
    prior_cost_and_gradient,
    prior_line_polynomial,
    roughness_maps,
)
from testing.bragg_problem import gaussian_probe, initial_state, make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem(upsampling=2, n_angles=6, n_side=2, seed=3)


def _state(p, rng):
    st = initial_state(p, gaussian_probe(p.geometry, (1.6, 1.8), 0.05), background=0.5)
    st.object = (st.object * (1 + 0.3 * rng.standard_normal(st.object.shape))
                 * np.exp(0.5j * rng.standard_normal(st.object.shape))).astype(np.complex128)
    st.probe = st.probe.astype(np.complex128)
    return st


def _prior(p, rho, probe, s):
    return prior_cost_and_gradient(rho, illumination_maps(probe, p.data, p.op, rho.shape)[0], s)[0]


def _random_like(rng, a, rel):
    d = rng.standard_normal(a.shape) + 1j * rng.standard_normal(a.shape)
    return d * rel * np.linalg.norm(a) / np.linalg.norm(d)


def _prior_gradients(p, st, s, with_probe=True):
    """(∂R/∂ρ*, ∂R/∂P2*) as the ML step gets them: the data pass with and without PriorSums, differenced."""
    opts = MLOptions(smoothness=s)
    w = ml.mu_weights(st, p.data, p.op, 0.0)
    sums = PriorSums(strength=s, roughness=roughness_maps(st.object)[0] if with_probe else None)
    _, _, g_p_with = ml.cost_and_gradient(st, p.data, op=p.op, options=opts, weights=w, with_probe=with_probe,
                                          prior=sums)
    _, _, g_p_without = ml.cost_and_gradient(st, p.data, op=p.op, options=opts, weights=w, with_probe=with_probe)
    _, g_o = prior_cost_and_gradient(st.object, sums.maps[0], s)
    return g_o, g_p_with - g_p_without, sums.maps[0]


def test_prior_gradients_match_finite_differences(problem):
    p, s = problem, 0.3
    rng = np.random.default_rng(11)
    st = _state(p, rng)
    g_o, g_p, w0_pass = _prior_gradients(p, st, s)
    w0 = illumination_maps(st.probe, p.data, p.op, st.object.shape)[0]
    np.testing.assert_allclose(w0_pass, w0, rtol=1e-12, atol=1e-12 * float(w0.max()))   # the pass's w0 is Σ|P_j|²
    by_hand = s * sum(np.sum(w0 * np.abs(np.roll(st.object, -1, a) - st.object) ** 2) for a in range(3))
    assert prior_cost_and_gradient(st.object, w0, s)[0] == pytest.approx(by_hand, rel=1e-12)
    d_o, d_p = _random_like(rng, st.object, 1e-3), _random_like(rng, st.probe, 1e-3)
    eps = 1e-2
    fd_o = (_prior(p, st.object + eps * d_o, st.probe, s)
            - _prior(p, st.object - eps * d_o, st.probe, s)) / (2 * eps)
    fd_p = (_prior(p, st.object, st.probe + eps * d_p, s)
            - _prior(p, st.object, st.probe - eps * d_p, s)) / (2 * eps)
    assert fd_o == pytest.approx(2 * np.vdot(g_o, d_o).real, rel=1e-7)       # dR = 2 Re⟨∂R/∂x*, δx⟩
    assert fd_p == pytest.approx(2 * np.vdot(g_p, d_p).real, rel=1e-7)
    # along the joint direction R(t) is a quartic: the line pass's maps give it exactly
    sums = PriorSums(strength=s)
    ml.line_coefficients(st, p.data, op=p.op, options=MLOptions(smoothness=s),
                         weights=ml.mu_weights(st, p.data, p.op, 0.0), d_obj=d_o, d_probe=d_p, prior=sums)
    poly = prior_line_polynomial(st.object, d_o, (w0, *sums.maps), s)
    assert poly[1] == pytest.approx(2 * (np.vdot(g_o, d_o) + np.vdot(g_p, d_p)).real, rel=1e-9)   # R'(0)
    for t in (-3.0, 0.0, 0.7, 5.0):
        assert polynomial_value(poly, t) == pytest.approx(_prior(p, st.object + t * d_o, st.probe + t * d_p, s),
                                                          rel=1e-9)
    # fixed probe: no direction maps, R(t) quadratic in t
    sums = PriorSums(strength=s)
    ml.line_coefficients(st, p.data, op=p.op, options=MLOptions(smoothness=s),
                         weights=ml.mu_weights(st, p.data, p.op, 0.0), d_obj=d_o, d_probe=None, prior=sums)
    assert sums.maps == []
    poly = prior_line_polynomial(st.object, d_o, (w0,), s)
    assert polynomial_value(poly, 2.0) == pytest.approx(_prior(p, st.object + 2.0 * d_o, st.probe, s), rel=1e-9)


def test_prior_is_unchanged_by_the_scale_the_data_leave_free(problem):
    """ρ → ρ/c, P → cP changes no Ψ_j, and no R: the prior does not pull the ρ/P scale."""
    p = problem
    st = _state(p, np.random.default_rng(12))
    assert _prior(p, st.object / 3.0, 3.0 * st.probe, 0.5) == pytest.approx(_prior(p, st.object, st.probe, 0.5),
                                                                             rel=1e-10)


def test_prior_vanishes_on_constants_and_where_unlit():
    rho = np.full((4, 4, 4), 2 - 1j)
    assert not roughness_maps(rho)[0].any()
    rough = np.random.default_rng(5).standard_normal((4, 4, 4)) + 0j
    w0 = np.zeros((4, 4, 4))
    assert prior_cost_and_gradient(rough, w0, 1.0)[0] == 0.0
    assert not prior_cost_and_gradient(rough, w0, 1.0)[1].any()
    w0[1] = 1.0
    assert prior_cost_and_gradient(rough, w0, 1.0)[0] > 0


def test_ml_step_reports_data_plus_prior_and_descends(problem):
    p = problem
    st = _state(p, np.random.default_rng(13))
    st.object = st.object.astype(np.complex64)
    st.probe = st.probe.astype(np.complex64)
    opts = MLOptions(smoothness=0.05, mu=0.05)
    w = ml.mu_weights(st, p.data, p.op, opts.mu)
    expected = (ml.cost(st, p.data, op=p.op, options=opts, weights=w)
                + _prior(p, st.object, st.probe, opts.smoothness))
    st2, stats = ml.step(dataclasses.replace(st, object=st.object.copy(), probe=st.probe.copy()), p.data,
                         op=p.op, options=opts)
    assert stats.cost == pytest.approx(expected, rel=1e-5)
    after = (ml.cost(st2, p.data, op=p.op, options=opts, weights=w)
             + _prior(p, st2.object, st2.probe, opts.smoothness))
    assert stats.step > 0 and after < expected


def test_smoothness_option_validated():
    with pytest.raises(ValueError, match="smoothness"):
        MLOptions(smoothness=-1.0)
    with pytest.raises(ValueError, match="smoothness"):
        MLOptions(smoothness=float("nan"))


def test_fused_passes_give_the_array_codes_prior_sums():
    """Where the fused ML path runs, its Numba kernels accumulate w0, w1, w2 and the prior's probe gradient:
    the same numbers as the array code."""
    p = make_problem(upsampling=3, n_angles=4, n_side=3, dtype=np.complex64)
    rng = np.random.default_rng(14)
    st = _state(p, rng)
    st.object, st.probe = st.object.astype(np.complex64), st.probe.astype(np.complex64)
    d_o = _random_like(rng, st.object, 0.1).astype(np.complex64)
    d_p = _random_like(rng, st.probe, 0.1).astype(np.complex64)
    w = ml.mu_weights(st, p.data, p.op, 0.0)
    out = {}
    for fused in (True, False):
        opts, ex = MLOptions(smoothness=0.3), Execution(cpu_kernels=fused)
        if fused and ml._fused(st, p.op, ex) is None:                          # noqa: SLF001 - the step's choice
            pytest.skip("fused CPU kernels unavailable (Numba/pyFFTW missing): nothing to compare")
        grad = PriorSums(strength=0.3, roughness=roughness_maps(st.object)[0])
        _, g_o, g_p = ml.cost_and_gradient(st, p.data, op=p.op, options=opts, weights=w, prior=grad, execution=ex)
        line = PriorSums(strength=0.3)
        ml.line_coefficients(st, p.data, op=p.op, options=opts, weights=w, d_obj=d_o, d_probe=d_p, prior=line,
                             execution=ex)
        out[fused] = (g_p, grad.maps[0], *line.maps)
        g_p_data = ml.cost_and_gradient(st, p.data, op=p.op, options=opts, weights=w, execution=ex)[2]
        assert np.linalg.norm(g_p - g_p_data) > 0.01 * np.linalg.norm(g_p)       # the prior's share is in there
    maps = illumination_maps(st.probe, p.data, p.op, st.object.shape, d_p)
    for a, b, ref in zip(out[True][1:], out[False][1:], maps, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
        np.testing.assert_allclose(b, ref, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))
    np.testing.assert_allclose(out[True][0], out[False][0], rtol=1e-3, atol=1e-4 * float(np.abs(out[False][0]).max()))


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_numba_prior_kernels_give_the_array_codes_numbers(dtype, monkeypatch):
    """On NumPy 3D ρ the prior's maps and sums come from voxel-by-voxel Numba kernels: same numbers as the
    whole-array differences (the CuPy path), to the dtype's rounding; the float64 line sums need no rescaling."""
    from analysis.bragg.solvers import smoothness

    rng = np.random.default_rng(15)
    rho = (rng.standard_normal((12, 7, 10)) + 1j * rng.standard_normal((12, 7, 10))).astype(dtype)
    d_rho = (1e3 * (rng.standard_normal(rho.shape) + 1j * rng.standard_normal(rho.shape))).astype(dtype)
    w = tuple(rng.random(rho.shape).astype(rho.real.dtype) for _ in range(3))
    if smoothness._kernels(rho) is None:                                    # noqa: SLF001
        pytest.skip("Numba/pyFFTW missing: only the array code exists")
    fused = (roughness_maps(rho)[0], *prior_cost_and_gradient(rho, w[0], 0.3),
             prior_line_polynomial(rho, d_rho, w, 0.3), prior_line_polynomial(rho, d_rho, w[:1], 0.3))
    monkeypatch.setattr(smoothness, "_kernels", lambda _rho: None)
    array = (roughness_maps(rho)[0], *prior_cost_and_gradient(rho, w[0], 0.3),
             prior_line_polynomial(rho, d_rho, w, 0.3), prior_line_polynomial(rho, d_rho, w[:1], 0.3))
    rtol = 1e-6 if dtype == np.complex64 else 1e-12
    for a, b in zip(fused, array, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.abs(b).max()))
