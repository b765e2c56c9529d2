"""A whole simulated beamtime on an embedded Tiled server (``pxm demo``).

Sequence: rocking-curve alignment on the crystal, the forward-ptychography Siemens-star spiral
that characterises the probe, forward ptychography of that run (``pxm probe``'s code path) → a probe
file, then the raster × rocking-curve Bragg-ptychography scan with the live engine started from that
probe. Every run lands in Tiled (``/raw``), frames as external HDF5 under the server's readable
storage, documents also as JSONL. At the end the demo scores the final result against the simulator's
truth (strain RMSE in the lit crystal) and prints it with the R-factor and the convergence verdict.
"""

# Why this module is long: `pxm demo` is one beamtime script (alignment, forward ptychography, Bragg scan, live
# reconstruction, publication) run top to bottom; its steps share the one session state.

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from analysis.geometry import BraggGeometry, DetectorLayout, Roi, seed_geometry
from pxm.catalog import TiledServerConfig, tiled_session, write_key_file
from pxm.runengine import (
    BeamtimeInterrupted,
    InterruptOptions,
    ScanInterrupted,
    interrupt_between_scans,
    interruptible,
    make_run_engine,
    run_uids,
)


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    """Size and physics of the simulated beamtime."""

    full: bool = False
    """The seed's 20 × 20 raster × 42 angles with 200 × 160 frames (overrides the sizes below)."""
    n_raster: int = 5
    """Raster points per axis."""
    n_angles: int = 21
    """Measured rocking angles (21 × 0.005° = 0.105°; :func:`check_rocking_range` asks for >= 17 at 0.005°)."""
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
    live_iterations: int | None = None
    """ePIE sweeps of the live and final reconstruction: the default recipe (``pxm reconstruct --recipe
    default``) scaled to this many sweeps (ML with it); None: the default recipe as it is (200 + 100)."""
    probe_iterations: int = 100
    """Forward-ptychography iterations on the spiral run (``pxm probe --iterations``)."""
    probe_extent_h_m: float = 3.9e-6
    """Horizontal full width of the KB beam (a slit cuts it to the detector window λD/p = 3.94 µm, which
    the reconstruction grid can hold; the bare KB model keeps 5 µm of tails that wrap around it)."""
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
        if self.live_iterations is not None and self.live_iterations < 1:
            raise ValueError(f"DemoOptions.live_iterations must be >= 1, got {self.live_iterations}")
        if self.probe_iterations < 1:
            raise ValueError(f"DemoOptions.probe_iterations must be >= 1, got {self.probe_iterations}")
        if not self.full:
            check_rocking_range(self.n_angles, self.rocking_step_deg)

    def sized(self) -> DemoOptions:
        """The options with the seed's full sizes applied when ``full`` is set."""
        if not self.full:
            return self
        return replace(self, n_raster=20, n_angles=42, roi_px=(200, 160), n_spiral=513,
                       tiled_batch_size=max(self.tiled_batch_size, 25))


def min_rocking_range_rad(na_v_rad: float) -> float:
    """Shortest rocking range the demo accepts: twice the probe's full convergence in the scattering plane.

    The exit wave's spread along the rocking direction is the probe's cone 2·NA_v widened by the crystal's
    own spread (strain shifts |Q|ε, the slab's rods), and the measured box must hold it with room to spare:
    below that no object on the grid explains the frames (docs/benchmarks.md, "Quality by recipe": the truth
    reaches R = 1.08 with 9 × 0.005°, 0.13 with 17 and 0.088 with 21 at NA_v = 3.7e-4 rad).

    Parameters
    ----------
    na_v_rad
        Numerical aperture of the probe in the scattering (rocking) plane, radians.

    Returns
    -------
    float
        The least rocking range n_angles·|Δθ|, radians (4·NA_v).
    """
    return 4.0 * na_v_rad


def check_rocking_range(n_angles: int, rocking_step_deg: float, *, na_v_rad: float | None = None) -> None:
    """Raise ValueError (one line, with the fix) when n_angles·|Δθ| is shorter than :func:`min_rocking_range_rad`.

    This bounds the range, as the Eq 12 sampling check (:meth:`BraggGeometry.check_sampling`) bounds the step.

    Parameters
    ----------
    n_angles
        Measured rocking angles.
    rocking_step_deg
        Rocking step Δθ in degrees.
    na_v_rad
        The probe's NA in the scattering plane; None: the seed's KB (3.7e-4 rad).
    """
    from pxm.reconstruction import KB_NA_V_RAD

    na = KB_NA_V_RAD if na_v_rad is None else na_v_rad
    need_rad = min_rocking_range_rad(na)
    step_rad = math.radians(abs(rocking_step_deg))
    if step_rad <= 0 or n_angles * step_rad < need_rad * (1 - 1e-9):
        n_min = math.ceil(need_rad / step_rad - 1e-9) if step_rad > 0 else 0
        raise ValueError(
            f"rocking range {n_angles} × {abs(rocking_step_deg):g}° = {math.degrees(n_angles * step_rad):.4f}° is "
            f"shorter than twice the probe's convergence (4·NA_v = {math.degrees(need_rad):.4f}°): no recipe "
            f"reconstructs such data; use at least {n_min} angles at this step (--angles {n_min})")


def demo_probe(opts: DemoOptions, energy_kev: float) -> Any:
    """The simulator's KB probe of the demo (:class:`sim.KBProbe`, cut to ``opts.probe_extent_h_m``)."""
    from sim import KBProbe

    return KBProbe(energy_kev=energy_kev, extent_h_m=opts.probe_extent_h_m)


DEMO_FIB_STRAIN = (3.0e-4, 2.2e-4)
"""(top, bottom) ε_zz of the demo foil's FIB-damaged surface layers (the seed's 1.5e-3 and 1.1e-3 divided by 5)."""
DEMO_EDGE_WIDTH_M = 60e-9
"""Width of the demo foil's slab faces and grain boundary (the seed phantom: 5 nm)."""
DEMO_IMPLANT_DEPTH_M = 1.8e-6
"""Depth of the demo foil's implanted layer below its +y edge (y = 1.8 µm): its front crosses y = 0, inside the
5 × 5 raster's field of view (the seed's 2.8 µm puts it at y = −1 µm, outside: the lit crystal would be uniformly
strained, which the data cannot tell from a probe phase ramp)."""


def demo_sample() -> Any:
    """The simulated crystal of the demo, also the truth its result is scored against.

    :func:`sim.seed_sample` (tilted W foil, grain boundary, implanted layer, FIB surface layers, a 2π and a 4π
    dislocation) with three changes the demo's 21-angle scan needs: the FIB layers strained by
    :data:`DEMO_FIB_STRAIN` (the seed's 1.5e-3 shifts their Bragg peak by ε·tanθ_B = 0.083°, outside the
    demo's ±0.053° rocking range: they would not diffract into the scan at all), and faces and grain boundary
    :data:`DEMO_EDGE_WIDTH_M` wide (sharper edges are finer than the reconstruction grid's band;
    docs/benchmarks.md, "Quality by recipe"), and the implanted layer :data:`DEMO_IMPLANT_DEPTH_M` deep so that its
    front runs through the scanned region.

    Returns
    -------
    sim.sample.CrystalSample
        The demo foil.
    """
    from sim import seed_sample
    from sim.sample import SurfaceLayers

    s = seed_sample()
    top, bottom = DEMO_FIB_STRAIN
    gb = s.grain_boundary
    return replace(s, surface_layers=SurfaceLayers(top_strain=top, bottom_strain=bottom),
                   implanted_layer=None if s.implanted_layer is None else replace(s.implanted_layer,
                                                                                  depth_m=DEMO_IMPLANT_DEPTH_M),
                   slab=replace(s.slab, edge_width_m=DEMO_EDGE_WIDTH_M),
                   grain_boundary=None if gb is None else replace(gb, edge_width_m=DEMO_EDGE_WIDTH_M))


def demo_peak_px(layout: DetectorLayout) -> tuple[float, float]:
    """Detector pixel (row, col) of the Bragg peak and of the direct beam in the demo: the middle of the first chip.

    The detector is placed so that the peak falls on one chip, as at the beamline: on the detector centre the
    chip gaps (a cross ``gap_px`` wide) would mask the strongest, lowest-q pixels of every frame, and no
    recipe recovers the object's phase without them (E_ρ 0.99 at 21 angles).

    Parameters
    ----------
    layout
        The detector's chip layout.

    Returns
    -------
    tuple of float
        (row, col) in detector pixels.
    """
    return (layout.chip_px / 2, layout.chip_px / 2)


def demo_geometry(opts: DemoOptions) -> BraggGeometry:
    """The seed's W(220) geometry with the demo's crop and rocking sampling."""
    return seed_geometry(upsampling=opts.upsampling, n_angles=opts.n_angles,
                         rocking_step_deg=opts.rocking_step_deg,
                         n_rows_px=opts.roi_px[0], n_cols_px=opts.roi_px[1])


def run_beamtime(raw_catalog: Any, raw_dir: Path, documents_dir: Path, opts: DemoOptions,
                 *, log: Any = print, extra_callbacks: tuple[Any, ...] = (), probe_dir: Path | None = None,
                 on_probe_file: Callable[[Path], None] | None = None,
                 interrupts: InterruptOptions | None = None, runs: dict[str, str] | None = None) -> dict[str, str]:
    """Run alignment, the forward spiral, its forward ptychography → probe file, then the BP scan.

    Parameters
    ----------
    raw_catalog
        Tiled ``/raw`` container (the spiral run is read back from it, as ``pxm probe`` does).
    raw_dir, documents_dir
        Detector HDF5 folder and JSONL document folder.
    opts
        Sizes and physics.
    log
        Progress printer.
    extra_callbacks
        More RunEngine subscribers (e.g. the live reconstruction, which acts on the BP run only).
    probe_dir
        Where the probe file ``<spiral uid8>-probe.h5`` goes; None: ``documents_dir``'s parent ``/probes``.
    on_probe_file
        Called with the probe file's absolute path before the BP scan starts (the live engine's start probe).
    interrupts
        Ctrl-C / SIGTERM handling of every scan (:func:`pxm.runengine.run_plan`): an interrupted scan
        raises :class:`pxm.runengine.ScanInterrupted` after its stop document, and the beamtime ends there.
    runs
        Filled in with ``{run name: uid}`` as each run ends (what a Ctrl-C between two scans leaves done).

    Returns
    -------
    dict
        {run name: uid} in the order run (``alignment``, ``forward_ptychography``, ``bragg_ptychography``).
    """
    from devices.sim_beamline import make_sim_beamline
    from plans import (
        archimedean_spiral_um,
        raster_positions_um,
        raster_rocking_scan,
        rocking_angles_deg,
        rocking_curve_align,
        spiral_probe_scan,
    )
    from pxm.reconstruction import probe_from_spiral_run, write_probe_file
    from sim import BraggSimulator, SiemensStar, TransmissionSimulator

    opts = opts.sized()
    geom = demo_geometry(opts)
    layout = DetectorLayout()
    peak_px = demo_peak_px(layout)
    roi = Roi.centred(layout, *opts.roi_px, centre_px=peak_px)
    probe = demo_probe(opts, geom.energy_kev)
    sample = demo_sample()
    bragg = BraggSimulator(geom, sample, probe, layout=layout, flux_ph_per_s=opts.flux_ph_per_s,
                           background_ph_per_px_per_s=opts.background_ph_per_px_per_s, centre_px=peak_px)
    bl = make_sim_beamline(bragg, geometry=geom, data_dir=raw_dir, roi=roi, exposure_s=opts.exposure_s,
                           simulate_exposure=False, seed=opts.seed)
    wiring = make_run_engine(raw_catalog=raw_catalog, documents_dir=documents_dir,
                             beam_signal=bl.monitor.current, extra_callbacks=extra_callbacks,
                             tiled_batch_size=opts.tiled_batch_size)
    RE = interruptible(wiring.RE, documents_dir=documents_dir, options=interrupts or InterruptOptions())
    uids: dict[str, str] = runs if runs is not None else {}
    sample_md = {"name": "W-1Re foil, He-implanted (simulated)", "material": "W", "hkl": [2, 2, 0],
                 "thickness_m": sample.slab.thickness_m, "tilt_x_deg": sample.slab.tilt_x_deg,
                 "tilt_y_deg": sample.slab.tilt_y_deg, "simulated": True}   # pxm reconstruct's slab (docs/recipes.md)

    t0 = time.perf_counter()
    log("1/4 rocking-curve alignment ...")
    (uid,) = run_uids(RE(rocking_curve_align(bl.detector, bl.gonio, centre_deg=geom.theta_bragg_deg, step_deg=0.004,
                                             n_angles=21, exposure_s=opts.exposure_s,
                                             md={"sample": sample_md, "purpose": "alignment"})))
    uids["alignment"] = uid
    centre_deg = float(bl.gonio.theta.position)
    log(f"    rocking-curve centre {centre_deg:.4f}° (θ_B + {centre_deg - geom.theta_bragg_deg:+.4f}°)"
        f"  [{time.perf_counter() - t0:.1f} s]")

    log(f"2/4 forward ptychography of a Siemens star: {opts.n_spiral}-point spiral (characterises the probe) ...")
    t2 = time.perf_counter()
    star = SiemensStar(energy_kev=geom.energy_kev)
    fwd = make_sim_beamline(TransmissionSimulator(probe, star, energy_kev=geom.energy_kev,
                                                  detector_distance_m=geom.detector_distance_m, layout=layout,
                                                  flux_ph_per_s=opts.flux_ph_per_s, centre_px=peak_px),
                            geometry=geom, data_dir=raw_dir, roi=Roi.centred(layout, 128, 128, centre_px=peak_px),
                            exposure_s=1.0, simulate_exposure=False, seed=opts.seed + 1, prefix="fwd_")
    spiral_md = {"name": "Siemens star (simulated)", "material": "Au", "thickness_m": star.thickness_m,
                 "simulated": True}
    (uid,) = run_uids(RE(spiral_probe_scan(fwd.detector, fwd.stage, n_points=opts.n_spiral, step_um=0.1,
                                           exposure_s=1.0, energy_kev=geom.energy_kev,
                                           detector_distance_m=geom.detector_distance_m, sample=spiral_md,
                                           md={"purpose": "probe-characterisation"})))
    uids["forward_ptychography"] = uid
    log(f"    {opts.n_spiral} frames in {time.perf_counter() - t2:.1f} s")
    log(f"3/4 forward ptychography of run {uid[:8]} ({opts.probe_iterations} iterations) -> probe ...")
    t3 = time.perf_counter()
    probe_fp, px_m, probe_md, probe_err = probe_from_spiral_run(raw_catalog[uid], n_iterations=opts.probe_iterations)
    folder = Path(probe_dir) if probe_dir is not None else Path(documents_dir).parent / "probes"
    folder.mkdir(parents=True, exist_ok=True)
    probe_path = (folder / f"{uid[:8]}-probe.h5").resolve()
    partial = probe_path.with_name(f".{probe_path.name}.part")    # a Ctrl-C while writing leaves no probe file
    try:
        write_probe_file(partial, probe_fp, pixel_size_m=px_m, metadata=probe_md, error_history=probe_err)
        os.replace(partial, probe_path)
    finally:
        partial.unlink(missing_ok=True)
    log(f"    probe {probe_fp.shape}, pixel {px_m * 1e9:.2f} nm, final error {probe_err[-1]:.3g} -> {probe_path}  "
        f"[{time.perf_counter() - t3:.1f} s]")
    if on_probe_file is not None:
        on_probe_file(probe_path)

    positions = raster_positions_um(opts.n_raster, opts.n_raster, opts.raster_step_um,
                                    jitter_fraction=0.15, seed=opts.seed)
    angles = rocking_angles_deg(centre_deg, opts.rocking_step_deg, opts.n_angles)
    n_frames = len(positions) * len(angles)
    log(f"4/4 Bragg ptychography: {len(positions)} positions × {len(angles)} angles = {n_frames} frames "
        f"of {roi.n_rows_px} × {roi.n_cols_px} px ...")
    t1 = time.perf_counter()
    (uid,) = run_uids(RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geom, positions_um=positions,
                                             angles_deg=angles, sample=sample_md, exposure_s=opts.exposure_s,
                                             monitors=[bl.monitor], md={"purpose": "bragg-ptychography"})))
    uids["bragg_ptychography"] = uid
    log(f"    {n_frames} frames in {time.perf_counter() - t1:.1f} s")

    _ = archimedean_spiral_um  # the plan records its own pattern; imported for users reading this code
    return uids


def truth_scores(outcome: Any, sample: Any, probe: Any, stage_xyz_m: Any) -> dict[str, float]:
    """Strain RMSE and E_ρ of a reconstruction against the simulator's truth, in the lit crystal.

    The truth is evaluated on the result's own object grid (its placement: voxel size, e-frame axes and
    ``origin_vox``, the grid point of the probe centre at zero stage position). Lit crystal S′: the true
    support dilated by one voxel where the true probe's summed intensity Σ_j |P(r + s_j)|² is at least 20 % of
    its maximum (the simulator puts the probe at r = −s). E_ρ (:func:`analysis.metrics.object_error`) is taken
    over S′; the strain RMSE over the published strain map's valid voxels in S′ ∧ |ρ_true| > 0.9, eroded by one
    voxel (no slab or grain-boundary edge). This is the region of ``testing.bragg_sim.score_reconstruction``.

    Parameters
    ----------
    outcome
        An :class:`analysis.bragg.Outcome` with strain maps in the reconstruction frame.
    sample
        The simulated :class:`sim.sample.CrystalSample`.
    probe
        The simulator's probe (:class:`sim.KBProbe`).
    stage_xyz_m
        (POS, 3) stage positions of the reconstructed frames, metres.

    Returns
    -------
    dict
        ``strain_rmse``, ``strain_bias`` (mean of estimate − truth), ``strain_rmse_unbiased`` (the RMSE once that
        uniform offset is removed: the data cannot tell a uniform strain from a probe phase ramp), ``truth_rms``
        (RMS of the true strain in the same voxels: the RMSE of a map of zeros), ``e_rho`` and ``n_strain_voxels``.
    """
    import numpy as np
    from scipy.ndimage import binary_dilation, binary_erosion

    from analysis.metrics import object_error

    res = outcome.result
    maps = outcome.strain
    if maps is None or res.origin_vox is None:
        raise ValueError("truth_scores: the outcome has no strain maps or no placement (origin_vox)")
    geom = res.geometry
    ax = geom.lab_axes()
    r = [(np.arange(n) - o) * d for n, o, d in zip(res.object.shape, res.origin_vox, geom.voxel_size_m, strict=True)]
    r1, r2, r3 = np.meshgrid(*r, indexing="ij")
    x, y, z = (r1 * ax["e1"][i] + r2 * ax["e2"][i] + r3 * ax["e3"][i] for i in range(3))
    truth = sample.complex_density(x, y, z, q_bragg_per_m=geom.q_bragg_per_m)
    ill = np.zeros(res.object.shape)
    for s in np.asarray(stage_xyz_m, float).reshape(-1, 3):
        ill += np.abs(probe.field_3d(x + s[0], y + s[1], z + s[2], theta_bragg_rad=geom.theta_bragg_rad)) ** 2
    near = binary_dilation(np.abs(truth) > 0.5, iterations=1) & (ill >= 0.2 * ill.max())
    lit = binary_erosion(near & (np.abs(truth) > 0.9), iterations=1) & np.asarray(maps.mask, bool)
    true_eps = sample.strain_zz(x, y, z)[lit]
    d = np.asarray(maps.eps_zz)[lit] - true_eps
    e = object_error(res.object, truth, support=near).error if near.any() else float("nan")
    nan = float("nan")
    return {"strain_rmse": float(np.sqrt(np.mean(d ** 2))) if d.size else nan,
            "strain_bias": float(np.mean(d)) if d.size else nan,
            "strain_rmse_unbiased": float(np.std(d)) if d.size else nan,
            "truth_rms": float(np.sqrt(np.mean(true_eps ** 2))) if d.size else nan, "e_rho": float(e),
            "n_strain_voxels": int(d.size)}


def demo_live_options(opts: DemoOptions, figures_dir: Path | None) -> Any:
    """The live pipeline's options in the demo: the default recipe, the slab from the start document's sample.

    The start probe is set when the spiral's probe file exists (``initial_probe_file``, :func:`run_demo`).
    """
    from analysis.bragg.recipes import recipe_by_name
    from pxm.live.options import LiveOptions
    from pxm.reconstruction import KB_NA_H_RAD, KB_NA_V_RAD

    return LiveOptions(recipe=recipe_by_name("default", n_epie_iterations=opts.live_iterations),
                       sample_support=True, probe_na_mask_rad=(KB_NA_V_RAD, KB_NA_H_RAD), figures_dir=figures_dir)


def closing_lines(outcome: Any, scores: dict[str, float]) -> list[str]:
    """The demo's verdict on its final result: R-factor, strain RMSE against the truth, converged or not."""
    m = outcome.metrics
    phase = outcome.result.phases[-1] if outcome.result.phases else "epie"
    r = m.get(f"r_factor_{phase}", float("nan"))
    bar = "meets" if scores["strain_rmse"] <= STRAIN_RMSE_BAR else "misses"
    conv = outcome.convergence.summary() if outcome.convergence is not None else "converged: unknown"
    return [f"final result: R-factor {r:.4g} ({phase}), E_rho vs truth {scores['e_rho']:.3f}",
            f"strain RMSE vs the simulator's truth in the lit crystal: {scores['strain_rmse']:.2e} "
            f"({scores['n_strain_voxels']} voxels; bias {scores['strain_bias']:+.1e}, without it "
            f"{scores['strain_rmse_unbiased']:.2e}; true strain RMS there "
            f"{scores['truth_rms']:.2e}; {bar} the 1e-4 bar)",
            conv]


STRAIN_RMSE_BAR = 1e-4
"""Issue 17's bar for the demo's strain RMSE against the truth in the lit region."""


def _end_live_after_interrupt(live: Any, exc: ScanInterrupted) -> None:
    """Let the live worker end (aborted: at once; stopped: its result from what arrived) before exiting."""
    if live is None or not live.sessions:
        return
    try:
        summaries = live.wait(3600 if exc.exit_status == "success" else 120)
    except (RuntimeError, TimeoutError) as err:
        print(f"live reconstruction: {' '.join(str(err).split())}")
        return
    except BeamtimeInterrupted as again:              # a signal while the stopped run's result is computed
        print(f"live reconstruction: {_abort_live_final(live, again.signal_name)}")
        return
    for sm in summaries:
        if sm.get("status") == "aborted":
            key = sm.get("preview_key")
            print(f"live reconstruction of run {sm['uid'][:8]}: aborted ({sm.get('reason')}); "
                  + (f"preview /processed/{key} marked 'aborted'" if key else "no preview had been published"))
        elif sm.get("final_key"):
            print(f"live reconstruction of run {sm['uid'][:8]}: partial result from "
                  f"{sm.get('metrics', {}).get('n_frames_used')} frames in /processed/{sm['final_key']}")


def _abort_live_final(live: Any, signal_name: str) -> str:
    """Mark the live result of a signal during the final reconstruction ``aborted``; say what became of it.

    The Bragg run itself is whole (stop document ``success``): the result is not completed from a
    reconstruction cut short (it would look final and is not); the run is reconstructed again with
    ``pxm reconstruct --run``.
    """
    notes = []
    for sm in live.abort(f"interrupted ({signal_name}) while the final result was computed; the raw run is whole"):
        uid = sm["uid"]
        if sm.get("final_key"):
            notes.append(f"the final result of run {uid[:8]} was already published: /processed/{sm['final_key']}")
        elif sm.get("status") == "aborted":
            key = sm.get("preview_key")
            where = f"live preview /processed/{key} marked 'aborted'" if key else "no live preview had been published"
            notes.append(f"no final result of run {uid[:8]} was published ({where}); reconstruct it with "
                         f"`pxm reconstruct --run {uid} -o RESULTS.h5`")
    return "; ".join(notes) or "no live result was being computed"


def run_demo(server: TiledServerConfig, opts: DemoOptions, *, tiled_uri: str | None = None,
             interrupts: InterruptOptions | None = None) -> int:
    """Start (or reach) Tiled, run the simulated beamtime, print where the runs live.

    An interrupted or failed scan raises :class:`pxm.runengine.ScanInterrupted` (its message says where
    the data are) once the live reconstruction has ended: marked aborted, or, after a stop, its result
    from the frames that arrived. Ctrl-C or SIGTERM outside a scan (e.g. during the probe's forward
    ptychography) raises :class:`pxm.runengine.BeamtimeInterrupted` naming the runs that had ended, after
    the embedded Tiled server is stopped and without leaving a probe file.
    """
    with interrupt_between_scans():
        return _run_demo(server, opts, tiled_uri=tiled_uri, interrupts=interrupts)


def _run_demo(server: TiledServerConfig, opts: DemoOptions, *, tiled_uri: str | None,
              interrupts: InterruptOptions | None) -> int:
    runs_done: dict[str, str] = {}
    with tiled_session(server, tiled_uri) as session:
        uri, raw, processed = session.uri, session.raw, session.processed
        live = None
        if opts.live:
            from pxm.live.router import LiveReconstructionCallback

            live = LiveReconstructionCallback(processed=processed, raw=raw,
                                              options=demo_live_options(opts, server.data_dir / "figures"))

        def hand_over(probe_file: Path) -> None:    # the spiral's probe starts the live engine of the BP scan
            if live is not None:
                live.options = replace(live.options, initial_probe_file=probe_file)

        t0 = time.perf_counter()
        try:
            uids = run_beamtime(raw, server.raw_path, server.data_dir / "documents", opts,
                                extra_callbacks=(live,) if live is not None else (),
                                probe_dir=server.data_dir / "probes", on_probe_file=hand_over, interrupts=interrupts,
                                runs=runs_done)
            summaries = live.wait(3600) if live is not None else []   # raises if the final result failed
        except ScanInterrupted as exc:
            _end_live_after_interrupt(live, exc)
            raise
        except BeamtimeInterrupted as exc:
            exc.runs = dict(runs_done)
            if live is not None and live.sessions:      # after the Bragg scan: its final result was being computed
                exc.live_note = _abort_live_final(live, exc.signal_name)
            raise
        elapsed = time.perf_counter() - t0
        bp = raw[uids["bragg_ptychography"]]
        frames = bp["primary"]["mpx_image"]
        print()
        print(f"simulated beamtime done in {elapsed:.1f} s")
        key_file = write_key_file(server.data_dir, server.api_key)    # the key never goes on a printed line
        print(f"Tiled server : {uri}   (API key in {key_file}, mode 0600)")
        print(f"data folder  : {server.data_dir}")
        for name, uid in uids.items():
            print(f"run {name:22s}: {uid}")
        print(f"BP frames in Tiled: {frames.shape} {frames.dtype}")
        print(f"read it back (shell: export PXM_TILED_API_KEY=$(cat {key_file})), in Python:")
        print("    import os; from tiled.client import from_uri")
        print(f"    run = from_uri('{uri}', api_key=os.environ['PXM_TILED_API_KEY'])['raw']"
              f"['{uids['bragg_ptychography']}']")
        print("    frames = run['primary']['mpx_image'][:]; run.start['pattern']")
        for sm in summaries:
            m = sm.get("metrics", {})
            print(f"live reconstruction: {m.get('n_frames_used')} frames, {m.get('n_iterations')} iterations, "
                  f"final cost {m.get('final_cost'):.4g}; result /processed/{sm.get('final_key')}")
            print(f"    res = from_uri('{uri}', api_key=os.environ['PXM_TILED_API_KEY'])['processed']"
                  f"['{sm.get('final_key')}']")
            print("    rho = res['object'][:]; strain = res['strain_zz'][:]; res.metadata['raw_uid']")
            for f in sm.get("figures", []):
                print(f"    figure: {f}")
        for s in live.sessions if live is not None else []:
            final = s.final_result or {}
            outcome = final.get("outcome")
            if outcome is not None:
                print(f"live engine's start probe: {outcome.probe_source}")
                scores = truth_scores(outcome, demo_sample(), demo_probe(opts, outcome.geometry.energy_kev),
                                      final["stage_xyz_m"])
                for line in closing_lines(outcome, scores):
                    print(line)
        if opts.ferroelectric:
            from pxm.ferroelectric import FerroelectricDemoOptions, print_chain_summary, run_ferroelectric_job

            print("\nferroelectric FP-DFXM (c/a domains, one scan per variant) ...")
            fe, fe_figures = run_ferroelectric_job(raw, processed, server.raw_path, server.data_dir / "documents",
                                                   FerroelectricDemoOptions(),
                                                   figures_dir=server.data_dir / "figures" / "ferroelectric")
            print_chain_summary(fe, uri=uri, key_file=key_file)
            for path in fe_figures:
                print(f"    figure: {path}")
    return 0
