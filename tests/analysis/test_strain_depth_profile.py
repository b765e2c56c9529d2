"""Layers parallel to a foil's surfaces in the strain figure (issue 17 point 1): the depth profile of ε_zz in the
sample frame, the sample-frame panels cut to the mapped crystal, and the strain figure drawn on the lit crystal."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pytest

from analysis.figures import build_strain_figure, restrict_maps, strain_depth_profile
from analysis.strain import StrainMaps

VOX_M = 25e-9
TOP_M, BOTTOM_M, BULK = 100e-9, 75e-9, 1.0e-4          # FIB-like layers over a uniformly strained bulk
TOP_EPS, BOTTOM_EPS = 4.0e-4, -2.0e-4


def _tilted_foil_maps() -> StrainMaps:
    """A 400 nm foil tilted 8° about y in a 3 µm box: bulk ε 1e-4, a 100 nm top layer 4e-4, a 75 nm bottom −2e-4."""
    n = (80, 20, 120)
    x, y, z = np.meshgrid(*[(np.arange(k) - k // 2) * VOX_M for k in n], indexing="ij")
    t = z - np.tan(np.radians(8.0)) * x                  # height above the mid-plane, vertical
    half = 200e-9
    inside = np.abs(t) < half
    eps = np.full(n, BULK)
    eps[t > half - TOP_M] = TOP_EPS
    eps[t < -half + BOTTOM_M] = BOTTOM_EPS
    eps = np.where(inside, eps, np.nan)
    zeros = np.where(inside, 0.0, np.nan)
    return StrainMaps(eps_zz=eps, omega_x_rad=zeros, omega_y_rad=zeros, amplitude=inside.astype(float),
                      mask=inside, voxel_size_m=(VOX_M,) * 3, origin_m=tuple(-k // 2 * VOX_M for k in n),
                      frame="sample")


def test_depth_profile_follows_a_tilted_foil_and_shows_its_surface_layers():
    prof = strain_depth_profile(_tilted_foil_maps())
    h = prof.height_m
    well = prof.count >= 50
    top = well & (h > 200e-9 - TOP_M + VOX_M) & (h < 200e-9 - VOX_M)
    bottom = well & (h < -200e-9 + BOTTOM_M - VOX_M) & (h > -200e-9 + VOX_M)
    middle = well & (np.abs(h) < 50e-9)
    assert top.sum() >= 2 and bottom.sum() >= 1 and middle.sum() >= 3
    # one column's mid-plane is within half a voxel of the true one: the layers land on their own values
    np.testing.assert_allclose(prof.mean[top], TOP_EPS, rtol=0.05)
    np.testing.assert_allclose(prof.mean[bottom], BOTTOM_EPS, rtol=0.05)
    np.testing.assert_allclose(prof.mean[middle], BULK, rtol=0.05)
    assert h.min() >= -215e-9 and h.max() <= 215e-9           # heights span the foil's thickness, not the box
    with pytest.raises(ValueError, match="sample frame"):
        strain_depth_profile(dataclasses.replace(_tilted_foil_maps(), frame="reconstruction"))


def test_strain_figure_has_the_profile_and_cuts_panels_to_the_crystal():
    maps = _tilted_foil_maps()
    fig = build_strain_figure(maps, sample_maps=maps, region_note="test foil")
    (prof_ax,) = [ax for ax in fig.axes if "depth profile" in ax.get_title()]
    assert "test foil" in prof_ax.get_title() and prof_ax.get_xlabel().startswith("ε_zz (×10⁻⁴")
    xs = prof_ax.get_lines()[0].get_xdata()
    assert max(xs) == pytest.approx(TOP_EPS * 1e4, rel=0.05) and min(xs) == pytest.approx(BOTTOM_EPS * 1e4, rel=0.05)
    (xz,) = [ax for ax in fig.axes if ax.get_title().startswith("sample frame: ε_zz y =")]
    z_lo, z_hi = xz.get_ylim()
    x_lo, x_hi = xz.get_xlim()
    foil_z_um = 0.4 + 1.0 * np.tan(np.radians(8.0)) * 2     # thickness + the tilt across ±1 µm of x
    assert z_hi - z_lo < foil_z_um + 0.2 and x_hi - x_lo > 1.8  # cut to the foil, not the 3 µm box
    plt.close(fig)


def test_restrict_maps_keeps_only_the_region():
    maps = _tilted_foil_maps()
    region = np.zeros(maps.eps_zz.shape, bool)
    region[30:50] = True
    cut = restrict_maps(maps, region)
    assert np.all(np.isnan(cut.eps_zz[~region])) and not cut.mask[~region].any()
    np.testing.assert_array_equal(cut.eps_zz[region & maps.mask], maps.eps_zz[region & maps.mask])
    assert np.isfinite(maps.eps_zz[~region]).any()                  # the input is unchanged
    with pytest.raises(ValueError, match="region of shape"):
        restrict_maps(maps, region[:3])


def test_lit_region_is_the_engines_illumination_on_the_support():
    """The strain figure's region: the support where the engine's own Σ_j|P_j|² is ≥ a fraction of its maximum."""
    from analysis.bragg.engine import Reconstruction
    from analysis.bragg.outcome import lit_region
    from analysis.bragg.recipes import quick_recipe
    from testing.bragg_problem import engine_inputs, make_problem

    rec = Reconstruction(**engine_inputs(make_problem()),
                         recipe=dataclasses.replace(quick_recipe(), allow_undersampled=True))
    rec.iterate(2)
    res = rec.result()
    w = rec.illumination()
    sup = np.asarray(res.support, bool)
    for fraction in (0.05, 0.2):
        want = sup & (w >= fraction * w[sup].max())
        got = lit_region(res, fraction)
        assert got.shape == sup.shape and 0 < got.sum() < sup.sum()
        assert np.mean(got != want) < 1e-3                       # equal but for float rounding at the threshold
    assert (lit_region(res, 0.2) <= lit_region(res, 0.05)).all()
    with pytest.raises(ValueError, match="fraction"):
        lit_region(res, 1.5)
