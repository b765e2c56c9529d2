"""The fused CPU sweep (Numba + FFTW) gives the array code's numbers (seed Eqs 5–11, 13, sequential)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from analysis.bragg.solvers import epie
from analysis.bragg.solvers.fused_cpu import FusedCpuSweep
from analysis.bragg.solvers.options import EpieOptions, Execution
from analysis.xp import cpu_kernels
from testing.bragg_problem import initial_state, make_problem, rel_error, with_validity

pytestmark = pytest.mark.skipif(cpu_kernels() is None, reason="Numba or pyFFTW not installed (pip install .[fast])")


@pytest.mark.parametrize("upsampling", [1, 3])
@pytest.mark.parametrize("case", ["defaults", "alpha", "frames", "pixels", "frozen"])
def test_fused_sweeps_equal_the_array_code(upsampling, case):
    p = make_problem(upsampling=upsampling, n_angles=12 if upsampling == 1 else 4, n_side=3, dtype=np.complex64)
    assert FusedCpuSweep.unsupported_reason(p.op) == ""
    opts = EpieOptions(probe_update_start_iter=0, gamma=0.1, mu=0.05, beta=0.5)
    data = p.data
    rng = np.random.default_rng(3)
    if case == "alpha":
        opts = dataclasses.replace(opts, alpha=0.6, beta=0.8)
    elif case == "frozen":
        opts = dataclasses.replace(opts, update_probe=False)
    data = with_validity(data, case, rng)
    start = initial_state(p, p.true_probe * 0.9, background=0.5)
    start.object = start.object.astype(np.complex64)
    start.probe = start.probe.astype(np.complex64)
    start.background = start.background.astype(np.float32)
    runs = {}
    for fused in (False, True):
        state = copy.deepcopy(start)
        ex = Execution(cpu_kernels=fused)
        stats = []
        for _ in range(3):
            state, s = epie.step(state, data, op=p.op, options=opts, rng=np.random.default_rng(len(stats)),
                                 execution=ex)
            stats.append(s)
        assert {s.kernels for s in stats} == {"fused-cpu" if fused else "array"}
        runs[fused] = (state, stats)
    (a, sa), (f, sf) = runs[False], runs[True]
    assert rel_error(f.object, a.object) < 2e-4
    assert rel_error(f.probe, a.probe) < 2e-4
    assert rel_error(f.background, a.background) < 2e-4
    assert np.allclose([s.cost for s in sf], [s.cost for s in sa], rtol=2e-4)
    assert rel_error(a.object, start.object) > 1e-2                  # the sweeps did change ρ


def test_fused_path_declines_what_it_does_not_implement():
    p = make_problem(dtype=np.complex128)
    state = initial_state(p, p.true_probe)
    assert FusedCpuSweep.for_model(p.op, state, Execution()) is None          # complex128 → array code
    p64 = make_problem(dtype=np.complex64)
    s64 = initial_state(p64, p64.true_probe)
    s64.object, s64.probe = s64.object.astype(np.complex64), s64.probe.astype(np.complex64)
    assert FusedCpuSweep.for_model(p64.op, s64, Execution(cpu_kernels=False)) is None
    assert isinstance(FusedCpuSweep.for_model(p64.op, s64, Execution()), FusedCpuSweep)
    ext = p64.op.extrusion
    bent = type(ext)(ext.box_shape, (0.3, ext.slope_px[1]))
    op2 = type(p64.op)(p64.op.fourier, bent, p64.op.object_shape)
    assert "r2" in FusedCpuSweep.unsupported_reason(op2)
    with pytest.raises(ValueError, match="extruded along r2"):
        FusedCpuSweep(op2, cpu_kernels())


def test_engine_execution_picks_the_kernels_and_is_checked():
    """``Reconstruction(execution=)`` reaches the ePIE and ML steps: the fused path builds its FFTW transforms
    only when ``Execution.cpu_kernels``; the physics options carry no execution switch any more."""
    from analysis.bragg.engine import Recipe, Reconstruction, SupportSchedule
    from testing.bragg_problem import engine_inputs

    p = make_problem(upsampling=1, n_side=2, seed=4)
    recipe = Recipe(n_epie_iterations=1, n_ml_iterations=1, background_init=0.0,
                    support=SupportSchedule(thickness_schedule_m=((0, 0.55e-6),), shrinkwrap_start_iter=None))
    built = {}
    for on in (False, True):
        rec = Reconstruction(**engine_inputs(p), recipe=recipe, execution=Execution(cpu_kernels=on))
        rec.iterate(recipe.n_iterations)
        built[on] = sorted(rec.op.fused_cpu)
    assert built[False] == [] and {"epie", "ml"} <= set(built[True])
    assert not {"cpu_fused", "fftw_effort"} & {f.name for f in dataclasses.fields(EpieOptions)}
    with pytest.raises(ValueError, match="Execution.fftw_effort must be FFTW_ESTIMATE"):
        Execution(fftw_effort="FFTW_QUICK")  # type: ignore[arg-type]


def test_execution_holds_the_backend_and_reads_the_environment_once(monkeypatch):
    """Issue 18 point 4: the array backend and the PXM_CPU_KERNELS / PXM_GPU_KERNELS switches are fields of the one
    ``Execution`` value, read when it is made; ``PipelineOptions`` has no backend of its own."""
    from analysis.bragg.pipeline import PipelineOptions

    monkeypatch.setenv("PXM_CPU_KERNELS", "0")
    monkeypatch.setenv("PXM_GPU_KERNELS", "0")
    off = Execution()
    monkeypatch.delenv("PXM_CPU_KERNELS")
    monkeypatch.delenv("PXM_GPU_KERNELS")
    assert (off.cpu_kernels, off.gpu_kernels) == (False, False)       # fixed when made, not when read
    assert (Execution().cpu_kernels, Execution().gpu_kernels) == (True, True)
    assert Execution(backend="numpy").backend == "numpy"
    with pytest.raises(ValueError, match="Execution.backend: 'gpu'"):
        Execution(backend="gpu")
    assert "backend" not in {f.name for f in dataclasses.fields(PipelineOptions)}
    # the engine built by the pipeline takes its array module from Execution.backend
    from analysis.bragg.pipeline import build_engine
    from analysis.bragg.recipes import quick_recipe
    from testing.bragg_problem import engine_inputs, scan_of

    p = make_problem(upsampling=1, n_side=2, seed=4)
    recipe = dataclasses.replace(quick_recipe(), allow_undersampled=True)
    rec = build_engine(scan_of(p), recipe, engine_inputs(p)["probe"],
                       execution=Execution(backend="numpy", cpu_kernels=False))
    assert rec.xp is np and rec.execution.cpu_kernels is False
