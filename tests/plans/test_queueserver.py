"""bluesky-queueserver accepts the plans (plan-list generation and parameter validation)."""

import pytest

import plans

profile_ops = pytest.importorskip("bluesky_queueserver.manager.profile_ops")


def test_plan_list_generation_accepts_plans(beamline):
    nspace = {name: getattr(plans, name) for name in plans.QSERVER_PLANS}
    nspace.update(mpx=beamline.detector, stage=beamline.stage, gonio=beamline.gonio)
    existing_plans, existing_devices, _, _ = profile_ops.existing_plans_and_devices_from_nspace(nspace=nspace)
    assert set(plans.QSERVER_PLANS) <= set(existing_plans)
    params = {p["name"] for p in existing_plans["raster_rocking_scan"]["parameters"]}
    assert {"detector", "stage", "gonio", "geometry", "positions_um", "angles_deg", "sample",
            "exposure_s", "order", "md"} <= params
    assert {"mpx", "stage", "gonio"} <= set(existing_devices)
    item = {"name": "rocking_curve_align", "args": ["mpx", "gonio"],
            "kwargs": {"centre_deg": 43.9, "step_deg": 0.004, "n_angles": 21, "exposure_s": 0.01}}
    ok, msg = profile_ops.validate_plan(item, allowed_plans=existing_plans, allowed_devices=existing_devices)
    assert ok, msg


def test_raster_scan_item_validates(beamline, geometry):
    nspace = {"raster_rocking_scan": plans.raster_rocking_scan, "mpx": beamline.detector,
              "stage": beamline.stage, "gonio": beamline.gonio}
    existing_plans, existing_devices, _, _ = profile_ops.existing_plans_and_devices_from_nspace(nspace=nspace)
    item = {"name": "raster_rocking_scan", "args": ["mpx", "stage", "gonio"],
            "kwargs": {"geometry": geometry.to_metadata(), "positions_um": [[0.0, 0.0], [0.5, 0.0]],
                       "angles_deg": [43.9], "sample": {"name": "W-foil-07"}, "exposure_s": 0.01,
                       "order": "raster_outer"}}
    ok, msg = profile_ops.validate_plan(item, allowed_plans=existing_plans, allowed_devices=existing_devices)
    assert ok, msg
