"""Live previews (``/processed/<uid8>-live-NNN``) are xarray datasets with dims, units and coordinates like the
final result (issue 17 point 3): a small 3 × 3 × 5 scan under the real RunEngine with the live engine on."""

from __future__ import annotations

import uuid

import numpy as np

from pxm.live import PREVIEW_SPEC, LiveOptions, LiveReconstructionCallback, live_recipe
from pxm.publication import XARRAY_SPEC, find_results
from pxm.runengine import make_run_engine
from testing.small_bragg_scan import small_bragg_scan_plan


def test_preview_is_a_dataset_placed_like_the_final_result(tiled_layout, tiled_service, tmp_path):
    _, raw, processed = tiled_layout
    plan = small_bragg_scan_plan(tiled_service.config.raw_path / uuid.uuid4().hex[:8], sample_name="W-preview-test",
                                 seed=7)
    cb = LiveReconstructionCallback(processed=processed, raw=raw,
                                    options=LiveOptions(recipe=live_recipe(4), preview_interval_s=0.2))
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", extra_callbacks=(cb,))
    (uid,) = w.RE(plan)
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
