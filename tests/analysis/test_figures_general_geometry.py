"""Sample-frame figure panels follow a general diffractometer frame (issue 19, docs/geometry.md)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.diffractometer import (
    asymmetric_out_of_plane,
    map_to_reflection_frame,
    native_sample_coordinates_m,
    strain_native,
)
from analysis.figure_frames import sample_frame, sample_planes
from analysis.figures import save_strain_slices
from analysis.strain import StrainOptions

SHAPE = (24, 24, 24)
THICKNESS_M = 300e-9
EPS = 3e-4


@pytest.fixture(scope="module")
def slab() -> tuple[object, np.ndarray, np.ndarray]:
    """Out-of-plane geometry, and a slab |z| < T/2 (sample frame) with a uniform strain ε along Q."""
    geom = asymmetric_out_of_plane().bragg_geometry(n_rows_px=SHAPE[0], n_cols_px=SHAPE[1], n_angles=SHAPE[2])
    r = native_sample_coordinates_m(geom, SHAPE)
    inside = np.abs(r[..., 2]) < THICKNESS_M / 2
    q = geom.q_bragg_per_m * np.asarray(geom.lab_axes()["q_hat"])
    rho = np.where(inside, 1.0, 0.0) * np.exp(1j * StrainOptions().phase_sign * EPS * (r @ q))
    return geom, rho, inside


def _z_centres_along_x(values: np.ndarray, z_axis: np.ndarray) -> np.ndarray:
    """Amplitude-weighted z centre of each column (x) of a (z, x) plane that crosses the slab, less 3 at each end
    (where the edges of the reconstruction box cut the slab)."""
    w = np.nan_to_num(np.abs(values))
    total = w.sum(axis=0)
    keep = total > 0.5 * total.max()
    return ((z_axis[:, None] * w).sum(axis=0)[keep] / total[keep])[3:-3]


def test_object_plane_slab_is_a_band_parallel_to_x(slab):
    geom, rho, _ = slab
    vox = geom.voxel_size_m
    frame = sample_frame(SHAPE, vox, geometry=geom)
    xz = sample_planes(np.abs(rho), frame, centre_m=(0.0, 0.0, 0.0))[0]
    assert xz.name.startswith("x–z")
    z_axis = np.linspace(xz.extent_um[2], xz.extent_um[3], xz.values.shape[0] + 1)
    z_axis = (z_axis[:-1] + z_axis[1:]) / 2
    centres = _z_centres_along_x(xz.values, z_axis)
    assert centres.size >= 5
    assert np.ptp(centres) < 0.25 * THICKNESS_M * 1e6          # flat band at z = 0 (voxels 60–80 nm)
    assert abs(float(np.mean(centres))) < 0.1 * THICKNESS_M * 1e6
    # the symmetric axes (θ_B only) put the same slab on a tilted band: the test can fail
    sym = sample_frame(SHAPE, vox, theta_bragg_rad=geom.theta_bragg_rad)
    xz_sym = sample_planes(np.abs(rho), sym, centre_m=(0.0, 0.0, 0.0))[0]
    z_sym = np.linspace(xz_sym.extent_um[2], xz_sym.extent_um[3], xz_sym.values.shape[0] + 1)
    assert np.ptp(_z_centres_along_x(xz_sym.values, (z_sym[:-1] + z_sym[1:]) / 2)) > 0.5 * THICKNESS_M * 1e6


def test_strain_maps_on_sample_axes_keep_the_slab_flat_and_the_strain(slab, tmp_path):
    geom, rho, inside = slab
    native = strain_native(rho, geom, support=inside, options=StrainOptions(remove_ramp=False))
    on_sample = map_to_reflection_frame(native, geom, axes=np.eye(3))
    assert on_sample.frame == "sample"
    eps = np.asarray(on_sample.eps_zz)
    assert np.nanmedian(eps) == pytest.approx(EPS, rel=1e-3)
    # valid voxels lie within the slab |z| < T/2 + one voxel, and they span x
    n = np.argwhere(on_sample.mask)
    z_m = np.asarray(on_sample.origin_m)[2] + n[:, 2] * on_sample.voxel_size_m[2]
    x_m = np.asarray(on_sample.origin_m)[0] + n[:, 0] * on_sample.voxel_size_m[0]
    assert np.all(np.abs(z_m) <= THICKNESS_M / 2 + on_sample.voxel_size_m[2])
    assert np.ptp(x_m) > 5 * THICKNESS_M
    out = save_strain_slices(tmp_path / "strain.png", native, geometry=geom)
    assert out.exists() and out.stat().st_size > 10_000
    with pytest.raises(ValueError, match="orthonormal"):
        map_to_reflection_frame(native, geom, axes=np.ones((3, 3)))
