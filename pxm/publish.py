"""Publish a finished reconstruction to Tiled (``/processed``), linked both ways to its raw run.

Layout: one container per result,
``/processed/<raw_uid[:8]>-recon-NNN`` with Spec ``BraggPtychoReconstruction`` 0.1 and
metadata ``{raw_uid, raw_uri, algorithm, parameters, software, status: "complete", ...}``;
arrays ``object`` (complex64), ``probe`` (complex64), ``background``, ``strain_zz``,
``omega_x``, ``omega_y`` (float32, NaN off the support), ``error`` (float64 per iteration)
and ``error_phase`` (0 = ePIE, 1 = ML). The raw run gets a back-link in its metadata
``analysis`` list (``start`` is left intact). Live streaming is not done here.
FP-DFXM results use the same keys and links with Spec ``FPDFXMReconstruction`` 0.1
(:func:`publish_fp_dfxm_results`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.dataset import jsonable
from analysis.operators.scan import ObjectPlacement

if TYPE_CHECKING:
    from analysis.bragg.outcome import Outcome

__all__ = ["FP_RESULT_SPEC", "FP_RESULT_SPEC_VERSION", "PLACEMENT_CONVENTION", "RESULT_SPEC", "RESULT_SPEC_VERSION",
           "next_result_key", "publish_fp_dfxm_results", "publish_outcome", "publish_results"]

RESULT_SPEC = "BraggPtychoReconstruction"
RESULT_SPEC_VERSION = "0.1"
PLACEMENT_CONVENTION = ("voxel (n1, n2, n3) of object sits at origin_m + sum_a n_a voxel_size_m[a] axes_lab[a]: lab "
                        "(x, y, z) in m relative to the sample point in the beam at stage position 0; stage "
                        "translation s brings the point -s into the beam")
"""How ``metadata["object_placement"]`` reads (docs/dataset-format.md §2, §5)."""


def next_result_key(processed: Any, raw_uid: str, kind: str = "recon") -> str:
    """``<raw_uid[:8]>-<kind>-NNN`` with NNN one above the highest already in ``processed``."""
    prefix = f"{raw_uid[:8]}-{kind}-"
    pat = re.compile(re.escape(prefix) + r"(\d{3,})$")
    nums = [int(m.group(1)) for k in processed if (m := pat.match(str(k)))]
    return f"{prefix}{max(nums, default=0) + 1:03d}"


def _jsonable(v: Any) -> Any:
    """Strict-JSON metadata for Tiled (NaN/inf → None)."""
    return jsonable(v, nonfinite_to_none=True)


def publish_results(processed: Any, raw_uid: str, result: dict[str, Any], *, raw_run: Any = None,
                    raw_uri: str | None = None, algorithm: str = "pxm Bragg ptychography (ePIE + ML)",
                    parameters: dict[str, Any] | None = None, software: dict[str, Any] | None = None,
                    extra_metadata: dict[str, Any] | None = None, placement: ObjectPlacement | None = None,
                    status: str = "complete") -> Any:
    """Write one result container under ``processed``; return its client.

    ``result`` holds NumPy arrays: ``object``, ``probe`` (required), ``background``,
    ``strain_zz``, ``omega_x``, ``omega_y``, ``error``, ``error_phase`` (optional), and
    optionally ``metrics`` / ``timings_s`` dicts (stored in the metadata). ``raw_run``,
    when given, receives the back-link ``metadata["analysis"]``. ``placement`` (where each
    voxel of ``object`` sits) goes into ``metadata["object_placement"]``; ``status`` as the results
    file's (e.g. "complete with post-processing errors").
    """
    from tiled.structures.core import Spec

    for k in ("object", "probe"):
        if result.get(k) is None:
            raise ValueError(f"publish_results: result[{k!r}] is missing")
    if raw_uri is None and raw_run is not None:
        raw_uri = getattr(raw_run, "uri", None)
    key = next_result_key(processed, raw_uid)
    md = {"raw_uid": raw_uid, "raw_uri": raw_uri, "algorithm": algorithm, "parameters": parameters or {},
          "software": software or {}, "status": status,
          "metrics": result.get("metrics") or {}, "timings_s": result.get("timings_s") or {},
          **(extra_metadata or {})}
    if placement is not None:
        md["object_placement"] = {**placement.as_dict(), "convention": PLACEMENT_CONVENTION}
    res = processed.create_container(key, metadata=_jsonable(md),
                                     specs=[Spec(RESULT_SPEC, version=RESULT_SPEC_VERSION)])
    obj = np.asarray(result["object"])
    res.write_array(obj.astype(np.complex64), key="object", dims=["e1", "e2", "e3"][: obj.ndim])
    res.write_array(np.asarray(result["probe"]).astype(np.complex64), key="probe")
    for name, dtype in (("background", np.float32), ("strain_zz", np.float32), ("omega_x", np.float32),
                        ("omega_y", np.float32), ("error", np.float64), ("error_phase", np.int8)):
        v = result.get(name)
        if v is not None:
            res.write_array(np.ascontiguousarray(np.asarray(v).astype(dtype)), key=name)
    _link_back(raw_run, key, res, algorithm)
    return res


def publish_outcome(processed: Any, raw_uid: str, outcome: Outcome, *, raw_run: Any = None,
                    raw_uri: str | None = None, algorithm: str = "pxm Bragg ptychography (ePIE + ML)",
                    metrics: dict[str, Any] | None = None, timings_s: dict[str, float] | None = None,
                    postprocessing_errors: dict[str, str] | None = None,
                    extra_metadata: dict[str, Any] | None = None) -> Any:
    """Publish an :class:`analysis.bragg.outcome.Outcome` with :func:`publish_results`; return the container's client.

    The arrays (object, probe, background, ``strain_zz``/``omega_x``/``omega_y``, cost history) come from the
    outcome itself (:meth:`~analysis.bragg.outcome.Outcome.arrays`), never from a results file read back;
    parameters are the recipe, placement the object's, and the status follows the post-processing errors.

    Parameters
    ----------
    processed
        The Tiled ``/processed`` container.
    raw_uid
        The raw run's uid.
    outcome
        The reconstruction.
    raw_run, raw_uri
        The raw run (gets the back-link) and its URI.
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
        The Tiled client of the new container.
    """
    from analysis.bragg.outcome import software_info

    result = outcome.arrays()
    if metrics is not None:
        result["metrics"] = metrics
    if timings_s is not None:
        result["timings_s"] = timings_s
    errors = dict(outcome.postprocessing_errors if postprocessing_errors is None else postprocessing_errors)
    return publish_results(processed, raw_uid, result, raw_run=raw_run, raw_uri=raw_uri, algorithm=algorithm,
                           parameters=dataclasses.asdict(outcome.recipe), software=software_info(),
                           extra_metadata={**(extra_metadata or {}), "postprocessing_errors": errors},
                           placement=outcome.placement,
                           status="complete with post-processing errors" if errors else "complete")


def _link_back(raw_run: Any, key: str, result_node: Any, algorithm: str) -> None:
    """Append this result to the raw run's ``metadata["analysis"]`` list (no-op without a raw run)."""
    if raw_run is None:
        return
    links = list(raw_run.metadata.get("analysis") or [])
    links.append({"key": key, "uri": getattr(result_node, "uri", None), "algorithm": algorithm, "status": "complete"})
    raw_run.update_metadata(metadata={"analysis": links})


FP_RESULT_SPEC = "FPDFXMReconstruction"
FP_RESULT_SPEC_VERSION = "0.1"


def publish_fp_dfxm_results(processed: Any, raw_uid: str, arrays: dict[str, Any], *, metadata: dict[str, Any],
                            raw_run: Any = None, raw_uri: str | None = None,
                            algorithm: str = "pxm FP-DFXM (Zernike-EPRY)") -> Any:
    """Write one FP-DFXM result container under ``processed``; return its client.

    Same key scheme and two-way link as :func:`publish_results` (``<raw_uid[:8]>-recon-NNN``,
    metadata ``raw_uid``/``raw_uri``, back-link in the raw run's ``analysis`` list), Spec
    ``FPDFXMReconstruction``. ``arrays`` needs ``object`` and ``pupil`` (complex, stored as
    complex64); any other NumPy array is stored as float32/float64 as given. ``metadata``
    carries e.g. Zernike coefficients, the misalignment read-out and the options.
    """
    from tiled.structures.core import Spec

    for k in ("object", "pupil"):
        if arrays.get(k) is None:
            raise ValueError(f"publish_fp_dfxm_results: arrays[{k!r}] is missing")
    if raw_uri is None and raw_run is not None:
        raw_uri = getattr(raw_run, "uri", None)
    key = next_result_key(processed, raw_uid)
    md = {"raw_uid": raw_uid, "raw_uri": raw_uri, "algorithm": algorithm, "status": "complete", **metadata}
    res = processed.create_container(key, metadata=_jsonable(md),
                                     specs=[Spec(FP_RESULT_SPEC, version=FP_RESULT_SPEC_VERSION)])
    for name, value in arrays.items():
        if value is None:
            continue
        a = np.asarray(value)
        real_dtype = np.float64 if a.dtype == np.float64 else np.float32
        a = a.astype(np.complex64) if np.iscomplexobj(a) else a.astype(real_dtype)
        res.write_array(np.ascontiguousarray(a), key=name)
    _link_back(raw_run, key, res, algorithm)
    return res
