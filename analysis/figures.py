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

__all__ = ["complex_to_rgb", "save_object_slices", "save_strain_slices", "save_probe"]


def complex_to_rgb(z: Any, *, amplitude_max: float | None = None) -> np.ndarray:
    """RGB image (…, 3) of a complex array: hue = arg z, value = |z|/max, full saturation."""
    z = to_numpy(z)
    amp = np.abs(z)
    vmax = amplitude_max or (float(amp.max()) or 1.0)
    hsv = np.stack([(np.angle(z) + np.pi) / (2 * np.pi), np.ones(z.shape), np.clip(amp / vmax, 0, 1)], axis=-1)
    return hsv_to_rgb(hsv)


def _centre_slices(a: np.ndarray) -> list[tuple[str, np.ndarray]]:
    if a.ndim == 2:
        return [("", a)]
    if a.ndim != 3:
        raise ValueError(f"figures: expected a 2D or 3D array, found shape {a.shape}")
    c = [n // 2 for n in a.shape]
    return [(f"axis0={c[0]}", a[c[0]]), (f"axis1={c[1]}", a[:, c[1]]), (f"axis2={c[2]}", a[:, :, c[2]])]


def save_object_slices(path: str | Path, rho: Any, *, title: str = "object", axis_labels: str = "e1,e2,e3",
                       phase_threshold: float = 0.1) -> Path:
    """Central slices of |ρ| and arg ρ (rows: amplitude, phase; one column per slice).

    The phase is blanked where |ρ| < ``phase_threshold`` × max|ρ| (it has no meaning there).
    """
    a = to_numpy(rho)
    sl = _centre_slices(a)
    fig, axes = plt.subplots(2, len(sl), figsize=(4 * len(sl), 7), squeeze=False)
    for j, (name, s) in enumerate(sl):
        im = axes[0, j].imshow(np.abs(s), cmap="gray", origin="lower")
        axes[0, j].set_title(f"|ρ| {name}")
        fig.colorbar(im, ax=axes[0, j], shrink=0.8)
        amp_max = float(np.abs(a).max()) or 1.0
        phase = np.ma.masked_where(np.abs(s) < phase_threshold * amp_max, np.angle(s))
        im = axes[1, j].imshow(phase, cmap="hsv", vmin=-np.pi, vmax=np.pi, origin="lower")
        axes[1, j].set_title(f"arg ρ (rad) {name}")
        fig.colorbar(im, ax=axes[1, j], shrink=0.8)
    fig.suptitle(f"{title} (axes {axis_labels})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def save_strain_slices(path: str | Path, maps: StrainMaps, *, title: str = "strain") -> Path:
    """Central slices of ε_zz (×10⁻⁴), ω_x and ω_y (µrad); masked voxels blank."""
    fields = [("ε_zz (1e-4)", to_numpy(maps.eps_zz) * 1e4), ("ω_x (µrad)", to_numpy(maps.omega_x_rad) * 1e6),
              ("ω_y (µrad)", to_numpy(maps.omega_y_rad) * 1e6)]
    n_sl = len(_centre_slices(fields[0][1]))
    fig, axes = plt.subplots(3, n_sl, figsize=(4 * n_sl, 10), squeeze=False)
    for i, (label, f) in enumerate(fields):
        lim = float(np.nanmax(np.abs(f))) if np.any(np.isfinite(f)) else 1.0
        for j, (name, s) in enumerate(_centre_slices(f)):
            im = axes[i, j].imshow(np.ma.masked_invalid(s), cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
            axes[i, j].set_title(f"{label} {name}")
            fig.colorbar(im, ax=axes[i, j], shrink=0.8)
    fig.suptitle(f"{title} ({maps.frame} frame, voxel {np.round(np.array(maps.voxel_size_m) * 1e9, 2)} nm)")
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
    for ax, ph in zip(axes[0], names):
        sel = phases == ph
        ax.semilogy(it[sel], np.maximum(costs[sel], 1e-300), ".-")
        ax.set_xlabel("iteration")
        ax.set_ylabel("normalised error" if ph == "epie" else "cost")
        ax.set_title(ph)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
