"""The fused CPU ML path (Numba + FFTW) gives the array code's cost, gradients, line-search
coefficients and CG step (Thibault & Guizar-Sicairos 2012, seed Eq 4) to float32 rounding."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from analysis.bragg.solvers import Execution, MLOptions, ml
from analysis.bragg.solvers.fused_cpu import FusedCpuML
from analysis.xp import cpu_kernels
from testing.bragg_problem import make_problem, near_truth_state, perturbed_state, rel_error, with_validity

pytestmark = pytest.mark.skipif(cpu_kernels() is None, reason="Numba or pyFFTW not installed (pip install .[fast])")


def _setup(upsampling: int, case: str, noise: str):
    p = make_problem(upsampling=upsampling, n_angles=12 if upsampling == 1 else 4, n_side=3, dtype=np.complex64)
    rng = np.random.default_rng(5)
    data = with_validity(p.data, case, rng)
    st = perturbed_state(p, rng)
    opts = MLOptions(noise_model=noise, mu=0.05, update_probe=case != "fixed")
    d_o = (rng.standard_normal(st.object.shape) + 1j * rng.standard_normal(st.object.shape)).astype(np.complex64)
    d_p = (rng.standard_normal(st.probe.shape) + 1j * rng.standard_normal(st.probe.shape)).astype(np.complex64)
    d_o *= np.float32(1e-2 * np.linalg.norm(st.object) / np.linalg.norm(d_o))
    d_p *= np.float32(1e-2 * np.linalg.norm(st.probe) / np.linalg.norm(d_p))
    return p, data, st, opts, d_o, d_p if opts.update_probe else None


@pytest.mark.parametrize("upsampling", [1, 3])
@pytest.mark.parametrize("noise", ["amplitude", "poisson"])
@pytest.mark.parametrize("case", ["probe", "fixed", "frames", "pixels"])
def test_fused_cost_gradients_and_line_coefficients_equal_the_array_code(upsampling, noise, case):
    p, data, st, opts, d_o, d_p = _setup(upsampling, case, noise)
    w = ml.mu_weights(st, data, p.op, opts.mu)
    assert FusedCpuML.for_model(p.op, st, Execution()) is not None
    out = {}
    o = opts
    for fused in (False, True):
        ex = Execution(cpu_kernels=fused)
        kept = ml.ExitWaves()
        c, g_o, g_p = ml.cost_and_gradient(st, data, op=p.op, options=o, weights=w, with_probe=o.update_probe,
                                           exit_waves=kept, execution=ex)
        assert kept.kernels == ("fused-cpu" if fused else "array")
        line_kept = ml.line_coefficients(st, data, op=p.op, options=o, weights=w, d_obj=d_o, d_probe=d_p,
                                         exit_waves=kept, execution=ex)
        line = ml.line_coefficients(st, data, op=p.op, options=o, weights=w, d_obj=d_o, d_probe=d_p, execution=ex)
        assert line_kept == pytest.approx(line, rel=1e-12)        # the kept Ψ0 is the recomputed one
        out[fused] = (c, g_o, g_p, line, ml.cost(st, data, op=p.op, options=o, weights=w, execution=ex))
    (ca, goa, gpa, la, _c2a), (cf, gof, gpf, lf, c2f) = out[False], out[True]
    assert cf == pytest.approx(ca, rel=2e-5)
    assert c2f == pytest.approx(cf, rel=1e-12)                    # cost() is the gradient pass's cost
    assert np.linalg.norm(goa) > 0 and rel_error(gof, goa) < 1e-4
    if opts.update_probe:
        assert np.linalg.norm(gpa) > 0 and rel_error(gpf, gpa) < 1e-4
    else:
        assert not np.any(gpf) and not np.any(gpa)
    # L'(0) is 2Re⟨∇*, Δ⟩ (on both paths), and L''(0) agrees
    d1_from_grad = 2 * (np.vdot(goa, d_o) + (np.vdot(gpa, d_p) if d_p is not None else 0)).real
    assert la[0] == pytest.approx(d1_from_grad, rel=1e-3)
    assert lf[0] == pytest.approx(la[0], rel=1e-4, abs=1e-5 * abs(la[1]))
    assert la[1] != 0 and lf[1] == pytest.approx(la[1], rel=1e-4)


@pytest.mark.parametrize("upsampling", [1, 3])
def test_fused_ml_steps_equal_the_array_code(upsampling):
    p, data, _, opts, _, _ = _setup(upsampling, "frames", "amplitude")
    st = near_truth_state(p, np.random.default_rng(8))
    runs = {}
    for fused in (False, True):
        state = copy.deepcopy(st)
        ex = Execution(cpu_kernels=fused)
        stats = []
        for _ in range(3):
            state, s = ml.step(state, data, op=p.op, options=opts, execution=ex)
            stats.append(s)
        assert {s.kernels for s in stats} == {"fused-cpu" if fused else "array"}
        runs[fused] = (state, stats)
    (a, sa), (f, sf) = runs[False], runs[True]
    assert all(s.step > 0.01 for s in sa)                         # quadratic steps, not the 1e-3 fallback
    assert np.allclose([s.cost for s in sf], [s.cost for s in sa], rtol=1e-5)
    assert np.allclose([s.step for s in sf], [s.step for s in sa], rtol=1e-4)
    assert rel_error(f.object, a.object) < 1e-5
    assert rel_error(f.probe, a.probe) < 1e-5
    assert rel_error(a.object, st.object) > 1e-2                  # the steps did change ρ
    assert sa[-1].cost < 0.9 * sa[0].cost


@pytest.mark.parametrize("fused", [False, True])
def test_kept_exit_waves_skip_transforms_and_change_no_number(fused, monkeypatch):
    p, data, _, opts, _, _ = _setup(3, "frames", "amplitude")
    start = near_truth_state(p, np.random.default_rng(8))
    n_measured = sum(data.has_data(j) for j in range(data.n_positions))
    calls = [0]
    forward = p.op.fourier.forward

    def counted(x):
        calls[0] += 1
        return forward(x)

    monkeypatch.setattr(p.op.fourier, "forward", counted)
    runs = {}
    for keep in (False, True):
        state = copy.deepcopy(start)
        calls[0] = 0
        ex = Execution(cpu_kernels=fused, keep_exit_waves=keep)
        costs = []
        for i in range(4):
            state, s = ml.step(state, data, op=p.op, options=opts, execution=ex)
            costs.append(s.cost)
            if i == 1:
                state.object *= np.complex64(1.01)         # changed between iterations: the kept Ψ no longer apply
        runs[keep] = (state, costs, calls[0])
    (a, costs_a, n_a), (b, costs_b, n_b) = runs[False], runs[True]
    assert costs_b == costs_a
    assert np.array_equal(b.object, a.object) and np.array_equal(b.probe, a.probe)
    if not fused:    # per measured position: Ψ0 of the line search every iteration, the gradient pass's F
        # in iterations 2 and 4 (3 follows the change; on NumPy the stamp check is on the host, so iteration 3
        # knows at once; on a GPU it learns at its one host read and repeats: tests/analysis/test_fused_gpu.py)
        assert n_a - n_b == n_measured * (1 + 2 + 1 + 2)


def test_fused_ml_declines_what_it_does_not_implement(monkeypatch):
    p = make_problem(dtype=np.complex128)
    st = perturbed_state(p, np.random.default_rng(1))
    assert FusedCpuML.for_model(p.op, st, Execution()) is None                   # complex128 → array code
    assert ml.step(st, p.data, op=p.op, options=MLOptions())[1].kernels == "array"
    p64 = make_problem(dtype=np.complex64)
    s64 = perturbed_state(p64, np.random.default_rng(1))
    assert FusedCpuML.for_model(p64.op, s64, Execution(cpu_kernels=False)) is None
    assert isinstance(FusedCpuML.for_model(p64.op, s64, Execution()), FusedCpuML)
    monkeypatch.setenv("PXM_CPU_KERNELS", "0")
    assert FusedCpuML.for_model(p64.op, s64, Execution()) is None
