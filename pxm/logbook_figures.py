"""``--figures DIR`` of ``pxm probe``, ``pxm dfxm-demo``, ``pxm fp-reconstruct`` and ``pxm polarization``.

Each command's result as PNGs under the logbook rules of :mod:`analysis.figure_style`: a footer with
the run uid, the method, the date and the pxm version, a unit on every colour bar and a colour wheel
for every phase image. Every function creates ``directory`` and returns the files it wrote.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.figure_style import FigureFooter
from analysis.figures import save_error_history, save_map_figure, save_probe

if TYPE_CHECKING:
    from pxm.dfxm import FPRunResult
    from pxm.ferroelectric import FerroelectricChainResult
    from pxm.polarization import PolarizationMaps

__all__ = ["check_figures_dir", "probe_figures", "fp_figures", "polarization_figures", "ferroelectric_figures"]


def _now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def check_figures_dir(directory: str | Path | None) -> None:
    """Raise ValueError (one line naming the fix) unless ``directory`` is None or a folder that can be written.

    Called before a command does its work, so a bad ``--figures`` costs nothing.
    """
    if directory is None:
        return
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"--figures {d}: is a file; give a folder (it is created when missing)")
    parent = next((a for a in (d, *d.parents) if a.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--figures {d}: {parent} is not writable; choose another folder")


def _folder(directory: str | Path) -> Path:
    check_figures_dir(directory)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    return d


def probe_figures(directory: str | Path, probe: Any, *, pixel_size_m: float, run_uid: str, algorithm: str,
                  n_iterations: int, error_history: Any) -> list[Path]:
    """``pxm probe --figures``: the retrieved beam-plane probe and the forward-ptychography error per sweep.

    Parameters
    ----------
    directory
        Folder for ``probe.png`` and ``probe_convergence.png`` (created).
    probe
        (ROW, COL) complex probe in the beam plane.
    pixel_size_m
        Its pixel size.
    run_uid
        The spiral run's uid.
    algorithm, n_iterations
        The method (``"epie"``/``"mpie"``) and its sweeps, for the footer.
    error_history
        Error per sweep.

    Returns
    -------
    list of Path
    """
    d = _folder(directory)
    footer = FigureFooter(run_uid=run_uid, recipe=f"forward ptychography, {algorithm} {n_iterations} sweeps",
                          date_utc=_now_utc(), extra="pxm probe")
    return [save_probe(d / "probe.png", probe, pixel_size_m=pixel_size_m, axis_names=("vertical", "horizontal"),
                       title="probe in the beam plane (spiral forward ptychography)",
                       amplitude_unit="√photons per pixel, arb. scale", footer=footer),
            save_error_history(d / "probe_convergence.png", error_history, ylabel="normalised error (dimensionless)",
                               title=f"forward ptychography ({algorithm})", footer=footer)]


def fp_figures(directory: str | Path, out: FPRunResult, *, command: str = "pxm fp-reconstruct",
               prefix: str = "") -> list[Path]:
    """FP-DFXM result figures: object and strain/tilt maps (µm), pupil, error per sweep.

    Parameters
    ----------
    directory
        Folder for ``fp_object.png``, ``fp_pupil.png`` and ``fp_convergence.png`` (created).
    out
        The reconstruction of one run (:func:`pxm.dfxm.reconstruct_fp_run`).
    command
        The command, named in the footer.
    prefix
        Put before each file name (one set per scan in one folder, e.g. ``"c_"``).

    Returns
    -------
    list of Path
    """
    d = _folder(directory)
    obj = np.asarray(out.result.object)
    weak = np.abs(obj) < 0.1 * float(np.abs(obj).max() or 1.0)

    def masked(a: Any, scale: float) -> np.ndarray:
        return np.where(weak, np.nan, np.asarray(a, float) * scale)

    recipe = f"Zernike-EPRY {out.options.n_iterations} sweeps" + ("" if out.options.recover_pupil else ", fixed pupil")
    footer = FigureFooter(run_uid=out.data.uid, recipe=recipe, date_utc=_now_utc(), extra=command)
    px = out.data.geometry.hr_pixel_size_m
    names = ("row", "col")
    paths = [
        save_map_figure(d / f"{prefix}fp_object.png", [
            ("|O|", "|O| (arb. units)", np.abs(obj)),
            ("O (hue = phase)", "", obj),
            ("strain ε_GG", "ε_GG (×10⁻⁴, dimensionless)", masked(out.maps.strain, 1e4)),
            ("rocking tilt", "tilt (µrad)", masked(out.maps.tilt_rock_rad, 1e6)),
            ("roll tilt", "tilt (µrad)", masked(out.maps.q_roll, 1e6)),
        ], pixel_size_m=px, axis_names=names, symmetric=[False, False, True, True, True],
            title=f"FP-DFXM object, image plane ({px * 1e9:.1f} nm pixels; maps blank below 10 % of max|O|)",
            footer=footer),
        save_map_figure(d / f"{prefix}fp_pupil.png", [
            ("|pupil|", "|pupil| (transmission, dimensionless)", np.abs(np.asarray(out.result.pupil))),
            ("pupil (hue = phase)", "", np.asarray(out.result.pupil)),
        ], axis_names=("pupil row", "pupil col"), title="objective pupil (frequency pixels)", footer=footer),
        save_error_history(d / f"{prefix}fp_convergence.png", out.result.error_history,
                           ylabel="Σ(|ψ|−√I)²/ΣI (dimensionless)", title="Zernike-EPRY", footer=footer),
    ]
    return paths


def polarization_figures(directory: str | Path, maps: PolarizationMaps, *, run_uid: str = "",
                         source: str = "", axis_names: tuple[str, ...] | None = None,
                         command: str = "pxm polarization") -> list[Path]:
    """``pxm polarization --figures``: |P|, the stress along the reflection and the branch gap.

    Parameters
    ----------
    directory
        Folder for ``polarization_<strain frame>.png`` (created).
    maps
        The polarization maps.
    run_uid
        The raw run's uid (from the results' provenance).
    source
        The results file, named in the footer.
    axis_names
        Names of the maps' axes; None: x, y, z in the sample frame, e1, e2, e3 otherwise.
    command
        The command, named in the footer before ``source``.

    Returns
    -------
    list of Path
    """
    d = _folder(directory)
    hkl = " ".join(f"{v:g}" for v in maps.hkl)
    footer = FigureFooter(run_uid=run_uid, recipe=f"LGD inversion, {maps.material} ({hkl})", date_utc=_now_utc(),
                          extra=f"{command} {source}".strip())
    names = axis_names or (("x", "y", "z") if maps.strain_frame == "sample" else ("e1", "e2", "e3"))
    mag = np.asarray(maps.magnitude_c_per_m2, float)
    return [save_map_figure(d / f"polarization_{maps.strain_frame}.png", [
        ("|P|", "|P| (C/m²)", mag),
        ("stress along g", "σ_gg (MPa)", np.asarray(maps.stress_along_g_pa, float) * 1e-6),
        ("branch gap", "branch gap (kJ/m³)", np.asarray(maps.branch_gap_j_per_m3, float) * 1e-3),
    ], pixel_size_m=maps.voxel_size_m, axis_names=names[:mag.ndim], symmetric=[False, True, False],
        title=f"polarization from strain ({maps.strain_frame} frame), {maps.material} ({hkl})", footer=footer)]


def ferroelectric_figures(directory: str | Path, res: FerroelectricChainResult) -> list[Path]:
    """``pxm dfxm-demo --ferroelectric --figures``: each variant scan's FP-DFXM figures, then the merged maps.

    Files: ``<variant>_fp_object.png``, ``<variant>_fp_pupil.png``, ``<variant>_fp_convergence.png`` per scan
    (:func:`fp_figures`), ``polarization_<frames>.png`` (|P|, σ_gg, branch gap of the merged maps,
    :func:`polarization_figures`) and ``polarization_variants.png`` (the c/a label of P and the scan each voxel
    came from).

    Parameters
    ----------
    directory
        Folder for the PNGs (created).
    res
        The chain's result (:func:`pxm.ferroelectric.run_ferroelectric_chain`).

    Returns
    -------
    list of Path
    """
    d = _folder(directory)
    paths: list[Path] = []
    for variant, out in res.fp.items():
        paths += fp_figures(d, out, command=f"pxm dfxm-demo --ferroelectric ({variant} variant scan)",
                            prefix=f"{variant}_")
    first = next(iter(res.uids.values()), "")
    paths += polarization_figures(d, res.maps, run_uid=first, source="(merged variant scans)",
                                  axis_names=("row", "col"), command="pxm dfxm-demo --ferroelectric")
    scans = ", ".join(f"{i + 1} {v.variant}-variant scan" for i, v in enumerate(res.parts))
    footer = FigureFooter(run_uid=first, recipe=f"LGD inversion, {res.maps.material}, one FP scan per variant",
                          date_utc=_now_utc(), extra="pxm dfxm-demo --ferroelectric")
    paths.append(save_map_figure(d / "polarization_variants.png", [
        ("c/a variant of P", "variant (0 not inverted, 1 c, 2 a)", np.asarray(res.variant_label, float)),
        ("scan each voxel came from", f"scan (0 none, {scans})", np.asarray(res.source_scan, float)),
    ], pixel_size_m=res.maps.voxel_size_m, axis_names=("row", "col"), symmetric=[False, False],
        title="ferroelectric domains: c/a label of the inverted P and the scan used per voxel", footer=footer))
    return paths
