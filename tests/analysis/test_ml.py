"""ML costs: Wirtinger gradients and line-search coefficients against finite differences."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.bragg.solvers import MLOptions, ml
from testing.bragg_problem import make_problem, near_truth_state, perturbed_state


@pytest.fixture(scope="module")
def problem():
    return make_problem(upsampling=2, n_angles=6, n_side=2, seed=3)


@pytest.mark.parametrize("noise", ["amplitude", "poisson"])
def test_gradients_match_finite_differences(problem, noise):
    p = problem
    rng = np.random.default_rng(7)
    st = perturbed_state(p, rng)
    opts = MLOptions(noise_model=noise, mu=0.05)
    w = ml.mu_weights(st, p.data, p.op, opts.mu)
    c0, g_o, g_p = ml.cost_and_gradient(st, p.data, op=p.op, options=opts, weights=w)
    d_o = rng.standard_normal(st.object.shape) + 1j * rng.standard_normal(st.object.shape)
    d_p = rng.standard_normal(st.probe.shape) + 1j * rng.standard_normal(st.probe.shape)
    d_o *= 1e-3 * np.linalg.norm(st.object) / np.linalg.norm(d_o)
    d_p *= 1e-3 * np.linalg.norm(st.probe) / np.linalg.norm(d_p)
    for which, d, g in (("object", d_o, g_o), ("probe", d_p, g_p)):
        eps = 1e-3

        def at(t, d=d, which=which):
            s = dataclasses.replace(st, object=st.object + t * d if which == "object" else st.object,
                                    probe=st.probe + t * d if which == "probe" else st.probe)
            return ml.cost(s, p.data, op=p.op, options=opts, weights=w)

        fd = (at(eps) - at(-eps)) / (2 * eps)
        an = 2 * np.vdot(g, d).real                        # dL = 2 Re⟨∇*, δ⟩
        assert fd == pytest.approx(an, rel=1e-5), which
    # line-search coefficients: L'(0) and L''(0) along a joint direction
    d1, d2 = ml.line_coefficients(st, p.data, op=p.op, options=opts, weights=w, d_obj=d_o, d_probe=d_p)

    def along(t):
        s = dataclasses.replace(st, object=st.object + t * d_o, probe=st.probe + t * d_p)
        return ml.cost(s, p.data, op=p.op, options=opts, weights=w)

    h = 1e-2
    fd1 = (along(h) - along(-h)) / (2 * h)
    fd2 = (along(h) - 2 * c0 + along(-h)) / h ** 2
    assert d1 == pytest.approx(2 * (np.vdot(g_o, d_o) + np.vdot(g_p, d_p)).real, rel=1e-8)
    assert d1 == pytest.approx(fd1, rel=1e-4)
    assert d2 == pytest.approx(fd2, rel=1e-3)


def test_cg_decreases_cost(problem):
    p = problem
    rng = np.random.default_rng(8)
    st = near_truth_state(p, rng)
    opts = MLOptions(noise_model="amplitude")
    costs = []
    for _ in range(6):
        st, stats = ml.step(st, p.data, op=p.op, options=opts)
        costs.append(stats.cost)
    assert all(b <= a * (1 + 1e-9) for a, b in zip(costs, costs[1:], strict=False))
    assert costs[-1] < 0.3 * costs[0]


def test_hold_spectral_centroid_keeps_the_probe_ramp_to_first_order():
    """The projected probe gradient moves the centroid of |FFT P2|² only at second order, also along a linear
    phase ramp (the probe half of the ρ/P ramp ambiguity); the rest of the gradient is kept."""
    rng = np.random.default_rng(21)
    n2, n3 = 24, 30
    y, x = np.meshgrid(np.arange(n2) - n2 / 2, np.arange(n3) - n3 / 2, indexing="ij")
    probe = np.exp(-(x ** 2 + y ** 2) / 30.0 + 0.4j * x / n3) * (1 + 0.1 * rng.standard_normal((n2, n3)))

    def centroid(p):
        pw = np.abs(np.fft.fft2(p)) ** 2
        return np.array([np.sum(f * pw) / pw.sum() for f in np.meshgrid(np.fft.fftfreq(n2), np.fft.fftfreq(n3),
                                                                           indexing="ij")])

    g = rng.standard_normal((n2, n3)) + 1j * rng.standard_normal((n2, n3))
    g *= 0.05 * np.linalg.norm(probe) / np.linalg.norm(g)
    held = ml.hold_spectral_centroid(g, probe)
    eps = 1e-3
    moved = np.abs(centroid(probe + eps * g) - centroid(probe)).max()
    moved_held = np.abs(centroid(probe + eps * held) - centroid(probe)).max()
    assert moved_held < 1e-3 * moved
    ramp = probe * (np.exp(-2j * np.pi * 0.002 * x) - 1)                 # δP2 of a small phase ramp
    shift = centroid(probe + ramp) - centroid(probe)
    assert shift[1] == pytest.approx(-0.002, rel=0.05)                     # it moves the centroid by its slope
    assert np.abs(centroid(probe + ml.hold_spectral_centroid(ramp, probe)) - centroid(probe)).max() < 0.01 * 0.002
    assert np.linalg.norm(held) > 0.9 * np.linalg.norm(g)                 # two directions out of N2·N3 removed
