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
