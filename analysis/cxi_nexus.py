"""Raw Bragg-ptychography scans as NeXus/CXI files in the ``NXcxi_ptycho`` style, both ways.

:func:`export_cxi_dataset` writes a :class:`~analysis.dataset.BraggDataset` as a CXI 1.6 / NeXus
``NXcxi_ptycho`` file (layout in ``docs/interop.md``); :func:`import_cxi_dataset` reads such a file, pxm's
own or one written by another facility, back into a ``BraggDataset``; :func:`check_nxcxi_ptycho` loads a
file with the ``nexusformat`` package and lists what it lacks of :data:`NXCXI_PTYCHO_REQUIRED`, the
required groups, fields and attributes derived from the NeXus application definition
(``applications/NXcxi_ptycho.nxdl.xml``).

Conventions (all units SI in the standard fields, each with ``@units``):

* Frames: ``/entry_1/instrument_1/detector_1/data`` (FRAME, ROW, COL), every frame of the scan in
  acquisition order (a grid scan (POS, ANGLE) flattened position-major), as CXI wants whatever the
  scan pattern. ROW runs along e1 (q1, in the scattering plane), COL along e2 (the rocking axis).
* Translations: ``detector_1/translation`` (FRAME, 3) in m and the per-frame fields ``x``, ``y``, ``z``
  of ``sample_1/transformations`` (NXtransformations, ``@transformation_type = "translation"``); they are
  pxm's stage positions in the sample frame of ``docs/geometry.md`` (z ∥ Q, y the rocking axis, x in the
  scattering plane), not the beam-based McStas frame: ``@vector`` says so per axis.
* Rocking angle: ``sample_1/transformations/rocking_angle`` (FRAME,), a rotation about y in degrees (the
  NeXus habit for goniometer angles; the value is the absolute rocking angle of each frame).
* Bragg angle: ``detector_1/transformations/two_theta`` (deg), the detector arm at 2θ_B.
* Energy: CXI puts the photon energy in ``source_1/energy`` (J); NeXus' ``NXsource/energy`` means the
  storage ring's energy, so the photon energy is also in ``beam_1/incident_beam_energy`` (J), which the
  importer reads first.
* Dead pixels: ``detector_1/pixel_mask`` (NXdetector: 0 = good pixel, non-zero = not live).
* ``/entry_1/pxm_1`` (NXcollection): what the standard fields cannot hold without rounding, so that
  pxm → CXI → pxm is exact: the geometry inputs (``BraggGeometry``, units in the names), the layout and
  the per-frame position/angle indices, the sample and provenance dicts (JSON). A file without it (another
  facility's) is imported from the standard fields alone (:func:`import_cxi_dataset`).
"""

# Why this module is long: the NXcxi_ptycho layout both ways (export, import, check) is one mapping; keeping writer
# and reader together keeps them symmetric (docs/interop.md).

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from nexusformat.nexus import NeXusError, NXfield, NXgroup, nxload

from analysis.dataset import BraggDataset, jsonable, open_for_reading, validate_dataset
from analysis.geometry import BraggGeometry, wavelength_m_from_kev

__all__ = [
    "NXCXI_PTYCHO_REQUIRED",
    "CXI_VERSION",
    "CxiImportSummary",
    "export_cxi_dataset",
    "import_cxi_dataset",
    "check_nxcxi_ptycho",
]

CXI_VERSION = 160
_EV_J = 1.602176634e-19
_KEV_J = 1e3 * _EV_J
_POSITION_TOL_M = 10e-9
"""Stage positions closer than this are one scan position when a file has no indices (as ``scan_axes``)."""

NXCXI_PTYCHO_REQUIRED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # (path relative to /, "group:NXclass" | "field" | "link", required attributes)
    # Derived from NXcxi_ptycho.nxdl.xml: every group/field/link without minOccurs="0", and every attribute
    # with optional="false". Two readings of the definition: the group-level "vector" attribute of
    # sample_1/transformations and the field "vector" of detector_1/transformations are taken as the
    # @vector of each transformation field inside them (the NXtransformations rule), and the NXdata's
    # x_indices / y_indices as the attributes @x_indices / @y_indices (the NXdata rule since NeXus 2014).
    ("cxi_version", "field", ()),
    ("entry_1", "group:NXentry", ()),
    ("entry_1/definition", "field", ()),
    ("entry_1/instrument_1", "group:NXinstrument", ()),
    ("entry_1/instrument_1/source_1", "group:NXsource", ()),
    ("entry_1/instrument_1/source_1/name", "field", ()),
    ("entry_1/instrument_1/source_1/energy", "field", ("units",)),
    ("entry_1/instrument_1/source_1/probe", "field", ()),
    ("entry_1/instrument_1/source_1/type", "field", ()),
    ("entry_1/instrument_1/beam_1", "group:NXbeam", ()),
    ("entry_1/instrument_1/beam_1/energy", "field", ("units",)),
    ("entry_1/instrument_1/beam_1/incident_beam_energy", "field", ("units",)),
    ("entry_1/instrument_1/beam_1/incident_energy_spread", "field", ("units",)),
    ("entry_1/instrument_1/detector_1", "group:NXdetector", ()),
    ("entry_1/instrument_1/detector_1/transformations", "group:NXtransformations", ()),
    ("entry_1/instrument_1/detector_1/translation", "field", ("units", "axes", "interpretation")),
    ("entry_1/instrument_1/detector_1/data", "field", ()),
    ("entry_1/instrument_1/detector_1/data_1", "link", ()),
    ("entry_1/instrument_1/detector_1/x_pixel_size", "field", ("units",)),
    ("entry_1/instrument_1/detector_1/y_pixel_size", "field", ("units",)),
    ("entry_1/instrument_1/detector_1/distance", "field", ("units",)),
    ("entry_1/data", "group:NXdata", ("signal", "axes", "x_indices", "y_indices")),
    ("entry_1/data/data", "link", ()),
    ("entry_1/data/x", "link", ()),
    ("entry_1/data/y", "link", ()),
    ("entry_1/data_1", "group:NXcollection", ()),
    ("entry_1/data_1/data", "link", ()),
    ("entry_1/data_1/translation", "link", ()),
    ("entry_1/sample_1", "group:NXsample", ()),
    ("entry_1/sample_1/transformations", "group:NXtransformations", ()),
    ("entry_1/sample_1/transformations/x", "field", ("units", "vector", "transformation_type")),
    ("entry_1/sample_1/transformations/y", "field", ("units", "vector", "transformation_type")),
    ("entry_1/sample_1/geometry_1", "group:NXcollection", ()),
    ("entry_1/sample_1/geometry_1/translation", "link", ()),
)
"""Required content of an ``NXcxi_ptycho`` file: (path, kind, attributes that must be present)."""

_FRAME_NOTE = ("pxm sample frame (docs/geometry.md): z along Q (surface normal), y along the rocking axis, "
               "x in the scattering plane; not the beam-based McStas frame")


# --------------------------------------------------------------------------- export
def export_cxi_dataset(path: str | Path, dataset: BraggDataset, *, title: str | None = None,
                       compression: str | None = "gzip") -> None:
    """Write ``dataset`` as a NeXus/CXI ``NXcxi_ptycho`` file (overwrites ``path``).

    Parameters
    ----------
    path : str or Path
        Output file (``.cxi`` or ``.nxs``).
    dataset : BraggDataset
        The scan (grid or flat layout); it is validated first.
    title : str, optional
        ``/entry_1/title``; default: the sample name and "Bragg ptychography".
    compression : str or None
        HDF5 filter of the frames (``"gzip"`` by default, readable everywhere).

    Raises
    ------
    ValueError
        If the dataset is inconsistent (the message names the file and key).
    """
    validate_dataset(dataset, source=str(path))
    g = dataset.geometry
    frames = np.asarray(dataset.frames)
    n_rows, n_cols = frames.shape[-2:]
    flat_frames = frames.reshape((-1, n_rows, n_cols))
    angles_deg = np.asarray(dataset.rocking_angle_deg, float).reshape(-1)
    stage_m = np.asarray(dataset.stage_position_m, float).reshape(-1, 3)
    energy_j = float(g.energy_kev) * _KEV_J
    sample_name = str(dataset.sample.get("name", "sample"))
    with h5py.File(path, "w") as f:
        f.attrs["default"] = "entry_1"
        f.attrs["creator"] = "pxm analysis.cxi_nexus.export_cxi_dataset"
        f.attrs["file_time"] = _dt.datetime.now(_dt.UTC).isoformat()
        f.create_dataset("cxi_version", data=CXI_VERSION)
        e = _group(f, "entry_1", "NXentry")
        e.attrs["default"] = "data"
        e.create_dataset("definition", data="NXcxi_ptycho")
        e.create_dataset("title", data=title or f"{sample_name}: Bragg ptychography (pxm)")
        e.create_dataset("start_time", data=str(dataset.provenance.get("start_time_utc",
                                                                        _dt.datetime.now(_dt.UTC).isoformat())))
        inst = _group(e, "instrument_1", "NXinstrument")
        src = _group(inst, "source_1", "NXsource")
        src.create_dataset("name", data=str(dataset.provenance.get("beamline", "unknown")))
        _field(src, "energy", energy_j, "J", "photon energy (CXI 1.6 convention; NeXus: see beam_1)")
        src.create_dataset("probe", data="x-ray")
        src.create_dataset("type", data="Synchrotron X-ray Source")
        beam = _group(inst, "beam_1", "NXbeam")
        _field(beam, "energy", energy_j, "J", "photon energy")
        _field(beam, "incident_beam_energy", energy_j, "J", "photon energy")
        _field(beam, "incident_energy_spread", math.nan, "J", "not recorded by pxm")
        _field(beam, "incident_wavelength", g.wavelength_m, "m")
        det = _group(inst, "detector_1", "NXdetector")
        det.attrs["signal"] = "data"
        data = det.create_dataset("data", data=flat_frames, chunks=(1, n_rows, n_cols), compression=compression)
        data.attrs["units"] = "counts"
        data.attrs["long_name"] = "photon counts (frame, row along e1/q1, column along e2/rocking axis)"
        det["data_1"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
        tr = _field(det, "translation", stage_m, "m", f"sample stage (x, y, z) per frame; {_FRAME_NOTE}")
        tr.attrs["axes"] = "translation:frame:xyz"
        tr.attrs["interpretation"] = "image"
        _field(det, "x_pixel_size", g.pixel_size_m, "m")
        _field(det, "y_pixel_size", g.pixel_size_m, "m")
        _field(det, "distance", g.detector_distance_m, "m", "sample to detector")
        det.create_dataset("pixel_mask", data=np.where(np.asarray(dataset.detector_mask, bool), 0, 1)
                           .astype(np.uint32)).attrs["long_name"] = "0 = live pixel, non-zero = gap/hot/dead"
        dtr = _group(det, "transformations", "NXtransformations")
        tt = _field(dtr, "two_theta", 2.0 * g.theta_bragg_deg, "deg", "detector arm at 2θ_B about y")
        tt.attrs["transformation_type"] = "rotation"
        tt.attrs["vector"] = np.array([0.0, 1.0, 0.0])
        tt.attrs["depends_on"] = "."
        dd = _field(dtr, "distance", g.detector_distance_m, "m")
        dd.attrs["transformation_type"] = "translation"
        dd.attrs["vector"] = np.array([0.0, 0.0, 1.0])
        dd.attrs["depends_on"] = "two_theta"
        det.create_dataset("depends_on", data="transformations/distance")

        smp = _group(e, "sample_1", "NXsample")
        smp.create_dataset("name", data=sample_name)
        st = _group(smp, "transformations", "NXtransformations")
        st.attrs["frame"] = _FRAME_NOTE
        rock = _field(st, "rocking_angle", angles_deg, "deg", "absolute rocking angle of each frame, about y")
        rock.attrs["transformation_type"] = "rotation"
        rock.attrs["vector"] = np.array([0.0, 1.0, 0.0])
        rock.attrs["depends_on"] = "x"
        for a, (axis, nxt) in enumerate((("x", "y"), ("y", "z"), ("z", "."))):
            t = _field(st, axis, stage_m[:, a], "m", f"stage {axis} per frame; {_FRAME_NOTE}")
            t.attrs["transformation_type"] = "translation"
            t.attrs["vector"] = np.eye(3)[a]
            t.attrs["depends_on"] = nxt
        smp.create_dataset("depends_on", data="transformations/rocking_angle")
        geo = _group(smp, "geometry_1", "NXcollection")
        geo["translation"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/translation")

        nxd = _group(e, "data", "NXdata")
        nxd.attrs["signal"] = "data"
        nxd.attrs["axes"] = np.array(["x", ".", "."], dtype=h5py.string_dtype())
        for name in ("x", "y", "z", "rocking_angle"):
            nxd.attrs[f"{name}_indices"] = 0
            nxd[name] = h5py.SoftLink(f"/entry_1/sample_1/transformations/{name}")
        nxd["data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
        d1 = _group(e, "data_1", "NXcollection")
        d1["data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
        d1["translation"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/translation")

        px = _group(e, "pxm_1", "NXcollection")
        px.attrs["description"] = ("pxm's exact metadata for a lossless round trip (analysis/cxi_nexus.py); "
                                   "other codes need only the standard fields")
        px.create_dataset("layout", data=dataset.layout)
        if dataset.layout == "grid":
            n_pos, n_ang = frames.shape[:2]
            pos_idx, ang_idx = np.divmod(np.arange(n_pos * n_ang, dtype=np.int64), n_ang)
        else:
            pos_idx = np.asarray(dataset.position_index, np.int64)
            ang_idx = np.asarray(dataset.angle_index, np.int64)
        px.create_dataset("position_index", data=pos_idx)
        px.create_dataset("angle_index", data=ang_idx)
        pg = px.create_group("geometry")
        pg.attrs["NX_class"] = "NXcollection"
        md = g.to_metadata()
        md.pop("derived")
        for k, v in md.items():
            if v is not None:
                pg.create_dataset(k, data=np.asarray(v))
        px.create_dataset("sample_json", data=json.dumps(jsonable(dataset.sample)))
        px.create_dataset("provenance_json", data=json.dumps(jsonable(dataset.provenance)))


def _group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def _field(parent: h5py.Group, name: str, value: Any, units: str, long_name: str | None = None) -> h5py.Dataset:
    d = parent.create_dataset(name, data=value)
    d.attrs["units"] = units
    if long_name:
        d.attrs["long_name"] = long_name
    return d


# --------------------------------------------------------------------------- validation
def check_nxcxi_ptycho(path: str | Path) -> list[str]:
    """What a file lacks of ``NXcxi_ptycho``: one line per missing item (empty list = conforms).

    The file is loaded with ``nexusformat`` (``nxload``), which resolves links; then every entry of
    :data:`NXCXI_PTYCHO_REQUIRED` is looked up: groups must carry their NeXus class, the linked fields
    must resolve, and the listed attributes must be present. ``entry_1/definition`` must be
    ``"NXcxi_ptycho"`` and the NXdata's ``@signal`` must name a field of it.

    Parameters
    ----------
    path : str or Path
        The NeXus/CXI file.

    Returns
    -------
    list of str
        ``"<path>: <what is wrong>"`` lines.
    """
    problems: list[str] = []
    root = nxload(str(path), "r")
    try:
        for rel, kind, attrs in NXCXI_PTYCHO_REQUIRED:
            try:
                node = root[rel]
            except (KeyError, ValueError, AttributeError, NeXusError):
                problems.append(f"/{rel}: missing ({kind})")
                continue
            if kind.startswith("group:"):
                want = kind.split(":", 1)[1]
                if not isinstance(node, NXgroup) or node.nxclass != want:
                    problems.append(f"/{rel}: expected a group of class {want}, found "
                                    f"{getattr(node, 'nxclass', type(node).__name__)}")
                    continue
            elif kind in ("field", "link"):
                if not isinstance(node, NXfield):
                    problems.append(f"/{rel}: expected a field, found {type(node).__name__}")
                    continue
                try:
                    node.nxdata  # noqa: B018  (a dangling link raises here)
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"/{rel}: link does not resolve ({exc})")
                    continue
            for a in attrs:
                if a not in node.attrs:
                    problems.append(f"/{rel}@{a}: attribute missing")
        if "entry_1/definition" in root:
            definition = str(root["entry_1/definition"].nxvalue)
            if definition != "NXcxi_ptycho":
                problems.append(f"/entry_1/definition: {definition!r}, expected 'NXcxi_ptycho'")
        if "entry_1/data" in root and "signal" in root["entry_1/data"].attrs:
            sig = str(root["entry_1/data"].attrs["signal"])
            if sig not in root["entry_1/data"]:
                problems.append(f"/entry_1/data@signal: names {sig!r}, which is not a field of the NXdata")
    finally:
        root.nxfile.close()
    return problems


# --------------------------------------------------------------------------- import
@dataclass(frozen=True, kw_only=True)
class CxiImportSummary:
    """What :func:`import_cxi_dataset` found and how it filled the gaps."""

    dataset: BraggDataset
    """The imported scan."""
    source: str
    """``"pxm"`` (the file's ``/entry_1/pxm_1`` was used) or ``"standard fields"``."""
    notes: tuple[str, ...]
    """One line per choice made (e.g. the rocking step taken from the angles)."""

    def lines(self) -> list[str]:
        """Printable summary lines."""
        ds = self.dataset
        g = ds.geometry
        return [f"read {self.source}: {ds.layout} layout, frames {tuple(np.shape(ds.frames))}, "
                f"{g.energy_kev:.4g} keV, θ_B {g.theta_bragg_deg:.4f}°, D {g.detector_distance_m:.4g} m, "
                f"pixel {g.pixel_size_m * 1e6:.4g} µm, {g.n_angles} angles of {g.rocking_step_deg:.4g}°",
                *self.notes]


_LENGTH_M = {"m": 1.0, "metre": 1.0, "meter": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6,
             "microns": 1e-6, "nm": 1e-9, "pm": 1e-12, "angstrom": 1e-10, "Å": 1e-10}
_ENERGY_KEV = {"J": 1.0 / _KEV_J, "eV": 1e-3, "keV": 1.0, "MeV": 1e3}
_ANGLE_DEG = {"deg": 1.0, "degree": 1.0, "degrees": 1.0, "rad": 180.0 / math.pi, "radian": 180.0 / math.pi,
              "radians": 180.0 / math.pi, "mrad": 0.18 / math.pi, "urad": 1.8e-4 / math.pi}


def _fail(source: str, key: str, msg: str) -> ValueError:
    return ValueError(f"{source}: {key}: {msg}")


class _Reader:
    """Field look-ups in one entry of an open file, with errors that name the file and the field."""

    def __init__(self, f: h5py.File, source: str) -> None:
        self.f = f
        self.source = source
        self.entry = self._find_entry()

    def _find_entry(self) -> str:
        if "entry_1" in self.f:
            return "/entry_1"
        for name, obj in self.f.items():
            if isinstance(obj, h5py.Group) and _attr_str(obj, "NX_class") == "NXentry":
                return f"/{name}"
        raise _fail(self.source, "/entry_1", "missing: no NXentry group; this is not a NeXus/CXI file")

    def path(self, rel: str) -> str:
        return f"{self.entry}/{rel}"

    def has(self, rel: str) -> bool:
        try:
            return self.path(rel) in self.f
        except KeyError:  # a dangling soft link
            return False

    def first(self, *rels: str) -> str | None:
        """The first of ``rels`` present in the entry (None if none)."""
        return next((r for r in rels if self.has(r)), None)

    def need(self, *rels: str, what: str) -> str:
        rel = self.first(*rels)
        if rel is None:
            alt = f" (or {', '.join(self.path(r) for r in rels[1:])})" if len(rels) > 1 else ""
            raise _fail(self.source, self.path(rels[0]), f"missing{alt}; it holds {what}")
        return rel

    def array(self, rel: str) -> np.ndarray:
        node = self.f[self.path(rel)]
        if not isinstance(node, h5py.Dataset):
            raise _fail(self.source, self.path(rel), "is a group, expected a field")
        return np.asarray(node[()])

    def scaled(self, rel: str, table: dict[str, float], si_default: str | None) -> np.ndarray:
        """Values of ``rel`` converted by its ``@units`` via ``table``; ``si_default`` if it has none."""
        node = self.f[self.path(rel)]
        units = _attr_str(node, "units")
        if units is None:
            if si_default is None:
                raise _fail(self.source, self.path(rel), f"@units missing; give one of {sorted(table)}")
            units = si_default
        if units not in table:
            raise _fail(self.source, self.path(rel), f"@units {units!r} unknown; expected one of {sorted(table)}")
        a = np.asarray(self.array(rel), float)
        return a if table[units] == 1.0 else a * table[units]


def _attr_str(obj: h5py.HLObject, name: str) -> str | None:
    v = obj.attrs.get(name)
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(-1)[0]
        return v.decode() if isinstance(v, bytes) else str(v)
    return str(v)


def _scalar(a: np.ndarray, source: str, key: str) -> float:
    if a.size != 1 or not np.isfinite(a).all():
        raise _fail(source, key, f"expected one finite number, found shape {a.shape}")
    return float(a.reshape(-1)[0])


def import_cxi_dataset(path: str | Path, *, upsampling: int | None = None,
                       d_spacing_m: float | None = None) -> CxiImportSummary:
    """Read an ``NXcxi_ptycho``-style NeXus/CXI file into a :class:`~analysis.dataset.BraggDataset`.

    A file written by :func:`export_cxi_dataset` comes back exactly (from ``/entry_1/pxm_1``, checked
    against the standard fields). Any other file is read from the standard fields: frames
    ``detector_1/data`` (or ``data_1/data``, ``data/data``), translations ``sample_1/transformations/{x,y,z}``
    (or ``detector_1/translation``, ``sample_1/geometry_1/translation``), ``sample_1/transformations/rocking_angle``
    (needs ``@units``), photon energy ``beam_1/incident_beam_energy`` (or ``source_1/energy``, the CXI place),
    ``detector_1/{distance, x_pixel_size, y_pixel_size}``, optional ``detector_1/pixel_mask``, and the Bragg
    angle ``detector_1/transformations/two_theta`` (or ``sample_1/bragg_angle``). Lengths and energies
    without ``@units`` are taken as SI, as CXI prescribes. Frames are grouped into scan positions (stage
    positions within 10 nm) and rocking angles (steps of the median spacing); a complete raster becomes the
    grid layout, anything else the flat layout with indices.

    Parameters
    ----------
    path : str or Path
        The file.
    upsampling : int, optional
        ``BraggGeometry.upsampling`` (virtual planes per measured step); default: the file's (pxm) or 1.
    d_spacing_m : float, optional
        Lattice-plane spacing; default: the file's (pxm) or λ / (2 sin θ_B) from the Bragg angle.

    Returns
    -------
    CxiImportSummary
        The dataset and the lines saying what was done.

    Raises
    ------
    ValueError
        One line naming the file and the missing or inconsistent field.
    """
    source = str(path)
    with open_for_reading(path) as f:
        r = _Reader(f, source)
        notes: list[str] = []
        det = "instrument_1/detector_1"
        frames_rel = r.need(f"{det}/data", "data_1/data", "data/data", what="the detector frames (FRAME, ROW, COL)")
        frames = r.array(frames_rel)
        if frames.ndim == 4:      # a NeXus raster (npts_x, npts_y, ROW, COL)
            frames = frames.reshape((-1,) + frames.shape[-2:])
        if frames.ndim != 3:
            raise _fail(source, r.path(frames_rel), f"shape {frames.shape}, expected (FRAME, ROW, COL)")
        n_frames = frames.shape[0]
        stage = _read_translations(r, n_frames)
        rock_rel = r.need("sample_1/transformations/rocking_angle",
                          what="the rocking angle of every frame (NXtransformations rotation, @units deg or rad)")
        angles = r.scaled(rock_rel, _ANGLE_DEG, None).reshape(-1)
        if angles.shape != (n_frames,):
            raise _fail(source, r.path(rock_rel), f"{angles.size} values for {n_frames} frames")
        energy_rel = r.need("instrument_1/beam_1/incident_beam_energy", "instrument_1/source_1/energy",
                            what="the photon energy")
        energy_kev = _scalar(r.scaled(energy_rel, _ENERGY_KEV, "J"), source, r.path(energy_rel))
        dist_rel = r.need(f"{det}/distance", what="the sample-to-detector distance")
        distance_m = _scalar(r.scaled(dist_rel, _LENGTH_M, "m"), source, r.path(dist_rel))
        pix = []
        for ax in ("x", "y"):
            rel = r.need(f"{det}/{ax}_pixel_size", what=f"the detector pixel size along {ax}")
            pix.append(_scalar(r.scaled(rel, _LENGTH_M, "m"), source, r.path(rel)))
        if not math.isclose(pix[0], pix[1], rel_tol=1e-9):
            raise _fail(source, r.path(f"{det}/y_pixel_size"), f"{pix[1]} m != x_pixel_size {pix[0]} m; pxm's "
                        "geometry needs square pixels (rebin the frames)")
        if r.has(f"{det}/pixel_mask"):
            pm = r.array(f"{det}/pixel_mask")
            if pm.shape != frames.shape[-2:]:
                raise _fail(source, r.path(f"{det}/pixel_mask"), f"shape {pm.shape}, frames are {frames.shape[-2:]}")
            mask = pm == 0
        else:
            mask = np.ones(frames.shape[-2:], bool)
            notes.append("no detector_1/pixel_mask: every pixel taken as live")
        if r.has("pxm_1/geometry"):
            ds = _from_pxm(r, frames, stage, angles, mask, energy_kev, distance_m, pix[0], upsampling, d_spacing_m)
            kind = "pxm"
        else:
            ds = _from_standard(r, frames, stage, angles, mask, energy_kev, distance_m, pix[0], upsampling,
                                d_spacing_m, notes)
            kind = "standard fields"
    validate_dataset(ds, source=source)
    return CxiImportSummary(dataset=ds, source=kind, notes=tuple(notes))


def _read_translations(r: _Reader, n_frames: int) -> np.ndarray:
    tr = "sample_1/transformations"
    if all(r.has(f"{tr}/{a}") for a in "xyz"):
        cols = [r.scaled(f"{tr}/{a}", _LENGTH_M, "m").reshape(-1) for a in "xyz"]
        for a, c in zip("xyz", cols, strict=True):
            if c.shape != (n_frames,):
                raise _fail(r.source, r.path(f"{tr}/{a}"), f"{c.size} values for {n_frames} frames")
        return np.stack(cols, axis=1)
    rel = r.need("instrument_1/detector_1/translation", "sample_1/geometry_1/translation", f"{tr}/x",
                 what="the sample translation (x, y, z) of every frame")
    t = r.scaled(rel, _LENGTH_M, "m")
    if t.shape != (n_frames, 3):
        raise _fail(r.source, r.path(rel), f"shape {t.shape}, expected ({n_frames}, 3) for {n_frames} frames")
    return t


def _from_pxm(r: _Reader, frames: np.ndarray, stage: np.ndarray, angles: np.ndarray, mask: np.ndarray,
              energy_kev: float, distance_m: float, pixel_m: float, upsampling: int | None,
              d_spacing_m: float | None) -> BraggDataset:
    md: dict[str, Any] = {}
    for k, v in r.f[r.path("pxm_1/geometry")].items():
        val = v[()]
        md[k] = val.item() if np.ndim(val) == 0 else val.tolist()
        if isinstance(md[k], bytes):
            md[k] = md[k].decode()
    if upsampling is not None:
        md["upsampling"] = upsampling
    if d_spacing_m is not None:
        md["d_spacing_m"] = d_spacing_m
    try:
        g = BraggGeometry.from_metadata(md)
    except (ValueError, TypeError) as exc:
        raise _fail(r.source, r.path("pxm_1/geometry"), str(exc)) from exc
    for rel, value, mine in (("instrument_1/beam_1/incident_beam_energy", energy_kev, g.energy_kev),
                             ("instrument_1/detector_1/distance", distance_m, g.detector_distance_m),
                             ("instrument_1/detector_1/x_pixel_size", pixel_m, g.pixel_size_m)):
        if not math.isclose(value, mine, rel_tol=1e-9):
            raise _fail(r.source, r.path(rel), f"{value!r} disagrees with pxm_1/geometry ({mine!r}); the file was "
                        "edited after export: delete /entry_1/pxm_1 to import from the standard fields")
    layout = r.array("pxm_1/layout").item()
    layout = layout.decode() if isinstance(layout, bytes) else str(layout)
    pos_idx = r.array("pxm_1/position_index").astype(np.int64)
    ang_idx = r.array("pxm_1/angle_index").astype(np.int64)
    n = frames.shape[0]
    if pos_idx.shape != (n,) or ang_idx.shape != (n,):
        raise _fail(r.source, r.path("pxm_1/position_index"), f"shape {pos_idx.shape}, expected ({n},)")
    sample = json.loads(_str(r.array("pxm_1/sample_json"))) if r.has("pxm_1/sample_json") else {}
    prov = json.loads(_str(r.array("pxm_1/provenance_json"))) if r.has("pxm_1/provenance_json") else {}
    if layout == "grid":
        n_pos = int(pos_idx.max()) + 1 if n else 0
        if n_pos * g.n_angles != n or not np.array_equal(pos_idx * g.n_angles + ang_idx, np.arange(n)):
            raise _fail(r.source, r.path("pxm_1/position_index"), "does not describe a position-major grid of "
                        f"{g.n_angles} angles over {n} frames")
        shape = (n_pos, g.n_angles)
        return _dataset(frames=frames.reshape(shape + frames.shape[-2:]), rocking_angle_deg=angles.reshape(shape),
                        stage_position_m=stage.reshape(shape + (3,)), detector_mask=mask, geometry=g,
                        sample=sample, provenance=prov)
    return _dataset(frames=frames, rocking_angle_deg=angles, stage_position_m=stage, detector_mask=mask,
                    geometry=g, position_index=pos_idx, angle_index=ang_idx, sample=sample, provenance=prov)


def _str(a: np.ndarray) -> str:
    v = a.item() if isinstance(a, np.ndarray) else a
    return v.decode() if isinstance(v, bytes) else str(v)


def _from_standard(r: _Reader, frames: np.ndarray, stage: np.ndarray, angles: np.ndarray, mask: np.ndarray,
                   energy_kev: float, distance_m: float, pixel_m: float, upsampling: int | None,
                   d_spacing_m: float | None, notes: list[str]) -> BraggDataset:
    src = r.source
    tt_rel = r.first("instrument_1/detector_1/transformations/two_theta", "sample_1/bragg_angle")
    if tt_rel is None:
        raise _fail(src, r.path("instrument_1/detector_1/transformations/two_theta"),
                    "missing (or sample_1/bragg_angle); the detector arm's 2θ gives the Bragg angle")
    v = _scalar(r.scaled(tt_rel, _ANGLE_DEG, None), src, r.path(tt_rel))
    bragg_deg = v / 2.0 if tt_rel.endswith("two_theta") else v
    if not 0.0 < bragg_deg < 90.0:
        raise _fail(src, r.path(tt_rel), f"Bragg angle {bragg_deg}° outside (0°, 90°)")
    lam = wavelength_m_from_kev(energy_kev)
    if d_spacing_m is None:
        d_spacing_m = lam / (2.0 * math.sin(math.radians(bragg_deg)))
        notes.append(f"d-spacing λ/(2 sin θ_B) = {d_spacing_m:.6g} m (Bragg's law at the measured 2θ)")
    # rocking angles: distinct values within 5 % of a step form one angle index
    uniq = np.unique(angles)
    gaps = np.diff(uniq)
    if uniq.size < 2:
        raise _fail(src, r.path("sample_1/transformations/rocking_angle"), "a single rocking angle; Bragg "
                    "ptychography needs a rocking scan")
    big = gaps[gaps > 1e-9 * max(1.0, float(np.abs(uniq).max()))]
    step = float(np.min(big))
    levels = [uniq[0]]
    for a in uniq[1:]:
        if a - levels[-1] > 0.05 * step:
            levels.append(a)
    lv = np.asarray(levels)
    step = float(np.median(np.diff(lv)))
    ang_idx = np.rint((angles - lv[0]) / step).astype(np.int64)
    if np.abs(angles - (lv[0] + ang_idx * step)).max() > 0.05 * step:
        raise _fail(src, r.path("sample_1/transformations/rocking_angle"), f"angles are not on a regular grid of "
                    f"step {step:.6g}° (within 5 %); pxm's geometry needs equal steps")
    n_angles = int(ang_idx.max()) + 1
    notes.append(f"rocking step {step:.6g}° from the angles: {n_angles} angles")
    # scan positions: stage positions within 10 nm are one position, numbered in order of first appearance
    pos_idx = np.full(stage.shape[0], -1, np.int64)
    centres: list[np.ndarray] = []
    for i, s in enumerate(stage):
        for k, c in enumerate(centres):
            if np.abs(s - c).max() <= _POSITION_TOL_M:
                pos_idx[i] = k
                break
        else:
            pos_idx[i] = len(centres)
            centres.append(s)
    n_pos = len(centres)
    geometry = BraggGeometry(energy_kev=energy_kev, d_spacing_m=d_spacing_m, detector_distance_m=distance_m,
                             pixel_size_m=pixel_m, n_rows_px=int(frames.shape[1]), n_cols_px=int(frames.shape[2]),
                             n_angles=n_angles, rocking_step_deg=step, upsampling=upsampling or 1,
                             bragg_angle_deg=bragg_deg)
    sample_name = _str(r.array("sample_1/name")) if r.has("sample_1/name") else None
    sample = {"name": sample_name} if sample_name else {}
    prov = {"imported_from": src, "import_format": "NXcxi_ptycho"}
    key = pos_idx * n_angles + ang_idx
    if key.size == n_pos * n_angles and np.unique(key).size == key.size:
        order = np.argsort(key, kind="stable")
        shape = (n_pos, n_angles)
        notes.append(f"complete raster: grid layout {n_pos} positions × {n_angles} angles")
        return _dataset(frames=frames[order].reshape(shape + frames.shape[-2:]),
                        rocking_angle_deg=angles[order].reshape(shape),
                        stage_position_m=stage[order].reshape(shape + (3,)), detector_mask=mask,
                        geometry=geometry, sample=sample, provenance=prov)
    notes.append(f"incomplete or repeated raster: flat layout, {key.size} frames over {n_pos} positions")
    return _dataset(frames=frames, rocking_angle_deg=angles, stage_position_m=stage, detector_mask=mask,
                    geometry=geometry, position_index=pos_idx, angle_index=ang_idx, sample=sample, provenance=prov)


def _dataset(**kw: Any) -> BraggDataset:
    """A BraggDataset whose validation error (if any) is re-raised by the caller with the file name."""
    from analysis.dataset import _unchecked_dataset

    kw.setdefault("position_index", None)
    kw.setdefault("angle_index", None)
    return _unchecked_dataset(kw)
