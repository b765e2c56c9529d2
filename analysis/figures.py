"""PNG figures of reconstructions: amplitude/phase/strain slices and the probe (matplotlib Agg).

Complex fields are shown with hue = phase and value = amplitude (HSV colouring).
Every function writes one PNG and returns its path; nothing is shown on screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import hsv_to_rgb  # noqa: E402

from analysis.strain import StrainMaps  # noqa: E402
from analysis.xp import to_numpy  # noqa: E402

__all__ = ["complex_to_rgb", "robust_limit", "save_object_slices", "save_strain_slices", "save_probe"]


def complex_to_rgb(z: Any, *, amplitude_max: float | None = None) -> np.ndarray:
    """RGB image (…, 3) of a complex array: hue = arg z, value = |z|/max, full saturation."""
    z = to_numpy(z)
    amp = np.abs(z)
    vmax = amplitude_max or (float(amp.max()) or 1.0)
    hsv = np.stack([(np.angle(z) + np.pi) / (2 * np.pi), np.ones(z.shape), np.clip(amp / vmax, 0, 1)], axis=-1)
    return hsv_to_rgb(hsv)


def _slice_centre(weights: np.ndarray) -> list[int]:
    """Voxel index of the centre of mass of ``weights`` ≥ 0 (the array centre if they are all 0)."""
    w = np.where(np.isfinite(weights), weights, 0.0)
    total = float(w.sum())
    if total <= 0:
        return [n // 2 for n in w.shape]
    idx = np.indices(w.shape).reshape(w.ndim, -1)
    return [int(round(float(i @ w.ravel()) / total)) for i in idx]


def _centre_slices(a: np.ndarray, centre: list[int] | None = None,
                   voxel_size_m: Any = None) -> list[tuple[str, np.ndarray, list[float] | None, tuple[str, str]]]:
    """(name, 2D slice, imshow extent in µm or None, (x label, y label)) for the three central planes.

    The planes pass through ``centre`` (default: the array centre), so a thin tilted crystal is cut
    where it is, not where the array's middle happens to be.
    """
    if a.ndim == 2:
        return [("", a, _extent_um(a.shape, voxel_size_m), ("axis 1", "axis 0"))]
    if a.ndim != 3:
        raise ValueError(f"figures: expected a 2D or 3D array, found shape {a.shape}")
    c = centre if centre is not None else [n // 2 for n in a.shape]
    vox = None if voxel_size_m is None else np.broadcast_to(np.asarray(voxel_size_m, float), (3,))
    out = []
    for axis in range(3):
        rest = [k for k in range(3) if k != axis]
        s = np.take(a, c[axis], axis=axis)
        ext = None if vox is None else _extent_um(s.shape, (vox[rest[0]], vox[rest[1]]))
        unit = " (µm)" if vox is not None else ""
        out.append((f"axis{axis}={c[axis]}", s, ext, (f"axis {rest[1]}{unit}", f"axis {rest[0]}{unit}")))
    return out


def _extent_um(shape: tuple[int, ...], voxel_size_m: Any) -> list[float] | None:
    """imshow extent [0, cols·d1, 0, rows·d0] in µm, or None without voxel sizes."""
    if voxel_size_m is None:
        return None
    d = np.broadcast_to(np.asarray(voxel_size_m, float), (2,))
    return [0.0, shape[1] * d[1] * 1e6, 0.0, shape[0] * d[0] * 1e6]


def _show(ax: Any, img: Any, extent: list[float] | None, labels: tuple[str, str], **kw: Any) -> Any:
    """imshow with physical extent (equal aspect) when known, voxel indices otherwise."""
    im = ax.imshow(img, origin="lower", extent=extent, aspect="equal" if extent is not None else "auto", **kw)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    return im


def robust_limit(values: Any, percentile: float = 99.0) -> float:
    """Symmetric colour limit: the ``percentile`` of |values| over finite entries (1.0 if none).

    Dislocation cores and support edges give a few extreme strain/tilt voxels; a max-based limit
    would wash out the rest of the map.
    """
    v = np.abs(np.asarray(values, float))
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 1.0
    lim = float(np.percentile(v, percentile))
    return lim if lim > 0 else (float(v.max()) or 1.0)


def save_object_slices(path: str | Path, rho: Any, *, title: str = "object", axis_labels: str = "e1,e2,e3",
                       phase_threshold: float = 0.1, voxel_size_m: Any = None) -> Path:
    """Slices of |ρ| and arg ρ through the centre of mass of |ρ|² (rows: amplitude, phase).

    The phase is blanked where |ρ| < ``phase_threshold`` × max|ρ| (it has no meaning there). With
    ``voxel_size_m`` the axes are in µm at equal aspect.
    """
    a = to_numpy(rho)
    amp = np.abs(a)
    sl = _centre_slices(a, _slice_centre(amp ** 2) if a.ndim == 3 else None, voxel_size_m)
    amp_max = float(amp.max()) or 1.0
    fig, axes = plt.subplots(2, len(sl), figsize=(4 * len(sl), 7), squeeze=False)
    for j, (name, s, ext, labels) in enumerate(sl):
        im = _show(axes[0, j], np.abs(s), ext, labels, cmap="gray", vmin=0.0, vmax=amp_max)
        axes[0, j].set_title(f"|ρ| {name}")
        fig.colorbar(im, ax=axes[0, j], shrink=0.8)
        phase = np.ma.masked_where(np.abs(s) < phase_threshold * amp_max, np.angle(s))
        im = _show(axes[1, j], phase, ext, labels, cmap="hsv", vmin=-np.pi, vmax=np.pi)
        axes[1, j].set_title(f"arg ρ (rad) {name}")
        fig.colorbar(im, ax=axes[1, j], shrink=0.8)
    fig.suptitle(f"{title} (axes {axis_labels})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def save_strain_slices(path: str | Path, maps: StrainMaps, *, title: str = "strain") -> Path:
    """Slices of ε_zz (×10⁻⁴), ω_x and ω_y (µrad) through the mapped crystal's centre; masked voxels blank.

    Axes in µm at equal aspect; colour limits ± the 99th percentile of |value| (see :func:`robust_limit`).
    """
    fields = [("ε_zz (1e-4)", to_numpy(maps.eps_zz) * 1e4), ("ω_x (µrad)", to_numpy(maps.omega_x_rad) * 1e6),
              ("ω_y (µrad)", to_numpy(maps.omega_y_rad) * 1e6)]
    f0 = fields[0][1]
    centre = _slice_centre(np.isfinite(f0).astype(float)) if f0.ndim == 3 else None
    n_sl = len(_centre_slices(f0, centre))
    fig, axes = plt.subplots(3, n_sl, figsize=(4 * n_sl, 10), squeeze=False)
    for i, (label, f) in enumerate(fields):
        lim = robust_limit(f)
        for j, (name, s, ext, labels) in enumerate(_centre_slices(f, centre, maps.voxel_size_m)):
            im = _show(axes[i, j], np.ma.masked_invalid(s), ext, labels, cmap="RdBu_r", vmin=-lim, vmax=lim)
            axes[i, j].set_title(f"{label} {name}")
            fig.colorbar(im, ax=axes[i, j], shrink=0.8)
    fig.suptitle(f"{title} ({maps.frame} frame, voxel {np.round(np.array(maps.voxel_size_m) * 1e9, 2)} nm; "
                 f"colour ± 99th percentile)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def save_probe(path: str | Path, probe: Any, *, pixel_size_m: float | tuple[float, float] = 1.0,
               title: str = "probe") -> Path:
    """Probe amplitude (grey) and complex HSV image (hue = phase), with axes in µm."""
    p = to_numpy(probe)
    if p.ndim != 2:
        raise ValueError(f"save_probe: expected a 2D probe, found shape {p.shape}")
    d = np.broadcast_to(np.asarray(pixel_size_m, float), (2,))
    ext = [0, p.shape[1] * d[1] * 1e6, 0, p.shape[0] * d[0] * 1e6]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    im = axes[0].imshow(np.abs(p), cmap="magma", origin="lower", extent=ext)
    axes[0].set_title("|P|")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    axes[1].imshow(complex_to_rgb(p), origin="lower", extent=ext)
    axes[1].set_title("P (hue = phase, value = |P|)")
    for ax in axes:
        ax.set_xlabel("µm")
        ax.set_ylabel("µm")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def save_convergence(path: str | Path, costs: Any, phases: Any) -> Path:
    """Cost per iteration, one panel per phase (ePIE error and ML cost have different units)."""
    costs = np.asarray(costs, float)
    phases = np.asarray(phases)
    names = [ph for ph in dict.fromkeys(phases.tolist())]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(5 * max(len(names), 1), 3.8), squeeze=False)
    it = np.arange(1, costs.size + 1)
    for ax, ph in zip(axes[0], names, strict=False):
        sel = phases == ph
        ax.semilogy(it[sel], np.maximum(costs[sel], 1e-300), ".-")
        ax.set_xlabel("iteration")
        ax.set_ylabel("normalised error" if ph == "epie" else "cost")
        ax.set_title(ph)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
