"""Live previews: the xarray-style preview data set and its keys under /processed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

PREVIEW_SPEC = "BraggPtychoLivePreview"

PREVIEW_SPEC_VERSION = "0.2"

_PREVIEW_SLICE_DIMS = {"e1": ("e2", "e3"), "e2": ("e1", "e3"), "e3": ("e1", "e2")}


def preview_dataset(arrays: Mapping[str, np.ndarray], *, object_shape: tuple[int, ...],
                    voxel_size_m: tuple[float, ...], origin_e_m: tuple[float, ...] | None = None) -> Any:
    """A live preview's arrays as an ``xarray.Dataset`` with dims, units and coordinates (as the final result).

    ``object_amplitude_mid_<a>`` (1) and ``object_phase_mid_<a>`` (rad) are the object's slices through voxel
    N//2 of axis ``a`` (dims: the other two of ``e1, e2, e3``; ``attrs["slice_at_m"]`` says where);
    ``strain_zz_mid_e2`` (1) the ε_zz slice through e2's N//2; ``probe`` (sqrt(photons), ``probe_e2, probe_e3``).
    Coordinates: ``e1, e2, e3`` in m along the reconstruction axes from ``origin_e_m`` (the placement's origin
    in that frame, as :func:`pxm.publication.outcome_dataset`; voxel 0 when None), ``probe_e2/e3`` in m from the
    beam axis. Built once per preview container; later previews overwrite the arrays only.

    Parameters
    ----------
    arrays
        The preview's arrays (``LiveReconstructionCallback`` session ``_preview_arrays``).
    object_shape
        Shape of the full object grid (N1, N2, N3).
    voxel_size_m
        (Δr1, Δr2, Δr3).
    origin_e_m
        The reconstruction-frame position of voxel [0, 0, 0], or None.

    Returns
    -------
    xarray.Dataset
        Written by :func:`pxm.publication.publish_dataset`.
    """
    import xarray as xr

    from pxm.publication import LAYOUT_DOC, RECONSTRUCTION_FRAME

    vox = [float(v) for v in voxel_size_m]
    origin = [0.0] * 3 if origin_e_m is None else [float(v) for v in origin_e_m]
    coords: dict[str, Any] = {}
    for a, name in enumerate(("e1", "e2", "e3")):
        where = "from voxel 0 (no placement recorded)" if origin_e_m is None else "reconstruction frame"
        coords[name] = (name, origin[a] + np.arange(object_shape[a]) * vox[a],
                        {"units": "m", "long_name": f"position along {name} ({where})", "frame": "reconstruction"})
    data: dict[str, Any] = {}
    for key, value in arrays.items():
        v = np.asarray(value)
        if key == "probe":
            for a, name in enumerate(("probe_e2", "probe_e3")):
                coords[name] = (name, (np.arange(v.shape[a]) - v.shape[a] // 2) * vox[a + 1],
                                {"units": "m", "long_name": f"offset from the beam axis along {name[-2:]}"})
            data[key] = (("probe_e2", "probe_e3"), v,
                         {"units": "sqrt(photons)", "long_name": "probe section P2 in the (e2, e3) plane"})
            continue
        cut = key.rsplit("_", 1)[-1]
        a = int(cut[1]) - 1
        units, what = (("rad", "object phase") if key.startswith("object_phase") else
                       ("1", "strain eps_zz (NaN off the mask)") if key.startswith("strain") else
                       ("1", "object amplitude |rho| (arbitrary scale)"))
        data[key] = (_PREVIEW_SLICE_DIMS[cut], v,
                     {"units": units, "long_name": f"{what}, slice through voxel N//2 of {cut}",
                      "slice_index": object_shape[a] // 2,
                      "slice_at_m": origin[a] + (object_shape[a] // 2) * vox[a]})
    attrs = {"title": "pxm live preview (Bragg ptychography, running)", "layout": LAYOUT_DOC,
             "reconstruction_frame": RECONSTRUCTION_FRAME}
    return xr.Dataset(data_vars=data, coords=coords, attrs=attrs)


def _next_key(container: Any, prefix: str) -> str:
    nums = [int(str(k)[len(prefix):]) for k in container
            if str(k).startswith(prefix) and str(k)[len(prefix):].isdigit()]
    return f"{prefix}{max(nums, default=0) + 1:03d}"
