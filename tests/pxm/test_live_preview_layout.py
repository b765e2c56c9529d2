"""Live previews (``/processed/<uid8>-live-NNN``) are xarray datasets with dims, units and coordinates like the
final result (issue 17 point 3): a small 3 × 3 × 5 scan under the real RunEngine with the live engine on."""

from __future__ import annotations

import uuid

import numpy as np

from analysis.geometry import DetectorLayout, Roi, seed_geometry
from devices.sim_beamline import make_sim_beamline
from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg
from pxm.live import PREVIEW_SPEC, LiveOptions, LiveReconstructionCallback, live_recipe
from pxm.publication import XARRAY_SPEC, find_results
from pxm.runengine import make_run_engine


def test_preview_is_a_dataset_placed_like_the_final_result(tiled_layout, tiled_service, tmp_path):
    from sim import BraggSimulator, KBProbe, uniform_strain_sample

    _, raw, processed = tiled_layout
    geom = seed_geometry(n_rows_px=32, n_cols_px=32, n_angles=5, rocking_step_deg=0.005, upsampling=1)
    layout = DetectorLayout()
    src = BraggSimulator(geom, uniform_strain_sample(strain=0.0), KBProbe(energy_kev=8.0), layout=layout,
                         flux_ph_per_s=1e9, background_ph_per_px_per_s=0.05)
    raw_dir = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    raw_dir.mkdir(parents=True)
    bl = make_sim_beamline(src, geometry=geom, data_dir=raw_dir, roi=Roi.centred(layout, 32, 32), exposure_s=0.2,
                           simulate_exposure=False, seed=7)
    cb = LiveReconstructionCallback(processed=processed, raw=raw,
                                    options=LiveOptions(recipe=live_recipe(4), preview_interval_s=0.2))
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", extra_callbacks=(cb,))
    angles = rocking_angles_deg(geom.theta_bragg_deg, geom.rocking_step_deg, geom.n_angles)
    (uid,) = w.RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geom,
                                      positions_um=raster_positions_um(3, 3, 0.1), angles_deg=angles,
                                      sample={"name": "W-preview-test", "material": "W"}, exposure_s=0.2,
                                      order="angle_outer"))
    (summary,) = cb.wait(180)
    writes = [w for _, w in cb.sessions[0].preview_times_s]
    print(f"{len(writes)} previews; Tiled write s: first {writes[0]:.3f} (the dataset), later median "
          f"{np.median(writes[1:]) if len(writes) > 1 else float('nan'):.3f}")
    (preview_key,) = find_results(processed, uid, kind="live")
    node = processed[preview_key]
    assert {PREVIEW_SPEC, XARRAY_SPEC} <= {s.name for s in node.specs}
    assert node.metadata["raw_key"] == f"raw/{uid}" and node.metadata["n_previews"] >= 1
    ds = node.read()
    assert ds["object_amplitude_mid_e1"].dims == ("e2", "e3") and ds["object_phase_mid_e3"].dims == ("e1", "e2")
    assert ds["strain_zz_mid_e2"].dims == ("e1", "e3") and ds["probe"].dims == ("probe_e2", "probe_e3")
    assert ds["object_phase_mid_e2"].attrs["units"] == "rad" and ds["probe"].attrs["units"] == "sqrt(photons)"
    assert all(ds[c].attrs["units"] == "m" for c in ("e1", "e2", "e3", "probe_e2", "probe_e3"))
    final = processed[summary["final_key"]].read()
    for c in ("e1", "e2", "e3", "probe_e2", "probe_e3"):          # the same grid, the same origin
        np.testing.assert_allclose(ds[c].values, final[c].values, rtol=0, atol=1e-15)
    n2 = final.sizes["e2"] // 2
    assert ds["object_amplitude_mid_e2"].attrs["slice_at_m"] == float(final["e2"].values[n2])
    assert ds["object_amplitude_mid_e1"].shape == final["object"].shape[1:]
