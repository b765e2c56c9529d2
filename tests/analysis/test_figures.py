"""Figures write non-empty PNGs (smoke test, Agg backend)."""

from __future__ import annotations

import numpy as np

from analysis.figures import complex_to_rgb, save_object_slices, save_probe, save_strain_slices
from analysis.strain import StrainMaps


def test_figures_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    rho = rng.random((8, 9, 10)) * np.exp(1j * rng.random((8, 9, 10)))
    m = np.ones((8, 9, 10), bool)
    m[0] = False
    f = np.where(m, rng.random((8, 9, 10)) * 1e-4, np.nan)
    maps = StrainMaps(eps_zz=f, omega_x_rad=f, omega_y_rad=f, amplitude=np.abs(rho), mask=m,
                      voxel_size_m=(1e-8,) * 3, origin_m=(0.0,) * 3)
    paths = [save_object_slices(tmp_path / "o.png", rho), save_strain_slices(tmp_path / "s.png", maps),
             save_probe(tmp_path / "p.png", rho[0], pixel_size_m=2e-8), save_object_slices(tmp_path / "o2.png", rho[0])]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rgb = complex_to_rgb(np.array([1.0, -1.0, 0.0]))
    assert rgb.shape == (3, 3) and np.allclose(rgb[2], 0)


def test_slices_cut_the_crystal_and_colour_ignores_cores():
    """Slices pass through the crystal's centre of mass, not the array middle; colour limit is robust."""
    from analysis.figures import _centre_slices, _slice_centre, robust_limit

    rho = np.zeros((20, 30, 40), complex)
    rho[3:6, 20:26, 30:36] = 1.0                               # a small crystal far from the array centre
    centre = _slice_centre(np.abs(rho) ** 2)
    assert centre == [4, 22, 32]                               # (3+5)/2, (20+25)/2 = 22.5 → 22, (30+35)/2 = 32.5 → 32
    (_, s0, ext0, _), (_, s1, _, _), _ = _centre_slices(rho, centre, voxel_size_m=(10e-9, 20e-9, 50e-9))
    assert np.abs(s0).sum() == 36 and np.abs(s1).sum() == 18  # every slice cuts the crystal
    assert ext0 == [0.0, 40 * 50e-3, 0.0, 30 * 20e-3]          # (e2, e3) plane in µm
    strain = np.full(1000, 1e-4)
    strain[:3] = 5e-2                                          # three dislocation-core voxels
    assert robust_limit(np.r_[strain, np.nan]) == 1e-4
    assert robust_limit(np.full(4, np.nan)) == 1.0
