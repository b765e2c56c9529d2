"""FP-DFXM end to end: simulated acquisition into Tiled, reconstruction of a recorded run, publication.

``pxm dfxm-demo`` = :func:`run_dfxm_demo`: a crystal exit field (``sim.dfxm``) behind the sim
FP-DFXM instrument, :func:`plans.fp_dfxm_scan` under the RunEngine into ``/raw``, then
:func:`reconstruct_fp_run` and :func:`publish_fp_run` into ``/processed``.
``pxm fp-reconstruct --run UID`` = :func:`reconstruct_fp_run` + :func:`publish_fp_run` on any
recorded ``fp_dfxm_scan`` run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.dfxm import (
    FPDFXMGeometry,
    FPOptions,
    FPResult,
    MisalignmentReadout,
    Reflection,
    StrainTiltMaps,
    fp_geometry_from_metadata,
    fp_geometry_to_metadata,
    misalignment_readout,
    reconstruct_fp_dfxm,
    strain_tilt_from_phase,
)

__all__ = ["DFXMDemoOptions", "FPRunData", "FPRunResult", "fp_run_data", "reconstruct_fp_run", "publish_fp_run",
           "run_fp_dfxm_acquisition", "acquire_fp_run", "run_dfxm_demo"]


@dataclass(frozen=True, kw_only=True)
class DFXMDemoOptions:
    """Size and physics of the simulated FP-DFXM acquisition (BaTiO₃ (002) at 17 keV, docs/fp-dfxm.md, Sampling)."""

    n_px: int = 32
    """Camera frame size (object-plane pixels of ``pixel_size_m``)."""
    pixel_size_m: float = 40e-9
    upsampling: int = 4
    n_side: int = 5
    """Diversity grid n_side × n_side."""
    step_px: int = 6
    """Grid step in frequency pixels λ/(n_px Δx) (6 at 32 px: 0.34 mrad, ≈ 63% overlap)."""
    kind: str = "rock_roll"
    """Diversity drive: ``rock_roll``, ``two_theta_roll`` or ``lens_translation``."""
    exposure_s: float = 0.1
    simulate_exposure: bool = False
    """Wait ``exposure_s`` per frame, as a real camera does (off: frames as fast as the simulator makes them)."""
    peak_rate_counts_per_s: float = 2e5
    zernike_rad: dict[int, float] = field(default_factory=lambda: {4: 0.4, 6: 0.3, 11: 0.3})
    """True CRL aberrations of the simulation (Noll, rad)."""
    iterations: int = 150
    """Zernike-EPRY sweeps."""
    seed: int = 6

    def __post_init__(self) -> None:
        for name in ("n_px", "upsampling", "n_side", "step_px", "iterations"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"DFXMDemoOptions.{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not (self.exposure_s > 0 and self.pixel_size_m > 0 and self.peak_rate_counts_per_s > 0):
            raise ValueError("DFXMDemoOptions: exposure_s, pixel_size_m and peak_rate_counts_per_s must be > 0")

    def geometry(self) -> FPDFXMGeometry:
        """The demo's FP-DFXM geometry (BaTiO₃ (002), d = 2.018 Å)."""
        return FPDFXMGeometry(reflection=Reflection(hkl=(0, 0, 2), d_spacing_m=2.018e-10), n_px=self.n_px,
                              upsampling=self.upsampling, pixel_size_m=self.pixel_size_m)


def run_fp_dfxm_acquisition(raw_catalog: Any, raw_dir: Path, documents_dir: Path, opts: DFXMDemoOptions, *,
                            log: Any = print) -> str:
    """Simulate the FP-DFXM instrument and run :func:`plans.fp_dfxm_scan` into ``raw_catalog``; return the uid."""
    from sim.dfxm import DFXMSimulator, crystal_exit_field

    geom = opts.geometry()
    assert geom.reflection is not None                 # DFXMDemoOptions.geometry() always sets the reflection
    fine = 2
    truth = crystal_exit_field(geom.hr_n_px * fine, geom.hr_pixel_size_m / fine, geom.reflection,
                               geom.objective.energy_kev,
                               dislocations=(), grain_fraction=None, seed=opts.seed)
    source = DFXMSimulator(truth.exit_field, geom.hr_pixel_size_m / fine, geom, zernike_rad=opts.zernike_rad,
                           peak_rate_counts_per_s=opts.peak_rate_counts_per_s)
    sample = {"name": "BaTiO3 thin film (simulated)", "material": "BaTiO3", "simulated": True,
              "true_zernike_rad": {str(k): v for k, v in opts.zernike_rad.items()}}
    return acquire_fp_run(raw_catalog, raw_dir, documents_dir, source, geom, opts, sample=sample,
                          md={"purpose": "fp-dfxm"}, log=log)


def acquire_fp_run(raw_catalog: Any, raw_dir: Path, documents_dir: Path, source: Any, geometry: FPDFXMGeometry,
                   opts: DFXMDemoOptions, *, sample: dict[str, Any], md: dict[str, Any], log: Any = print) -> str:
    """Run :func:`plans.fp_dfxm_scan` on the sim FP-DFXM beamline around ``source``; return the run uid.

    The plan runs through :func:`pxm.runengine.run_plan`: an interrupted or failed scan raises
    :class:`pxm.runengine.ScanInterrupted` after its stop document.

    ``source`` is a :class:`sim.dfxm.DFXMSimulator`; the goniometer starts at ``geometry``'s θ_B,
    so the scan's 2θ is that of ``geometry.reflection`` (its reference lattice).
    """
    from devices.sim_beamline import make_sim_dfxm_beamline
    from plans import fp_dfxm_scan, fp_diversity_settings
    from pxm.runengine import make_run_engine, run_plan, run_uids

    bl = make_sim_dfxm_beamline(source, geometry=geometry, data_dir=raw_dir, exposure_s=opts.exposure_s,
                                simulate_exposure=opts.simulate_exposure, seed=opts.seed)
    wiring = make_run_engine(raw_catalog=raw_catalog, documents_dir=documents_dir, beam_signal=bl.monitor.current)
    settings = fp_diversity_settings(geometry, n_side=opts.n_side, step_px=opts.step_px, kind=opts.kind)
    log(f"FP-DFXM scan: {settings.n_frames} frames of {geometry.n_px} × {geometry.n_px} px ({opts.kind}, step "
        f"{opts.step_px} px = {opts.step_px * geometry.angle_per_freq_px_rad * 1e3:.3f} mrad) ...")
    plan = fp_dfxm_scan(bl.camera, bl.lens, bl.gonio, geometry=geometry, settings=settings, sample=sample,
                        exposure_s=opts.exposure_s, monitors=[bl.monitor], md=md)
    # Ctrl-C / SIGTERM as in pxm demo: stop document, detector file closed, then ScanInterrupted (exit 130/143)
    (uid,) = run_uids(run_plan(wiring.RE, plan, documents_dir=documents_dir))
    return uid


@dataclass(frozen=True, kw_only=True)
class FPRunData:
    """What a reconstruction needs from a recorded ``fp_dfxm_scan`` run."""

    uid: str
    frames: np.ndarray = field(repr=False)
    """(FRAME, ROW, COL) float64 counts."""
    shifts_rad: np.ndarray = field(repr=False)
    image_shifts_m: np.ndarray | None = field(repr=False)
    geometry: FPDFXMGeometry
    start: dict[str, Any] = field(repr=False)


def fp_run_data(run: Any) -> FPRunData:
    """Frames, shifts and geometry of a Tiled ``fp_dfxm_scan`` run (ValueError for other runs)."""
    start = dict(run.metadata["start"])
    if start.get("plan_name") != "fp_dfxm_scan":
        raise ValueError(f"run {start.get('uid')}: plan {start.get('plan_name')!r} is not fp_dfxm_scan")
    geom = fp_geometry_from_metadata(start["geometry"])
    pattern = start["pattern"]
    key = f"{start['detectors'][0]}_image"
    frames = np.asarray(run["primary"][key][:], dtype=np.float64)
    shifts = np.asarray(pattern["shifts_rad"], float)
    if frames.shape[0] != shifts.shape[0]:
        raise ValueError(f"run {start['uid']}: {frames.shape[0]} frames but {shifts.shape[0]} settings in the start "
                         "document (an interrupted scan?); reconstruct complete runs only")
    image = np.asarray(pattern.get("image_shifts_m"), float) if pattern.get("image_shifts_m") is not None else None
    if image is not None and not np.any(image):
        image = None
    return FPRunData(uid=start["uid"], frames=frames, shifts_rad=shifts, image_shifts_m=image, geometry=geom,
                     start=start)


@dataclass(frozen=True, kw_only=True)
class FPRunResult:
    """Reconstruction of one run with its read-outs."""

    data: FPRunData = field(repr=False)
    result: FPResult = field(repr=False)
    misalignment: MisalignmentReadout
    maps: StrainTiltMaps = field(repr=False)
    options: FPOptions
    elapsed_s: float


def reconstruct_fp_run(run: Any, *, options: FPOptions) -> FPRunResult:
    """Zernike-EPRY reconstruction of a recorded run, misalignment read-out and strain/tilt maps."""
    data = fp_run_data(run)
    t0 = time.perf_counter()
    res = reconstruct_fp_dfxm(data.frames, data.shifts_rad, data.geometry, options=options,
                              image_shifts_m=data.image_shifts_m)
    mis = misalignment_readout(res, data.geometry)
    maps = strain_tilt_from_phase(res.object, data.geometry, pixel_size_m=data.geometry.hr_pixel_size_m)
    return FPRunResult(data=data, result=res, misalignment=mis, maps=maps, options=options,
                       elapsed_s=time.perf_counter() - t0)


def publish_fp_run(processed: Any, raw_run: Any, out: FPRunResult) -> Any:
    """Publish object, pupil, Zernikes, misalignment and strain/tilt maps to ``processed`` (linked to the run)."""
    from pxm.publication import publish_fp_dfxm_results

    obj = np.asarray(out.result.object)
    weak = np.abs(obj) < 0.1 * float(np.abs(obj).max())

    def masked(a: Any) -> np.ndarray:
        return np.where(weak, np.nan, np.asarray(a, float))

    m = out.misalignment
    metadata = {
        "zernike_rad": {str(j): c for j, c in out.result.zernike_rad.items()},
        "misalignment": {"pupil_center_rad": list(m.pupil_center_rad), "defocus_m": m.defocus_m,
                         "astigmatism_rad": list(m.astigmatism_rad), "coma_rad": list(m.coma_rad),
                         "spherical_rad": m.spherical_rad, "crl_tilt_rad": list(m.crl_tilt_rad),
                         "crl_tilt_assumes": "pivot at the CRL centre, no decentering"},
        "twin_and_ramp": out.result.twin_and_ramp,
        "parameters": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(out.options).items()},
        "geometry": fp_geometry_to_metadata(out.data.geometry),
        "reflection": out.data.start.get("reflection"),
        "metrics": {"final_error": float(out.result.error_history[-1]), "n_frames": int(out.data.frames.shape[0]),
                    "n_iterations": out.options.n_iterations},
        "timings_s": {"reconstruction_s": out.elapsed_s},
        "units": {"object_pixel_size_m": out.data.geometry.hr_pixel_size_m, "strain": "1",
                  "tilt_rock_rad": "rad", "tilt_roll_rad": "rad", "image_shift_m": "m"},
    }
    arrays = {"object": obj, "pupil": np.asarray(out.result.pupil),
              "zernike_indices": np.asarray(list(out.result.zernike_rad), np.float64),
              "zernike_coefficients_rad": np.asarray(list(out.result.zernike_rad.values()), np.float64),
              "strain": masked(out.maps.strain), "tilt_rock_rad": masked(out.maps.tilt_rock_rad),
              "tilt_roll_rad": masked(out.maps.q_roll), "image_shift_m": np.asarray(m.image_shift_m, np.float64),
              "error": np.asarray(out.result.error_history, np.float64)}
    return publish_fp_dfxm_results(processed, out.data.uid, arrays, metadata=metadata, raw_run=raw_run)


def run_dfxm_demo(server: Any, opts: DFXMDemoOptions, *, tiled_uri: str | None = None,
                  figures_dir: str | Path | None = None) -> int:
    """Start (or reach) Tiled, acquire, reconstruct and publish; print where everything lives.

    With ``figures_dir`` the result's figures go there too (:func:`pxm.logbook_figures.fp_figures`).
    """
    from pxm.catalog import tiled_session, write_key_file
    from pxm.runengine import interrupt_between_scans

    with interrupt_between_scans(), tiled_session(server, tiled_uri) as session:
        uri, raw, processed = session.uri, session.raw, session.processed
        t0 = time.perf_counter()
        uid = run_fp_dfxm_acquisition(raw, server.raw_path, server.data_dir / "documents", opts)
        print(f"    acquired in {time.perf_counter() - t0:.1f} s; reconstructing ({opts.iterations} sweeps) ...")
        run = raw[uid]
        out = reconstruct_fp_run(run, options=FPOptions(n_iterations=opts.iterations))
        res = publish_fp_run(processed, run, out)
        m = out.misalignment
        key_file = write_key_file(server.data_dir, server.api_key)    # the key never goes on a printed line
        print(f"run      : {uid}   (Tiled {uri}, API key in {key_file}, mode 0600)")
        print(f"frames   : {out.data.frames.shape}; reconstruction {out.elapsed_s:.1f} s, "
              f"final error {out.result.error_history[-1]:.4g}")
        print("Zernikes (rad, true → found): " + ", ".join(
            f"Z{j} {opts.zernike_rad.get(j, 0.0):+.2f} → {c:+.2f}" for j, c in out.result.zernike_rad.items()))
        centre_mrad = tuple(round(v * 1e3, 4) for v in m.pupil_center_rad)
        print(f"defocus  : {m.defocus_m * 1e6:+.1f} µm; pupil centre {centre_mrad} mrad")
        print(f"published: /processed/{res.item['id'] if hasattr(res, 'item') else res.uri}")
        if figures_dir is not None:
            from pxm.logbook_figures import fp_figures

            for f in fp_figures(figures_dir, out, command="pxm dfxm-demo"):
                print(f"figure   : {f}")
        print(f"read it back (shell: export PXM_TILED_API_KEY=$(cat {key_file})), in Python:")
        print("    import os; from tiled.client import from_uri; from tiled.queries import Key")
        print(f"    res = from_uri('{uri}', api_key=os.environ['PXM_TILED_API_KEY'])['processed']"
              f".search(Key('raw_uid') == '{uid}')")
    return 0

