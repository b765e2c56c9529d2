"""Logbook rules shared by every pxm figure: a provenance footer, labelled colour bars, a phase colour wheel.

A figure is built first (a Matplotlib ``Figure``, Agg backend) and then written by :func:`finish_figure`,
which refuses a colour bar without a label (every colour bar states its quantity and unit) and adds
the footer: run uid, recipe, date (UTC) and the pxm version (``importlib.metadata``).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import hsv_to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.xp import Array  # noqa: E402

__all__ = ["FigureFooter", "pxm_version", "complex_to_rgb", "add_phase_wheel", "colorbar_labels",
           "check_colorbars", "finish_figure", "labelled_colorbar", "phase_wheels", "footer_text"]

FOOTER_TAG = "pxm-footer"
"""``Text.get_gid()`` of the footer text (tests and tools find it by this id)."""


def pxm_version() -> str:
    """Installed version of the ``pxm`` distribution ("unknown" when it is not installed).

    Returns
    -------
    str
        E.g. ``"0.1.0"``.
    """
    try:
        return metadata.version("pxm")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, kw_only=True)
class FigureFooter:
    """What a logbook figure says about where it came from (one footer line)."""

    run_uid: str = ""
    """uid of the raw run (empty: not from a recorded run, e.g. a file of unknown origin)."""
    recipe: str = ""
    """Recipe or method: name and its key numbers (e.g. ``"default: 200 ePIE + 100 ML"``)."""
    date_utc: str = ""
    """When the result was made, ISO 8601 UTC; empty: now."""
    software: str = ""
    """``pxm <version>``; empty: the installed version."""
    extra: str = ""
    """Anything else worth one short phrase (the command, the material, ...)."""

    def text(self) -> str:
        """The footer line: ``run <uid> · recipe <recipe> · <date> · pxm <version>``."""
        date = self.date_utc or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        parts = [f"run {self.run_uid or '(no run uid)'}", f"recipe {self.recipe or '(not recorded)'}", date,
                 self.software or f"pxm {pxm_version()}"]
        if self.extra:
            parts.append(self.extra)
        return " · ".join(parts)


def complex_to_rgb(z: Array, *, amplitude_max: float | None = None) -> np.ndarray:
    """RGB image (…, 3) of a complex array: hue = arg z, value = |z|/max, full saturation.

    Parameters
    ----------
    z
        Complex array (NumPy or CuPy).
    amplitude_max
        |z| shown at full brightness; default max |z|.

    Returns
    -------
    numpy.ndarray
        Float RGB in [0, 1], shape ``z.shape + (3,)``.
    """
    from analysis.xp import to_numpy

    z = np.asarray(to_numpy(z))
    amp = np.abs(z)
    vmax = amplitude_max or (float(amp.max()) if amp.size else 0.0) or 1.0
    hsv = np.stack([(np.angle(z) + np.pi) / (2 * np.pi), np.ones(z.shape), np.clip(amp / vmax, 0, 1)], axis=-1)
    return hsv_to_rgb(hsv)


def add_phase_wheel(fig: Figure, ax: Any, *, size: float = 0.42, n_px: int = 64) -> Any:
    """Inset colour wheel legend of :func:`complex_to_rgb` in the corner of ``ax``: hue = phase, radius = amplitude.

    Parameters
    ----------
    fig
        The figure (unused beyond ownership; kept for symmetry with colour bars).
    ax
        The axes showing a complex-to-HSV image.
    size
        Inset size as a fraction of ``ax``.
    n_px
        Wheel resolution.

    Returns
    -------
    matplotlib.axes.Axes
        The inset, with gid ``"phase-wheel"``.
    """
    del fig
    g = np.linspace(-1.0, 1.0, n_px)
    xx, yy = np.meshgrid(g, g)
    r = np.hypot(xx, yy)
    wheel = complex_to_rgb(np.where(r <= 1.0, r * np.exp(1j * np.arctan2(yy, xx)), 0), amplitude_max=1.0)
    rgba = np.concatenate([wheel, (r <= 1.0)[..., None].astype(float)], axis=-1)
    inset = ax.inset_axes((1.04, 0.02, size, size))               # beside the panel, where a colour bar would be
    inset.imshow(rgba, origin="lower", extent=(-1, 1, -1, 1))
    inset.set_xticks([])
    inset.set_yticks([])
    inset.set_frame_on(False)
    inset.set_xlim(-1.6, 1.6)
    inset.set_ylim(-1.5, 1.5)
    for txt, (x, y) in (("0", (1.3, 0)), ("π/2", (0, 1.28)), ("π", (-1.3, 0)), ("−π/2", (0, -1.3))):
        inset.text(x, y, txt, fontsize=6, ha="center", va="center")
    inset.set_title("phase (rad)", fontsize=6, pad=2)
    inset.set_gid("phase-wheel")
    return inset


def labelled_colorbar(fig: Figure, mappable: Any, ax: Any, label: str, **kw: Any) -> Any:
    """A colour bar beside ``ax`` with ``label`` (quantity and unit); an empty label is a ValueError."""
    if not label.strip():
        raise ValueError("labelled_colorbar: every colour bar needs its quantity and unit, e.g. 'phase (rad)'")
    cb = fig.colorbar(mappable, ax=ax, shrink=kw.pop("shrink", 0.8), **kw)
    cb.set_label(label)
    return cb


def colorbar_labels(fig: Figure) -> list[str]:
    """Labels of every colour bar of ``fig`` (in the order the colour bars were made)."""
    out = []
    for ax in fig.axes:
        cb = getattr(ax, "_colorbar", None)
        if cb is not None:
            out.append(str(cb.ax.get_ylabel() if cb.orientation == "vertical" else cb.ax.get_xlabel()))
    return out


def check_colorbars(fig: Figure) -> None:
    """Raise ValueError when a colour bar of ``fig`` has no label."""
    empty = [i for i, lab in enumerate(colorbar_labels(fig)) if not lab.strip()]
    if empty:
        raise ValueError(f"figure has {len(empty)} colour bar(s) without a label; give each its quantity and unit")


def phase_wheels(fig: Figure) -> list[Any]:
    """The colour-wheel insets (:func:`add_phase_wheel`) of ``fig``."""
    return [child for ax in fig.axes for child in getattr(ax, "child_axes", []) if child.get_gid() == "phase-wheel"]


def footer_text(fig: Figure) -> str:
    """The footer line of ``fig`` ("" when it has none)."""
    for t in fig.texts:
        if t.get_gid() == FOOTER_TAG:
            return str(t.get_text())
    return ""


def finish_figure(fig: Figure, path: str | Path | None, footer: FigureFooter | None, *, dpi: int = 90) -> Path | None:
    """Check the colour bars, add the footer, lay out and write ``fig`` as PNG; close it.

    Parameters
    ----------
    fig
        The built figure.
    path
        PNG to write; None leaves the figure open and returns None (for inspection).
    footer
        Provenance line; None writes one with no uid/recipe (still the date and version).
    dpi
        Resolution.

    Returns
    -------
    Path or None
        ``path``.
    """
    check_colorbars(fig)
    if not footer_text(fig):
        fig.text(0.005, 0.004, (footer or FigureFooter()).text(), fontsize=7, color="0.3", ha="left",
                 va="bottom", gid=FOOTER_TAG)
    top = 0.97 if getattr(fig, "_suptitle", None) is not None else 1.0
    fig.tight_layout(rect=(0.0, 0.03, 1.0, top))
    if path is None:
        return None
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)
