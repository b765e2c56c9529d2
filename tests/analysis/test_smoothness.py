"""The ML smoothness prior: gradients and line coefficients against finite differences, scale invariance,
and one ML step whose reported cost is data + μ + prior."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.solvers import MLOptions, ml
from analysis.solvers.smoothness import (illumination_maps, prior_cost, prior_line_coefficients,
                                         prior_object_gradient, prior_probe_gradient, roughness_maps)
from tests.analysis.bragg_problem import gaussian_probe, initial_state, make_problem


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
    return prior_cost(rho, illumination_maps(probe, p.data, p.op, rho.shape)[0], s)


def _random_like(rng, a, rel):
    d = rng.standard_normal(a.shape) + 1j * rng.standard_normal(a.shape)
    return d * rel * np.linalg.norm(a) / np.linalg.norm(d)


def test_prior_gradients_match_finite_differences(problem):
    p, s = problem, 0.3
    rng = np.random.default_rng(11)
    st = _state(p, rng)
    w0 = illumination_maps(st.probe, p.data, p.op, st.object.shape)[0]
    g_o = prior_object_gradient(st.object, w0, s)
    g_p = prior_probe_gradient(st.object, st.probe, p.data, p.op, s)
    d_o, d_p = _random_like(rng, st.object, 1e-3), _random_like(rng, st.probe, 1e-3)
    eps = 1e-2
    fd_o = (_prior(p, st.object + eps * d_o, st.probe, s)
            - _prior(p, st.object - eps * d_o, st.probe, s)) / (2 * eps)
    fd_p = (_prior(p, st.object, st.probe + eps * d_p, s)
            - _prior(p, st.object, st.probe - eps * d_p, s)) / (2 * eps)
    assert fd_o == pytest.approx(2 * np.vdot(g_o, d_o).real, rel=1e-7)       # dR = 2 Re⟨∂R/∂x*, δx⟩
    assert fd_p == pytest.approx(2 * np.vdot(g_p, d_p).real, rel=1e-7)
    # line coefficients along the joint direction: R'(0), R''(0)
    w_maps = illumination_maps(st.probe, p.data, p.op, st.object.shape, d_p)
    d1, d2 = prior_line_coefficients(st.object, d_o, w_maps, s)
    h = 1.0

    def along(t):
        return _prior(p, st.object + t * d_o, st.probe + t * d_p, s)

    r0 = along(0.0)
    assert d1 == pytest.approx(2 * (np.vdot(g_o, d_o) + np.vdot(g_p, d_p)).real, rel=1e-9)
    assert (along(h) - 2 * r0 + along(-h)) / h ** 2 == pytest.approx(d2, rel=1e-6)   # quartic: exact to O(h²)


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
    assert prior_cost(rough, w0, 1.0) == 0.0
    assert not prior_object_gradient(rough, w0, 1.0).any()
    w0[1] = 1.0
    assert prior_cost(rough, w0, 1.0) > 0


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


def test_fused_probe_boxes_give_the_array_codes_prior():
    """Where the fused ML path runs, the prior's P_j come from its FFTW probe boxes: same maps and gradient."""
    p = make_problem(upsampling=3, n_angles=4, n_side=3, dtype=np.complex64)
    rng = np.random.default_rng(14)
    st = _state(p, rng)
    st.object, st.probe = st.object.astype(np.complex64), st.probe.astype(np.complex64)
    d_p = _random_like(rng, st.probe, 0.1).astype(np.complex64)
    fused_ops = ml._probe_ops(st, p.op, MLOptions())                       # noqa: SLF001 - the step's choice
    if fused_ops.extrude == p.op.probe_at:
        pytest.skip("fused CPU kernels unavailable (Numba/pyFFTW missing): nothing to compare")
    shape = st.object.shape
    for a, b in zip(illumination_maps(st.probe, p.data, p.op, shape, d_p, fused_ops),
                    illumination_maps(st.probe, p.data, p.op, shape, d_p)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
    g_f = prior_probe_gradient(st.object, st.probe, p.data, p.op, 0.3, fused_ops)
    g_a = prior_probe_gradient(st.object, st.probe, p.data, p.op, 0.3)
    np.testing.assert_allclose(g_f, g_a, rtol=1e-4, atol=1e-4 * float(np.abs(g_a).max()))
