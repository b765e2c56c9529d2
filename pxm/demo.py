"""A whole simulated beamtime on an embedded Tiled server (``pxm demo``).

Sequence, as at ID01 in the seed: rocking-curve alignment on the crystal, the raster ×
rocking-curve Bragg-ptychography scan, then the forward-ptychography Siemens-star spiral
that characterises the probe. Every run lands in Tiled (``/raw``), frames as external
HDF5 under the server's readable storage, documents also as JSONL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.geometry import BraggGeometry, DetectorLayout, Roi, seed_geometry
from pxm.catalog import TiledServerConfig, tiled_session
from pxm.runengine import make_run_engine, run_uids


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    """Size and physics of the simulated beamtime."""

    full: bool = False
    """The seed's 20 × 20 raster × 42 angles with 200 × 160 frames (overrides the sizes below)."""
    n_raster: int = 5
    """Raster points per axis."""
    n_angles: int = 9
    """Measured rocking angles."""
    roi_px: tuple[int, int] = (64, 64)
    """Detector rows × columns saved per frame (centred on the Bragg peak)."""
    raster_step_um: float = 0.1
    """Raster step (seed: 100 nm)."""
    rocking_step_deg: float = 0.005
    """Rocking step (seed: 0.005°)."""
    upsampling: int = 3
    """Angular up-sampling U recorded for the reconstruction (seed: 3)."""
    exposure_s: float = 0.2
    """Exposure per frame (seed: 0.2 s); the simulation does not wait for it."""
    flux_ph_per_s: float = 1e9
    """Incident flux on the sample."""
    background_ph_per_px_per_s: float = 0.05
    """Incoherent background."""
    n_spiral: int = 60
    """Points of the Siemens-star spiral (seed: 513)."""
    seed: int = 2021
    """Random seed (raster jitter and Poisson noise)."""
    live: bool = True
    """Run the live reconstruction (pxm.live) during the BP scan and publish to /processed."""
    live_iterations: int = 6
    """ePIE sweeps of the live recipe (short, so the default demo stays fast)."""
    tiled_batch_size: int = 1
    """Events per TiledWriter write (1: every frame in Tiled at once; --full uses 25, ~60 ms/frame less)."""
    ferroelectric: bool = False
    """After the BP beamtime, run the ferroelectric FP-DFXM chain (``pxm.ferroelectric``) on the same server."""

    def __post_init__(self) -> None:
        for name in ("n_raster", "n_angles", "n_spiral", "upsampling"):
            if getattr(self, name) < 1:
                raise ValueError(f"DemoOptions.{name} must be >= 1, got {getattr(self, name)}")
        if len(self.roi_px) != 2 or min(self.roi_px) < 8:
            raise ValueError(f"DemoOptions.roi_px must be two sizes >= 8, got {self.roi_px}")

    def sized(self) -> DemoOptions:
        """The options with the seed's full sizes applied when ``full`` is set."""
        if not self.full:
            return self
        from dataclasses import replace

        return replace(self, n_raster=20, n_angles=42, roi_px=(200, 160), n_spiral=513,
                       tiled_batch_size=max(self.tiled_batch_size, 25))


def demo_geometry(opts: DemoOptions) -> BraggGeometry:
    """The seed's W(220) geometry with the demo's crop and rocking sampling."""
    return seed_geometry(upsampling=opts.upsampling, n_angles=opts.n_angles,
                         rocking_step_deg=opts.rocking_step_deg,
                         n_rows_px=opts.roi_px[0], n_cols_px=opts.roi_px[1])


def run_beamtime(raw_catalog: Any, raw_dir: Path, documents_dir: Path, opts: DemoOptions,
                 *, log: Any = print, extra_callbacks: tuple[Any, ...] = ()) -> dict[str, str]:
    """Run alignment, the BP scan and the forward spiral; return {run name: uid}."""
    from devices.sim_beamline import make_sim_beamline
    from plans import (
        archimedean_spiral_um,
        raster_positions_um,
        raster_rocking_scan,
        rocking_angles_deg,
        rocking_curve_align,
        spiral_probe_scan,
    )
    from sim import BraggSimulator, KBProbe, SiemensStar, TransmissionSimulator, seed_sample

    opts = opts.sized()
    geom = demo_geometry(opts)
    layout = DetectorLayout()
    roi = Roi.centred(layout, *opts.roi_px)
    probe = KBProbe(energy_kev=geom.energy_kev)
    sample = seed_sample()
    bragg = BraggSimulator(geom, sample, probe, layout=layout, flux_ph_per_s=opts.flux_ph_per_s,
                           background_ph_per_px_per_s=opts.background_ph_per_px_per_s)
    bl = make_sim_beamline(bragg, geometry=geom, data_dir=raw_dir, roi=roi, exposure_s=opts.exposure_s,
                           simulate_exposure=False, seed=opts.seed)
    wiring = make_run_engine(raw_catalog=raw_catalog, documents_dir=documents_dir,
                             beam_signal=bl.monitor.current, extra_callbacks=extra_callbacks,
                             tiled_batch_size=opts.tiled_batch_size)
    RE = wiring.RE
    uids: dict[str, str] = {}
    sample_md = {"name": "W-1Re foil, He-implanted (simulated)", "material": "W", "hkl": [2, 2, 0],
                 "thickness_m": sample.slab.thickness_m, "tilt_x_deg": sample.slab.tilt_x_deg,
                 "tilt_y_deg": sample.slab.tilt_y_deg, "simulated": True}   # pxm reconstruct's slab (docs/recipes.md)

    t0 = time.perf_counter()
    log("1/3 rocking-curve alignment ...")
    (uid,) = run_uids(RE(rocking_curve_align(bl.detector, bl.gonio, centre_deg=geom.theta_bragg_deg, step_deg=0.004,
                                             n_angles=21, exposure_s=opts.exposure_s,
                                             md={"sample": sample_md, "purpose": "alignment"})))
    uids["alignment"] = uid
    centre_deg = float(bl.gonio.theta.position)
    log(f"    rocking-curve centre {centre_deg:.4f}° (θ_B + {centre_deg - geom.theta_bragg_deg:+.4f}°)"
        f"  [{time.perf_counter() - t0:.1f} s]")

    positions = raster_positions_um(opts.n_raster, opts.n_raster, opts.raster_step_um,
                                    jitter_fraction=0.15, seed=opts.seed)
    angles = rocking_angles_deg(centre_deg, opts.rocking_step_deg, opts.n_angles)
    n_frames = len(positions) * len(angles)
    log(f"2/3 Bragg ptychography: {len(positions)} positions × {len(angles)} angles = {n_frames} frames "
        f"of {roi.n_rows_px} × {roi.n_cols_px} px ...")
    t1 = time.perf_counter()
    (uid,) = run_uids(RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geom, positions_um=positions,
                                             angles_deg=angles, sample=sample_md, exposure_s=opts.exposure_s,
                                             monitors=[bl.monitor], md={"purpose": "bragg-ptychography"})))
    uids["bragg_ptychography"] = uid
    log(f"    {n_frames} frames in {time.perf_counter() - t1:.1f} s")

    log(f"3/3 forward ptychography of a Siemens star: {opts.n_spiral}-point spiral ...")
    t2 = time.perf_counter()
    star = SiemensStar(energy_kev=geom.energy_kev)
    fwd = make_sim_beamline(TransmissionSimulator(probe, star, energy_kev=geom.energy_kev,
                                                  detector_distance_m=geom.detector_distance_m, layout=layout,
                                                  flux_ph_per_s=opts.flux_ph_per_s),
                            geometry=geom, data_dir=raw_dir, roi=Roi.centred(layout, 128, 128),
                            exposure_s=1.0, simulate_exposure=False, seed=opts.seed + 1, prefix="fwd_")
    spiral_md = {"name": "Siemens star (simulated)", "material": "Au", "thickness_m": star.thickness_m,
                 "simulated": True}
    (uid,) = run_uids(RE(spiral_probe_scan(fwd.detector, fwd.stage, n_points=opts.n_spiral, step_um=0.1,
                                           exposure_s=1.0, energy_kev=geom.energy_kev,
                                           detector_distance_m=geom.detector_distance_m, sample=spiral_md,
                                           md={"purpose": "probe-characterisation"})))
    uids["forward_ptychography"] = uid
    log(f"    {opts.n_spiral} frames in {time.perf_counter() - t2:.1f} s")
    _ = archimedean_spiral_um  # the plan records its own pattern; imported for users reading this code
    return uids


def run_demo(server: TiledServerConfig, opts: DemoOptions, *, tiled_uri: str | None = None) -> int:
    """Start (or reach) Tiled, run the simulated beamtime, print where the runs live."""
    with tiled_session(server, tiled_uri) as session:
        uri, raw, processed = session.uri, session.raw, session.processed
        live = None
        if opts.live:
            from pxm.live import LiveOptions, LiveReconstructionCallback, live_recipe

            live = LiveReconstructionCallback(processed=processed, raw=raw, options=LiveOptions(
                recipe=live_recipe(opts.live_iterations), figures_dir=server.data_dir / "figures"))
        t0 = time.perf_counter()
        uids = run_beamtime(raw, server.raw_path, server.data_dir / "documents", opts,
                            extra_callbacks=(live,) if live is not None else ())
        summaries = live.wait(600) if live is not None else []   # raises if the final result failed
        elapsed = time.perf_counter() - t0
        bp = raw[uids["bragg_ptychography"]]
        frames = bp["primary"]["mpx_image"]
        print()
        print(f"simulated beamtime done in {elapsed:.1f} s")
        print(f"Tiled server : {uri}   (API key: {server.api_key})")
        print(f"data folder  : {server.data_dir}")
        for name, uid in uids.items():
            print(f"run {name:22s}: {uid}")
        print(f"BP frames in Tiled: {frames.shape} {frames.dtype}")
        print("read it back:")
        print("    from tiled.client import from_uri")
        print(f"    run = from_uri('{uri}', api_key='{server.api_key}')['raw']['{uids['bragg_ptychography']}']")
        print("    frames = run['primary']['mpx_image'][:]; run.start['pattern']")
        for sm in summaries:
            m = sm.get("metrics", {})
            print(f"live reconstruction: {m.get('n_frames_used')} frames, {m.get('n_iterations')} iterations, "
                  f"final cost {m.get('final_cost'):.4g}; result /processed/{sm.get('final_key')}")
            print(f"    res = from_uri('{uri}', api_key='{server.api_key}')['processed']['{sm.get('final_key')}']")
            print("    rho = res['object'][:]; strain = res['strain_zz'][:]; res.metadata['raw_uid']")
            for f in sm.get("figures", []):
                print(f"    figure: {f}")
        if opts.ferroelectric:
            from pxm.ferroelectric import FerroelectricDemoOptions, print_chain_summary, run_ferroelectric_chain

            print("\nferroelectric FP-DFXM (c/a domains, one scan per variant) ...")
            fe = run_ferroelectric_chain(raw, processed, server.raw_path, server.data_dir / "documents",
                                         FerroelectricDemoOptions())
            print_chain_summary(fe, uri=uri, api_key=server.api_key)
    return 0
