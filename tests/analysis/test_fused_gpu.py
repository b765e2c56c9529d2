"""The fused GPU sweep (cuFFT + the CUDA kernels of analysis/bragg/solvers/gpu_kernels.py) gives the array code's
numbers.

No GPU in CI: the sweep runs on the CuPy stand-in (``testing/fake_cupy.py``), which executes each kernel
through its NumPy reference; ``tests/analysis/test_gpu_kernels.py`` checks the CUDA source against those
references. Here the whole sweep (seed Eqs 1, 5–11, 13, NA mask, ρ/P scale) is compared with the NumPy
array code of :func:`analysis.bragg.solvers.epie._sequential` from the same state and sweep order.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from analysis.bragg.solvers import BraggModel, MLOptions, epie, ml
from analysis.bragg.solvers.fused_gpu import FusedGpuSweep
from analysis.bragg.solvers.model import BraggData
from analysis.bragg.solvers.options import EpieOptions, Execution
from analysis.xp import to_numpy
from testing import fake_cupy
from testing.bragg_problem import initial_state, make_problem, perturbed_state, rel_error, with_validity


@pytest.fixture
def cp(monkeypatch):
    """The CuPy stand-in installed as ``cupy``."""
    monkeypatch.delenv("PXM_GPU_KERNELS", raising=False)
    return fake_cupy.install(monkeypatch)[0]


def _on_device(cp, data: BraggData) -> BraggData:
    fv = data.frame_valid
    return dataclasses.replace(data, intensities=cp.asarray(data.intensities, dtype=np.float32),
                               mask=cp.asarray(data.mask), frame_valid=None if fv is None else cp.asarray(fv))


def _na_model(op: BraggModel) -> BraggModel:
    """``op`` with an NA mask keeping the lowest frequencies of P2 (FFT order)."""
    n2, n3 = op.probe_shape
    f2, f3 = np.fft.fftfreq(n2)[:, None], np.fft.fftfreq(n3)[None, :]
    return BraggModel(op.fourier, op.extrusion, op.object_shape, na_mask=(np.abs(f2) < 0.3) & (np.abs(f3) < 0.35))


@pytest.mark.parametrize("upsampling", [1, 3])
@pytest.mark.parametrize("case", ["defaults", "alpha", "frames", "pixels", "frozen"])
def test_fused_gpu_sweeps_equal_the_array_code(cp, upsampling, case):
    p = make_problem(upsampling=upsampling, n_angles=12 if upsampling == 1 else 4, n_side=3, dtype=np.complex64)
    op = _na_model(p.op)
    opts = EpieOptions(probe_update_start_iter=0, gamma=0.1, mu=0.05, beta=0.5)
    rng = np.random.default_rng(3)
    if case == "alpha":
        opts = dataclasses.replace(opts, alpha=0.6, beta=0.8)
    elif case == "frozen":
        opts = dataclasses.replace(opts, update_probe=False)
    data = with_validity(p.data, case, rng)
    data = dataclasses.replace(data, intensities=np.asarray(data.intensities, np.float32))
    start = initial_state(p, p.true_probe * 0.9, background=0.5)
    start.object = start.object.astype(np.complex64)
    start.probe = start.probe.astype(np.complex64)
    start.background = start.background.astype(np.float32)
    ref = copy.deepcopy(start)
    dev = copy.deepcopy(start)
    for name in ("object", "probe", "background", "support"):
        setattr(dev, name, cp.asarray(getattr(dev, name)))
    dev_data = _on_device(cp, data)
    ex = Execution(cpu_kernels=False)
    costs: dict[str, list[float]] = {"array": [], "fused-gpu": []}
    for i in range(3):
        ref, s = epie.step(ref, data, op=op, options=opts, rng=np.random.default_rng(i), execution=ex)
        costs[s.kernels].append(s.cost)
        dev, s = epie.step(dev, dev_data, op=op, options=opts, rng=np.random.default_rng(i), execution=ex)
        costs[s.kernels].append(s.cost)
    assert len(costs["array"]) == len(costs["fused-gpu"]) == 3
    assert rel_error(to_numpy(dev.object), ref.object) < 2e-4
    assert rel_error(to_numpy(dev.probe), ref.probe) < 2e-4
    assert rel_error(to_numpy(dev.background), ref.background) < 2e-4
    assert np.allclose(costs["fused-gpu"], costs["array"], rtol=2e-4)
    assert rel_error(ref.object, start.object) > 1e-2                  # the sweeps did change ρ
    if case != "frozen":
        assert rel_error(ref.probe, start.probe) > 1e-3                # … and P2 (NA mask included)


def test_fused_gpu_path_declines_what_it_does_not_implement(cp, monkeypatch):
    p = make_problem(dtype=np.complex64)
    state = initial_state(p, p.true_probe)
    assert FusedGpuSweep.for_model(p.op, state) is None                  # NumPy arrays → CPU paths
    state.object, state.probe = cp.asarray(state.object, np.complex64), cp.asarray(state.probe, np.complex64)
    assert isinstance(FusedGpuSweep.for_model(p.op, state), FusedGpuSweep)
    monkeypatch.setenv("PXM_GPU_KERNELS", "0")
    assert FusedGpuSweep.for_model(p.op, state) is None
    monkeypatch.delenv("PXM_GPU_KERNELS")
    s128 = initial_state(p, p.true_probe)
    s128.object, s128.probe = cp.asarray(s128.object, np.complex128), cp.asarray(s128.probe, np.complex128)
    assert FusedGpuSweep.for_model(p.op, s128) is None
    ext = p.op.extrusion
    op2 = BraggModel(p.op.fourier, type(ext)(ext.box_shape, (0.3, ext.slope_px[1])), p.op.object_shape)
    assert FusedGpuSweep.for_model(op2, state) is None
    with pytest.raises(ValueError, match="extruded along r2"):
        FusedGpuSweep(op2, cp)


def test_stand_in_kernels_refuse_what_cupy_would(cp):
    from analysis.bragg.solvers.gpu_kernels import CUDA_SOURCE

    fn = cp.RawModule(code=CUDA_SOURCE).get_function("pxm_extrude")
    spec, sl, box = (cp.asarray(np.ones(s, np.complex64)) for s in ((3, 4), (2, 4), (2, 3, 4)))
    with pytest.raises(TypeError, match="NumPy scalars"):
        fn((1,), (32,), (spec, sl, box, 2, 3, 4))
    with pytest.raises(ValueError, match="C-contiguous"):
        fn((1,), (32,), (spec, sl, box[:, :, ::2], np.int32(2), np.int32(3), np.int32(2)))
    with pytest.raises(AttributeError, match="no kernel"):
        cp.RawModule(code="").get_function("pxm_extrude")


def _ml_setup(cp, upsampling: int, case: str, noise: str):
    p = make_problem(upsampling=upsampling, n_angles=12 if upsampling == 1 else 4, n_side=3, dtype=np.complex64)
    rng = np.random.default_rng(5)
    data = with_validity(p.data, case, rng)
    data = dataclasses.replace(data, intensities=np.asarray(data.intensities, np.float32))
    st = perturbed_state(p, rng)
    st.object, st.probe = st.object.astype(np.complex64), st.probe.astype(np.complex64)
    st.background = st.background.astype(np.float32)
    opts = MLOptions(noise_model=noise, mu=0.05, update_probe=case != "fixed",
                     smoothness=0.01 if case == "prior" else 0.0)
    dev = copy.deepcopy(st)
    for name in ("object", "probe", "background", "support"):
        setattr(dev, name, cp.asarray(getattr(dev, name)))
    return p, data, _on_device(cp, data), st, dev, opts


@pytest.mark.parametrize("upsampling", [1, 3])
@pytest.mark.parametrize("noise", ["amplitude", "poisson"])
@pytest.mark.parametrize("case", ["probe", "fixed", "frames", "pixels", "prior", "unkept"])
def test_fused_gpu_ml_iterations_equal_the_array_code(cp, upsampling, noise, case):
    """Three ML iterations (gradient pass with kept Ψ, line search with and without the probe, Armijo cost
    passes, the smoothness prior's maps, Ψ not kept) on the fused GPU path and on the NumPy array code."""
    p, data, dev_data, ref, dev, opts = _ml_setup(cp, upsampling, case, noise)
    ex = Execution(cpu_kernels=False, keep_exit_waves=case != "unkept")
    kinds: dict[str, list[tuple[float, float]]] = {"array": [], "fused-gpu": []}
    start = ref.object.copy()
    for _ in range(3):
        ref, s = ml.step(ref, data, op=p.op, options=opts, execution=ex)
        kinds[s.kernels].append((s.cost, s.step))
        dev, s = ml.step(dev, dev_data, op=p.op, options=opts, execution=ex)
        kinds[s.kernels].append((s.cost, s.step))
    (ca, ta), (cg, tg) = (np.array(kinds[k]).T for k in ("array", "fused-gpu"))
    assert len(ca) == len(cg) == 3
    assert np.allclose(cg, ca, rtol=1e-4) and np.allclose(tg, ta, rtol=2e-3)
    assert rel_error(to_numpy(dev.object), ref.object) < 2e-4
    assert rel_error(to_numpy(dev.probe), ref.probe) < 2e-4
    assert rel_error(ref.object, start) > 1e-3                            # the iterations did move ρ


def test_fused_gpu_ml_gradient_and_line_sums_equal_the_array_code(cp):
    """cost_and_gradient (with and without kept Ψ reused) and line_coefficients, pass by pass."""
    p, data, dev_data, ref, dev, opts = _ml_setup(cp, 3, "probe", "amplitude")
    ex = Execution(cpu_kernels=False)
    w = ml.mu_weights(ref, data, p.op, opts.mu)
    rng = np.random.default_rng(2)
    d_o = (rng.standard_normal(ref.object.shape) + 1j * rng.standard_normal(ref.object.shape)).astype(np.complex64)
    d_p = (rng.standard_normal(ref.probe.shape) + 1j * rng.standard_normal(ref.probe.shape)).astype(np.complex64)
    d_o *= np.float32(1e-2 * np.linalg.norm(ref.object) / np.linalg.norm(d_o))
    d_p *= np.float32(1e-2 * np.linalg.norm(ref.probe) / np.linalg.norm(d_p))
    out = {}
    for name, st, dd, do, dp in (("array", ref, data, d_o, d_p), ("fused-gpu", dev, dev_data, cp.asarray(d_o),
                                                                   cp.asarray(d_p))):
        kept = ml.ExitWaves()
        c = ml.cost(st, dd, op=p.op, options=opts, weights=w, exit_waves=kept, execution=ex)
        assert kept.kernels == name
        c2, g_o, g_p = ml.cost_and_gradient(st, dd, op=p.op, options=opts, weights=w, with_probe=True,
                                            exit_waves=kept, execution=ex)      # reuses the kept Ψ
        line = ml.line_coefficients(st, dd, op=p.op, options=opts, weights=w, d_obj=do, d_probe=dp,
                                    exit_waves=kept, execution=ex)
        line_fresh = ml.line_coefficients(st, dd, op=p.op, options=opts, weights=w, d_obj=do, d_probe=None,
                                          execution=ex)
        out[name] = (c, c2, to_numpy(g_o), to_numpy(g_p), line, line_fresh)
    a, g = out["array"], out["fused-gpu"]
    assert g[0] == pytest.approx(a[0], rel=2e-5) and g[1] == pytest.approx(g[0], rel=1e-6)
    assert rel_error(g[2], a[2]) < 1e-4 and rel_error(g[3], a[3]) < 1e-4 and np.linalg.norm(a[3]) > 0
    assert np.allclose(g[4], a[4], rtol=1e-4) and np.allclose(g[5], a[5], rtol=1e-4)


def test_fused_gpu_ml_reads_the_host_once_and_checks_kept_waves_there(cp):
    """An ML iteration on the GPU path copies to the host once (costs, β, the restart test and t stay on the device,
    issue 16); the kept Ψ are reused on their stamp and checked against ρ, P2 in that same read. When ρ changes
    between iterations the check fails, the iteration repeats without them (one more read), and every number is
    the one of a run that keeps nothing."""
    p, data, dev_data, host, _, opts = _ml_setup(cp, 3, "probe", "amplitude")
    runs = {}
    for keep in (False, True):
        st = copy.deepcopy(host)
        for name in ("object", "probe", "background", "support"):
            setattr(st, name, cp.asarray(getattr(st, name)))
        ex = Execution(cpu_kernels=False, keep_exit_waves=keep)
        out = []
        for i in range(4):
            before = cp.transfers.to_host
            st, s = ml.step(st, dev_data, op=p.op, options=opts, execution=ex)
            out.append((s.cost, s.step, s.beta, cp.transfers.to_host - before))
            if i == 1:
                st.object *= np.complex64(1.01)             # changed between iterations: the kept Ψ no longer apply
        runs[keep] = (to_numpy(st.object), out)
    (obj_a, a), (obj_b, b) = runs[False], runs[True]
    assert [r[:3] for r in b] == [r[:3] for r in a] and np.array_equal(obj_b, obj_a)
    assert [r[3] for r in a][1:] == [1, 1, 1]                  # the first iteration also sets up μ_j (one copy)
    assert [r[3] for r in b][1:] == [1, 2, 1]                  # iteration 3 learnt of the change and repeated
    assert any(r[2] > 0 for r in a)                            # conjugate directions were used (β ≠ 0)
