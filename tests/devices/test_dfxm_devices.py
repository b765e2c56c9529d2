"""FP-DFXM devices: lens stage and goniometer limits, imaging camera writes frames, describe carries units."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from ophyd.utils import LimitError

from analysis.dfxm import FPDFXMGeometry, Reflection
from devices.dfxm import CRLStage, DFXMGoniometer, SimCRLStage, SimDFXMGoniometer
from devices.maxipix import COMPLETE_PATH, DATASET_PATH, N_FRAMES_PATH
from devices.sim_beamline import make_sim_dfxm_beamline
from sim.dfxm import DFXMSimulator, crystal_exit_field, frame_for_setting, setting_shifts

REFLECTION = Reflection(hkl=(0, 0, 2), d_spacing_m=2.018e-10)


@pytest.fixture(scope="module")
def source():
    geom = FPDFXMGeometry(reflection=REFLECTION, n_px=16, upsampling=4)
    truth = crystal_exit_field(geom.hr_n_px * 2, geom.hr_pixel_size_m / 2, REFLECTION, 17.0, dislocations=(),
                               grain_fraction=None)
    return DFXMSimulator(truth.exit_field, geom.hr_pixel_size_m / 2, geom, zernike_rad={4: 0.3})


@pytest.fixture
def bl(source, tmp_path):
    return make_sim_dfxm_beamline(source, geometry=source.geometry, data_dir=tmp_path, exposure_s=0.001)


def test_epics_and_sim_share_component_names():
    assert CRLStage.component_names == SimCRLStage.component_names == ("x", "y", "z", "pitch", "yaw")
    assert DFXMGoniometer.component_names == SimDFXMGoniometer.component_names == ("theta", "chi", "tth")


def test_limits_raise_and_nothing_moves(bl):
    with pytest.raises(LimitError, match="outside the soft limits"):
        bl.lens.y.set(5000.0)
    with pytest.raises(LimitError):
        bl.lens.pitch.set(6.0)
    with pytest.raises(LimitError):
        bl.gonio.chi.set(-11.0)
    assert bl.lens.y.position == 0.0 and bl.gonio.chi.position == 0.0
    bl.lens.pitch.set(1.5).wait()
    assert bl.lens.pitch.position == 1.5


def test_describe_has_units(bl):
    cam = bl.camera
    desc = cam.describe()
    assert desc["cam_image"]["external"] == "STREAM:" and desc["cam_image"]["shape"] == [16, 16]
    assert all("units" in d for d in desc.values())
    assert cam.describe_configuration()["cam_pixel_size_um"]["units"] == "um"
    units = {k: v["units"] for dev in (bl.lens, bl.gonio) for k, v in dev.describe().items()}
    assert units["lens_y"] == "um" and units["lens_pitch"] == "mrad" and units["gonio_chi"] == "deg"


def test_frames_written_follow_the_forward_model(bl, source):
    geom = source.geometry
    cam = bl.camera
    cam.stage()
    docs = []
    settings = [(0.0, 0.0), (geom.angle_per_freq_px_rad * 3 / 2, 0.0)]   # rock by δφ: 3 frequency px
    for rock_rad, _ in settings:
        bl.gonio.theta.set(np.degrees(geom.bragg_angle_rad + rock_rad)).wait()
        cam.trigger().wait(timeout=10)
        docs += list(cam.collect_asset_docs())
    cam.unstage()
    assert [n for n, _ in docs] == ["stream_resource", "stream_datum", "stream_datum"]
    with h5py.File(cam.file_path, "r") as f:
        frames = f[DATASET_PATH][()]
        assert frames.shape == (2, 16, 16) and frames.dtype == np.uint32
        assert f[COMPLETE_PATH][()] == 1 and f[N_FRAMES_PATH][()] == 2
    assert bl.backend.calls[1]["rock_rad"] == pytest.approx(settings[1][0], rel=1e-9)
    shift, _ = setting_shifts(geom, rock_rad=settings[1][0])
    assert shift == pytest.approx([3 * geom.angle_per_freq_px_rad, 0.0])
    for frame, (rock_rad, _) in zip(frames, settings, strict=True):
        expect = frame_for_setting(source.exit_field, source.field_pixel_size_m, geom, rock_rad=rock_rad,
                                   zernike_rad=source.zernike_rad) * source.counts_scale_per_s * 0.001
        assert np.corrcoef(frame.ravel(), expect.ravel())[0, 1] > 0.9


def test_beam_dump_gives_dark_frames(bl):
    bl.monitor.dump()
    frame = bl.backend.acquire(exposure_s=0.01, roi=bl.camera.roi)
    assert frame.sum() == 0 and bl.backend.calls[-1]["flux_scale"] == 0.0


def test_backend_rejects_bad_source(bl):
    from devices.sim_backends import SimDFXMCameraBackend

    with pytest.raises(TypeError, match="DFXMFrameSource"):
        SimDFXMCameraBackend(object(), lens=bl.lens, gonio=bl.gonio, monitor=bl.monitor, geometry=bl.backend.geometry)
