"""Noise-free accuracy of the solvers on a tiny problem made with the inversion's own operators.

Errors are measured on the well-lit part of the true support. "in-band" compares the
objects inside the measured sheared band (:func:`band_limit`): along r1 the grid is finer
than the crop resolves, and those out-of-band frequencies are only set by the support.
"""

from __future__ import annotations

import numpy as np

from analysis.bragg.solvers import EpieOptions, MLOptions, epie, ml
from testing.bragg_problem import (
    band_limit,
    gaussian_probe,
    initial_state,
    make_problem,
    object_error,
    probe_error,
    well_lit_region,
)

SMOOTH = dict(support_thickness_m=0.7e-6, thickness_m=0.3e-6, edge_sigma_vox=2.0, truth_margin_m=0.4e-6)


def _run(p, st, n_epie, n_ml, update_probe, n_batches=0):
    rng = np.random.default_rng(0)
    eo = EpieOptions(update_probe=update_probe, gamma=0.0, n_batches=n_batches, normalise_scale=False)
    costs = []
    for _ in range(n_epie):
        st, stats = epie.step(st, p.data, op=p.op, options=eo, rng=rng)
        costs.append(stats.cost)
    mo = MLOptions(update_probe=update_probe)
    for _ in range(n_ml):
        st, _ = ml.step(st, p.data, op=p.op, options=mo)
    return st, costs


def _errors(p, st):
    region = well_lit_region(p, 0.2)
    in_band = object_error(band_limit(p, st.object), band_limit(p, p.true_object), region, remove_ramp=True)
    full = object_error(st.object, p.true_object, region, remove_ramp=True)
    return in_band, full


def test_known_probe_noise_free():
    p = make_problem(**SMOOTH)
    st, costs = _run(p, initial_state(p, p.true_probe), 100, 200, update_probe=False)
    in_band, full = _errors(p, st)
    print(f"known probe: object error in-band {in_band:.4f}, full grid {full:.4f}")
    assert costs[-1] < 2e-3 * costs[0]
    assert in_band < 0.01
    assert full < 0.015


def test_joint_probe_from_wrong_initial_probe():
    p = make_problem(**SMOOTH)
    start = gaussian_probe(p.geometry, (1.8, 2.6), 0.0)
    assert probe_error(start, p.true_probe) > 0.3
    st, _ = _run(p, initial_state(p, start), 200, 100, update_probe=True)
    in_band, full = _errors(p, st)
    pe = probe_error(st.probe, p.true_probe)
    print(f"joint probe: object error in-band {in_band:.4f}, full {full:.4f}, probe {pe:.4f}")
    assert in_band < 0.05
    assert full < 0.05
    assert pe < 0.05


def test_minibatch_converges():
    p = make_problem(**SMOOTH)
    st, costs = _run(p, initial_state(p, p.true_probe), 100, 0, update_probe=False, n_batches=8)
    in_band, _ = _errors(p, st)
    print(f"mini-batch (8 batches): in-band error after 100 sweeps {in_band:.4f}")
    assert costs[-1] < 3e-3 * costs[0]
    assert in_band < 0.1


def test_upsampled_virtual_planes_converge():
    p = make_problem(upsampling=2, n_angles=6, **SMOOTH)
    st, costs = _run(p, initial_state(p, p.true_probe), 80, 0, update_probe=False)
    in_band, _ = _errors(p, st)
    print(f"U=2: in-band error after 80 sweeps {in_band:.4f}")
    assert costs[-1] < 1e-2 * costs[0]
    assert in_band < 0.15
