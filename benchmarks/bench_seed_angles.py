"""Seed claim (Li et al. 2021): 7 angles with U = 18 reach the quality of 42 angles (docs/seed-angles.md).

One simulated rocking scan of 42 angles at Δθ (U = 1 window R3 = ``--window-um``). A reduced set
"<N>u<U>" takes every (42/N)-th angle (same q3 range) and is reconstructed with up-sampling U; with
U = 3·42/N every reduced set has the fine step δθ = Δθ/3 (window 3·R3), as in the seed (0.005° with
U = 3 and 0.03° with U = 18 both give 0.0017°). Noise-free, jittered raster, known probe unless
``--joint-probe``. Quality: object error E_ρ and phase RMSE on the lit true support (as
tests/system/test_reconstruct_sim.py), one mask (from the simulator's probe, in lab coordinates) for
every data set of a run.

Data sets (``--sets``): ``42u1`` (the seed's "former strategy": 42 angles, U = 1, probe fixed), ``42u3``
(the seed's main reconstruction), ``21u6``, ``14u9``, ``7u18`` (the claim), ``7u6``, ….

Conditions: ``--na-v-mrad`` (probe NA in the scattering plane, which sets the rocking spread NA_V/Δθ),
``--probe-extent-um``/``--coma-rad`` (probe tails beyond the U = 1 window, the former strategy's aliasing:
seed Methods after Eq 2), ``--ref-coma-rad`` (a wrong pre-characterised probe for 42u1), ``--support-nm``,
``--mu`` (seed Eq 4/9), ``--shrinkwrap``, ``--n-side``/``--step-nm``, ``--n-epie``/``--n-ml``.

``--near-truth-rad A``: local identifiability instead of a reconstruction. Frames made by the engine's own
model from the true object (no simulator mismatch), ML only (``--n-ml``, no ePIE) from the truth perturbed by a
smooth random phase of RMS ``A`` rad and amplitude of RMS ``A/2`` (Gaussian-correlated over ``--corr-vox``
voxels) on the lit support; E_ρ printed every 50 iterations. Data that determine the object take E_ρ to ~0.

Run: ``PXM_FFT_WORKERS=1 PYTHONPATH=. .venv/bin/python benchmarks/bench_seed_angles.py --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation

from analysis.bragg.engine import EpieOptions, MLOptions, Recipe, Reconstruction, SupportSchedule
from analysis.geometry import BraggGeometry
from analysis.metrics import object_error, probe_error
from sim.probe import KBProbe
from sim.sample import CrystalSample, HomogeneousDisplacement, Slab
from testing.bragg_sim import (
    SimProblem,
    exact_model_frames,
    gaussian_p2,
    make_simulator,
    raster,
    reduced_rocking_set,
    simulate,
    small_geometry,
    small_probe,
    start_next_to_truth,
    truth_p2,
)

SAMPLE_THICKNESS_M = 0.3e-6
SAMPLE_EDGE_M = 60e-9
TILT_X_DEG, TILT_Y_DEG = 5.5, -2.0
N_FULL = 42
"""Angles of the full scan (the seed's 42 × 0.005°)."""


@dataclass(frozen=True, kw_only=True)
class Condition:
    """One reconstruction condition (solver side)."""

    n_epie: int = 150
    """ePIE sweeps."""
    n_ml: int = 50
    """Amplitude-Gaussian ML iterations after the sweeps (seed: 1000 + 500)."""
    support_thickness_m: float = 0.4e-6
    """Fixed tilted-slab support thickness (true slab 0.3 µm with 60 nm edges)."""
    mu: float = 0.02
    """Thickness-support penalty μ (μ_j = μ·max|P_j|², seed Eq 4/9); the seed's 0.02."""
    shrinkwrap: bool = False
    """Shrink-wrap at 15 % every 5 sweeps over the middle fifth of the sweeps (seed 300–500 of 1000)."""
    joint_probe: bool = False
    """Retrieve the probe too, from a σ = 60 nm Gaussian (seed: probe frozen 5 sweeps, NA mask 1.5 NA)."""
    ml_smoothness: float = 0.0
    """Illumination-weighted ∇ρ prior strength of the ML refinement (``MLOptions.smoothness``; 0 = off)."""


def seed_angles_problem(*, window_m: float, probe: KBProbe, n_side: int, step_m: float,
                        cache_dir: Path | None) -> SimProblem:
    """The 42-angle U = 1 simulated scan (cached as .npz when ``cache_dir`` is set)."""
    g42 = small_geometry(n_angles=N_FULL, window3_m=window_m)
    sample = CrystalSample(slab=Slab(thickness_m=SAMPLE_THICKNESS_M, tilt_x_deg=TILT_X_DEG, tilt_y_deg=TILT_Y_DEG,
                                     edge_width_m=SAMPLE_EDGE_M),
                           homogeneous=HomogeneousDisplacement(strain=2e-4, tilt_x_rad=1e-4))
    stage = raster(n_side, step_m)
    key = hashlib.sha1(json.dumps([window_m, repr(probe), n_side, step_m, repr(sample)]).encode()).hexdigest()[:16]
    path = None if cache_dir is None else cache_dir / f"seed_angles_{key}.npz"
    if path is not None and path.exists():
        sim, _, _ = make_simulator(sample, geometry=g42, probe=probe)
        with np.load(path) as z:
            return SimProblem(geometry=g42, simulator=sim, frames=z["frames"], mask=np.ones((g42.n_rows_px,
                              g42.n_cols_px), bool), stage_xyz_m=stage, rocking_offsets_deg=z["offsets"],
                              probe_p2=truth_p2(g42, probe))
    p = simulate(sample, geometry=g42, probe=probe, stage_xyz_m=stage)
    if path is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez(path, frames=p.frames, offsets=p.rocking_offsets_deg)
    return p


def subset(p42: SimProblem, probe: KBProbe, name: str) -> SimProblem:
    """Data set ``name`` = "<angles>u<U>" (42u1, 42u3, 14u9, 7u18, …) of the full scan."""
    n_angles, upsampling = (int(v) for v in name.split("u"))
    return reduced_rocking_set(p42, probe, n_angles=n_angles, upsampling=upsampling)


def rocking_spread(geometry: BraggGeometry, na_v_rad: float, thickness_m: float) -> tuple[float, float]:
    """(NA_V/Δθ, σ3) of a data set: the probe-cone spread in measured planes, and the measured-step window
    R3 = λ/(2Δθ sinθ cosθ) over the lit r3 extent L3 = T|cos2θ|/sinθ + W/tanθ with W = λ/(2NA_V)
    (seed Eq 2 / Methods; the up-sampling is not counted).
    """
    t = geometry.theta_bragg_rad
    lam = geometry.wavelength_m
    dtheta_rad = abs(np.radians(geometry.rocking_step_deg))
    r3_m = lam / (2 * dtheta_rad * np.sin(t) * np.cos(t))
    l3_m = thickness_m * abs(np.cos(2 * t)) / np.sin(t) + lam / (2 * na_v_rad) / np.tan(t)
    return na_v_rad / dtheta_rad, r3_m / l3_m


def lit_mask_lab(p: SimProblem, obj_shape: tuple[int, int, int], origin_vox: np.ndarray,
                 lobe_probe: KBProbe) -> np.ndarray:
    """True support (dilated 1) ∧ Σ_j |P_lobe(r + s_j)|² ≥ 20 % max, evaluated in lab coordinates.

    ``lobe_probe`` is the simulator's probe (not the engine's windowed section), so the mask does not
    depend on the data set's window: the same crystal region is scored for 42 and 7 angles.
    """
    from sim.probe import probe_axes

    x, y, z = p.lab_coordinates(obj_shape, origin_vox)
    tru = p.simulator.truth_object(x, y, z)
    pa = probe_axes(p.geometry.theta_bragg_rad)
    ill = np.zeros(obj_shape)
    for s in p.stage_xyz_m:
        r = np.stack([x + s[0], y + s[1], z + s[2]], axis=-1)
        ill += np.abs(lobe_probe.field_perp(r @ pa["p1"], r @ pa["p2"])) ** 2
    return binary_dilation(np.abs(tru) > 0.5, iterations=1) & (ill >= 0.2 * ill.max())


def reconstruct(p: SimProblem, cond: Condition, lobe_probe: KBProbe,
                na_rad: tuple[float, float]) -> dict[str, float]:
    """Reconstruct ``p`` under ``cond``; E_ρ, phase RMSE (rad), final cost and seconds."""
    t0 = time.perf_counter()
    n = cond.n_epie
    sw_start, sw_stop = (int(0.3 * n), int(0.5 * n)) if cond.shrinkwrap else (None, 0)
    sched = SupportSchedule(thickness_schedule_m=((0, cond.support_thickness_m),), tilt_x_deg=TILT_X_DEG,
                            tilt_y_deg=TILT_Y_DEG, shrinkwrap_start_iter=sw_start, shrinkwrap_stop_iter=sw_stop)
    rec = Recipe(n_epie_iterations=n, n_ml_iterations=cond.n_ml, support=sched, background_init=0.0,
                 epie=EpieOptions(update_probe=cond.joint_probe, gamma=0.0, mu=cond.mu,
                                  probe_update_start_iter=min(5, n), na_mask_stop_iter=n),
                 ml=MLOptions(update_probe=cond.joint_probe, mu=cond.mu, smoothness=cond.ml_smoothness))
    probe0 = gaussian_p2(p.geometry, 60e-9) if cond.joint_probe else p.probe_p2
    r = Reconstruction(p.geometry, p.frames, p.mask, p.stage_xyz_m, p.rocking_offsets_deg, probe0, recipe=rec,
                       probe_na_rad=na_rad if cond.joint_probe else None,
                       probe_width_m=0.1e-6)     # the sampling check on the central lobe, as the seed's former strategy
    r.iterate(rec.n_iterations)
    res = r.result()
    vg = r._grid  # noqa: SLF001
    tru = p.truth_object(res.object.shape, vg.origin_vox)
    lit = lit_mask_lab(p, res.object.shape, vg.origin_vox, lobe_probe)
    e = object_error(res.object, tru, support=lit)
    return {"E_rho": e.error, "phase_rmse_rad": e.phase_rmse_rad, "cost_epie": res.costs[n - 1] if n else np.nan,
            "n_lit": int(lit.sum()), "seconds": time.perf_counter() - t0}


def _engine(p: SimProblem, frames: np.ndarray, cond: Condition) -> Reconstruction:
    """ML-only engine (known probe, fixed slab support) on ``frames``."""
    sched = SupportSchedule(thickness_schedule_m=((0, cond.support_thickness_m),), tilt_x_deg=TILT_X_DEG,
                            tilt_y_deg=TILT_Y_DEG, shrinkwrap_start_iter=None)
    rec = Recipe(n_epie_iterations=0, n_ml_iterations=cond.n_ml, support=sched, background_init=0.0,
                 epie=EpieOptions(update_probe=False, gamma=0.0, mu=cond.mu),
                 ml=MLOptions(update_probe=False, mu=cond.mu, smoothness=cond.ml_smoothness))
    return Reconstruction(p.geometry, frames, p.mask, p.stage_xyz_m, p.rocking_offsets_deg, p.probe_p2, recipe=rec,
                          probe_width_m=0.1e-6)


def near_truth(p: SimProblem, cond: Condition, lobe_probe: KBProbe, *, phase_rms_rad: float, corr_vox: float,
               seed: int = 1) -> list[tuple[int, float, float, float]]:
    """Local identifiability: ML on exact-model frames from a perturbed truth; (iteration, E_ρ, phase, cost)."""
    r = _engine(p, p.frames, cond)
    vg = r._grid  # noqa: SLF001
    tru = p.truth_object(tuple(r.state.object.shape), vg.origin_vox).astype(np.complex64)
    lit = lit_mask_lab(p, tru.shape, vg.origin_vox, lobe_probe)
    r = _engine(p, exact_model_frames(p, r, tru), cond)
    start_next_to_truth(r, tru, lit, phase_rms_rad=phase_rms_rad, corr_vox=corr_vox, seed=seed)
    rows = []
    e = object_error(r.result().object, tru, support=lit)
    rows.append((0, e.error, e.phase_rmse_rad, np.nan))
    while r.iteration < cond.n_ml:
        r.iterate(min(50, cond.n_ml - r.iteration))
        res = r.result()
        e = object_error(res.object, tru, support=lit)
        rows.append((r.iteration, e.error, e.phase_rmse_rad, res.costs[-1]))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: simulate once, reconstruct each data set under one condition, print a table row each."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="42u1,14u9,7u18", help="comma list of <angles>u<U>: 42u1, 42u3, 14u9, 7u18, …")
    ap.add_argument("--window-um", type=float, default=1.0, help="R3 of the 42-angle U = 1 set (µm)")
    ap.add_argument("--probe-extent-um", type=float, default=0.6, help="simulated probe extent along p1 (V, µm)")
    ap.add_argument("--coma-rad", type=float, default=0.8, help="probe coma (rad at the pupil edge; spherical 0.6×)")
    ap.add_argument("--na-mrad", type=float, default=0.6, help="probe NA along p2 (H, mrad)")
    ap.add_argument("--na-v-mrad", type=float, default=None, help="probe NA along p1 (V, scattering plane; mrad)")
    ap.add_argument("--n-side", type=int, default=6, help="raster n × n")
    ap.add_argument("--step-nm", type=float, default=80.0, help="raster step (nm)")
    ap.add_argument("--n-epie", type=int, default=150)
    ap.add_argument("--n-ml", type=int, default=50)
    ap.add_argument("--support-nm", type=float, default=400.0, help="fixed slab support thickness (nm)")
    ap.add_argument("--mu", type=float, default=0.02, help="thickness-support μ (seed 0.02)")
    ap.add_argument("--shrinkwrap", action="store_true")
    ap.add_argument("--ref-coma-rad", type=float, default=None,
                    help="42u1 only: fixed probe with this coma instead of the truth (a pre-characterised probe)")
    ap.add_argument("--joint-probe", action="store_true", help="probe retrieved from a Gaussian (7u18, 42u3 only)")
    ap.add_argument("--ml-smoothness", type=float, default=0.0, help="ML ∇ρ prior strength (MLOptions.smoothness)")
    ap.add_argument("--ref-smoothness", type=float, default=None,
                    help="42u1 only: ML prior strength of the reference (default: --ml-smoothness)")
    ap.add_argument("--near-truth-rad", type=float, default=None,
                    help="local identifiability: exact-model frames, ML from the truth perturbed by this RMS phase")
    ap.add_argument("--corr-vox", type=float, default=3.0,
                    help="Gaussian correlation length (voxels) of the --near-truth-rad perturbation")
    ap.add_argument("--cache", default=os.environ.get("PXM_BENCH_CACHE", ""), help="directory for simulated frames")
    a = ap.parse_args(argv)
    na = a.na_mrad * 1e-3
    na_v = na if a.na_v_mrad is None else a.na_v_mrad * 1e-3
    probe = dataclasses.replace(small_probe(na_rad=na), na_v=na_v, extent_v_m=a.probe_extent_um * 1e-6,
                                coma_h_rad=a.coma_rad, coma_v_rad=a.coma_rad, spherical_h_rad=0.6 * a.coma_rad,
                                spherical_v_rad=0.6 * a.coma_rad,
                                grid_step_m=min(2e-9, small_probe().wavelength_m / (2 * max(na, na_v)) / 25))
    t0 = time.perf_counter()
    p42 = seed_angles_problem(window_m=a.window_um * 1e-6, probe=probe, n_side=a.n_side, step_m=a.step_nm * 1e-9,
                              cache_dir=Path(a.cache) if a.cache else None)
    g: BraggGeometry = p42.geometry
    print(f"# {N_FULL} × {g.rocking_step_deg:.5f}° (R3 = {a.window_um} µm at U = 1), probe NA {na_v:.1e} (V) × "
          f"{na:.1e} (H) rad, extent {a.probe_extent_um} µm, {len(p42.stage_xyz_m)} positions; data in "
          f"{time.perf_counter() - t0:.0f} s")
    for name in a.sets.split(","):
        p = subset(p42, probe, name)
        if name == "42u1" and a.ref_coma_rad is not None:
            ref = dataclasses.replace(probe, coma_h_rad=a.ref_coma_rad, coma_v_rad=a.ref_coma_rad,
                                      spherical_h_rad=0.6 * a.ref_coma_rad, spherical_v_rad=0.6 * a.ref_coma_rad)
            p = dataclasses.replace(p, probe_p2=truth_p2(p.geometry, ref))
            ep = probe_error(p.probe_p2, truth_p2(p.geometry, probe)).error
            print(f"# 42u1 fixed probe: coma {a.ref_coma_rad} rad instead of {a.coma_rad}: E_P {ep:.3f}")
        joint = a.joint_probe and name != "42u1"        # the former strategy keeps the probe fixed
        cond = Condition(n_epie=a.n_epie, n_ml=a.n_ml, support_thickness_m=a.support_nm * 1e-9, mu=a.mu,
                         shrinkwrap=a.shrinkwrap, joint_probe=joint,
                         ml_smoothness=(a.ref_smoothness if name == "42u1" and a.ref_smoothness is not None
                                        else a.ml_smoothness))
        if a.near_truth_rad is not None:
            for it, e, ph, c in near_truth(p, cond, probe, phase_rms_rad=a.near_truth_rad, corr_vox=a.corr_vox):
                print(f"{name} near truth ({a.near_truth_rad} rad, {a.corr_vox} vox): ML {it}: E_rho {e:.3f} "
                      f"phase {ph:.3f} rad cost {c:.2e}", flush=True)
            continue
        m = reconstruct(p, cond, probe, (na_v, na))
        spread, sigma3 = rocking_spread(p.geometry, na_v, SAMPLE_THICKNESS_M)
        print(f"{name}: NA_V/Δθ {spread:.2f} σ3 {sigma3:.2f} box {p.geometry.recon_shape} "
              f"E_rho {m['E_rho']:.3f} phase {m['phase_rmse_rad']:.3f} rad cost {m['cost_epie']:.2e} "
              f"lit {m['n_lit']} ({m['seconds']:.0f} s; {cond})", flush=True)


if __name__ == "__main__":
    main()
