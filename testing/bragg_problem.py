"""A tiny noise-free Bragg-ptychography problem built with the inversion's own operators.

Fine for unit tests of the solvers (the simulator-based tests live elsewhere).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from analysis.bragg.operators import view_grid
from analysis.bragg.scan import BraggScan
from analysis.bragg.solvers import BraggData, BraggModel, BraggState
from analysis.bragg.solvers.support import slab_support
from analysis.dataset import BraggDataset
from analysis.geometry import BraggGeometry, cubic_d_spacing_m


def tiny_geometry(upsampling: int = 1, n_angles: int = 12) -> BraggGeometry:
    """W(220) at 8 keV, 16 × 12 crop, fine step δθ = 0.004° (R3 ≈ 2.2 µm)."""
    return BraggGeometry(energy_kev=8.0, d_spacing_m=cubic_d_spacing_m(3.1652e-10, (2, 2, 0)),
                         detector_distance_m=1.4, n_rows_px=32, n_cols_px=12, n_angles=n_angles,
                         rocking_step_deg=0.004 * upsampling,
                         upsampling=upsampling, bragg_angle_deg=43.9)


def gaussian_probe(geometry: BraggGeometry, sigma_px: tuple[float, float], curvature: float = 0.0,
                   dtype=np.complex128) -> np.ndarray:
    """P2 (N2, N3): Gaussian on the oblique section with an optional quadratic phase."""
    n2, n3 = geometry.recon_shape[1:]
    y = (np.arange(n2) - n2 // 2)[:, None]
    z = (np.arange(n3) - n3 // 2)[None, :]
    amp = np.exp(-0.5 * ((y / sigma_px[0]) ** 2 + (z / sigma_px[1]) ** 2))
    return (amp * np.exp(1j * curvature * (y ** 2 + 0.7 * z ** 2 + 0.3 * y * z))).astype(dtype)


@dataclass
class Problem:
    """Everything a solver test needs."""

    geometry: BraggGeometry
    op: BraggModel
    data: BraggData
    true_object: np.ndarray
    true_probe: np.ndarray
    true_support: np.ndarray
    support: np.ndarray
    stage_xyz_m: np.ndarray
    centre_vox: np.ndarray


def make_problem(*, upsampling: int = 1, n_angles: int = 12, step_m: float = 0.25e-6, n_side: int = 4,
                 thickness_m: float = 0.35e-6, support_thickness_m: float = 0.5e-6, seed: int = 0,
                 edge_sigma_vox: float = 1.0,
                 truth_margin_m: float = 0.2e-6,
                 probe_sigma_px: tuple[float, float] = (1.3, 2.0), dtype=np.complex128) -> Problem:
    """Jittered raster over a tilted slab with a smooth phase field; noise-free intensities."""
    rng = np.random.default_rng(seed)
    g = tiny_geometry(upsampling, n_angles)
    xs = (np.arange(n_side) - (n_side - 1) / 2) * step_m
    sx, sy = np.meshgrid(xs, xs, indexing="ij")
    stage = np.stack([sx.ravel(), sy.ravel(), np.zeros(sx.size)], axis=1)
    stage[:, :2] += rng.uniform(-0.15, 0.15, stage[:, :2].shape) * step_m
    vg = view_grid(g, stage, margin_vox=1)
    centre = vg.origin_vox
    true_s = slab_support(g, vg.object_shape, centre, thickness_m + truth_margin_m, 5.5, -2.0)
    soft = gaussian_filter(slab_support(g, vg.object_shape, centre, thickness_m, 5.5, -2.0).astype(float),
                           edge_sigma_vox)
    sup = slab_support(g, vg.object_shape, centre, support_thickness_m, 5.5, -2.0)
    shape = vg.object_shape
    idx = np.meshgrid(*(np.arange(n) - c for n, c in zip(shape, centre, strict=True)), indexing="ij")
    phase = 1.2 * np.sin(2 * np.pi * idx[1] / 7.0) * np.cos(2 * np.pi * idx[0] / 17.0) + 0.1 * idx[2] ** 2
    amp = 1.0 + 0.2 * np.cos(2 * np.pi * (idx[0] + idx[1]) / 11.0)
    obj = (soft * true_s * amp * np.exp(1j * phase)).astype(dtype)
    probe = gaussian_probe(g, probe_sigma_px, 0.08, dtype)
    op = BraggModel.from_geometry(g, shape)
    inten = np.empty((stage.shape[0],) + op.data_shape)
    for j in range(stage.shape[0]):
        sl = op.view(vg.offsets_vox[j])
        psi = op.fourier.forward(op.probe_at(probe, vg.shifts_px[j]) * obj[sl])
        inten[j] = np.abs(psi) ** 2
    scale = 1e4 / inten.max()
    obj = obj * np.sqrt(scale)
    inten *= scale
    mask = np.ones(op.data_shape, bool)
    mask[:, 5, :] = False                                   # a detector gap column
    data = BraggData(intensities=inten.astype(np.float64 if dtype == np.complex128 else np.float32),
                     mask=mask, offsets_vox=vg.offsets_vox, shifts_px=vg.shifts_px)
    return Problem(g, op, data, obj, probe, true_s, sup, stage, centre)


def initial_state(p: Problem, probe: np.ndarray, background: float = 0.0) -> BraggState:
    """Uniform slab ρ on the support, the given P2, b on ω = 1."""
    obj = p.support.astype(p.true_object.dtype)
    b = np.where(p.data.mask, background, 0.0)
    return BraggState(object=obj, probe=probe.astype(p.true_object.dtype).copy(), background=b,
                      support=p.support.copy())


def perturbed_state(p: Problem, rng: np.random.Generator, background: float = 0.5) -> BraggState:
    """A Gaussian-probe start whose slab ρ is randomly perturbed (±30 % amplitude, ±0.5 rad phase) and
    scaled to the data (complex64 with float32 data, else complex128): a generic point for cost tests.
    """
    st = initial_state(p, gaussian_probe(p.geometry, (1.6, 1.8), 0.05), background=background)
    real = p.data.intensities.dtype
    cplx = np.result_type(real, np.complex64)
    pert = (1 + 0.3 * rng.standard_normal(st.object.shape)) * np.exp(0.5j * rng.standard_normal(st.object.shape))
    st.object = (st.object * pert * np.sqrt(1e4 / 50)).astype(cplx)
    st.probe = st.probe.astype(cplx)
    st.background = st.background.astype(real)
    return st


def near_truth_state(p: Problem, rng: np.random.Generator) -> BraggState:
    """The true ρ and P2 with 5 % noise (ρ on the support only), in the data's precision: a start
    where the CG line search takes its quadratic step.
    """
    cplx = np.result_type(p.data.intensities.dtype, np.complex64)
    st = initial_state(p, p.true_probe * (1 + 0.05 * rng.standard_normal(p.true_probe.shape)))
    st.object = (p.true_object + 0.05 * np.abs(p.true_object).max() * p.support * rng.standard_normal(
        p.true_object.shape)).astype(cplx)
    st.probe = st.probe.astype(cplx)
    st.background = st.background.astype(p.data.intensities.dtype)
    return st


def with_validity(data: BraggData, case: str, rng: np.random.Generator) -> BraggData:
    """``data`` with a random per-frame (``case='frames'``, position 1 unmeasured) or per-pixel (``'pixels'``)
    validity mask; any other case returns it unchanged.
    """
    if case == "frames":
        fv = rng.random((data.n_positions, data.intensities.shape[-1])) > 0.3
        fv[1] = False                                       # a position with nothing measured yet
        return dataclasses.replace(data, frame_valid=fv)
    if case == "pixels":
        return dataclasses.replace(data, frame_valid=rng.random(data.intensities.shape) > 0.2)
    return data


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def object_error(est: np.ndarray, truth: np.ndarray, region: np.ndarray, remove_ramp: bool = True) -> float:
    """‖c e^{iκ·r} ρ̂ − ρ‖_S / ‖ρ‖_S after fitting a complex scale c and (optionally) a linear ramp κ."""
    e = est[region]
    t = truth[region]
    if remove_ramp:
        idx = np.stack(np.nonzero(region), axis=1).astype(float)
        w = np.abs(t) * np.abs(e)
        z = t * np.conj(e)
        # κ from the amplitude-weighted least-squares fit of the (locally unwrapped) phase difference
        ph = np.angle(z * np.conj(np.sum(z)))
        a = np.concatenate([idx - idx.mean(0), np.ones((idx.shape[0], 1))], axis=1) * w[:, None]
        kappa = np.linalg.lstsq(a, ph * w, rcond=None)[0]
        e = e * np.exp(1j * ((idx - idx.mean(0)) @ kappa[:3]))
    c = np.vdot(e, t) / np.vdot(e, e)
    return float(np.linalg.norm(c * e - t) / np.linalg.norm(t))


def illumination(p: Problem, probe: np.ndarray | None = None) -> np.ndarray:
    """Σ_j |P_j|² on the object grid (NO1, NO2, NO3)."""
    probe = p.true_probe if probe is None else probe
    out = np.zeros(p.op.object_shape)
    for j in range(p.data.n_positions):
        out[p.op.view(p.data.offsets_vox[j])] += np.abs(p.op.probe_at(probe, p.data.shifts_px[j])) ** 2
    return out


def well_lit_region(p: Problem, fraction: float = 0.2) -> np.ndarray:
    """True support where the illumination exceeds ``fraction`` of its maximum."""
    ill = illumination(p)
    return p.true_support & (ill >= fraction * ill.max())


def band_limit(p: Problem, obj: np.ndarray, fraction: float = 1.0) -> np.ndarray:
    """Keep the object frequencies inside the measured sheared band (docs/geometry.md, Operators).

    The crop keeps |f1 − (Δq3 u1 Δr1 N3 / 2π) f3| ≤ fraction · N1 / (2 N1'), f in cycles per
    voxel; frequencies beyond it along r1 are never measured (the probe is invariant along
    k_i ≈ e1), so a test can only ask for the object inside this band.
    """
    n1p, _, n3 = p.op.box_shape
    n1 = p.op.data_shape[0]
    c = p.op.fourier.shear_rad[0] * n3 / (2 * np.pi)
    f1 = np.fft.fftfreq(obj.shape[0])[:, None, None]
    f3 = np.fft.fftfreq(obj.shape[2])[None, None, :]
    keep = np.abs(f1 - c * f3) <= fraction * n1 / (2 * n1p)
    return np.fft.ifftn(np.fft.fftn(obj) * keep)


def probe_error(est: np.ndarray, truth: np.ndarray, remove_ramp: bool = True) -> float:
    """Intensity-weighted ‖c e^{iκ·r} P̂2 − P2‖ / ‖P2‖ after fitting c (and a 2D ramp κ)."""
    region = np.abs(truth) ** 2 >= 1e-3 * np.max(np.abs(truth) ** 2)
    return object_error(est[..., None], truth[..., None], region[..., None], remove_ramp)


def engine_inputs(p: Problem, *, with_object_shape: bool = False) -> dict:
    """Keyword arguments of ``analysis.bragg.engine.Reconstruction`` for a test problem."""
    g = p.geometry
    frames = np.moveaxis(p.data.intensities, -1, 1).astype(np.float32)       # (POS, ANGLE, N1, N2)
    mask = np.moveaxis(p.data.mask, -1, 0)
    offs = (np.arange(g.n_angles) - g.n_angles // 2) * g.rocking_step_deg
    out = dict(geometry=g, frames=frames, mask=mask, stage_xyz_m=p.stage_xyz_m, rocking_offsets_deg=offs,
               probe=p.true_probe)
    if with_object_shape:
        out["object_shape"] = p.op.object_shape
    return out


def scan_of(p: Problem) -> BraggScan:
    """The problem as the validated :class:`analysis.bragg.BraggScan` that :func:`analysis.bragg.reconstruct` takes."""
    kw = engine_inputs(p)
    return BraggScan(geometry=kw["geometry"], frames=kw["frames"], mask=kw["mask"], stage_xyz_m=kw["stage_xyz_m"],
                     rocking_offsets_deg=kw["rocking_offsets_deg"], sample={"name": "bragg-problem"})


def dataset_of(p: Problem) -> BraggDataset:
    """The problem as a grid-layout :class:`analysis.dataset.BraggDataset` (what a dataset file holds)."""
    kw = engine_inputs(p)
    g = p.geometry
    n_pos, n_ang = kw["frames"].shape[:2]
    angles = np.broadcast_to(g.theta_bragg_deg + kw["rocking_offsets_deg"], (n_pos, n_ang)).copy()
    stage = np.broadcast_to(p.stage_xyz_m[:, None, :], (n_pos, n_ang, 3)).copy()
    return BraggDataset(frames=kw["frames"], rocking_angle_deg=angles, stage_position_m=stage,
                        detector_mask=kw["mask"].all(axis=0), geometry=g, sample={"name": "bragg-problem"})
