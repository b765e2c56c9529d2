"""HDF5 dataset and results files of pxm, and a CXI export (layout in ``docs/dataset-format.md``).

* :func:`write_dataset` / :func:`read_dataset` — measured Bragg-ptychography frames with
  per-frame rocking angle (deg) and stage position (m), detector mask, geometry and
  sample/provenance metadata; reading validates and names the file and HDF5 key.
* :func:`write_results` / :func:`read_results` — object, probe, background, strain
  maps, metrics, parameters and timings of one reconstruction.
* :func:`write_cxi` — a 2D/3D complex image (and probe) in the CXI convention
  (``/cxi_version``, ``/entry_1/image_1/data``, ``/entry_1/instrument_1/...``, SI units).
"""

# Why this module is long: the dataset and results file formats (docs/dataset-format.md): writer, reader and
# validation of one layout, kept together so they cannot drift apart.

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np

from analysis.bragg.operators.scan import ObjectPlacement
from analysis.geometry import HC_KEV_M, BraggGeometry
from analysis.strain import StrainMaps
from analysis.xp import Array, to_numpy

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "BraggDataset",
    "validate_dataset",
    "open_for_reading",
    "write_dataset",
    "read_dataset",
    "DatasetShare",
    "read_dataset_share",
    "scan_axes",
    "write_results",
    "append_results",
    "read_results",
    "RESULTS_STATUS",
    "write_cxi",
    "units_for",
]

FORMAT_NAME = "pxm-bragg-dataset"
FORMAT_VERSION = "1.1"
"""1.1 adds the optional general geometry (``/geometry/frame``, ``/geometry/diffractometer``); 1.0 files read."""
RESULTS_FORMAT_NAME = "pxm-bragg-results"
RESULTS_STATUS = ("iterations complete", "complete", "complete with post-processing errors")
"""Values of the results file's ``/@status``: the reconstruction is written and post-processing is pending
(or the process ended during it); everything ran; some post-processing step failed (``/postprocessing_errors``)."""
_EV_J = 1.602176634e-19

_SUFFIX_UNITS = (("_per_m", "1/m"), ("_kev", "keV"), ("_deg", "deg"), ("_rad", "rad"), ("_nm", "nm"),
                 ("_um", "um"), ("_m", "m"), ("_s", "s"), ("_px", "pixel"))


def units_for(name: str) -> str:
    """Unit string implied by a pxm name suffix (``_m`` → ``m``, ``n_*`` and others → ``1``)."""
    for suffix, unit in _SUFFIX_UNITS:
        if name.endswith(suffix):
            return unit
    return "1"


@dataclass(frozen=True, kw_only=True)
class BraggDataset:
    """A measured (or simulated) Bragg-ptychography scan.

    Layout ``"grid"``: frames (POS, ANGLE, ROW, COL), angles (POS, ANGLE), stage
    positions (POS, ANGLE, 3). Layout ``"flat"``: frames (FRAME, ROW, COL), angles
    (FRAME,), positions (FRAME, 3), plus ``position_index``/``angle_index`` (FRAME,).
    Frames are the detector crop of ``geometry`` (ROW = n_rows_px, COL = n_cols_px).
    """

    frames: np.ndarray = field(repr=False)
    """Photon counts, float32 or unsigned/signed integers, finite and >= 0."""
    rocking_angle_deg: np.ndarray = field(repr=False)
    """Absolute rocking angle of every frame in degrees."""
    stage_position_m: np.ndarray = field(repr=False)
    """Sample stage (x, y, z) of every frame in metres."""
    detector_mask: np.ndarray = field(repr=False)
    """(ROW, COL) bool, True on live pixels (gaps, hot pixels False)."""
    geometry: BraggGeometry
    position_index: np.ndarray | None = field(default=None, repr=False)
    """(FRAME,) int scan-position index (flat layout only)."""
    angle_index: np.ndarray | None = field(default=None, repr=False)
    """(FRAME,) int rocking-angle index (flat layout only)."""
    sample: dict[str, Any] = field(default_factory=dict)
    """Sample description (name, material, hkl, thickness_m, ...)."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Where the data came from (beamline, scan id, simulator version, ...)."""

    def __post_init__(self) -> None:
        validate_dataset(self, source="BraggDataset")

    @property
    def layout(self) -> str:
        """``"grid"`` (4D frames) or ``"flat"`` (3D frames with indices)."""
        return "grid" if np.ndim(self.frames) == 4 else "flat"


def _fail(source: str, key: str, msg: str) -> ValueError:
    return ValueError(f"{source}: {key}: {msg}")


def validate_dataset(ds: BraggDataset, *, source: str) -> None:
    """Raise ValueError naming ``source`` and the HDF5 key for every inconsistency of ``ds``."""
    f = np.asarray(ds.frames)
    if f.ndim not in (3, 4):
        raise _fail(source, "/data/frames", f"shape {f.shape}, expected (n_positions, n_angles, rows, cols) "
                    "or flat (n_frames, rows, cols)")
    if not (np.issubdtype(f.dtype, np.number) and not np.iscomplexobj(f)):
        raise _fail(source, "/data/frames", f"dtype {f.dtype}, expected real counts (float or integer)")
    if np.issubdtype(f.dtype, np.floating):
        bad = ~np.isfinite(f)
        if bad.any():
            raise _fail(source, "/data/frames", f"{int(bad.sum())} NaN/inf values (first at index "
                        f"{tuple(int(i) for i in np.argwhere(bad)[0])}); mask those pixels and store 0")
    neg = f < 0
    if neg.any():
        raise _fail(source, "/data/frames", f"{int(neg.sum())} negative counts (first at index "
                    f"{tuple(int(i) for i in np.argwhere(neg)[0])}, value {f[tuple(np.argwhere(neg)[0])]}); "
                    "subtract dark/background without clipping below 0 or mask the pixels")
    lead = f.shape[:-2]
    checks = (("/data/rocking_angle_deg", ds.rocking_angle_deg, lead),
              ("/data/stage_position_m", ds.stage_position_m, lead + (3,)))
    for key, arr, shape in checks:
        a = np.asarray(arr)
        if a.shape != shape:
            raise _fail(source, key, f"shape {a.shape}, expected {shape} to match /data/frames {f.shape}")
        if not np.all(np.isfinite(a)):
            raise _fail(source, key, "contains NaN or inf; every frame needs its angle and position")
    m = np.asarray(ds.detector_mask)
    if m.shape != f.shape[-2:] or m.dtype != bool:
        raise _fail(source, "/data/detector_mask", f"shape {m.shape} dtype {m.dtype}, expected bool {f.shape[-2:]}")
    g = ds.geometry
    if not isinstance(g, BraggGeometry):
        raise _fail(source, "/geometry", f"expected a BraggGeometry, found {type(g).__name__}")
    if (g.n_rows_px, g.n_cols_px) != f.shape[-2:]:
        raise _fail(source, "/geometry", f"n_rows_px × n_cols_px = {g.n_rows_px} × {g.n_cols_px} but frames are "
                    f"{f.shape[-2]} × {f.shape[-1]}; store the detector crop the geometry describes")
    if f.ndim == 4:
        if f.shape[1] != g.n_angles:
            raise _fail(source, "/data/frames", f"{f.shape[1]} angles but /geometry/n_angles = {g.n_angles}")
        if ds.position_index is not None or ds.angle_index is not None:
            raise _fail(source, "/data/position_index", "indices are only for the flat layout; drop them")
    else:
        for key, idx, upper in (("/data/position_index", ds.position_index, None),
                                ("/data/angle_index", ds.angle_index, g.n_angles)):
            if idx is None:
                raise _fail(source, key, "missing; the flat layout needs position_index and angle_index per frame")
            i = np.asarray(idx)
            if i.shape != (f.shape[0],) or not np.issubdtype(i.dtype, np.integer):
                raise _fail(source, key, f"shape {i.shape} dtype {i.dtype}, expected integer ({f.shape[0]},)")
            if i.size and (i.min() < 0 or (upper is not None and i.max() >= upper)):
                raise _fail(source, key, f"values in [{i.min()}, {i.max()}], expected [0, {upper or 'n_positions'})")


# --------------------------------------------------------------------------- metadata helpers
def jsonable(v: Any, *, nonfinite_to_none: bool = False) -> Any:
    """Plain JSON-ready copy of ``v``: arrays → lists, NumPy scalars → Python, dataclasses → dicts.

    Complex numbers become ``{"real", "imag"}``; with ``nonfinite_to_none`` NaN/inf become None
    (strict JSON, as Tiled metadata needs).
    """
    def conv(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): conv(y) for k, y in x.items()}
        if isinstance(x, (list, tuple)):
            return [conv(y) for y in x]
        if isinstance(x, np.ndarray):
            return conv(x.tolist())
        if isinstance(x, np.generic):
            return conv(x.item())
        if isinstance(x, complex):
            return {"real": conv(x.real), "imag": conv(x.imag)}
        if nonfinite_to_none and isinstance(x, float) and not np.isfinite(x):
            return None
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return conv(dataclasses.asdict(x))
        return x

    return conv(v)


def _write_dict_attrs(group: h5py.Group, d: dict[str, Any]) -> None:
    """Whole dict as JSON in attr ``json``; scalar/str entries also as attributes (+ units)."""
    d = jsonable(d)
    group.attrs["json"] = json.dumps(d)
    for k, v in d.items():
        if isinstance(v, (bool, int, float, str)) and v is not None:
            group.attrs[k] = v
            if units_for(k) != "1":
                group.attrs[f"{k}@units"] = units_for(k)


def _read_dict_attrs(group: h5py.Group) -> dict[str, Any]:
    raw = group.attrs.get("json")
    return json.loads(raw) if raw is not None else {}


def _write_scalar(group: h5py.Group, name: str, value: Any) -> None:
    ds = group.create_dataset(name, data=value)
    ds.attrs["units"] = units_for(name)


def _write_geometry(group: h5py.Group, geometry: BraggGeometry) -> None:
    md = geometry.to_metadata()
    derived = md.pop("derived")
    frame = md.pop("frame", None)
    diffractometer = md.pop("diffractometer", None)
    if frame is not None:                      # format 1.1: general diffractometer geometry
        fg = group.create_group("frame")
        for k, v in frame.items():
            _write_scalar(fg, k, np.asarray(v, float))
        fg.attrs["description"] = "GeometryFrame: unit vectors in the sample frame (docs/geometry.md)"
    if diffractometer is not None:
        dd = group.create_dataset("diffractometer", data=json.dumps(diffractometer))
        dd.attrs["content"] = "json: analysis.diffractometer.Diffractometer.to_metadata() (circles, angles in deg)"
    for k, v in md.items():
        if v is None:
            continue
        _write_scalar(group, k, np.asarray(v))
    dg = group.create_group("derived")
    for k, v in derived.items():
        _write_scalar(dg, k, np.asarray(v))
    group.attrs["description"] = "BraggGeometry.to_metadata(); each value carries a 'units' attribute"


def _read_geometry(f: h5py.File, source: str) -> BraggGeometry:
    if "geometry" not in f:
        raise _fail(source, "/geometry", "group missing; write the BraggGeometry with write_dataset(geometry=...)")
    g = f["geometry"]
    md: dict[str, Any] = {}
    for k, v in g.items():
        if isinstance(v, h5py.Dataset):
            val = v[()]
            md[k] = val if isinstance(val, bytes) else val.item() if np.ndim(val) == 0 else val.tolist()
            if isinstance(md[k], bytes):
                md[k] = md[k].decode()
    try:
        if isinstance(md.get("diffractometer"), str):
            md["diffractometer"] = json.loads(md["diffractometer"])
        if isinstance(g.get("frame"), h5py.Group):
            md["frame"] = {k: (v[()].tolist() if np.ndim(v[()]) else float(v[()])) for k, v in g["frame"].items()}
        return BraggGeometry.from_metadata(md)
    except (ValueError, TypeError) as exc:
        raise _fail(source, "/geometry", str(exc)) from exc


# --------------------------------------------------------------------------- dataset I/O
def write_dataset(path: str | Path, dataset: BraggDataset, *, compression: str | None = "gzip") -> None:
    """Write ``dataset`` to an HDF5 file (overwrites); layout in ``docs/dataset-format.md``."""
    validate_dataset(dataset, source=str(path))
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["layout"] = dataset.layout
        f.attrs["created_utc"] = _dt.datetime.now(_dt.UTC).isoformat()
        d = f.create_group("data")
        frames = np.asarray(dataset.frames)
        chunks = (1,) * (frames.ndim - 2) + frames.shape[-2:]
        fr = d.create_dataset("frames", data=frames, chunks=chunks, compression=compression)
        fr.attrs["units"] = "counts"
        fr.attrs["axes"] = ("position,angle,row,col" if frames.ndim == 4 else "frame,row,col")
        a = d.create_dataset("rocking_angle_deg", data=np.asarray(dataset.rocking_angle_deg, float))
        a.attrs["units"] = "deg"
        p = d.create_dataset("stage_position_m", data=np.asarray(dataset.stage_position_m, float))
        p.attrs["units"] = "m"
        p.attrs["axes"] = "x,y,z (lab frame, docs/geometry.md)"
        mk = d.create_dataset("detector_mask", data=np.asarray(dataset.detector_mask, bool))
        mk.attrs["meaning"] = "True = live pixel; False = gap/hot/dead pixel, left free in the reconstruction"
        if dataset.layout == "flat":
            d.create_dataset("position_index", data=np.asarray(dataset.position_index, np.int64))
            d.create_dataset("angle_index", data=np.asarray(dataset.angle_index, np.int64))
        _write_geometry(f.create_group("geometry"), dataset.geometry)
        _write_dict_attrs(f.create_group("sample"), dataset.sample)
        prov = {"software": "pxm", "format_version": FORMAT_VERSION, **dataset.provenance}
        _write_dict_attrs(f.create_group("provenance"), prov)


def _open_data(f: h5py.File, source: str) -> h5py.Group:
    """The checked ``/data`` group of an open dataset file."""
    fmt = f.attrs.get("format")
    if fmt is not None and fmt != FORMAT_NAME:
        raise _fail(source, "/@format", f"{fmt!r}, expected {FORMAT_NAME!r}")
    if "data" not in f:
        raise _fail(source, "/data", "group missing; this is not a pxm dataset file")
    d = f["data"]
    for key in ("frames", "rocking_angle_deg", "stage_position_m", "detector_mask"):
        if key not in d:
            raise _fail(source, f"/data/{key}", "dataset missing")
    return d


def _unchecked_dataset(kw: dict[str, Any]) -> BraggDataset:
    """A BraggDataset without running ``__post_init__`` (the caller validates with its source name)."""
    ds = object.__new__(BraggDataset)
    for k, v in kw.items():
        object.__setattr__(ds, k, v)
    return ds


def open_for_reading(path: str | Path) -> h5py.File:
    """``path`` opened read-only; ValueError naming the file when it is missing or not HDF5 (one line)."""
    source = str(path)
    if not Path(path).is_file():
        raise ValueError(f"{source}: no such file; check the path")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{source}: not an HDF5 file ({exc})") from exc


def read_dataset(path: str | Path) -> BraggDataset:
    """Read and validate a file written by :func:`write_dataset`; errors name the file and key."""
    source = str(path)
    if not Path(path).is_file():
        raise ValueError(f"{source}: no such file; check the path")
    with h5py.File(path, "r") as f:
        d = _open_data(f, source)
        kw: dict[str, Any] = dict(
            frames=d["frames"][()], rocking_angle_deg=d["rocking_angle_deg"][()],
            stage_position_m=d["stage_position_m"][()], detector_mask=d["detector_mask"][()].astype(bool),
            position_index=d["position_index"][()] if "position_index" in d else None,
            angle_index=d["angle_index"][()] if "angle_index" in d else None,
            sample=_read_dict_attrs(f["sample"]) if "sample" in f else {},
            provenance=_read_dict_attrs(f["provenance"]) if "provenance" in f else {},
            geometry=_read_geometry(f, source),
        )
    ds = _unchecked_dataset(kw)
    validate_dataset(ds, source=source)
    return ds


@dataclass(frozen=True, kw_only=True)
class DatasetShare:
    """The part of a grid-layout dataset file one MPI rank needs: its positions' frames only.

    ``local`` is a valid :class:`BraggDataset` of the positions ``positions`` (frames, angles,
    stage positions of those rows); the angles and stage positions of *every* position are kept
    as well (a few bytes per frame: the object grid and the batches need all of them).
    """

    local: BraggDataset
    """Grid-layout dataset of this rank's positions (rows in the order of ``positions``)."""
    positions: np.ndarray = field(repr=False)
    """(POS_LOCAL,) int64, increasing: global position index of each row of ``local``."""
    rocking_angle_deg: np.ndarray = field(repr=False)
    """(POS, ANGLE) rocking angle of every frame of the whole scan, degrees."""
    stage_position_m: np.ndarray = field(repr=False)
    """(POS, ANGLE, 3) stage position of every frame of the whole scan, metres."""

    @property
    def n_positions(self) -> int:
        """Positions of the whole scan."""
        return int(self.rocking_angle_deg.shape[0])

    @property
    def geometry(self) -> BraggGeometry:
        """The scan geometry."""
        return self.local.geometry

    @property
    def sample(self) -> dict[str, Any]:
        """Sample metadata of the file."""
        return self.local.sample

    @property
    def provenance(self) -> dict[str, Any]:
        """Provenance metadata of the file."""
        return self.local.provenance


def read_dataset_share(path: str | Path, *, rank: int = 0, size: int = 1) -> DatasetShare:
    """Read the frames of positions j ≡ ``rank`` (mod ``size``) only (grid layout; cf.
    :func:`analysis.bragg.solvers.distributed.owned_positions`), plus every position's angles and stage
    positions. Each position's frames are read with one HDF5 hyperslab, so a rank never holds
    (or decompresses) the other ranks' frames. Errors name the file and key.
    """
    source = str(path)
    if not 0 <= rank < size:
        raise ValueError(f"read_dataset_share: rank {rank} outside [0, {size})")
    if not Path(path).is_file():
        raise ValueError(f"{source}: no such file; check the path")
    with h5py.File(path, "r") as f:
        d = _open_data(f, source)
        fr = d["frames"]
        if fr.ndim != 4:
            raise _fail(source, "/data/frames", f"shape {fr.shape}: a flat (partial) scan cannot be split by "
                        "position; the reconstruction needs the grid layout (POS, ANGLE, ROW, COL)")
        angles = d["rocking_angle_deg"][()]
        stage = d["stage_position_m"][()]
        if angles.shape != fr.shape[:2] or stage.shape != fr.shape[:2] + (3,):
            raise _fail(source, "/data/stage_position_m", f"angles {angles.shape} / positions {stage.shape} do "
                        f"not match /data/frames {fr.shape}")
        pos = np.arange(rank, fr.shape[0], size, dtype=np.int64)
        frames = np.empty((pos.size,) + fr.shape[1:], dtype=fr.dtype)
        for k, j in enumerate(pos):
            fr.read_direct(frames, source_sel=np.s_[int(j)], dest_sel=np.s_[k])
        kw: dict[str, Any] = dict(
            frames=frames, rocking_angle_deg=angles[pos], stage_position_m=stage[pos],
            detector_mask=d["detector_mask"][()].astype(bool), position_index=None, angle_index=None,
            sample=_read_dict_attrs(f["sample"]) if "sample" in f else {},
            provenance=_read_dict_attrs(f["provenance"]) if "provenance" in f else {},
            geometry=_read_geometry(f, source),
        )
    local = _unchecked_dataset(kw)
    validate_dataset(local, source=source)
    if not (np.all(np.isfinite(angles)) and np.all(np.isfinite(stage))):
        raise _fail(source, "/data/stage_position_m", "contains NaN or inf; every frame needs its angle and position")
    return DatasetShare(local=local, positions=pos, rocking_angle_deg=angles, stage_position_m=stage)


def scan_axes(rocking_angle_deg: np.ndarray, stage_position_m: np.ndarray,
              geometry: BraggGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(stage_xyz_m (POS, 3), rocking_offsets_deg (ANGLE,)) of a grid scan, as the engine takes them.

    Raises ValueError if a position moves by more than 10 nm between angles or the angles differ
    between positions by more than 5 % of a step.
    """
    angles = np.asarray(rocking_angle_deg, float)
    pos = np.asarray(stage_position_m, float)
    stage = pos.mean(axis=1)
    spread = float(np.abs(pos - stage[:, None]).max()) if pos.size else 0.0
    if spread > 10e-9:
        raise ValueError(f"dataset: /data/stage_position_m moves by {spread * 1e9:.1f} nm between angles of one "
                         "position; the engine takes one position per raster point")
    ang = angles.mean(axis=0)
    if np.abs(angles - ang[None]).max() > 0.05 * abs(geometry.rocking_step_deg):
        raise ValueError("dataset: /data/rocking_angle_deg differs between positions by more than 5 % of a step")
    # the grid of angles is what the engine needs; absolute misalignment is harmless
    return stage, ang - geometry.rocking_centre_deg


# --------------------------------------------------------------------------- results
def _write_strain(group: h5py.Group, maps: StrainMaps) -> None:
    for name in ("eps_zz", "omega_x_rad", "omega_y_rad", "amplitude", "mask"):
        ds = group.create_dataset(name, data=to_numpy(getattr(maps, name)))
        ds.attrs["units"] = "1" if name in ("eps_zz", "amplitude", "mask") else "rad"
    group.attrs["voxel_size_m"] = np.asarray(maps.voxel_size_m)
    group.attrs["origin_m"] = np.asarray(maps.origin_m)
    group.attrs["frame"] = maps.frame
    group.attrs["axes"] = "e1,e2,e3" if maps.frame == "reconstruction" else "x,y,z"


def write_results(path: str | Path, *, object: Array, probe: Array, voxel_size_m: Any,
                  background: Array | None = None, strain: StrainMaps | dict[str, StrainMaps] | None = None,
                  metrics: dict[str, Any] | None = None, parameters: dict[str, Any] | None = None,
                  timings_s: dict[str, float] | None = None, error_history: Any = None,
                  geometry: BraggGeometry | None = None, provenance: dict[str, Any] | None = None,
                  placement: ObjectPlacement | None = None, status: str = "complete",
                  postprocessing_errors: dict[str, str] | None = None, support: Array | None = None) -> None:
    """Write one reconstruction's results to HDF5 (layout in ``docs/dataset-format.md``).

    ``strain`` may be one :class:`StrainMaps` or a dict of them (e.g. reconstruction and
    sample frames); ``parameters`` takes ``dataclasses.asdict(options)`` dicts or dataclasses.
    ``placement`` puts ``origin_m`` and ``axes_lab`` on ``/object`` (where each voxel sits);
    ``status`` is one of :data:`RESULTS_STATUS`; :func:`append_results` adds post-processing later.
    ``support`` (bool, the object's shape) is stored as ``/support``.
    """
    _check_status(status)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = RESULTS_FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["created_utc"] = _dt.datetime.now(_dt.UTC).isoformat()
        f.attrs["status"] = status
        o = f.create_dataset("object", data=to_numpy(object))
        o.attrs["voxel_size_m"] = np.broadcast_to(np.asarray(voxel_size_m, float), (np.ndim(o),))
        o.attrs["axes"] = "e1,e2,e3 (reconstruction frame)" if o.ndim == 3 else "row,col"
        if placement is not None:
            if o.ndim != 3:
                raise ValueError(f"write_results: placement given for a {o.ndim}D object; it places a 3D grid")
            if not np.allclose(placement.voxel_size_m, o.attrs["voxel_size_m"], rtol=1e-9, atol=0):
                raise ValueError(f"write_results: placement.voxel_size_m {placement.voxel_size_m} != voxel_size_m "
                                 f"{tuple(o.attrs['voxel_size_m'])}")
            o.attrs["origin_m"] = np.asarray(placement.origin_m, float)
            o.attrs["axes_lab"] = np.asarray(placement.axes_lab, float)
            o.attrs["placement"] = ("voxel n at origin_m + sum_a n_a voxel_size_m[a] axes_lab[a], lab (x, y, z) m, "
                                    "relative to the sample point in the beam at stage position 0 (stage s: -s)")
        if support is not None:
            sup = np.asarray(to_numpy(support), bool)
            if sup.shape != o.shape:
                raise ValueError(f"write_results: support shape {sup.shape} != object shape {o.shape}")
            f.create_dataset("support", data=sup, compression="gzip").attrs["meaning"] = "True = inside the support"
        f.create_dataset("probe", data=to_numpy(probe))
        if background is not None:
            f.create_dataset("background", data=to_numpy(background)).attrs["units"] = "counts"
        if error_history is not None:
            f.create_dataset("error_history", data=np.asarray(to_numpy(error_history), float))
        if strain is not None:
            sg = f.create_group("strain")
            items = strain.items() if isinstance(strain, dict) else [(strain.frame, strain)]
            for name, maps in items:
                _write_strain(sg.create_group(name), maps)
        _write_dict_attrs(f.create_group("metrics"), metrics or {})
        _write_dict_attrs(f.create_group("parameters"), parameters or {})
        tg = f.create_group("timings")
        for k, v in (timings_s or {}).items():
            tg.attrs[k] = float(v)
        tg.attrs["units"] = "s"
        if geometry is not None:
            _write_geometry(f.create_group("geometry"), geometry)
        _write_dict_attrs(f.create_group("provenance"), {"software": "pxm", **(provenance or {})})
        if postprocessing_errors:
            _write_dict_attrs(f.create_group("postprocessing_errors"), postprocessing_errors)


def _check_status(status: str) -> None:
    if status not in RESULTS_STATUS:
        raise ValueError(f"results status {status!r}: expected one of {', '.join(map(repr, RESULTS_STATUS))}")


def append_results(path: str | Path, *, strain: dict[str, StrainMaps] | None = None,
                   metrics: dict[str, Any] | None = None, timings_s: dict[str, float] | None = None,
                   postprocessing_errors: dict[str, str] | None = None, status: str | None = None) -> None:
    """Add post-processing to a results file of :func:`write_results`: strain groups, metrics and
    timings merged into the existing ones, step → error lines in ``/postprocessing_errors``, ``/@status``.
    """
    if status is not None:
        _check_status(status)
    with h5py.File(path, "a") as f:
        if f.attrs.get("format") != RESULTS_FORMAT_NAME:
            raise ValueError(f"{path}: /@format is {f.attrs.get('format')!r}, expected {RESULTS_FORMAT_NAME!r}")
        if strain:
            sg = f.require_group("strain")
            for name, maps in strain.items():
                if name in sg:
                    del sg[name]
                _write_strain(sg.create_group(name), maps)
        for key, extra in (("metrics", metrics), ("postprocessing_errors", postprocessing_errors)):
            if extra:
                g = f.require_group(key)
                merged = {**_read_dict_attrs(g), **extra}
                for k in list(g.attrs):
                    del g.attrs[k]
                _write_dict_attrs(g, merged)
        if timings_s:
            tg = f.require_group("timings")
            for k, v in timings_s.items():
                tg.attrs[k] = float(v)
            tg.attrs["units"] = "s"
        if status is not None:
            f.attrs["status"] = status


def read_results(path: str | Path) -> dict[str, Any]:
    """Read a results file into a plain dict (arrays, StrainMaps, metadata dicts)."""
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != RESULTS_FORMAT_NAME:
            raise ValueError(f"{path}: /@format is {f.attrs.get('format')!r}, expected {RESULTS_FORMAT_NAME!r}")
        for k in ("object", "probe", "background", "error_history", "r_factor_history", "support"):
            if k in f:
                out[k] = f[k][()]
        out["voxel_size_m"] = tuple(float(v) for v in f["object"].attrs["voxel_size_m"])
        if "strain" in f:
            out["strain"] = {}
            for name, g in f["strain"].items():
                out["strain"][name] = StrainMaps(
                    eps_zz=g["eps_zz"][()], omega_x_rad=g["omega_x_rad"][()], omega_y_rad=g["omega_y_rad"][()],
                    amplitude=g["amplitude"][()], mask=g["mask"][()],
                    voxel_size_m=cast("tuple[float, float, float]", tuple(float(v) for v in g.attrs["voxel_size_m"])),
                    origin_m=cast("tuple[float, float, float]", tuple(float(v) for v in g.attrs["origin_m"])),
                    frame=str(g.attrs["frame"]))
        for k in ("metrics", "parameters", "provenance"):
            out[k] = _read_dict_attrs(f[k])
        out["status"] = str(f.attrs.get("status", "complete"))
        out["postprocessing_errors"] = (_read_dict_attrs(f["postprocessing_errors"]) if "postprocessing_errors" in f
                                        else {})
        oa = f["object"].attrs
        if "origin_m" in oa and "axes_lab" in oa:
            out["placement"] = ObjectPlacement(origin_m=np.asarray(oa["origin_m"], float),
                                               axes_lab=np.asarray(oa["axes_lab"], float),
                                               voxel_size_m=out["voxel_size_m"])
        out["timings_s"] = {k: float(v) for k, v in f["timings"].attrs.items() if k != "units"}
        if "geometry" in f:
            out["geometry"] = _read_geometry(f, str(path))
    return out


# --------------------------------------------------------------------------- CXI
CXI_AXIS_NAMES = {2: ("r2_m", "r3_m"), 3: ("r1_m", "r2_m", "r3_m")}
"""NXdata axis fields of a CXI image by its rank: grid coordinates along (e2, e3) or (e1, e2, e3), metres."""


def _nxdata_axes(group: h5py.Group, shape: tuple[int, ...], pixel_size_m: np.ndarray) -> None:
    """Make ``group`` a plottable NXdata: ``@signal = "data"``, ``@axes`` and one coordinate field per axis.

    Axis a holds ``(n − N_a//2) · pixel_size_m[a]`` (m): the grid coordinate along the array axis with
    element N//2 at 0 (the centre convention of pxm's probe and object grids).
    """
    names = CXI_AXIS_NAMES[len(shape)]
    group.attrs["signal"] = "data"
    group.attrs["axes"] = np.array(names, dtype=h5py.string_dtype())
    for a, (name, n) in enumerate(zip(names, shape, strict=True)):
        ax = group.create_dataset(name, data=(np.arange(n) - n // 2) * float(pixel_size_m[a]))
        ax.attrs["units"] = "m"
        ax.attrs["long_name"] = f"{name[:-2]} (m), array axis {a}, element {n // 2} at 0"
        group.attrs[f"{name}_indices"] = a


def write_cxi(path: str | Path, image: Array, *, pixel_size_m: Any, probe: Array | None = None,
              probe_pixel_size_m: Any = None, energy_kev: float | None = None,
              detector_distance_m: float | None = None, detector_pixel_size_m: float | None = None,
              title: str = "pxm reconstruction", data_type: str = "electron density",
              process: dict[str, Any] | None = None) -> None:
    """Export a 2D/3D complex image (and probe) as a CXI file (CXI 1.6 names, SI units).

    Writes ``/cxi_version`` = 160, ``/entry_1/image_1/data`` (+ ``data_type``,
    ``data_space`` = "real", ``image_size`` in m, ``is_fft_shifted``),
    ``/entry_1/image_2`` for the probe, ``/entry_1/data_1/data`` (soft link),
    ``/entry_1/instrument_1/source_1/energy`` (J), ``.../detector_1/{distance,
    x_pixel_size, y_pixel_size}`` (m) and ``/entry_1/image_1/process_1/note`` (JSON). Every image group
    and ``data_1`` is a plottable NXdata (``@signal = "data"``, ``@axes`` = :data:`CXI_AXIS_NAMES`, coordinate
    fields in m with element N//2 at 0).
    """
    img = to_numpy(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"write_cxi: image has shape {img.shape}, expected a 2D or 3D array")
    pix = np.broadcast_to(np.asarray(pixel_size_m, float), (img.ndim,))
    with h5py.File(path, "w") as f:
        f.create_dataset("cxi_version", data=160)
        e = f.create_group("entry_1")
        e.attrs["NX_class"] = "NXentry"
        e.create_dataset("title", data=title)
        e.create_dataset("start_time", data=_dt.datetime.now(_dt.UTC).isoformat())

        def image_group(name: str, arr: np.ndarray, px: np.ndarray, kind: str) -> h5py.Group:
            g = e.create_group(name)
            g.attrs["NX_class"] = "NXdata"
            g.create_dataset("data", data=arr)
            g.create_dataset("data_type", data=kind)
            g.create_dataset("data_space", data="real")
            g.create_dataset("image_size", data=np.asarray(arr.shape, float) * px)
            g.create_dataset("pixel_size", data=np.asarray(px, float))
            g.create_dataset("is_fft_shifted", data=0)
            _nxdata_axes(g, arr.shape, px)
            return g

        g1 = image_group("image_1", img, pix, data_type)
        pg = g1.create_group("process_1")
        pg.create_dataset("note", data=json.dumps(jsonable(process or {})))
        pg.create_dataset("command", data="pxm analysis.dataset.write_cxi")
        if probe is not None:
            pr = to_numpy(probe)
            ppx = np.broadcast_to(np.asarray(probe_pixel_size_m if probe_pixel_size_m is not None
                                             else pix[-pr.ndim:], float), (pr.ndim,))
            image_group("image_2", pr, ppx, "probe")
        d1 = e.create_group("data_1")
        d1.attrs["NX_class"] = "NXdata"
        d1["data"] = h5py.SoftLink("/entry_1/image_1/data")
        d1.attrs["signal"] = "data"
        d1.attrs["axes"] = g1.attrs["axes"]
        for name in g1.attrs["axes"]:
            d1[name] = h5py.SoftLink(f"/entry_1/image_1/{name}")
            d1.attrs[f"{name}_indices"] = g1.attrs[f"{name}_indices"]
        inst = e.create_group("instrument_1")
        inst.attrs["NX_class"] = "NXinstrument"
        if energy_kev is not None:
            src = inst.create_group("source_1")
            en = src.create_dataset("energy", data=float(energy_kev) * 1e3 * _EV_J)
            en.attrs["units"] = "J"
            wl = src.create_dataset("wavelength", data=HC_KEV_M / float(energy_kev))
            wl.attrs["units"] = "m"
        if detector_distance_m is not None or detector_pixel_size_m is not None:
            det = inst.create_group("detector_1")
            if detector_distance_m is not None:
                det.create_dataset("distance", data=float(detector_distance_m)).attrs["units"] = "m"
            if detector_pixel_size_m is not None:
                det.create_dataset("x_pixel_size", data=float(detector_pixel_size_m)).attrs["units"] = "m"
                det.create_dataset("y_pixel_size", data=float(detector_pixel_size_m)).attrs["units"] = "m"
