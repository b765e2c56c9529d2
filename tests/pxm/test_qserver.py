"""The queueserver namespace: plans and devices that a RE Manager accepts."""

import pytest

profile_ops = pytest.importorskip("bluesky_queueserver.manager.profile_ops")


def test_namespace_is_accepted_by_queueserver(tmp_path, tiled_service):
    from pxm.qserver import build_namespace

    ns = build_namespace(data_dir=tmp_path, tiled_uri=tiled_service.uri, api_key=tiled_service.config.api_key)
    assert "RE" in ns
    existing_plans, existing_devices, _, _ = profile_ops.existing_plans_and_devices_from_nspace(nspace=ns)
    assert {"raster_rocking_scan", "spiral_probe_scan", "rocking_curve_align"} <= set(existing_plans)
    assert {"mpx", "stage", "gonio", "ring"} <= set(existing_devices)
    item = {"name": "raster_rocking_scan", "args": ["mpx", "stage", "gonio"],
            "kwargs": {"geometry": ns["geometry"], "positions_um": [[0.0, 0.0], [0.1, 0.0]],
                       "angles_deg": [43.9 + 0.005 * k for k in range(-4, 5)],
                       "sample": {"name": "W-foil"}, "exposure_s": 0.2}}
    ok, msg = profile_ops.validate_plan(item, allowed_plans=existing_plans, allowed_devices=existing_devices)
    assert ok, msg


def test_tiled_uri_without_key_is_refused(tmp_path):
    from pxm.qserver import build_namespace

    with pytest.raises(ValueError, match="PXM_TILED_API_KEY"):
        build_namespace(data_dir=tmp_path, tiled_uri="http://127.0.0.1:1")


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("", True), ("1", True), ("yes", True),
                                                 ("0", False), ("false", False), ("Off", False), ("no", False)])
def test_pxm_live_flag(value, expected):
    from pxm.qserver import env_flag

    assert env_flag(value, default=True) is expected


def test_live_reconstruction_is_subscribed_and_permissions_are_written(tmp_path, tiled_service):
    import yaml

    from pxm.live import LiveReconstructionCallback
    from pxm.qserver import build_namespace, write_user_group_permissions

    ns = build_namespace(data_dir=tmp_path, tiled_uri=tiled_service.uri, api_key=tiled_service.config.api_key,
                         live=True)
    assert isinstance(ns["pxm_live"], LiveReconstructionCallback)
    assert "pxm_live" not in profile_ops.existing_plans_and_devices_from_nspace(nspace=ns)[1]
    path = write_user_group_permissions(tmp_path)
    groups = yaml.safe_load(path.read_text())["user_groups"]
    assert path.name == "user_group_permissions.yaml" and {"root", "primary"} <= set(groups)
