"""The sampling condition in a general geometry (issue 19): the lit volume's extent along e3 against N3 Δr3.

The lit volume is the parallelepiped |p1·r| ≤ W/2, |p2·r| ≤ W2/2, |n·r| ≤ T/2 (p1, p2 ⟂ k_i, n the slab normal);
its extent along e3 is computed here from its eight vertices, independently of ``BraggGeometry``'s edge vectors.
"""

import itertools
import math

import numpy as np
import pytest

from analysis.diffractometer import GEOMETRY_PRESETS


def _vertex_extent_e3_m(g, w_m: float, w2_m: float, t_m: float) -> float:
    ax = g.lab_axes()
    ki = ax["k_in"]
    p2 = ax["e2"] - (ax["e2"] @ ki) * ki
    p2 /= np.linalg.norm(p2)
    p1 = np.cross(p2, ki)
    n = np.asarray(g.frame.surface_normal)
    a = np.stack([p1, p2, n])
    proj = [np.linalg.solve(a, np.array(s) * [w_m / 2, w2_m / 2, t_m / 2]) @ ax["e3"]
            for s in itertools.product((-1, 1), repeat=3)]
    return float(max(proj) - min(proj))


@pytest.mark.parametrize("name", sorted(GEOMETRY_PRESETS))
def test_lit_extent_along_e3_equals_the_vertex_extent(name):
    g = GEOMETRY_PRESETS[name]().bragg_geometry(n_rows_px=200, n_cols_px=160, n_angles=42, upsampling=3)
    for w_m, w2_m, t_m in ((1.5e-6, 0.0, 0.45e-6), (1.0e-6, 0.8e-6, 0.3e-6), (0.2e-6, 2.0e-6, 0.0)):
        assert g.lit_extent_e3_m(w_m, t_m, probe_width_p2_m=w2_m) == pytest.approx(
            _vertex_extent_e3_m(g, w_m, w2_m, t_m), rel=1e-9)


@pytest.mark.parametrize("name", sorted(GEOMETRY_PRESETS))
def test_width_limit_fills_the_r3_window_and_the_check_refuses_beyond(name):
    g = GEOMETRY_PRESETS[name]().bragg_geometry(n_rows_px=200, n_cols_px=160, n_angles=42, upsampling=3)
    t_m, w2_m = 0.45e-6, 1.0e-6
    w_max = g.probe_width_limit_m(t_m, probe_width_p2_m=w2_m)
    window_m = g.recon_shape[2] * g.voxel_size_m[2]                     # N3 Δr3 = 2π/(Δq3 u3)
    assert window_m == pytest.approx(2 * math.pi / (g.dq_rocking_per_m * g.rocking_direction[2]), rel=1e-9)
    assert _vertex_extent_e3_m(g, w_max, w2_m, t_m) == pytest.approx(window_m, rel=1e-9)
    # the documented worked-example limits in docs/geometry.md (T = 0.45 µm, W2 = 0)
    want_um = {"symmetric": 5.11, "asymmetric-in-plane": 4.96, "asymmetric-out-of-plane": 4.19}[name]
    assert g.probe_width_limit_m(t_m) * 1e6 == pytest.approx(want_um, abs=0.006)
    g.check_sampling(0.99 * g.probe_width_limit_m(t_m), t_m)
    with pytest.raises(ValueError, match="sampling condition"):
        g.check_sampling(1.01 * g.probe_width_limit_m(t_m), t_m)
