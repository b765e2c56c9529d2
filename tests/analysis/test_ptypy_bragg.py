"""Data made by another code: the ptypy Bragg3dSimScan importer (analysis.bragg.ptypy_bragg, pxm import-ptypy-bragg).

tests/data/ptypy_bragg_subset.h5 holds 3 of the 13 positions of ../shared/data/ptypy_bragg_case_dev.h5 as
ptypy wrote them (noise-free intensities, its 3D probe and the true object).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from analysis.bragg.operators.scan import view_grid
from analysis.bragg.probe_file import read_probe_file
from analysis.bragg.ptypy_bragg import (
    compare_with_truth,
    lattice_transfer,
    probe_p2,
    ptypy_model_intensities,
    pxm_dataset,
    truth_on_grid,
)
from analysis.bragg.solvers.model import BraggModel
from analysis.dataset import read_dataset, scan_axes
from testing.ptypy_subset import PTYPY_SUBSET_PATH, read_subset


@pytest.fixture(scope="module")
def case():
    return read_subset()


def _views(case):
    d = np.asarray(case.voxel_natural_m)
    half = np.asarray(case.probe3d.shape) // 2
    return [np.rint((p - case.truth_origin_m) / d).astype(int) - half for p in case.positions_natural_m]


def test_ptypy_model_with_effective_positions_reproduces_its_frames(case):
    """Reading the file right: ptypy's documented propagator, the truth and the rounded view positions give
    the stored frames (to float32 rounding)."""
    for n, start in enumerate(_views(case)):
        model = ptypy_model_intensities(case.truth, case.probe3d, start)
        assert np.abs(model - case.intensities[n]).sum() < 1e-5 * case.intensities[n].sum()


def _pxm_far_field(case, obj_natural_fn, probe_perp_fn, upsampling):
    """(pxm model, ptypy model) intensities of every position for analytic object and probe fields."""
    th = math.radians(case.theta_bragg_deg)
    d3, d1, d2 = case.voxel_natural_m
    n3, n1, n2 = case.probe3d.shape
    r3, r1, r2 = np.meshgrid((np.arange(n3) - n3 // 2) * d3, (np.arange(n1) - n1 // 2) * d1,
                             (np.arange(n2) - n2 // 2) * d2, indexing="ij")
    probe3d = probe_perp_fn(-(r1 * math.cos(th) + r3 * math.sin(2 * th)), r2)
    m = case.truth.shape
    obj_lattice = obj_natural_fn(*np.meshgrid(*[np.arange(k, dtype=float) for k in m], indexing="ij"))
    c2 = dataclasses.replace(case, probe3d=probe3d)
    ds = pxm_dataset(c2, upsampling=upsampling)
    g = ds.geometry
    stage, _ = scan_axes(ds.rocking_angle_deg, ds.stage_position_m, g)
    grid = view_grid(g, stage, margin_vox=2)
    from analysis.bragg.probe_init import p2_plane_coordinates_m

    p2 = probe_perp_fn(*p2_plane_coordinates_m(g))
    ax = g.lab_axes()
    e = np.stack([ax["e1"], ax["e2"], ax["e3"]])
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in grid.object_shape], indexing="ij"), -1)
    lab = ((idx - grid.origin_vox) * np.asarray(g.voxel_size_m)) @ e
    basis = np.array([[math.cos(th), 0, math.sin(th)], [0, 0, 1.0], [0, 1.0, 0]])   # natural axes in lab
    frac = (lab @ np.linalg.inv(basis) - case.truth_origin_m) / np.asarray(case.voxel_natural_m)
    obj = obj_natural_fn(frac[..., 0], frac[..., 1], frac[..., 2])
    model = BraggModel.from_geometry(g, grid.object_shape)
    out = []
    for n, start in enumerate(_views(case)):
        psi = model.fourier.forward(model.probe_at(p2, grid.shifts_px[n]) * obj[model.view(grid.offsets_vox[n])])
        rows = np.mod(n1 - np.arange(n1), n1)                           # pxm's row order (the importer's)
        out.append((np.moveaxis(np.abs(psi) ** 2, -1, 0),
                    ptypy_model_intensities(obj_lattice, probe3d, start)[:, rows]))
    return out, ds.detector_mask


def _r_factor(a2, b2, mask):
    a, b = np.sqrt(a2[mask]), np.sqrt(b2[mask])
    s = (a @ b) / (a @ a)
    return float(np.abs(s * a - b).sum() / b.sum())


def test_pxm_model_is_ptypys_model_on_smooth_fields(case):
    """The conversion (rows reversed, angles as FFT frequency, natural → lab, P2 = P⊥ at its points) makes
    pxm's sheared model equal ptypy's lattice model: R = 8×10⁻⁴ at U = 2 for a smooth probe and object;
    each wrong convention costs R > 0.2."""
    m = case.truth.shape

    def obj(j3, j1, j2):
        env = np.where((j3 > -0.5) & (j3 < m[0] - 0.5), np.sin(np.pi * (j3 + 0.5) / m[0]) ** 2, 0.0)
        u1, u2 = j1 - m[1] / 2, j2 - m[2] / 2                    # lopsided along r1 and r2, ramps in phase
        return env * (1.5 + np.tanh(u1 / 2 + u2 / 10)) * np.exp(
            -(u1 / 3.0) ** 2 - (u2 / 20.0) ** 2 + 1j * (0.5 * np.sin(2 * np.pi * j3 / m[0]) + 0.15 * u2 + 0.4 * u1))

    def probe(p1, p2):
        return np.exp(-(p1 / 0.5e-6) ** 2 - (p2 / 0.5e-6) ** 2 + 1j * p1 / 0.3e-6)

    pairs, mask = _pxm_far_field(case, obj, probe, upsampling=2)
    full = np.broadcast_to(mask[None], pairs[0][0].shape)
    right = [_r_factor(a, b, full) for a, b in pairs]
    assert max(right) < 2e-3, right
    a, b = pairs[0]
    n1 = b.shape[1]
    for wrong in (b[:, ::-1, :], b[:, :, np.mod(n1 - np.arange(n1), n1)], b[::-1]):   # rows, columns, angles
        assert _r_factor(a, wrong, full) > 0.2


def test_truth_round_trips_between_grid_and_lattice_exactly(case):
    """The band-consistent transfer: the truth on pxm's grid compares to itself with E ~ 0, and a shift
    along k_i (the extruded probe's ambiguity) is found and removed."""
    ds = pxm_dataset(case, upsampling=2)
    g = ds.geometry
    stage, _ = scan_axes(ds.rocking_angle_deg, ds.stage_position_m, g)
    grid = view_grid(g, stage, margin_vox=2)
    tr = lattice_transfer(g, case.theta_bragg_deg, grid.object_shape, grid.origin_vox, grid.offsets_vox)
    obj = truth_on_grid(case, tr)
    assert compare_with_truth(obj, tr, case).error < 1e-10
    # the truth moved 60 nm along k_i: still E ≈ 0 after the shift search, t = −60 nm
    box = tr._box(obj)  # noqa: SLF001
    psi = tr._op().forward(box) * np.exp(1j * tr._q_dot(60e-9 * g.lab_axes()["k_in"]))  # noqa: SLF001
    moved = np.zeros_like(obj)
    a, c = tr.box_start_vox
    moved[a:a + box.shape[0], :, c:c + box.shape[2]] = tr._op().adjoint(psi)  # noqa: SLF001
    res = compare_with_truth(moved, tr, case)
    assert res.error < 0.02
    assert res.beam_shift_m == pytest.approx(-60e-9, abs=3e-9)
    # and a wrong object is far: the truth mirrored along y
    assert compare_with_truth(obj[:, ::-1, :], tr, case).error > 0.5


def test_true_object_explains_ptypys_frames_through_pxms_model(case):
    """With the real (sharp top-hat) probe the model mismatch is what the sub-voxel extrusion of a sharp
    aperture costs: the true object gives R ≈ 0.11 on ptypy's own frames; a mirrored object gives far more."""
    ds = pxm_dataset(case, upsampling=2)
    g = ds.geometry
    stage, _ = scan_axes(ds.rocking_angle_deg, ds.stage_position_m, g)
    grid = view_grid(g, stage, margin_vox=2)
    tr = lattice_transfer(g, case.theta_bragg_deg, grid.object_shape, grid.origin_vox, grid.offsets_vox)
    model = BraggModel.from_geometry(g, grid.object_shape)
    p2 = probe_p2(case, g)

    def r_of(obj):
        a, b = [], []
        for n in range(case.n_positions):
            psi = model.fourier.forward(model.probe_at(p2, grid.shifts_px[n]) * obj[model.view(grid.offsets_vox[n])])
            mm = np.broadcast_to(ds.detector_mask[None], ds.frames[n].shape)
            a.append(np.moveaxis(np.abs(psi) ** 2, -1, 0)[mm])
            b.append(ds.frames[n][mm])
        return _r_factor(np.concatenate(a), np.concatenate(b), slice(None))

    obj = truth_on_grid(case, tr)
    assert r_of(obj) < 0.15
    assert r_of(obj[:, ::-1, :]) > 2 * r_of(obj)


def test_import_command_writes_a_dataset_and_probe_pxm_reads(tmp_path, capsys):
    from pxm.cli import main

    out = tmp_path / "case.h5"
    assert main(["import-ptypy-bragg", str(PTYPY_SUBSET_PATH), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "U = 3" in text and "case_probe.h5" in text
    ds = read_dataset(out)
    assert ds.frames.shape == (3, 24, 96, 96) and ds.geometry.upsampling == 3
    assert not ds.detector_mask[0].any() and ds.detector_mask[1:].all()
    pf = read_probe_file(tmp_path / "case_probe.h5")
    assert pf.probe.shape == ds.geometry.recon_shape[1:]
    # frames: pxm row r is ptypy row (N1 − r) mod N1
    case = read_subset()
    assert np.array_equal(ds.frames[1, :, 1:], case.intensities[1, :, :0:-1])
    # wrong input: one line, non-zero exit
    assert main(["import-ptypy-bragg", str(out), "-o", str(tmp_path / "x.h5")]) == 1
    assert "not a ptypy Bragg3dSimScan export" in capsys.readouterr().err
