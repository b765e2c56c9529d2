"""The CXI results file (``write_cxi``) is a plottable NeXus file: NXdata with ``@signal`` and ``@axes``."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from nexusformat.nexus import nxload

from analysis.dataset import write_cxi


@pytest.mark.parametrize("shape", [(6, 5, 4), (6, 5)])
def test_image_and_data_groups_have_signal_and_axes(tmp_path, shape):
    img = (np.arange(np.prod(shape)).reshape(shape) * (1 + 1j)).astype(np.complex64)
    px = (1e-8, 2e-8, 3e-8)[-len(shape):]
    write_cxi(tmp_path / "r.cxi", img, pixel_size_m=px, probe=np.ones((5, 4), complex), energy_kev=8.0)
    names = ["r1_m", "r2_m", "r3_m"][-len(shape):]
    with h5py.File(tmp_path / "r.cxi") as f:
        for group in ("entry_1/image_1", "entry_1/data_1"):
            g = f[group]
            assert g.attrs["NX_class"] == "NXdata" and g.attrs["signal"] == "data"
            assert list(g.attrs["axes"]) == names
            for a, name in enumerate(names):
                assert g.attrs[f"{name}_indices"] == a
                n = shape[a]
                np.testing.assert_allclose(g[name][()], (np.arange(n) - n // 2) * px[a], rtol=1e-15)
                assert g[name].attrs["units"] == "m"
        probe = f["entry_1/image_2"]
        assert probe.attrs["signal"] == "data" and list(probe.attrs["axes"]) == ["r2_m", "r3_m"]
    root = nxload(str(tmp_path / "r.cxi"), "r")      # an independent NeXus reader finds signal and axes
    try:
        d = root["entry_1/data_1"]
        np.testing.assert_array_equal(d.nxsignal.nxdata, img)
        assert [ax.nxname for ax in d.nxaxes] == names
        assert d.nxaxes[0].shape == (shape[0],)
    finally:
        root.nxfile.close()
