"""Helpers: collect documents and check the HDF5 frames against the events."""

from __future__ import annotations

import h5py

from devices.testing import decode_frame


class DocCollector:
    """RunEngine subscriber that keeps every (name, document) pair it is given."""

    def __init__(self):
        self.docs = []

    def __call__(self, name, doc):
        """Keep one document."""
        self.docs.append((name, doc))

    def of(self, name):
        """The documents of kind ``name`` ("start", "event", ...), in arrival order."""
        return [d for n, d in self.docs if n == name]


def check_frames_match_events(docs: DocCollector, geometry, *, x_key="stage_x", y_key="stage_y",
                              theta_key="gonio_theta"):
    """Every event has exactly one frame, in order, encoding that event's positions."""
    events = docs.of("event")
    (res,) = docs.of("stream_resource")
    datums = docs.of("stream_datum")
    indices = [(d["indices"]["start"], d["indices"]["stop"]) for d in datums]
    assert indices == [(k, k + 1) for k in range(len(events))]
    assert [d["seq_nums"]["start"] for d in datums] == [e["seq_num"] for e in events]
    path = res["uri"].removeprefix("file://localhost")
    with h5py.File(path, "r") as f:
        frames = f[res["parameters"]["dataset"]][()]
        assert f["/entry/pxm/complete"][()] == 1
    assert frames.shape[0] == len(events)
    decoded = [decode_frame(fr) for fr in frames]
    for ev, dec in zip(events, decoded, strict=True):
        assert round(dec["x_um"] * 1e3) == round(ev["data"][x_key] * 1e3)      # nm resolution
        assert round(dec["y_um"] * 1e3) == round(ev["data"][y_key] * 1e3)
        if theta_key is not None:                                                 # µdeg resolution
            assert round(dec["rocking_offset_deg"] * 1e6) == round(
                (ev["data"][theta_key] - geometry.rocking_centre_deg) * 1e6)   # θ_B, or η/φ
        assert dec["flux_scale"] == 1.0
    calls = [d["call"] for d in decoded]
    assert calls == sorted(calls)
    return frames, decoded
