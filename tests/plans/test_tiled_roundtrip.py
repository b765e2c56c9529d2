"""The StreamResource/StreamDatum documents are accepted by TiledWriter and serve the right frames."""

import h5py
import numpy as np
import pytest

from plans.bragg import raster_rocking_scan
from plans.patterns import rocking_angles_deg


def test_tiled_writer_serves_frames(RE, beamline, geometry, tmp_path):
    tiled_server = pytest.importorskip("tiled.server")
    from bluesky_tiled_plugins import TiledWriter
    from tiled.client import from_uri

    srv = tiled_server.SimpleTiledServer(directory=str(tmp_path / "tiled"), api_key="pxmtest",
                                         readable_storage=[str(tmp_path / "raw")])
    try:
        client = from_uri(srv.uri)
        RE.subscribe(TiledWriter(client, batch_size=1))
        angles = rocking_angles_deg(geometry.theta_bragg_deg, geometry.rocking_step_deg, geometry.n_angles)
        result = RE(raster_rocking_scan(beamline.detector, beamline.stage, beamline.gonio, geometry=geometry,
                                        positions_um=[[0.0, 0.0], [1.0, 0.5]], angles_deg=angles,
                                        sample={"name": "W-foil-07"}, exposure_s=0.001))
        run = client[result.run_start_uids[0]]
        img = run["primary"]["mpx_image"].read()
        with h5py.File(beamline.detector.file_path, "r") as f:
            np.testing.assert_array_equal(img, f["/entry/data/data"][()])
        assert img.shape == (18, 16, 16)
        assert run.metadata["start"]["sample"]["name"] == "W-foil-07"
    finally:
        srv.close()
