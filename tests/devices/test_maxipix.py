import h5py
import numpy as np
import pytest

from analysis.geometry import Roi
from devices.maxipix import COMPLETE_PATH, DATASET_PATH, N_FRAMES_PATH
from devices.testing import decode_frame


def _read_docs(det):
    return list(det.collect_asset_docs())


def test_trigger_before_stage_raises(beamline):
    with pytest.raises(RuntimeError, match="not armed"):
        beamline.detector.trigger()


def test_describe_has_units_and_stream_key(beamline):
    desc = beamline.detector.describe()
    assert desc["mpx_image"]["external"] == "STREAM:"
    assert desc["mpx_image"]["shape"] == [16, 16]
    assert all("units" in d for d in desc.values())
    assert all("units" in d for d in beamline.detector.describe_configuration().values())
    assert beamline.detector.hints == {"fields": ["mpx_total"]}
    assert "mpx_image" not in beamline.detector.read()


def test_stage_trigger_collect_unstage(beamline):
    det, stage = beamline.detector, beamline.stage
    det.set_roi(Roi(row0_px=2, col0_px=1, n_rows_px=4, n_cols_px=8))
    det.stage()
    docs = []
    for x in (1.0, 2.0, 3.0):
        stage.x.set(x).wait()
        det.trigger().wait(timeout=5)
        docs += _read_docs(det)
    path = det.file_path
    with h5py.File(path, "r", swmr=True) as f:      # readable while writing, not complete yet
        assert f[DATASET_PATH].shape == (3, 4, 8)
        assert f[COMPLETE_PATH][()] == 0
    det.unstage()
    names = [n for n, _ in docs]
    assert names == ["stream_resource", "stream_datum", "stream_datum", "stream_datum"]
    res = docs[0][1]
    assert res["uri"] == f"file://localhost{path}" and res["data_key"] == "mpx_image"
    assert res["parameters"] == {"dataset": "/entry/data/data", "chunk_shape": (1, 4, 8)}
    assert [d["indices"] for _, d in docs[1:]] == [{"start": i, "stop": i + 1} for i in range(3)]
    with h5py.File(path, "r") as f:
        assert f[COMPLETE_PATH][()] == 1 and f[N_FRAMES_PATH][()] == 3
        ds = f[DATASET_PATH]
        assert ds.chunks == (1, 4, 8) and ds.dtype == np.uint32
        assert [decode_frame(ds[i])["x_um"] for i in range(3)] == [1.0, 2.0, 3.0]
        assert ds[0, 1:].sum() == 7 * 3 * 8
        assert det.total.get() == int(ds[2].sum())


def test_retrigger_overwrites_unread_slot(beamline):
    det, stage = beamline.detector, beamline.stage
    det.stage()
    stage.x.set(1.0).wait()
    det.trigger().wait(timeout=5)
    _read_docs(det)
    stage.x.set(2.0).wait()
    det.trigger().wait(timeout=5)          # interrupted point: never read
    stage.x.set(2.5).wait()
    det.trigger().wait(timeout=5)          # re-trigger after rewind
    docs = _read_docs(det)
    assert [d["indices"] for _, d in docs] == [{"start": 1, "stop": 2}]
    det.unstage()
    with h5py.File(det.file_path, "r") as f:
        ds = f[DATASET_PATH]
        assert ds.shape[0] == 2
        assert [decode_frame(ds[i])["x_um"] for i in range(2)] == [1.0, 2.5]


def test_unread_frame_dropped_and_file_marked_incomplete(beamline):
    det = beamline.detector
    det.stage()
    det.trigger().wait(timeout=5)
    _read_docs(det)
    det.trigger().wait(timeout=5)          # e.g. abort before the event was read
    det.unstage()
    with h5py.File(det.file_path, "r") as f:
        assert f[DATASET_PATH].shape[0] == 1
        assert f[COMPLETE_PATH][()] == 0 and f[N_FRAMES_PATH][()] == 1


def test_roi_checks(beamline):
    det = beamline.detector
    with pytest.raises(ValueError, match="leaves the 16 × 16 detector"):
        det.set_roi(Roi(row0_px=10, col0_px=0, n_rows_px=8, n_cols_px=8))
    det.stage()
    with pytest.raises(RuntimeError, match="while staged"):
        det.set_roi(Roi(row0_px=0, col0_px=0, n_rows_px=8, n_cols_px=8))
    det.unstage()


def test_sim_backend_offsets(beamline, geometry):
    det, gonio = beamline.detector, beamline.gonio
    gonio.theta.set(geometry.theta_bragg_deg + 0.02).wait()
    beamline.monitor.current.put(100.0)
    det.stage()
    det.trigger().wait(timeout=5)
    det.unstage()
    call = beamline.backend.calls[-1]
    assert call["rocking_offset_deg"] == pytest.approx(0.02)
    assert call["detector_arm_offset_deg"] == pytest.approx(0.0)
    assert call["flux_scale"] == pytest.approx(0.5)
