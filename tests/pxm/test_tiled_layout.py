"""Self-describing results in Tiled (issue 17 point 3, docs/tiled-layout.md).

A published Bragg result is read back in a fresh process with nothing but the plain tiled client: an
``xarray.Dataset`` whose arrays carry dims and units and whose ``x, y, z`` coordinates are the simulator-free
analytic placement ``origin_m + Σ_a n_a voxel_size_m[a] axes_lab[a]``; the metadata holds the geometry, frame,
recipe, software and quality, links are Tiled keys (no server URL); ``pxm replay -o/--publish`` keeps the result
of a replayed run, and the raw run's documents are never modified.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

from analysis.geometry import seed_geometry
from pxm.cli import main
from testing.small_bragg_scan import small_bragg_scan_plan

API_KEY = "pxmtestkey0123456789"            # the session server's key (tests/conftest.py)

READER = """
import json, sys
import numpy as np
from tiled.client import from_uri
uri, key, node_key, out = sys.argv[1:]
node = from_uri(uri, api_key=key)["processed"][node_key]
ds = node.read()
report = {"client": type(node).__name__, "metadata": dict(node.metadata),
          "dims": {k: list(ds[k].dims) for k in ds.variables},
          "units": {k: ds[k].attrs.get("units") for k in ds.variables}}
np.savez(out + ".npz", **{k: np.asarray(ds[k].values) for k in ("x", "y", "z", "e1", "e2", "e3", "object")})
json.dump(report, open(out + ".json", "w"))
"""


@pytest.fixture(scope="module")
def outcome():
    """A short reconstruction of the tests' engine-model problem (a few seconds)."""
    from analysis.bragg import PipelineOptions, reconstruct
    from analysis.bragg.recipes import quick_recipe
    from analysis.bragg.solvers.options import Execution
    from testing.bragg_problem import engine_inputs, make_problem, scan_of

    problem = make_problem()
    recipe = dataclasses.replace(quick_recipe(), allow_undersampled=True)
    return reconstruct(scan_of(problem), recipe, engine_inputs(problem)["probe"],
                           options=PipelineOptions(execution=Execution(backend="numpy"), progress=False),
                           recipe_name="quick")


def _read_in_fresh_process(uri: str, node_key: str, out: str) -> tuple[dict, dict]:
    r = subprocess.run([sys.executable, "-c", READER, uri, API_KEY, node_key, out], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out + ".json") as f:
        report = json.load(f)
    return report, dict(np.load(out + ".npz"))


def test_published_result_is_a_dataset_with_units_and_both_frames(outcome, tiled_layout, tiled_service, tmp_path):
    from analysis.bragg.outcome import software_info
    from pxm.publication import find_results, publish_outcome

    _, _, processed = tiled_layout
    raw_uid = uuid.uuid4().hex
    node = publish_outcome(processed, raw_uid, outcome)
    key = node.item["id"]
    assert find_results(processed, raw_uid) == [key]                    # found by query on raw_uid
    report, arrays = _read_in_fresh_process(tiled_service.uri, key, str(tmp_path / "read"))
    assert report["client"] == "DatasetClient"
    e = ["e1", "e2", "e3"]
    dims = report["dims"]
    assert dims["object"] == e and dims["x"] == e and dims["strain_zz"] == e and dims["omega_x"] == e
    assert dims["probe"] == ["probe_e2", "probe_e3"] and dims["error"] == ["iteration"]
    assert all(report["units"][k] for k in dims), report["units"]      # every array and coordinate has units
    assert report["units"]["x"] == report["units"]["e1"] == "m" and report["units"]["omega_y"] == "rad"
    # the sample-frame coordinates are the analytic placement of each voxel
    p = outcome.placement
    n = np.stack(np.meshgrid(*[np.arange(s) for s in outcome.object.shape], indexing="ij"), axis=-1)
    expected = p.origin_m + (n * np.asarray(p.voxel_size_m)) @ p.axes_lab
    scale = float(np.abs(expected).max())
    for c, name in enumerate("xyz"):
        assert arrays[name].shape == outcome.object.shape
        np.testing.assert_allclose(arrays[name], expected[..., c], rtol=0, atol=1e-12 * scale)
    for a, name in enumerate(e):                                         # e_a = r · axes_lab[a]
        want = p.axes_lab[a] @ p.origin_m + np.arange(outcome.object.shape[a]) * p.voxel_size_m[a]
        np.testing.assert_allclose(arrays[name], want, rtol=0, atol=1e-12 * scale)
    np.testing.assert_array_equal(arrays["object"], outcome.object.astype(np.complex64))
    md = report["metadata"]
    g = outcome.geometry
    assert md["raw_uid"] == raw_uid and md["raw_key"] == f"raw/{raw_uid}" and "raw_uri" not in md
    assert "http://" not in json.dumps(md)                               # links are keys, never a server's URL
    assert md["geometry"]["energy_kev"] == g.energy_kev
    assert md["geometry"]["derived"]["bragg_angle_deg"] == pytest.approx(g.theta_bragg_deg, rel=1e-12)
    assert md["geometry"]["lab_axes"]["q_hat"] == [0.0, 0.0, 1.0]
    np.testing.assert_allclose([md["geometry"]["lab_axes"][k] for k in e], p.axes_lab, atol=1e-15)
    assert md["voxel_size_m"] == pytest.approx(list(g.voxel_size_m), rel=1e-12)
    assert md["origin_m"] == pytest.approx(list(p.origin_m), rel=1e-12)
    assert set(md["frame"]) == {"sample", "reconstruction"} and md["recipe"] == "quick"
    assert md["software"]["version"] == software_info()["version"]
    q = md["quality"]
    assert q["r_factor"] == pytest.approx(outcome.metrics["r_factor"]) and q["converged"] == outcome.metrics[
        "converged"] and q["verdict"].startswith("converged: ")


def test_dataset_without_strain_maps_or_placement_says_so(outcome):
    """Strain failed: no strain variables; no recorded placement: no x, y, z and e_a counted from voxel 0."""
    from pxm.publication import outcome_dataset, result_metadata

    ds = outcome_dataset(dataclasses.replace(outcome, strain=None))
    assert {"object", "probe", "support"} <= set(ds.data_vars) and not {"strain_zz", "omega_x"} & set(ds.data_vars)
    unplaced = dataclasses.replace(outcome, result=dataclasses.replace(outcome.result, origin_vox=None))
    ds = outcome_dataset(unplaced)
    assert not {"x", "y", "z"} & set(ds.coords) and ds["e1"].attrs["origin"].startswith("voxel 0")
    np.testing.assert_allclose(ds["e3"].values, np.arange(ds.sizes["e3"]) * outcome.geometry.voxel_size_m[2])
    md = result_metadata(unplaced, "some-uid")
    assert md["origin_m"] is None and md["object_placement"] is None and md["raw_key"] == "raw/some-uid"


def test_fp_dfxm_result_is_a_dataset_with_units_and_image_coordinates(tiled_layout, tiled_service):
    """FP-DFXM results too: dims, units (given or by suffix) and object-plane coordinates, no link to the run."""
    from tiled.client import from_uri

    from pxm.publication import find_results, publish_fp_dfxm_results

    _, _, processed = tiled_layout
    rng = np.random.default_rng(0)
    obj = rng.normal(size=(8, 6)) + 1j * rng.normal(size=(8, 6))
    raw_uid = uuid.uuid4().hex
    publish_fp_dfxm_results(processed, raw_uid, {"object": obj, "pupil": np.ones((4, 4), complex),
                                                 "strain": rng.normal(size=(8, 6)), "tilt_rock_rad": np.zeros((8, 6)),
                                                 "image_shift_m": np.zeros((3, 2)), "error": np.arange(5.0)},
                            metadata={"units": {"object_pixel_size_m": 50e-9, "strain": "1"}})
    (key,) = find_results(processed, raw_uid)
    ds = from_uri(tiled_service.uri, api_key=API_KEY)["processed"][key].read()
    assert ds["object"].dims == ("row", "col") and ds["tilt_rock_rad"].attrs["units"] == "rad"
    assert ds["image_shift_m"].attrs["units"] == "m" and ds["error"].dims == ("error_0",)
    np.testing.assert_allclose(ds["col"].values, (np.arange(6) - 3) * 50e-9)
    np.testing.assert_array_equal(ds["object"].values, obj.astype(np.complex64))
    assert ds.attrs["layout"] == "docs/tiled-layout.md"


def test_probe_source_is_an_absolute_path(tmp_path, monkeypatch):
    """A probe file given by a relative path is recorded by its absolute path (the results outlive the cwd)."""
    from pxm.reconstruction import initial_probe, write_probe_file

    geometry = seed_geometry(n_rows_px=16, n_cols_px=16, n_angles=5, rocking_step_deg=0.005, upsampling=2)
    n2, n3 = geometry.recon_shape[1:]
    _, dr2, dr3 = geometry.voxel_size_m
    r2 = (np.arange(n2) - n2 // 2)[:, None] * dr2
    r3 = (np.arange(n3) - n3 // 2)[None, :] * dr3
    probe = np.exp(-0.5 * ((r2 / 0.4e-6) ** 2 + (r3 / 0.4e-6) ** 2)).astype(complex)
    write_probe_file(tmp_path / "probe.h5", probe, pixel_size_m=(dr2, dr3), axes="r2, r3")
    monkeypatch.chdir(tmp_path)
    _, source = initial_probe(geometry, probe_file="probe.h5")
    assert source.startswith(f"file {tmp_path.resolve() / 'probe.h5'}"), source


def test_replay_publish_needs_a_server_and_output_a_writable_path(capsys, tmp_path):
    (tmp_path / "run.jsonl").write_text("")
    assert main(["replay", "--jsonl", str(tmp_path / "run.jsonl"), "--publish"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--publish needs --tiled-uri" in err
    assert main(["replay", "--jsonl", str(tmp_path / "run.jsonl"), "-o", str(tmp_path / "no" / "r.h5")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "-o" in err


def test_replay_writes_results_and_publishes_without_touching_the_raw_run(tiled_layout, tiled_service, tmp_path):
    """`pxm replay --jsonl F -o results.h5 --publish`: a readable results file, the same object published as a
    dataset found by raw_uid, and the raw run's metadata exactly as the RunEngine left it."""
    from tiled.client import from_uri

    from analysis.dataset import read_results
    from pxm.publication import XARRAY_SPEC, find_results
    from pxm.runengine import make_run_engine
    _, raw, processed = tiled_layout
    plan = small_bragg_scan_plan(tiled_service.config.raw_path / uuid.uuid4().hex[:8], sample_name="W-layout-test",
                                 seed=3)
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", extra_callbacks=())
    (uid,) = w.RE(plan)
    before = json.dumps(dict(from_uri(tiled_service.uri, api_key=API_KEY)["raw"][uid].metadata), sort_keys=True)
    out = tmp_path / "replayed.h5"
    r = subprocess.run([sys.executable, "-m", "pxm.cli", "replay", "--jsonl", str(tmp_path / "docs" / f"{uid}.jsonl"),
                        "-o", str(out), "--publish", "--tiled-uri", tiled_service.uri, "--api-key", API_KEY,
                        "--iterations", "4"], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert f"wrote {out}" in r.stdout
    res = read_results(out)
    assert res["status"] == "complete" and res["object"].ndim == 3 and res["metrics"]["n_frames_used"] == 45
    keys = find_results(processed, uid)
    assert len(keys) == 1
    node = processed[keys[0]]
    assert XARRAY_SPEC in [s.name for s in node.specs] and node.metadata["raw_key"] == f"raw/{uid}"
    np.testing.assert_array_equal(node["object"].read(), res["object"])   # one outcome, file and Tiled alike
    after = json.dumps(dict(from_uri(tiled_service.uri, api_key=API_KEY)["raw"][uid].metadata), sort_keys=True)
    assert after == before and '"analysis"' not in after                  # raw run untouched, no back-link
