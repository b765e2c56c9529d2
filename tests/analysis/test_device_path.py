"""The CuPy code path, run on CPU through a stand-in that enforces CuPy's host/device rules.

``testing/fake_cupy.py`` runs every ``xp``-generic branch on NumPy while refusing implicit
conversions and NumPy operands, as CuPy does, and counts host↔device copies. These tests run the
whole engine, the CLI and the live pipeline's engine on it and compare with the NumPy array code
(the fused CPU kernels are switched off for the reference: they are a different implementation).
They check that the GPU path is complete and keeps its arrays on the device; speed and cuFFT
rounding need a real GPU (``benchmarks/bench_gpu.py``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.bragg.engine import Recipe, Reconstruction, SupportSchedule
from analysis.bragg.solvers import EpieOptions, MLOptions
from analysis.dataset import read_results, write_dataset
from analysis.xp import backend, device_description
from testing import fake_cupy
from testing.bragg_problem import dataset_of, engine_inputs, make_problem


@pytest.fixture
def cp(monkeypatch):
    """The stand-in installed as ``cupy``; the NumPy reference runs the array code (no fused kernels)."""
    monkeypatch.setenv("PXM_CPU_KERNELS", "0")
    monkeypatch.delenv("PXM_BACKEND", raising=False)
    module, _ = fake_cupy.install(monkeypatch)
    return module


@pytest.fixture(scope="module")
def problem():
    return make_problem(upsampling=2, n_side=3, seed=4)


def _recipe(*, n_batches: int = 0, noise: str = "amplitude") -> Recipe:
    """Every part of the recipe in a few iterations: joint probe, background, NA mask, shrink-wrap, ML + prior."""
    sched = SupportSchedule(thickness_schedule_m=((0, 0.55e-6),), shrinkwrap_start_iter=3, shrinkwrap_every=1,
                            shrinkwrap_threshold=0.5, shrinkwrap_stop_iter=6)
    return Recipe(n_epie_iterations=4, n_ml_iterations=3, support=sched, background_init=0.1,
                  epie=EpieOptions(probe_update_start_iter=1, n_batches=n_batches, gamma=0.1),
                  ml=MLOptions(smoothness=0.01, noise_model=noise))


def _engine(p, recipe: Recipe, xp, comm=None) -> Reconstruction:
    kw = engine_inputs(p)
    return Reconstruction(kw["geometry"], kw["frames"], kw["mask"], kw["stage_xyz_m"], kw["rocking_offsets_deg"],
                          kw["probe"], recipe=recipe, probe_na_rad=(6e-4, 6e-4), xp=xp, comm=comm)


def test_stand_in_enforces_cupy_rules(cp):
    a = cp.asarray(np.arange(4.0))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="NumPy array"):
        a + np.ones(4)
    with pytest.raises(TypeError, match="NumPy array"):
        cp.where(np.ones(4, bool), a, 0.0)
    with pytest.raises(TypeError):
        import scipy.ndimage
        scipy.ndimage.gaussian_filter(a, 1.0)
    assert type(a.sum()).__module__.startswith("cupy") and a.sum().ndim == 0     # 0-d device array
    assert float(a.sum()) == 6.0 and cp.transfers.to_host == 1
    assert backend("auto") is cp and "fake-cupy" in device_description(cp)


@pytest.mark.parametrize("n_batches,noise", [(0, "amplitude"), (2, "poisson")])
def test_engine_on_device_matches_numpy(cp, problem, n_batches, noise):
    recipe = _recipe(n_batches=n_batches, noise=noise)
    ref = _engine(problem, recipe, np).iterate(recipe.n_iterations).result()
    rec = _engine(problem, recipe, cp)
    assert isinstance(rec.state.object, cp.ndarray) and isinstance(rec.data.intensities, cp.ndarray)
    res = rec.iterate(recipe.n_iterations).result()
    assert isinstance(res.object, np.ndarray)
    st = rec.state                                         # no silent promotion by 0-d device scalars
    assert (st.object.dtype, st.probe.dtype, st.background.dtype) == (np.complex64, np.complex64, np.float32)
    np.testing.assert_allclose(res.costs, ref.costs, rtol=1e-6)
    for name in ("object", "probe", "background"):
        a, b = getattr(res, name), getattr(ref, name)
        assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(b), name
    assert np.array_equal(res.support, ref.support)
    if n_batches == 0:                                      # shrink-wrap did cut the support (same cut on both)
        assert res.support.sum() < rec._slab(0).sum()     # noqa: SLF001


def test_distributed_path_on_device_matches_numpy(cp, problem):
    """The MPI code path (``comm``: batched ePIE with all-reduced sums, reduced ML), one rank, on device arrays."""
    from analysis.bragg.solvers.distributed import SerialCommunicator

    recipe = dataclasses.replace(_recipe(n_batches=2), support=SupportSchedule(thickness_schedule_m=((0, 0.55e-6),),
                                                                               shrinkwrap_start_iter=None))
    runs = [_engine(problem, recipe, xp, comm=SerialCommunicator()).iterate(recipe.n_iterations).result()
            for xp in (np, cp)]
    np.testing.assert_allclose(runs[1].costs, runs[0].costs, rtol=1e-6)
    assert np.linalg.norm(runs[1].object - runs[0].object) <= 1e-5 * np.linalg.norm(runs[0].object)


def _transfers_per_iteration(cp, p, recipe: Recipe) -> tuple[list[int], list[int]]:
    rec = _engine(p, recipe, cp)
    to_host, to_device = [], []
    for _ in range(recipe.n_iterations):
        cp.transfers.reset()
        rec.iterate(1)
        to_host.append(cp.transfers.to_host)
        to_device.append(cp.transfers.to_device)
    return to_host, to_device


def test_device_syncs_do_not_grow_with_positions(cp):
    """Each host copy is a GPU synchronisation: per iteration they must not scale with the scan."""
    recipe = dataclasses.replace(_recipe(), support=SupportSchedule(thickness_schedule_m=((0, 0.55e-6),),
                                                                   shrinkwrap_start_iter=None))
    small = _transfers_per_iteration(cp, make_problem(upsampling=2, n_side=2, seed=4), recipe)
    large = _transfers_per_iteration(cp, make_problem(upsampling=2, n_side=4, seed=4), recipe)  # 4× the positions
    assert small == large, (small, large)
    host, device = large
    assert max(host[:4]) <= 4, host         # ePIE sweep: the cost and the scale fix (measured: 3)
    assert max(host[4:]) <= 40, host        # ML: CG scalars, prior sums, line search, Armijo trials (measured: 25-26)
    assert device[0] <= 5 and max(device[1:]) == 0, device   # constants once per model (the fused GPU path's
    # slices, ramp, DFT table, plane flags, NA mask: analysis/bragg/solvers/fused_gpu.py), nothing per call after


def test_reconstruct_cli_on_device(cp, problem, tmp_path, capsys):
    from pxm.cli import main

    path = tmp_path / "dataset.h5"
    ds = dataset_of(problem)
    counts = np.random.default_rng(0).poisson(ds.frames * (200.0 / ds.frames.max())).astype(np.float32)
    write_dataset(path, dataclasses.replace(ds, frames=counts), compression=None)   # photon counts: --fsc splits them
    out = {}
    for name in ("numpy", "cupy"):
        res = tmp_path / f"{name}.h5"
        rc = main(["reconstruct", str(path), "-o", str(res), "--recipe", "quick", "--iterations", "3", "--ml", "2",
                   "--backend", name, "--fsc", "--prtf", "6", "--figures", str(tmp_path / name),
                   "--cxi", str(tmp_path / f"{name}.cxi"), "--no-progress"])
        assert rc == 0, capsys.readouterr().err
        out[name] = read_results(res)
    dev, ref = out["cupy"], out["numpy"]
    assert "fake-cupy" in dev["provenance"]["device"] and "NumPy" in ref["provenance"]["device"]
    assert "fake-cupy" in capsys.readouterr().out
    np.testing.assert_allclose(dev["error_history"], ref["error_history"], rtol=1e-6)
    assert np.linalg.norm(dev["object"] - ref["object"]) <= 1e-5 * np.linalg.norm(ref["object"])
    for key in ("fsc_resolution_m", "fsc_resolution_z_m", "prtf_resolution_m", "prtf_resolution_x_m", "final_cost",
                "initial_probe_scale"):
        a, b = dev["metrics"][key], ref["metrics"][key]
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-5), key
    assert len(list((tmp_path / "cupy").glob("*.png"))) == len(list((tmp_path / "numpy").glob("*.png"))) > 0


def test_cupy_backend_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)     # import cupy fails as on a CPU machine
    with pytest.raises(RuntimeError, match="CuPy is not installed or sees no CUDA device"):
        backend("cupy")
    assert backend("auto") is np


def test_fp_dfxm_on_device_matches_numpy(cp):
    """The FP-DFXM engine (issue 6) on device frames: same object and pupil, no per-frame copy per iteration."""
    from analysis.dfxm import FPDFXMOperator, FPOptions, aberrated_pupil, reconstruct_fp_dfxm
    from testing.fp_dfxm_problem import fp_angle_grid as _grid
    from testing.fp_dfxm_problem import fp_geometry as _geom

    geom = _geom(n_px=32, upsampling=3)
    n = geom.hr_n_px
    rng = np.random.default_rng(0)
    k = np.fft.fftfreq(n)
    lp = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 0.08 ** 2))
    obj = np.exp(12j * np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * lp)))
    shifts = _grid(geom, 5, 6)
    frames = np.abs(FPDFXMOperator(geom, shifts, aberrated_pupil(geom, {4: 0.4, 6: -0.3})).forward(obj)) ** 2
    opts = FPOptions(n_iterations=10, zernike_indices=(4, 5, 6))
    ref = reconstruct_fp_dfxm(frames, shifts, geom, options=opts)
    copies = []
    for n_it in (10, 20):
        cp.transfers.reset()
        res = reconstruct_fp_dfxm(cp.asarray(frames), shifts, geom,
                                  options=dataclasses.replace(opts, n_iterations=n_it))
        copies.append(cp.transfers.to_host)
        if n_it == 10:
            assert isinstance(res.object, cp.ndarray)
            np.testing.assert_allclose(res.error_history, ref.error_history, rtol=1e-9)
            assert res.zernike_rad == pytest.approx(ref.zernike_rad, abs=1e-9)
            assert np.allclose(res.object.get(), ref.object)
    assert (copies[1] - copies[0]) / 10 <= 6, copies      # per iteration (25 frames): measured 5
