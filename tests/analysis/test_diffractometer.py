"""General diffractometer geometry (issue 19): xrayutilities angles → q basis, frame, operator, strain maps."""

import dataclasses
import json
import math

import numpy as np
import pytest

from analysis.bragg.operators.fourier import FoldedFourier3D, ShearedFourier3D, shear_per_index_rad
from analysis.bragg.operators.probe import extrusion_slope_px, probe_na_mask
from analysis.diffractometer import (
    GEOMETRY_PRESETS,
    Diffractometer,
    asymmetric_in_plane,
    asymmetric_out_of_plane,
    native_sample_coordinates_m,
    reflection_axes,
    strain_maps_sample_frame,
    symmetric_coplanar,
)
from analysis.geometry import BraggGeometry, seed_geometry
from analysis.strain import StrainOptions
from sim.sample import CrystalSample, HomogeneousDisplacement, Slab


def _seed_from_angles() -> BraggGeometry:
    return symmetric_coplanar().bragg_geometry(n_rows_px=200, n_cols_px=160, n_angles=42, upsampling=3,
                                               hkl=(2, 2, 0))


def test_symmetric_coplanar_instance_gives_todays_numbers():
    old, new = seed_geometry(), _seed_from_angles()
    assert new.recon_shape == old.recon_shape == (294, 160, 126)
    for name in ("theta_bragg_deg", "q_bragg_per_m", "dq_detector_per_m", "dq_rocking_per_m", "n1_min"):
        assert getattr(new, name) == pytest.approx(getattr(old, name), rel=1e-8), name
    for name in ("rocking_direction", "voxel_size_m", "voxel_size_nyquist_m", "window_m"):
        assert np.allclose(getattr(new, name), getattr(old, name), rtol=1e-8, atol=1e-12), name
    for key, v in old.lab_axes().items():
        assert np.allclose(new.lab_axes()[key], v, atol=1e-12), key
    assert np.allclose(new.measured_q_basis_per_m(), old.measured_q_basis_per_m(), rtol=1e-8, atol=1e-6)
    assert np.allclose(extrusion_slope_px(new), extrusion_slope_px(old), rtol=1e-8, atol=1e-14)
    assert np.allclose(shear_per_index_rad(new), shear_per_index_rad(old), rtol=1e-8, atol=1e-14)
    t_m, w_m = 0.45e-6, 1.5e-6
    assert new.probe_width_limit_m(t_m) == pytest.approx(old.probe_width_limit_m(t_m), rel=1e-8)
    assert new.max_rocking_step_deg(w_m, t_m) == pytest.approx(old.max_rocking_step_deg(w_m, t_m), rel=1e-8)
    assert new.footprint_x_m(w_m, t_m) == pytest.approx(old.footprint_x_m(w_m, t_m), rel=1e-12)
    assert np.array_equal(probe_na_mask(new, 5e-4, 4e-4), probe_na_mask(old, 5e-4, 4e-4))
    with pytest.raises(ValueError, match="sampling condition"):
        new.check_sampling(6e-6, t_m)


@pytest.mark.parametrize("name", sorted(GEOMETRY_PRESETS))
def test_q_basis_matches_the_flat_ewald_steps(name):
    d = GEOMETRY_PRESETS[name]()
    b = d.q_basis_per_m()
    k = 2 * math.pi / d.wavelength_m
    for v in (b.per_row_per_m, b.per_col_per_m):          # k p / D per pixel, ⟂ k_f
        assert np.linalg.norm(v) == pytest.approx(k * d.pixel_size_m / d.detector_distance_m, rel=1e-6)
    k_out = b.k_in * k + b.q_bragg_per_m
    assert np.linalg.norm(k_out) == pytest.approx(k, rel=1e-12)   # elastic
    assert abs(b.per_row_per_m @ k_out) < 1e-6 * np.linalg.norm(b.per_row_per_m) * k
    # a rotation δ of the sample moves q by δ |a × Q| (a ⟂ Q only in the coplanar cases)
    dq_expected = math.radians(d.rocking_step_deg) * np.linalg.norm(b.q_bragg_per_m)
    if name != "asymmetric-out-of-plane":
        assert np.linalg.norm(b.per_step_per_m) == pytest.approx(dq_expected, rel=1e-6)
    else:
        assert np.linalg.norm(b.per_step_per_m) < dq_expected


def test_out_of_plane_geometry_shears_along_both_detector_axes():
    g = asymmetric_out_of_plane().bragg_geometry(n_rows_px=32, n_cols_px=32, n_angles=24)
    u1, u2, u3 = g.rocking_direction
    assert abs(u1) > 0.1 and abs(u2) > 0.1 and u3 > 0.1
    assert g.recon_shape[1] > g.n_cols_px >= g.n2_min - g.n_planes * g.dq_rocking_per_m * abs(u2) / g.dq_detector_per_m
    assert g.recon_shape[1] >= g.n2_min
    s1, s2 = shear_per_index_rad(g)
    assert s1 != 0 and s2 != 0
    # asymmetric in-plane: Q tilted by the asymmetry from the surface normal, no e2 shear
    ga = asymmetric_in_plane(asymmetry_deg=15.0).bragg_geometry(n_rows_px=32, n_cols_px=32, n_angles=24)
    assert math.degrees(math.acos(ga.lab_axes()["q_hat"] @ np.array([0.0, 0.0, 1.0]))) == pytest.approx(15.0, abs=1e-6)
    assert ga.rocking_direction[1] == pytest.approx(0.0, abs=1e-12) and ga.recon_shape[1] == 32


def _dft(obj: np.ndarray, q_m: np.ndarray, r_m: np.ndarray) -> np.ndarray:
    """Ψ(q) = N^-1/2 Σ_r ψ(r) e^{-i q·r}, brute force."""
    phase = np.exp(-1j * (q_m.reshape(-1, 3) @ r_m.reshape(-1, 3).T))
    return (phase @ obj.ravel()).reshape(q_m.shape[:-1]) / math.sqrt(obj.size)


@pytest.mark.parametrize("upsampling", [1, 2])
def test_forward_operator_equals_bruteforce_dft_at_the_measured_q_points(upsampling):
    d = asymmetric_out_of_plane(rocking_step_deg=0.02)
    g = d.bragg_geometry(n_rows_px=8, n_cols_px=6, n_angles=4, upsampling=upsampling)
    assert all(abs(v) > 0.1 for v in g.rocking_direction)
    rng = np.random.default_rng(3)
    box = g.recon_shape
    obj = rng.normal(size=box) + 1j * rng.normal(size=box)
    r = native_sample_coordinates_m(g, box)
    b = g.measured_q_basis_per_m() * 2 * math.pi                # (row, col, measured step) in the e-frame
    e = np.stack([g.lab_axes()[k] for k in ("e1", "e2", "e3")])
    m1, m2, k = (np.arange(n) - n // 2 for n in (g.n_rows_px, g.n_cols_px, g.n_angles))
    q_lin = (m1[:, None, None, None] * b[0] + m2[None, :, None, None] * b[1] + k[None, None, :, None] * b[2]) @ e
    op = FoldedFourier3D.from_geometry(g)
    model = op.forward(obj)                                     # measured planes, 1/√(N1' N2' N3)
    assert np.allclose(model, _dft(obj, q_lin, r), rtol=0, atol=1e-9 * np.abs(model).max())
    if upsampling == 1:
        assert np.allclose(ShearedFourier3D.from_geometry(g).forward(obj), model, atol=1e-9 * np.abs(model).max())
    # the exact q of every pixel and angle from xrayutilities (Ewald curvature, rotating detector
    # basis): the operator's linear q-grid is the paraxial limit, here within a few % of |Ψ|
    offs = k * d.rocking_step_deg
    q_exact = d.q_exact_per_m(g.n_rows_px, g.n_cols_px, offs) - d.q_basis_per_m().q_bragg_per_m
    q_exact = np.moveaxis(q_exact, 0, 2)
    assert np.abs(q_exact - q_lin).max() < 1e-3 * np.abs(q_lin).max()
    smooth = np.exp(-np.sum((r / (0.25 * np.abs(r).max(axis=(0, 1, 2)))) ** 2, axis=-1)).astype(complex)
    ref = _dft(smooth, q_lin, r)
    assert np.linalg.norm(_dft(smooth, q_exact, r) - ref) < 0.05 * np.linalg.norm(ref)


def _slab_in_reflection_frame(geometry: BraggGeometry, **homogeneous: float) -> CrystalSample:
    """Simulator sample whose z is Q̂ and whose slab normal is the sample surface normal."""
    n = reflection_axes(geometry) @ np.asarray(geometry.frame.surface_normal if geometry.frame else (0, 0, 1.0))
    tilt_x = -math.degrees(math.asin(n[1]))
    tilt_y = math.degrees(math.atan2(n[0], n[2]))
    return CrystalSample(slab=Slab(thickness_m=0.6e-6, tilt_x_deg=tilt_x, tilt_y_deg=tilt_y),
                         homogeneous=HomogeneousDisplacement(**homogeneous))


@pytest.mark.parametrize("name", ["symmetric", "asymmetric-in-plane", "asymmetric-out-of-plane"])
def test_uniform_strain_and_tilt_are_recovered_in_the_sample_frame(name):
    g = GEOMETRY_PRESETS[name](rocking_step_deg=0.01).bragg_geometry(n_rows_px=32, n_cols_px=32, n_angles=24)
    truth = {"strain": 1.5e-4, "tilt_x_rad": -1.0e-4, "tilt_y_rad": 0.7e-4}
    sample = _slab_in_reflection_frame(g, **truth)
    refl = reflection_axes(g)
    pts = native_sample_coordinates_m(g, g.recon_shape) @ refl.T      # (x', y', z') of each native voxel
    rho = sample.complex_density(pts[..., 0], pts[..., 1], pts[..., 2], q_bragg_per_m=g.q_bragg_per_m)
    maps = strain_maps_sample_frame(rho, g, options=StrainOptions(remove_ramp=False))
    assert maps.frame == "sample" and int(maps.mask.sum()) > 200
    assert np.nanmax(np.abs(maps.eps_zz[maps.mask] - truth["strain"])) < 1e-8
    assert np.nanmax(np.abs(maps.omega_x_rad[maps.mask] - truth["tilt_x_rad"])) < 1e-8
    assert np.nanmax(np.abs(maps.omega_y_rad[maps.mask] - truth["tilt_y_rad"])) < 1e-8
    # the sample-frame grid puts the slab where the simulator has it
    v = maps.voxel_size_m[0]
    axes = [maps.origin_m[i] + v * np.arange(maps.eps_zz.shape[i]) for i in range(3)]
    xs, ys, zs = np.meshgrid(*axes, indexing="ij")
    inside = sample.density(xs, ys, zs)
    assert inside[maps.mask].mean() > 0.97
    # a wrong sign of the strain is not recovered (the test can fail)
    flipped = strain_maps_sample_frame(np.conj(rho), g, options=StrainOptions(remove_ramp=False))
    assert np.nanmedian(flipped.eps_zz[flipped.mask]) == pytest.approx(-truth["strain"], rel=1e-6)


def test_symmetric_sample_frame_maps_equal_the_historical_strain_route():
    from analysis.strain import compute_strain
    g0 = seed_geometry(upsampling=1, n_angles=16, n_rows_px=24, n_cols_px=24)
    g = symmetric_coplanar().bragg_geometry(n_rows_px=24, n_cols_px=24, n_angles=16)
    sample = _slab_in_reflection_frame(g, strain=1e-4, tilt_x_rad=0.5e-4, tilt_y_rad=-0.5e-4)
    pts = native_sample_coordinates_m(g, g.recon_shape)
    rho = sample.complex_density(pts[..., 0], pts[..., 1], pts[..., 2], q_bragg_per_m=g.q_bragg_per_m)
    old = compute_strain(rho, voxel_size_m=g0.voxel_size_m, theta_bragg_rad=g0.theta_bragg_rad,
                         q_bragg_per_m=g0.q_bragg_per_m, options=StrainOptions(remove_ramp=False))
    new = strain_maps_sample_frame(rho, g, options=StrainOptions(remove_ramp=False))
    assert np.nanmean(old.eps_zz[old.mask]) == pytest.approx(np.nanmean(new.eps_zz[new.mask]), rel=1e-6)
    assert np.nanmean(old.omega_y_rad[old.mask]) == pytest.approx(np.nanmean(new.omega_y_rad[new.mask]), rel=1e-6)


def test_geometry_and_diffractometer_metadata_round_trip_through_json():
    d = asymmetric_out_of_plane()
    g = d.bragg_geometry(n_rows_px=16, n_cols_px=16, n_angles=8, upsampling=2, hkl=(1, 1, 3))
    md = json.loads(json.dumps(g.to_metadata()))
    g2 = BraggGeometry.from_metadata(md)
    assert g2.recon_shape == g.recon_shape and g2.frame is not None
    assert np.allclose(g2.frame.rocking_direction, g.frame.rocking_direction)
    d2 = Diffractometer.from_metadata(json.loads(json.dumps(d.to_metadata())))
    assert d2 == d
    assert "frame" not in seed_geometry().to_metadata()         # format-1.0 geometry unchanged


def test_bad_diffractometers_fail_with_one_clear_line():
    base = symmetric_coplanar()
    kw = {f: getattr(base, f) for f in ("energy_kev", "sample_circles", "sample_angles_deg", "rocking_circle",
                                        "rocking_step_deg", "detector_circles", "detector_angles_deg",
                                        "detector_distance_m")}
    with pytest.raises(ValueError, match="one angle per circle"):
        Diffractometer(**{**kw, "sample_angles_deg": (1.0, 2.0)})
    with pytest.raises(ValueError, match="axis strings"):
        Diffractometer(**{**kw, "sample_circles": ("q+",)})
    with pytest.raises(ValueError, match="perpendicular"):
        Diffractometer(**kw, row_direction="z-", col_direction="z+")
    with pytest.raises(ValueError, match="rocking_circle"):
        Diffractometer(**{**kw, "rocking_circle": 3})
    # rocking about Q (φ about the surface normal in a symmetric reflection) moves nothing
    phi = Diffractometer(**{**kw, "sample_circles": ("x+", "z+"), "sample_angles_deg": (43.9, 0.0),
                            "rocking_circle": 1})
    with pytest.raises(ValueError, match="rocking"):
        phi.frame()


def test_dataset_file_carries_the_diffractometer_and_reads_format_1p0(tmp_path):
    import h5py

    from analysis.dataset import BraggDataset, read_dataset, scan_axes, write_dataset

    d = asymmetric_out_of_plane()
    g = d.bragg_geometry(n_rows_px=8, n_cols_px=8, n_angles=4, hkl=(1, 1, 3))
    offsets = (np.arange(4) - 2) * d.rocking_step_deg
    angles = np.broadcast_to(d.sample_angles_deg[d.rocking_circle] + offsets, (2, 4)).copy()
    ds = BraggDataset(frames=np.ones((2, 4, 8, 8), np.float32), rocking_angle_deg=angles,
                      stage_position_m=np.zeros((2, 4, 3)), detector_mask=np.ones((8, 8), bool), geometry=g,
                      sample={"name": "general"})
    write_dataset(tmp_path / "g.h5", ds)
    with h5py.File(tmp_path / "g.h5") as f:
        assert f.attrs["format_version"] == "1.1"
        assert json.loads(f["geometry/diffractometer"][()])["detector_angles_deg"] == [25.0, 80.0]
    back = read_dataset(tmp_path / "g.h5").geometry
    assert back.frame == g.frame and back.recon_shape == g.recon_shape
    assert Diffractometer.from_metadata(back.diffractometer) == d
    _, offs = scan_axes(angles, ds.stage_position_m, back)          # offsets from η, not from θ_B
    assert np.allclose(offs, offsets)
    # a format-1.0 file (symmetric geometry, no frame) still reads, unchanged
    g0 = seed_geometry(n_rows_px=8, n_cols_px=8, n_angles=4, upsampling=1)
    write_dataset(tmp_path / "old.h5", dataclasses.replace(ds, geometry=g0))
    with h5py.File(tmp_path / "old.h5", "r+") as f:
        f.attrs["format_version"] = "1.0"
        assert "frame" not in f["geometry"] and "diffractometer" not in f["geometry"]
    assert read_dataset(tmp_path / "old.h5").geometry == g0


def test_the_pipeline_strain_entry_uses_the_general_frame():
    from analysis.strain import strain_from_geometry

    g = asymmetric_out_of_plane(rocking_step_deg=0.01).bragg_geometry(n_rows_px=24, n_cols_px=24, n_angles=16)
    truth = {"strain": -1.0e-4, "tilt_x_rad": 0.8e-4, "tilt_y_rad": 0.6e-4}
    sample = _slab_in_reflection_frame(g, **truth)
    pts = native_sample_coordinates_m(g, g.recon_shape) @ reflection_axes(g).T
    rho = sample.complex_density(pts[..., 0], pts[..., 1], pts[..., 2], q_bragg_per_m=g.q_bragg_per_m)
    maps = strain_from_geometry(rho, g, options=StrainOptions(remove_ramp=False))
    assert maps.frame == "reconstruction" and int(maps.mask.sum()) > 100
    assert np.allclose(maps.eps_zz[maps.mask], truth["strain"], atol=1e-8)
    assert np.allclose(maps.omega_x_rad[maps.mask], truth["tilt_x_rad"], atol=1e-8)
    assert np.allclose(maps.omega_y_rad[maps.mask], truth["tilt_y_rad"], atol=1e-8)
    # the symmetric formula applied to this geometry is wrong (Q is 11° off the e-frame's symmetric z)
    from analysis.strain import compute_strain

    wrong = compute_strain(rho, voxel_size_m=g.voxel_size_m, theta_bragg_rad=g.theta_bragg_rad,
                           q_bragg_per_m=g.q_bragg_per_m, options=StrainOptions(remove_ramp=False))
    assert np.nanmax(np.abs(wrong.eps_zz[wrong.mask] - truth["strain"])) > 1e-5
