"""``pxm demo --geometry NAME``: a simulated Bragg-ptychography scan in a general diffractometer geometry.

The science chain of the beamtime in an asymmetric or out-of-plane geometry (issue 19,
docs/geometry.md), in one process and without Bluesky/Tiled: the simulator's own summation route
(:class:`sim.general_geometry.GeneralBraggSimulator`: exact xrayutilities q of every pixel, the beam
turning with the rocking circle) makes Poisson frames of a strained, tilted slab for a raster ×
rocking scan; they are written as a format-1.1 dataset file (``/geometry/diffractometer`` holds the
circles and angles) and read back; the engine (:class:`analysis.bragg.engine.Reconstruction`, known probe)
reconstructs them on the geometry's sheared grid; strain and tilts are mapped to the reflection frame
(:func:`analysis.diffractometer.strain_maps_sample_frame`) and scored against the simulator's truth.
A control reconstructs the same file with the rocking direction's e2 component dropped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from analysis.bragg.engine import Reconstruction, scaled_recipe, seed_recipe, with_fixed_probe
from analysis.dataset import BraggDataset, read_dataset, scan_axes, write_dataset
from analysis.diffractometer import GEOMETRY_PRESETS, reflection_axes, strain_maps_sample_frame
from analysis.geometry import BraggGeometry
from analysis.strain import StrainOptions
from sim.general_geometry import GeneralBraggSimulator
from sim.probe import KBProbe
from sim.sample import CrystalSample, HomogeneousDisplacement, Slab

__all__ = ["GeneralDemoOptions", "square_roi_px", "run_general_geometry_demo", "run_general_beamtime",
           "closing_lines_general"]


@dataclass(frozen=True, kw_only=True)
class GeneralDemoOptions:
    """Size and physics of the general-geometry demo (defaults: ~1 min on 2 cores)."""

    geometry: str = "asymmetric-out-of-plane"
    """A name of :data:`analysis.diffractometer.GEOMETRY_PRESETS`."""
    roi_px: int = 20
    """Detector rows = columns of the crop."""
    n_angles: int = 10
    rocking_step_deg: float = 0.012
    detector_distance_m: float = 0.35
    n_raster: int = 3
    raster_step_m: float = 0.15e-6
    thickness_m: float = 0.25e-6
    strain: float = 2.0e-4
    tilt_x_rad: float = 1.0e-4
    tilt_y_rad: float = -0.5e-4
    peak_counts: float = 2e4
    """Expected counts in the brightest pixel (Poisson noise)."""
    n_epie: int = 100
    n_ml: int = 40
    seed: int = 2021
    with_control: bool = True
    """One-process route: also reconstruct without the rocking direction's e2 component (out-of-plane only)."""
    angles_between: bool = False
    """One-process route: centre the angles on the rocking circle's central angle as ``plans.rocking_angles_deg``
    does (an even count then sits half a step off it, as in the beamtime route); False puts frame N//2 on it."""

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRY_PRESETS:
            raise ValueError(f"geometry {self.geometry!r} is unknown; choose one of {sorted(GEOMETRY_PRESETS)}")
        for name in ("roi_px", "n_angles", "n_raster", "n_epie"):
            if getattr(self, name) < 1:
                raise ValueError(f"GeneralDemoOptions.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("rocking_step_deg", "detector_distance_m", "raster_step_m", "thickness_m", "peak_counts"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GeneralDemoOptions.{name} must be > 0, got {getattr(self, name)}")


def square_roi_px(roi_px: int | tuple[int, int] | list[int]) -> int:
    """The crop's side of the demo from ``--roi ROWS COLS`` (or one int).

    Raises
    ------
    ValueError
        ROWS != COLS: the demo simulates a square crop (the line names the fix).
    """
    if isinstance(roi_px, int):
        return roi_px
    rows, cols = (int(v) for v in roi_px)
    if rows != cols:
        raise ValueError(f"--roi {rows} {cols}: the --geometry demo simulates a square crop; give equal ROWS and COLS")
    return rows


def _raster_m(n_side: int, step_m: float, rng: np.random.Generator) -> np.ndarray:
    xs = (np.arange(n_side) - (n_side - 1) / 2) * step_m
    sx, sy = np.meshgrid(xs, xs, indexing="ij")
    s = np.stack([sx.ravel(), sy.ravel(), np.zeros(sx.size)], axis=1)
    s[:, :2] += rng.uniform(-0.15, 0.15, s[:, :2].shape) * step_m
    return s


def _section_probe(sim: GeneralBraggSimulator, g: BraggGeometry) -> np.ndarray:
    """The known probe on the engine's oblique section P2 (plane n1 = N1'//2 spanned by e2, e3)."""
    _, n2, n3 = g.recon_shape
    _, dr2, dr3 = g.voxel_size_m
    ax = g.lab_axes()
    r = (((np.arange(n2) - n2 // 2) * dr2)[:, None, None] * ax["e2"]
         + ((np.arange(n3) - n3 // 2) * dr3)[None, :, None] * ax["e3"])
    p2 = sim.probe_field(r).astype(np.complex128)
    return p2 / np.abs(p2).max()                 # the ρ/P scale is free: the engine matches it to the data


def _surface_normal(g: BraggGeometry) -> tuple[float, float, float]:
    """The slab normal of the demo's crystal in the sample frame: the diffractometer's surface normal."""
    n = g.frame.surface_normal if g.frame is not None else (0.0, 0.0, 1.0)
    return (float(n[0]), float(n[1]), float(n[2]))


def _scenario(opts: GeneralDemoOptions) -> tuple[Any, BraggGeometry, dict[str, float], GeneralBraggSimulator]:
    """(diffractometer, geometry, truth, simulator) of the demo: a strained, tilted slab parallel to the surface."""
    d = GEOMETRY_PRESETS[opts.geometry](rocking_step_deg=opts.rocking_step_deg,
                                        detector_distance_m=opts.detector_distance_m)
    g = d.bragg_geometry(n_rows_px=opts.roi_px, n_cols_px=opts.roi_px, n_angles=opts.n_angles)
    truth = {"strain": opts.strain, "tilt_x_rad": opts.tilt_x_rad, "tilt_y_rad": opts.tilt_y_rad}
    n = reflection_axes(g) @ np.asarray(g.frame.surface_normal if g.frame else (0.0, 0.0, 1.0))
    sample = CrystalSample(slab=Slab(thickness_m=opts.thickness_m, tilt_x_deg=-math.degrees(math.asin(n[1])),
                                     tilt_y_deg=math.degrees(math.atan2(n[0], n[2]))),
                           homogeneous=HomogeneousDisplacement(**truth))
    probe = KBProbe(energy_kev=d.energy_kev, na_h=6e-4, na_v=6e-4, coma_h_rad=0.8, coma_v_rad=0.8,
                    spherical_h_rad=0.5, spherical_v_rad=0.5, extent_v_m=0.6e-6, extent_h_m=0.6e-6)
    half = 0.45e-6 + opts.n_raster * opts.raster_step_m / 2
    sim = GeneralBraggSimulator(diffractometer=d, sample=sample, probe=probe, n_rows_px=opts.roi_px,
                                n_cols_px=opts.roi_px, step_m=20e-9, half_extent_m=(half, half, 0.45e-6))
    return d, g, truth, sim


def _demo_recipe(opts: GeneralDemoOptions, surface_normal: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> Any:
    """Known probe, seed schedule scaled to ``n_epie`` + ``n_ml``, the support resolved from the demo's sample.

    As ``pxm reconstruct`` does with a dataset's ``/sample`` (:func:`analysis.bragg.recipes.resolve_sample`): the
    slab schedule scaled to the crystal's thickness (T/1.4T/1.8T) and normal to the sample's surface
    (``surface_normal``, sample frame), T for the sampling check. The seed's 0.5–0.9 µm slab tilted 5.5°/−2°
    left a 0.25 µm crystal free over most of the r3 box: strain RMSE 2–3× higher, and 1.6× higher again for
    an even count of angles centred between two (docs/benchmarks.md, issue 19, "The even-angle gap").
    """
    from analysis.bragg.recipes import resolve_sample

    recipe = with_fixed_probe(scaled_recipe(seed_recipe(), n_epie_iterations=opts.n_epie, n_ml_iterations=opts.n_ml))
    recipe = resolve_sample(recipe, recipe_name="demo-known-probe",
                            sample={"thickness_m": opts.thickness_m, "surface_normal_lab": list(surface_normal)})
    return dataclasses.replace(recipe, sampling_thickness_m=opts.thickness_m, background_init=0.0)


def _score(res: Any, sim: GeneralBraggSimulator, stage_m: np.ndarray, opts: GeneralDemoOptions) -> dict[str, Any]:
    """Strain and tilt RMSE against the truth where the crystal is and the probes light it (≥ 20 % of max Σ|P|²)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in res.object.shape], indexing="ij"), axis=-1)
    r = res.placement.position_m(idx)
    illum = sum(np.abs(sim.probe_field(r + s)) ** 2 for s in stage_m)
    region = (np.abs(sim.object_field(r)) > 0.5) & (illum >= 0.2 * illum.max())
    maps = strain_maps_sample_frame(res.object, res.geometry, support=region,
                                    options=StrainOptions(remove_ramp=False, amplitude_threshold=0.0))
    m = maps.mask

    def rmse(a: np.ndarray, v: float) -> float:
        return float(np.sqrt(np.nanmean((a[m] - v) ** 2)))

    return {"strain_rmse": rmse(maps.eps_zz, opts.strain),
            "tilt_x_rmse_rad": rmse(maps.omega_x_rad, opts.tilt_x_rad),
            "tilt_y_rmse_rad": rmse(maps.omega_y_rad, opts.tilt_y_rad),
            "strain_median": float(np.nanmedian(maps.eps_zz[m])), "n_voxels": int(m.sum()),
            "r_factors": {k: round(float(v), 4) for k, v in res.r_factors.items()}}


def run_general_geometry_demo(opts: GeneralDemoOptions, out_dir: Path) -> dict[str, Any]:
    """Simulate, write/read the dataset, reconstruct and score in one process, without Bluesky or Tiled
    (``pxm demo --geometry NAME --one-process``); returns (and writes) a JSON summary.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(opts.seed)
    d, g, truth, sim = _scenario(opts)
    stage = _raster_m(opts.n_raster, opts.raster_step_m, rng)
    mid_index = (opts.n_angles - 1) / 2 if opts.angles_between else opts.n_angles // 2
    offsets = (np.arange(opts.n_angles) - mid_index) * d.rocking_step_deg
    t0 = time.perf_counter()
    amp2 = np.stack([np.stack([np.abs(sim.amplitude(stage_xyz_m=tuple(s), rocking_offset_deg=float(a))) ** 2
                               for a in offsets]) for s in stage])
    t_sim = time.perf_counter() - t0
    frames = rng.poisson(amp2 * (opts.peak_counts / amp2.max())).astype(np.float32)
    centre = d.sample_angles_deg[d.rocking_circle]
    dataset_path = out_dir / "dataset.h5"
    write_dataset(dataset_path, BraggDataset(
        frames=frames, rocking_angle_deg=np.broadcast_to(centre + offsets, frames.shape[:2]).copy(),
        stage_position_m=np.broadcast_to(stage[:, None, :], frames.shape[:2] + (3,)).copy(),
        detector_mask=np.ones((opts.roi_px, opts.roi_px), bool), geometry=g,
        sample={"name": f"strained slab, {opts.geometry}", "thickness_m": opts.thickness_m},
        provenance={"simulator": "sim.general_geometry.GeneralBraggSimulator", "geometry_preset": opts.geometry}))
    ds = read_dataset(dataset_path)
    stage_r, offsets_r = scan_axes(ds.rocking_angle_deg, ds.stage_position_m, ds.geometry)
    recipe = _demo_recipe(opts, _surface_normal(g))

    def reconstruct(geometry: BraggGeometry) -> dict[str, Any]:
        rec = Reconstruction(geometry, ds.frames, ds.detector_mask, stage_r, offsets_r, _section_probe(sim, geometry),
                             recipe=recipe)
        rec.iterate(recipe.n_iterations)
        return _score(rec.result(), sim, stage_r, opts)

    t0 = time.perf_counter()
    scores = reconstruct(ds.geometry)
    t_rec = time.perf_counter() - t0
    out: dict[str, Any] = {
        "geometry": opts.geometry, "diffractometer": d.to_metadata(),
        "rocking_direction": [round(v, 4) for v in g.rocking_direction], "recon_shape": list(g.recon_shape),
        "n_frames": int(frames.shape[0] * frames.shape[1]), "frame_px": [opts.roi_px, opts.roi_px],
        "dataset": str(dataset_path), "simulate_s": round(t_sim, 1), "reconstruct_s": round(t_rec, 1),
        "truth": truth, **scores}
    gf = ds.geometry.frame
    if opts.with_control and gf is not None and abs(gf.rocking_direction[1]) > 1e-6:
        u1, _, u3 = gf.rocking_direction
        un = math.hypot(u1, u3)
        wrong = dataclasses.replace(ds.geometry, frame=dataclasses.replace(gf, rocking_direction=(u1 / un, 0.0,
                                                                                                   u3 / un)))
        out["control_without_e2_shear"] = reconstruct(wrong)
    (out_dir / "summary.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def run_general_beamtime(opts: GeneralDemoOptions, *, raw_catalog: Any, raw_dir: Path, documents_dir: Path,
                         log: Any = print) -> dict[str, Any]:
    """The demo's scan through the real beamtime: RunEngine → Tiled → export → ``analysis.bragg.reconstruct``.

    The sim devices of the general geometry (:func:`devices.sim_beamline.make_sim_beamline` with the
    simulator as the Maxipix's frame source; a ``SimSixCircle`` at the diffractometer's angles) run
    ``raster_rocking_scan`` (η rocks, ν/δ/φ are driven and recorded) into ``raw_catalog``; the run is
    exported from Tiled (:func:`pxm.run_export.run_to_dataset`) and reconstructed through the one pipeline
    (known probe, :func:`_demo_recipe`); strain and tilts are scored against the simulator's truth in the
    reflection frame as the one-process route does. Returns a JSON-safe summary (``uid``, sizes, times, scores).
    """
    from analysis.bragg import BraggScan, PipelineOptions, reconstruct
    from analysis.bragg.pipeline import recipe_geometry
    from analysis.bragg.solvers.options import Execution
    from devices.maxipix import FrameSource
    from devices.sim_beamline import make_sim_beamline
    from plans import raster_rocking_scan, rocking_angles_deg
    from pxm.run_export import run_to_dataset
    from pxm.runengine import make_run_engine, run_plan, run_uids
    from sim.diffraction import CLASSICAL_ELECTRON_RADIUS_M

    d, g, truth, sim = _scenario(opts)
    # flux for ``peak_counts`` in the brightest pixel of the central frame (1 s exposures)
    a2 = float(np.max(np.abs(sim.amplitude(stage_xyz_m=(0.0, 0.0, 0.0), rocking_offset_deg=0.0)) ** 2))
    per_photon = (CLASSICAL_ELECTRON_RADIUS_M ** 2 * (d.pixel_size_m / d.detector_distance_m) ** 2
                  * (sim.sample.structure_factor_electrons / sim.sample.unit_cell_volume_m3) ** 2)
    sim = dataclasses.replace(sim, flux_ph_per_s=opts.peak_counts / (per_photon * a2))
    bl = make_sim_beamline(cast("FrameSource", sim), geometry=g, data_dir=raw_dir, exposure_s=1.0,
                           simulate_exposure=False, seed=opts.seed)
    wiring = make_run_engine(raw_catalog=raw_catalog, documents_dir=documents_dir, beam_signal=bl.monitor.current)
    # the one-process route's jittered raster (same seed), in µm for the stage
    positions = _raster_m(opts.n_raster, opts.raster_step_m, np.random.default_rng(opts.seed))[:, :2] * 1e6
    # centred on η like any scan: the engine places q3 from the recorded angles (even counts included)
    angles = rocking_angles_deg(g.rocking_centre_deg, g.rocking_step_deg, g.n_angles)
    log(f"{opts.geometry}: {len(positions)} positions × {len(angles)} η angles = {len(positions) * len(angles)} "
        f"frames of {opts.roi_px} × {opts.roi_px} px (the sum at the exact q of every pixel) ...")
    t0 = time.perf_counter()
    (uid,) = run_uids(run_plan(wiring.RE, raster_rocking_scan(   # Ctrl-C: stop document, then ScanInterrupted
        bl.detector, bl.stage, bl.gonio, geometry=g, positions_um=positions, angles_deg=angles,
        sample={"name": f"strained slab, {opts.geometry} (simulated)", "thickness_m": opts.thickness_m,
                "simulated": True}, exposure_s=1.0, monitors=[bl.monitor],
        md={"purpose": "bragg-ptychography", "geometry_preset": opts.geometry}), documents_dir=documents_dir))
    t_scan = time.perf_counter() - t0
    log(f"    run {uid[:8]} in Tiled after {t_scan:.1f} s; export and reconstruct ...")
    t1 = time.perf_counter()
    ds = run_to_dataset(raw_catalog[uid])
    scan = BraggScan.from_dataset(ds)
    recipe = _demo_recipe(opts, _surface_normal(g))
    probe = _section_probe(sim, recipe_geometry(scan.geometry, recipe))
    outcome = reconstruct(scan, recipe, probe, options=PipelineOptions(execution=Execution(backend="numpy")),
                          recipe_name="demo-known-probe", probe_source="simulator (known probe)")
    t_rec = time.perf_counter() - t1
    scores = _score(outcome.result, sim, scan.stage_xyz_m, opts)
    start = raw_catalog[uid].metadata["start"]
    return {"geometry": opts.geometry, "uid": uid,
            "route": "RunEngine -> Tiled -> export -> analysis.bragg.reconstruct",
            "diffractometer_angles": start.get("diffractometer_angles"),
            "n_frames": len(positions) * len(angles), "frame_px": [opts.roi_px, opts.roi_px],
            "recon_shape": list(g.recon_shape), "scan_s": round(t_scan, 1), "reconstruct_s": round(t_rec, 1),
            "truth": truth, **scores}


def closing_lines_general(summary: dict[str, Any]) -> list[str]:
    """The general-geometry demo's verdict: strain and tilt RMSE against the simulator's truth."""
    return [f"{summary['geometry']}: {summary['n_frames']} frames of {summary['frame_px'][0]} × "
            f"{summary['frame_px'][1]} px, scan {summary.get('scan_s', summary.get('simulate_s'))} s, "
            f"reconstruction {summary['reconstruct_s']} s; R-factors {summary['r_factors']}",
            f"strain RMSE vs the simulator's truth (reflection frame, lit crystal, {summary['n_voxels']} voxels): "
            f"{summary['strain_rmse']:.2e} (true strain {summary['truth']['strain']:.1e}, median found "
            f"{summary['strain_median']:.2e}); tilt RMSE {summary['tilt_x_rmse_rad']:.1e}, "
            f"{summary['tilt_y_rmse_rad']:.1e} rad"]
