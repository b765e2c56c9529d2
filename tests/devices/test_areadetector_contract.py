"""The document contract of ophyd's areaDetector HDF5 plugin next to pxm's Maxipix (docs/interop.md).

ophyd's own classes (``SimDetectorCam`` + ``HDF5Plugin`` with ``FileStoreHDF5IterativeWrite``, made fake by
``ophyd.sim.make_fake_device``: no IOC, no file) run ``bp.count`` under a real RunEngine. They emit the legacy
``resource``/``datum`` documents (spec ``AD_HDF5``); the normaliser that pxm's TiledWriter runs
(bluesky-tiled-plugins' ``RunNormalizer``) turns them into the StreamResource/StreamDatum contract that
pxm's Maxipix emits natively: HDF5 mimetype, ``/entry/data/data``, one index range per event.
"""

from __future__ import annotations

import threading

import bluesky.plans as bp
from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer
from ophyd import Component as Cpt
from ophyd.areadetector import DetectorBase, SimDetectorCam, SingleTrigger
from ophyd.areadetector.filestore_mixins import FileStoreHDF5IterativeWrite
from ophyd.areadetector.plugins import HDF5Plugin
from ophyd.sim import make_fake_device

from devices.maxipix import DATASET_PATH
from testing.plan_checks import DocCollector

ROWS_PX, COLS_PX = 16, 16
EXPOSURE_S = 0.2


class _HDF5(HDF5Plugin, FileStoreHDF5IterativeWrite):
    """ophyd's HDF5 file plugin with the iterative-write asset documents."""


class _AreaDetector(SingleTrigger, DetectorBase):
    """What a facility's ophyd v1 areaDetector with an HDF5 plugin looks like."""

    cam = Cpt(SimDetectorCam, "cam1:")
    hdf5 = Cpt(_HDF5, "HDF1:", write_path_template="/data/ad/", read_path_template="/data/ad/")


def _fake_area_detector():
    """The fake twin, primed as a running IOC would be (ports, array size, data type, plugin type)."""
    det = make_fake_device(_AreaDetector)("AD:", name="ad")
    det.hdf5.kind = "normal"
    det.cam.port_name.sim_put("CAM")
    det.cam.data_type.sim_put("UInt32")
    det.cam.num_images.sim_put(1)
    det.cam.array_size.array_size_y.sim_put(ROWS_PX)
    det.cam.array_size.array_size_x.sim_put(COLS_PX)
    det.cam.acquire.sim_put(0)
    det.hdf5.port_name.sim_put("HDF1")
    det.hdf5.nd_array_port.sim_put("CAM")
    det.hdf5.plugin_type.sim_put(det.hdf5._plugin_type)
    det.hdf5.file_path_exists.sim_put(1)
    for axis, n_px in (("height", ROWS_PX), ("width", COLS_PX), ("depth", 0)):
        getattr(det.hdf5.array_size, axis).sim_put(n_px)
    det.hdf5.enable.sim_put(1)
    det.hdf5.stage_sigs.pop("enable")     # a fake *WithRBV signal's set() never completes; it is enabled above

    def acquisition_ends(value, **kwargs):
        if value == 1:                     # the IOC drops Acquire when the frame is done: after an exposure of
            # EXPOSURE_S, long enough that SingleTrigger.trigger() has returned its status (it forgets it at 0)
            threading.Timer(EXPOSURE_S, det.cam.acquire.sim_put, args=(0,)).start()

    det.cam.acquire.subscribe(acquisition_ends, run=False)
    return det


def test_ophyd_areadetector_hdf5_documents_normalise_to_pxms_stream_contract(RE, beamline):
    det = _fake_area_detector()
    raw, normalised = DocCollector(), DocCollector()
    normaliser = RunNormalizer()
    normaliser.subscribe(normalised)
    RE(bp.count([det], 3), lambda name, doc: (raw(name, doc), normaliser(name, doc)))

    # what ophyd v1 emits: Resource/Datum (AD_HDF5), FILESTORE: data key, datum ids in the events
    (resource,) = raw.of("resource")
    assert resource["spec"] == "AD_HDF5" and resource["resource_kwargs"] == {"frame_per_point": 1}
    assert [d["datum_kwargs"] for d in raw.of("datum")] == [{"point_number": k} for k in range(3)]
    assert raw.of("stream_resource") == [] and raw.of("stream_datum") == []
    (desc,) = raw.of("descriptor")
    assert desc["data_keys"]["ad_image"]["external"] == "FILESTORE:"
    assert list(desc["data_keys"]["ad_image"]["shape"]) == [1, ROWS_PX, COLS_PX]

    # after pxm's TiledWriter normaliser: the Maxipix's StreamResource/StreamDatum contract
    (sres,) = normalised.of("stream_resource")
    assert sres["mimetype"] == "application/x-hdf5"
    assert sres["parameters"]["dataset"] == DATASET_PATH == "/entry/data/data"
    assert sres["data_key"] == "ad_image" and sres["uri"].startswith("file://")
    datums = normalised.of("stream_datum")
    events = normalised.of("event")
    assert len(events) == 3 and all("ad_image" not in e["data"] for e in events)
    covered = [k for d in datums for k in range(d["indices"]["start"], d["indices"]["stop"])]
    assert covered == [0, 1, 2]                                        # one frame per event, in order

    # pxm's Maxipix emits the same contract without a normaliser
    maxipix = DocCollector()
    beamline.detector.exposure_s.put(0.001)
    RE(bp.count([beamline.detector], 3), maxipix)
    (mpx_sres,) = maxipix.of("stream_resource")
    assert mpx_sres["mimetype"] == sres["mimetype"]
    assert mpx_sres["parameters"]["dataset"] == sres["parameters"]["dataset"]
    assert set(sres) <= set(mpx_sres)                                  # data_key, mimetype, parameters, uid, uri
    assert [(d["indices"]["start"], d["indices"]["stop"]) for d in maxipix.of("stream_datum")] == [(0, 1), (1, 2),
                                                                                                   (2, 3)]
