"""Publish a finished reconstruction to Tiled (``/processed``), findable from its raw run by query.

Layout (``docs/tiled-layout.md``): one container per result, ``/processed/<raw_uid[:8]>-recon-NNN``, with Specs
``BraggPtychoReconstruction`` 0.2 and ``xarray_dataset``: the plain tiled client reads it as an
``xarray.Dataset`` (``from_uri(...)["processed"][key].read()``) whose variables carry ``dims`` and ``units``
and whose coordinates place every voxel in both frames (``e1``, ``e2``, ``e3`` along the reconstruction axes;
``x``, ``y``, ``z`` in the sample frame, metres). The container's metadata holds the geometry (energy, Bragg
angle, Q direction, the frame matrices), voxel size, origin, frame, recipe, software, probe source and the
quality figures. The raw run is never modified: a result names its run by ``raw_uid`` and Tiled path
``raw_key``, and the results of a run are found with :func:`find_results` (a metadata query), never by URL.
FP-DFXM results use the same keys and links with Spec ``FPDFXMReconstruction`` 0.2
(:func:`publish_fp_dfxm_results`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.dataset import jsonable

if TYPE_CHECKING:
    import xarray

    from analysis.bragg.outcome import Outcome

__all__ = ["FP_RESULT_SPEC", "FP_RESULT_SPEC_VERSION", "LAYOUT_DOC", "PLACEMENT_CONVENTION", "RESULT_SPEC",
           "RESULT_SPEC_VERSION", "XARRAY_SPEC", "find_results", "next_result_key", "outcome_dataset",
           "publish_dataset", "publish_fp_dfxm_results", "publish_outcome", "result_metadata"]

RESULT_SPEC = "BraggPtychoReconstruction"
RESULT_SPEC_VERSION = "0.2"
XARRAY_SPEC = "xarray_dataset"
"""Tiled's Spec for a container the client reads as an ``xarray.Dataset`` (children: ``xarray_data_var`` and
``xarray_coord``, each with ``metadata["attrs"]``; the container's ``metadata["attrs"]`` are the dataset's)."""
LAYOUT_DOC = "docs/tiled-layout.md"
PLACEMENT_CONVENTION = ("voxel (n1, n2, n3) of object sits at origin_m + sum_a n_a voxel_size_m[a] axes_lab[a]: lab "
                        "(x, y, z) in m relative to the sample point in the beam at stage position 0; stage "
                        "translation s brings the point -s into the beam")
"""How ``metadata["object_placement"]`` reads (docs/dataset-format.md §2, docs/tiled-layout.md)."""
SAMPLE_FRAME = ("lab/sample frame (x, y, z) in m (docs/geometry.md; symmetric default: x along the incident "
                "beam's projection on the surface, y perpendicular to the scattering plane, z along Q; Q's "
                "direction is geometry.lab_axes.q_hat); origin: the sample point in the beam at stage position 0")
RECONSTRUCTION_FRAME = ("(e1, e2, e3) in m along the reconstruction axes (rows of axes_lab in lab x, y, z), from "
                        "the same origin: r = sum_a e_a axes_lab[a]")


def next_result_key(processed: Any, raw_uid: str, kind: str = "recon") -> str:
    """``<raw_uid[:8]>-<kind>-NNN`` with NNN one above the highest already in ``processed``."""
    prefix = f"{raw_uid[:8]}-{kind}-"
    pat = re.compile(re.escape(prefix) + r"(\d{3,})$")
    nums = [int(m.group(1)) for k in processed if (m := pat.match(str(k)))]
    return f"{prefix}{max(nums, default=0) + 1:03d}"


def find_results(processed: Any, raw_uid: str, kind: str | None = "recon") -> list[str]:
    """Keys of the results of one raw run, oldest first (a metadata query: the raw run holds no links).

    Parameters
    ----------
    processed
        The Tiled ``/processed`` container.
    raw_uid
        The raw run's uid (``metadata["raw_uid"]`` of each result).
    kind
        ``"recon"``, ``"live"``, ``"polarization"``, ...: keep the keys ``<uid8>-<kind>-NNN``; None keeps all.

    Returns
    -------
    list of str
        The matching keys, sorted.
    """
    from tiled.queries import Key

    keys = [str(k) for k in processed.search(Key("raw_uid") == raw_uid)]
    if kind is not None:
        keys = [k for k in keys if k.startswith(f"{raw_uid[:8]}-{kind}-")]
    return sorted(keys)


def _jsonable(v: Any) -> Any:
    """Strict-JSON metadata for Tiled (NaN/inf → None)."""
    return jsonable(v, nonfinite_to_none=True)


def _check_raw_run(raw_run: Any, raw_uid: str) -> None:
    """The raw run given must be the one named by ``raw_uid`` (it is read, never written)."""
    if raw_run is None:
        return
    start = (getattr(raw_run, "metadata", None) or {}).get("start") or {}
    if start.get("uid") not in (None, raw_uid):
        raise ValueError(f"publish: raw_uid {raw_uid!r} but the raw run given is {start.get('uid')!r}; "
                         "pass the run the result was computed from")


def _attrs(units: str, long_name: str, **more: Any) -> dict[str, Any]:
    return {"units": units, "long_name": long_name, **more}


def outcome_dataset(outcome: Outcome) -> xarray.Dataset:
    """The arrays of a reconstruction as an ``xarray.Dataset`` with dims, units and coordinates in both frames.

    Variables: ``object`` (complex64, dims ``e1, e2, e3``), ``support`` (bool), ``strain_zz`` (1),
    ``omega_x``/``omega_y`` (rad; NaN off the mask; absent when the strain maps failed), ``probe`` (complex64,
    dims ``probe_e2, probe_e3``), ``background`` (photons, dims ``angle, det_row, det_col``), ``error`` and
    ``error_phase`` (dim ``iteration``). Coordinates: ``e1, e2, e3`` (m, along the reconstruction axes from the
    placement's origin) and, when the engine recorded a placement, ``x, y, z`` (m, sample frame, float64 on
    ``e1, e2, e3``): voxel n sits at ``origin_m + Σ_a n_a voxel_size_m[a] axes_lab[a]``; ``probe_e2/e3``
    (m from the beam axis, the probe's pixel N//2).

    Parameters
    ----------
    outcome
        The reconstruction.

    Returns
    -------
    xarray.Dataset
        In memory; :func:`publish_dataset` writes it.
    """
    import xarray as xr

    res = outcome.result
    vox = np.asarray([float(v) for v in res.geometry.voxel_size_m])
    obj = np.asarray(res.object)
    shape = obj.shape
    placement = outcome.placement
    e_dims = ("e1", "e2", "e3")
    # origin_m = Σ_a origin_e[a] axes_lab[a] (axes_lab @ origin_m when the axes are orthonormal)
    origin_e = np.zeros(3) if placement is None else np.linalg.solve(placement.axes_lab.T, placement.origin_m)
    coords: dict[str, Any] = {}
    for a, name in enumerate(e_dims):
        coords[name] = (name, origin_e[a] + np.arange(shape[a]) * vox[a],
                        _attrs("m", f"position along {name} (reconstruction frame)", frame="reconstruction",
                               **({} if placement is not None else {"origin": "voxel 0 (no placement recorded)"})))
    if placement is not None:
        steps = [np.arange(n) * vox[a] for a, n in enumerate(shape)]
        for c, name in enumerate(("x", "y", "z")):
            ax = placement.axes_lab[:, c]
            v = (placement.origin_m[c] + steps[0][:, None, None] * ax[0] + steps[1][None, :, None] * ax[1]
                 + steps[2][None, None, :] * ax[2])
            coords[name] = (e_dims, np.ascontiguousarray(v, np.float64),
                            _attrs("m", f"sample-frame {name} of each voxel", frame="sample"))
    probe = np.asarray(res.probe)
    for a, name in enumerate(("probe_e2", "probe_e3")):
        n = probe.shape[a]
        coords[name] = (name, (np.arange(n) - n // 2) * vox[a + 1],
                        _attrs("m", f"offset from the beam axis along {name[-2:]} (probe pixel N//2)"))
    data: dict[str, Any] = {
        "object": (e_dims, obj.astype(np.complex64),
                   _attrs("1", "complex object rho (arbitrary scale; phase in rad)")),
        "support": (e_dims, np.asarray(res.support, bool), _attrs("1", "final support S")),
        "probe": (("probe_e2", "probe_e3"), probe.astype(np.complex64),
                  _attrs("sqrt(photons)", "probe section P2 in the (e2, e3) plane")),
        "background": (("angle", "det_row", "det_col"), np.asarray(res.background, np.float32),
                       _attrs("photons", "incoherent background per measured angle and detector pixel")),
        "error": (("iteration",), np.asarray(res.costs, np.float64),
                  _attrs("1", "cost per iteration (docs/dataset-format.md §2)")),
        "error_phase": (("iteration",), np.asarray([p == "ml" for p in res.phases], np.int8),
                        _attrs("1", "phase of each iteration", flag_values=[0, 1], flag_meanings="ePIE ML")),
    }
    if len(res.r_factor_history) == len(res.costs) and res.costs:
        data["r_factor"] = (("iteration",), np.asarray(res.r_factor_history, np.float64),
                            _attrs("1", "R-factor after each iteration, NaN where not computed"))
    names = {"strain_zz": ("1", "strain eps_zz = du_z/dz (z along Q)"),
             "omega_x": ("rad", "lattice tilt omega_x = arcsin(du_z/dy)"),
             "omega_y": ("rad", "lattice tilt omega_y = arcsin(du_z/dx)")}
    for key, arr in outcome.strain_arrays().items():
        values = np.asarray(arr, np.float32)
        dims = e_dims if values.shape == shape else tuple(f"{key}_{i}" for i in range(values.ndim))
        data[key] = (dims, values, _attrs(names[key][0], names[key][1] + ", NaN off the mask"))
    attrs = {"title": f"pxm Bragg ptychography result ({outcome.recipe_name})", "layout": LAYOUT_DOC,
             "sample_frame": SAMPLE_FRAME, "reconstruction_frame": RECONSTRUCTION_FRAME}
    return xr.Dataset(data_vars=data, coords=coords, attrs=attrs)


def result_metadata(outcome: Outcome, raw_uid: str, *, algorithm: str = "pxm Bragg ptychography (ePIE + ML)",
                    metrics: dict[str, Any] | None = None, timings_s: dict[str, float] | None = None,
                    postprocessing_errors: dict[str, str] | None = None) -> dict[str, Any]:
    """The metadata of a published result (``docs/tiled-layout.md``), JSON-safe.

    Parameters
    ----------
    outcome
        The reconstruction.
    raw_uid
        Its raw run's uid.
    algorithm
        One line naming the method.
    metrics, timings_s, postprocessing_errors
        In place of the outcome's.

    Returns
    -------
    dict
        ``raw_uid``, ``raw_key``, ``kind``, ``algorithm``, ``status``, ``recipe``, ``parameters``, ``software``,
        ``probe_source``, ``geometry`` (with ``lab_axes``), ``frame``, ``voxel_size_m``, ``origin_m``,
        ``object_placement``, ``quality``, ``metrics``, ``timings_s``, ``postprocessing_errors``, ``sample``,
        ``device``.
    """
    from analysis.bragg.outcome import software_info

    m = dict(outcome.metrics if metrics is None else metrics)
    errors = dict(outcome.postprocessing_errors if postprocessing_errors is None else postprocessing_errors)
    g = outcome.geometry
    geometry = {**g.to_metadata(), "lab_axes": {k: [float(x) for x in v] for k, v in g.lab_axes().items()}}
    placement = outcome.placement
    headline = ("r_factor", "converged", "convergence_phase", "convergence_reason")
    quality: dict[str, Any] = {k: m[k] for k in headline if k in m}
    quality.update({k: v for k, v in m.items() if k.startswith(("r_factor_", "truth_"))})
    if outcome.convergence is not None:
        quality["verdict"] = outcome.convergence.summary()
    md: dict[str, Any] = {
        "raw_uid": raw_uid, "raw_key": f"raw/{raw_uid}", "kind": "recon", "algorithm": algorithm,
        "status": "complete with post-processing errors" if errors else "complete",
        "recipe": outcome.recipe_name, "parameters": dataclasses.asdict(outcome.recipe), "software": software_info(),
        "probe_source": outcome.probe_source, "geometry": geometry,
        "frame": {"sample": SAMPLE_FRAME, "reconstruction": RECONSTRUCTION_FRAME},
        "voxel_size_m": [float(v) for v in g.voxel_size_m],
        "origin_m": None if placement is None else [float(v) for v in placement.origin_m],
        "object_placement": None if placement is None else {**placement.as_dict(), "convention": PLACEMENT_CONVENTION},
        "quality": quality, "metrics": m, "timings_s": dict(outcome.timings_s if timings_s is None else timings_s),
        "postprocessing_errors": errors, "sample": dict(outcome.sample), "device": outcome.device,
        "layout": LAYOUT_DOC,
    }
    return md


def publish_dataset(processed: Any, key: str, dataset: xarray.Dataset, *, metadata: dict[str, Any],
                    specs: list[tuple[str, str | None]], array_clients: dict[str, Any] | None = None) -> Any:
    """Write ``dataset`` as one container ``processed[key]`` that Tiled's client reads back as an xarray Dataset.

    Parameters
    ----------
    processed
        The Tiled ``/processed`` container.
    key
        The new container's key.
    dataset
        Variables and coordinates with dims and ``attrs`` (``units``, ``long_name``).
    metadata
        The container's metadata (``attrs`` is set from ``dataset.attrs``).
    specs
        (name, version) of the result's own Specs, before ``xarray_dataset``.
    array_clients
        When given, filled with the client of each array written, by name (to overwrite them later without
        a look-up: the live previews).

    Returns
    -------
    Any
        The client of the new container.
    """
    from tiled.structures.core import Spec

    md = _jsonable({**metadata, "attrs": dict(dataset.attrs)})
    node = processed.create_container(key, metadata=md,
                                      specs=[*(Spec(n, version=v) for n, v in specs), Spec(XARRAY_SPEC)])
    for names, spec in ((list(dataset.data_vars), "xarray_data_var"), (list(dataset.coords), "xarray_coord")):
        for name in names:
            var = dataset[name].variable
            client = node.write_array(np.ascontiguousarray(var.values), key=str(name),
                                      dims=[str(d) for d in var.dims], metadata={"attrs": _jsonable(dict(var.attrs))},
                                      specs=[Spec(spec)])
            if array_clients is not None:
                array_clients[str(name)] = client
    return node


def publish_outcome(processed: Any, raw_uid: str, outcome: Outcome, *, raw_run: Any = None,
                    algorithm: str = "pxm Bragg ptychography (ePIE + ML)",
                    metrics: dict[str, Any] | None = None, timings_s: dict[str, float] | None = None,
                    postprocessing_errors: dict[str, str] | None = None,
                    extra_metadata: dict[str, Any] | None = None) -> Any:
    """Publish an :class:`analysis.bragg.outcome.Outcome` to ``/processed/<uid8>-recon-NNN``; return its client.

    The arrays come from the outcome itself (:func:`outcome_dataset`), never from a results file read back;
    the metadata is :func:`result_metadata`. The raw run is not modified.

    Parameters
    ----------
    processed
        The Tiled ``/processed`` container.
    raw_uid
        The raw run's uid.
    outcome
        The reconstruction.
    raw_run
        The raw run, when at hand: its start uid must be ``raw_uid`` (checked, never written).
    algorithm
        One line naming the method.
    metrics, timings_s
        In place of the outcome's (e.g. with the live pipeline's frame counts added).
    postprocessing_errors
        In place of the outcome's (e.g. with the CXI and figure errors); ``metadata["postprocessing_errors"]``.
    extra_metadata
        More metadata keys.

    Returns
    -------
    Any
        The Tiled client of the new container (an ``xarray_dataset`` container).
    """
    _check_raw_run(raw_run, raw_uid)
    md = {**result_metadata(outcome, raw_uid, algorithm=algorithm, metrics=metrics, timings_s=timings_s,
                            postprocessing_errors=postprocessing_errors), **(extra_metadata or {})}
    return publish_dataset(processed, next_result_key(processed, raw_uid), outcome_dataset(outcome), metadata=md,
                           specs=[(RESULT_SPEC, RESULT_SPEC_VERSION)])


FP_RESULT_SPEC = "FPDFXMReconstruction"
FP_RESULT_SPEC_VERSION = "0.2"


def _fp_units(name: str, given: dict[str, Any]) -> str:
    """Units of an FP-DFXM array: the caller's ``metadata["units"][name]`` if a string, else by the name's suffix."""
    if isinstance(given.get(name), str):
        return str(given[name])
    for suffix, unit in (("_rad", "rad"), ("_m", "m"), ("_per_m", "1/m")):
        if name.endswith(suffix):
            return unit
    return "1"


def publish_fp_dfxm_results(processed: Any, raw_uid: str, arrays: dict[str, Any], *, metadata: dict[str, Any],
                            raw_run: Any = None, algorithm: str = "pxm FP-DFXM (Zernike-EPRY)") -> Any:
    """Write one FP-DFXM result container under ``processed``; return its client.

    Same key scheme and links as :func:`publish_outcome` (``<raw_uid[:8]>-recon-NNN``, metadata ``raw_uid`` and
    ``raw_key``; the raw run is never modified, :func:`find_results` finds the result), Specs
    ``FPDFXMReconstruction`` and ``xarray_dataset``. ``arrays`` needs ``object`` and ``pupil`` (complex, stored
    as complex64); any other NumPy array is stored as float32/float64 as given. Arrays of the object's shape get
    dims ``row, col`` with coordinates in m (``metadata["units"]["object_pixel_size_m"]`` per pixel, from the
    image centre, pixel N//2) when that pixel size is given; the others ``<name>_0, <name>_1, ...``; every array
    has ``units`` (``metadata["units"]`` or its name's suffix). ``metadata`` carries e.g. Zernike coefficients,
    the misalignment read-out and the options. ``raw_run``, when given, must be the run ``raw_uid`` names.
    """
    import xarray as xr

    for k in ("object", "pupil"):
        if arrays.get(k) is None:
            raise ValueError(f"publish_fp_dfxm_results: arrays[{k!r}] is missing")
    _check_raw_run(raw_run, raw_uid)
    given = metadata.get("units")
    units: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
    image_shape = np.shape(arrays["object"])
    data: dict[str, Any] = {}
    for name, value in arrays.items():
        if value is None:
            continue
        a = np.asarray(value)
        real_dtype = np.float64 if a.dtype == np.float64 else np.float32
        a = np.ascontiguousarray(a.astype(np.complex64) if np.iscomplexobj(a) else a.astype(real_dtype))
        dims = ("row", "col") if a.shape == image_shape and a.ndim == 2 else tuple(f"{name}_{i}"
                                                                                  for i in range(a.ndim))
        data[name] = (dims, a, _attrs(_fp_units(name, units), name.replace("_", " ")))
    coords: dict[str, Any] = {}
    px = units.get("object_pixel_size_m")
    if len(image_shape) == 2 and isinstance(px, (int, float)) and px > 0:
        for name, n in zip(("row", "col"), image_shape, strict=True):
            coords[name] = (name, (np.arange(n) - n // 2) * float(px),
                            _attrs("m", f"object-plane offset along the image {name}s from pixel N//2"))
    ds = xr.Dataset(data_vars=data, coords=coords, attrs={"title": f"pxm FP-DFXM result ({algorithm})",
                                                          "layout": LAYOUT_DOC})
    md = {"raw_uid": raw_uid, "raw_key": f"raw/{raw_uid}", "kind": "recon", "algorithm": algorithm,
          "status": "complete", "layout": LAYOUT_DOC, **metadata}
    return publish_dataset(processed, next_result_key(processed, raw_uid), ds, metadata=md,
                           specs=[(FP_RESULT_SPEC, FP_RESULT_SPEC_VERSION)])
