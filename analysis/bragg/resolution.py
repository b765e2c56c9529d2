"""Resolution of a Bragg-ptychography reconstruction
(docs/dataset-format.md, Half-data resolution): half-data FSC and PRTF.

* :func:`half_data_resolution` — FSC (½-bit) of two reconstructions of a binomial photon split,
  over full shells and in cones about the lab/sample axes z (along Q), y, x (:func:`fsc_cone_axes`);
* :func:`prtf_resolution` — PRTF (1/e) of K reconstructions of the full data from random starts;
* :class:`ResolutionEstimate` / :class:`PRTFEstimate` — their curves, scalar ``/metrics`` and one-line summary;
* :func:`write_resolution` — the ``/resolution`` group of the results file; :func:`save_resolution` — the PNG.

The reconstructions themselves come from :func:`analysis.bragg.pipeline.reconstruct` (``fsc``, ``prtf_runs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.geometry import BraggGeometry
from analysis.metrics import ShellCurve, prtf, random_phase_prtf, shell_crossing
from analysis.xp import Array

if TYPE_CHECKING:
    from analysis.figure_style import FigureFooter

__all__ = ["ResolutionEstimate", "PRTFEstimate", "resolution_text", "fsc_cone_axes", "half_data_resolution",
           "prtf_resolution", "write_resolution", "save_resolution"]


@dataclass(frozen=True, kw_only=True)
class ResolutionEstimate:
    """Half-data resolution (docs/dataset-format.md, Half-data resolution): FSC of two binomial-split
    reconstructions.
    """

    fsc: ShellCurve = field(repr=False)
    """FSC over full shells, frequencies in 1/m; ``resolution`` at the ½-bit threshold (m)."""
    fsc_directional: dict[str, ShellCurve] = field(repr=False)
    """FSC in ±20° cones about the lab/sample axes ``z`` (along Q, the ε_zz direction), ``y``, ``x``;
    each cone's shells run to the grid's Nyquist frequency along its axis."""
    mask_voxels: int
    """Voxels in the common FSC mask."""
    mask: Array | None = field(default=None, repr=False)
    """The common soft mask (object grid, values in [0, 1]) both halves were multiplied by."""
    split_seed: int
    """Seed of the binomial split."""

    def metrics(self) -> dict[str, float]:
        """Scalar summary for ``/metrics``: resolutions in metres.

        A resolution is NaN when its curve never crosses the threshold; then ``*_finest_period_m``,
        the finest period the curve examined, bounds it (grid-limited: finer than that).
        """
        out = {"fsc_resolution_m": float(self.fsc.resolution), "fsc_finest_period_m": float(self.fsc.finest_period),
               "fsc_mask_voxels": int(self.mask_voxels), "fsc_split_seed": int(self.split_seed)}
        for k, c in self.fsc_directional.items():
            out[f"fsc_resolution_{k}_m"] = float(c.resolution)
            out[f"fsc_finest_period_{k}_m"] = float(c.finest_period)
        return out

    def summary(self) -> str:
        """One line: the ½-bit FSC resolutions (all shells, z, y, x), in nm.

        A curve that never crosses reads "< P nm" with P its finest period (grid-limited).
        """
        cones = ", ".join(f"{k} {resolution_text(c)}" for k, c in self.fsc_directional.items())
        return f"half-data resolution: FSC (½-bit) all shells {resolution_text(self.fsc)}; {cones}"


@dataclass(frozen=True, kw_only=True)
class PRTFEstimate:
    """PRTF of K reconstructions of the full data from random starts
    (docs/dataset-format.md, Half-data resolution; Chapman et al. 2006).

    It measures how reproducibly phase retrieval lands on the same far-field phases, not the noise in
    the data (the runs fit the same noise): a PRTF above 1/e to the detector edge says the result does
    not depend on the start; the noise-limited resolution is the half-data FSC's.
    """

    prtf: ShellCurve = field(repr=False)
    """Over full shells of |q| on the measured planes (1/m), averaged over positions."""
    prtf_directional: dict[str, ShellCurve] = field(repr=False)
    """In ±20° cones about the lab/sample axes z (along Q), y, x, on the q-points of the measured frame
    (detector × rocking, sheared: :meth:`~analysis.geometry.BraggGeometry.measured_q_basis_per_m`)."""
    n_runs: int
    """K, the number of runs compared."""
    random_floor: float
    """PRTF of K runs with unrelated phases (:func:`analysis.metrics.random_phase_prtf`)."""
    seed: int
    """Seed of the random starts."""

    def metrics(self) -> dict[str, float]:
        """Scalar summary for ``/metrics`` (NaN resolution: never crosses; see ``prtf_finest_period_m``)."""
        out = {"prtf_resolution_m": float(self.prtf.resolution), "prtf_finest_period_m": float(self.prtf.finest_period),
               "prtf_runs": int(self.n_runs), "prtf_random_floor": float(self.random_floor),
               "prtf_seed": int(self.seed)}
        for k, c in self.prtf_directional.items():
            out[f"prtf_resolution_{k}_m"] = float(c.resolution)
            out[f"prtf_finest_period_{k}_m"] = float(c.finest_period)
        return out

    def summary(self) -> str:
        """One line: the 1/e PRTF resolutions (all shells, z, y, x) of the K runs, in nm."""
        cones = ", ".join(f"{k} {resolution_text(c)}" for k, c in self.prtf_directional.items())
        return (f"PRTF of {self.n_runs} runs from random starts (1/e): all shells {resolution_text(self.prtf)}; "
                f"{cones} (unrelated phases would give {self.random_floor:.2f})")


def resolution_text(c: ShellCurve) -> str:
    """The resolution of ``c`` as text: "N nm" at the crossing, "< P nm" when it never crosses.

    P is the finest period the curve examined; "no data" when no shell holds a voxel (e.g. a PRTF
    cone without counted pixels).
    """
    if np.isfinite(c.resolution):
        return f"{c.resolution * 1e9:.0f} nm"
    return f"< {c.finest_period * 1e9:.0f} nm" if np.isfinite(c.finest_period) else "no data"


def fsc_cone_axes(geometry: BraggGeometry) -> dict[str, np.ndarray]:
    """Lab/sample axes z (along Q), y, x in the object's array coordinates (components along e1, e2, e3):
    the ``cone_axis`` of each directional FSC of :func:`half_data_resolution`.
    """
    lab = geometry.lab_axes()
    native = np.stack([lab["e1"], lab["e2"], lab["e3"]])  # rows: e_a in lab (x, y, z)
    return {name: native[:, i] for name, i in (("z", 2), ("y", 1), ("x", 0))}


def half_data_resolution(rec_a: Any, rec_b: Any, *, split_seed: int = 0, illumination_fraction: float = 0.1,
                         cone_half_angle_deg: float = 20.0) -> ResolutionEstimate:
    """FSC (½-bit) of two reconstructions of binomial half-data sets (docs/dataset-format.md, Half-data resolution).

    The common mask is S_A ∧ S_B ∧ [Σ_j |P_j|² ≥ ``illumination_fraction`` · max] (never-lit voxels keep
    the identical start object in both halves and would fake correlation), softened by a 1-voxel
    Gaussian. B is registered to A (sub-voxel shift, phase ramp, complex scale; :func:`object_error`).
    The native axes e1, e2, e3 are orthogonal, so voxel sizes give 1/m directly, and the cones about
    lab z, y, x have the axes (z·e1, z·e2, z·e3), … in array coordinates.
    """
    from scipy.ndimage import gaussian_filter

    from analysis.metrics import fourier_shell_correlation, object_error

    ra, rb = rec_a.result(), rec_b.result()
    ill = rec_a.illumination()
    hard = ra.support & rb.support & (ill >= illumination_fraction * ill.max())
    if not hard.any():
        raise ValueError("half_data_resolution: the supports of the halves do not overlap on the illuminated region")
    soft = gaussian_filter(hard.astype(float), 1.0)
    b_aligned = object_error(rb.object, ra.object, support=hard).aligned
    vox = ra.geometry.voxel_size_m
    fsc = fourier_shell_correlation(ra.object, b_aligned, voxel_size_m=vox, mask=soft)
    cones = {name: fourier_shell_correlation(ra.object, b_aligned, voxel_size_m=vox, mask=soft,
                                             cone_axis=axis, cone_half_angle_deg=cone_half_angle_deg)
             for name, axis in fsc_cone_axes(ra.geometry).items()}
    return ResolutionEstimate(fsc=fsc, fsc_directional=cones, mask_voxels=int(hard.sum()), mask=soft,
                              split_seed=split_seed)


def prtf_resolution(runs: list[Any], *, seed: int = 0, cone_half_angle_deg: float = 20.0) -> PRTFEstimate:
    """PRTF (1/e) of K runs on the same data
    (docs/dataset-format.md, Half-data resolution): full shells of |q| and cones, averaged over positions.

    Per position, every run's far field Ψ_j^(k) = F(P_j^(k) ρ_j^(k)) on the measured planes is aligned in
    global phase to run 0's, then :func:`analysis.metrics.prtf` (modulus-constrained: the phase
    consistency |⟨e^{iφ_k}⟩| where I > 0) gives the shell values; shells are averaged over positions
    with their pixel counts as weights. |q| and the cones about z, y, x (:func:`fsc_cone_axes`, e-frame
    components) are taken on the true q-points of the measured frame, whose rocking axis is sheared
    (:meth:`~analysis.geometry.BraggGeometry.measured_q_basis_per_m`), in cycles per metre as the FSC's.
    """
    from analysis.xp import to_numpy

    if len(runs) < 2:
        raise ValueError(f"prtf_resolution: needs at least 2 runs, got {len(runs)}")
    op, data, g = runs[0].op, runs[0].data, runs[0].geometry
    basis = g.measured_q_basis_per_m()
    axes = {"all": None, **fsc_cone_axes(g)}
    sums: dict[str, list[Any]] = {}
    template: dict[str, ShellCurve] = {}
    for j in range(data.n_positions):
        if not data.has_data(j):
            continue
        psi = [to_numpy(op.fourier.forward(op.probe_at(r.state.probe, data.shifts_px[j])
                                           * r.state.object[op.view(data.offsets_vox[j])])) for r in runs]
        for k in range(1, len(psi)):
            c = np.vdot(psi[k], psi[0])
            psi[k] = psi[k] * (c / abs(c) if abs(c) > 0 else 1.0)
        stack, inten, mask = np.stack(psi), to_numpy(data.intensities[j]), to_numpy(data.mask_at(j))
        for name, axis in axes.items():
            c = prtf(stack, inten, mask=mask, q_basis=basis, cone_axis=axis, cone_half_angle_deg=cone_half_angle_deg)
            w = np.nan_to_num(c.value) * c.n_voxels
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0], acc[1] = acc[0] + w, acc[1] + c.n_voxels
            template[name] = c
    if not template:
        raise ValueError("prtf_resolution: no position has measured frames")
    curves = {}
    for name, (num, den) in sums.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            val = num / den
        t = template[name]
        curves[name] = ShellCurve(frequency=t.frequency, value=val, threshold=t.threshold, n_voxels=den,
                                  crossing_frequency=shell_crossing(np.asarray(t.frequency), val,
                                                                    np.asarray(t.threshold)))
    return PRTFEstimate(prtf=curves.pop("all"), prtf_directional=curves, n_runs=len(runs),
                        random_floor=random_phase_prtf(len(runs)), seed=seed)


def write_resolution(f: Any, est: ResolutionEstimate | None, pr: PRTFEstimate | None) -> None:
    """``/resolution/{fsc, fsc_z, fsc_y, fsc_x}`` (half-data FSC) and ``/resolution/{prtf, prtf_z, prtf_y,
    prtf_x}`` (K runs from random starts): curves and crossings (docs/dataset-format.md §2).
    """
    g = f.require_group("resolution")
    curves: dict[str, ShellCurve] = {}
    if est is not None:
        g.attrs["method"] = "binomial photon split, two half-data reconstructions (docs/dataset-format.md)"
        g.attrs["split_seed"] = int(est.split_seed)
        g.attrs["mask_voxels"] = int(est.mask_voxels)
        curves.update({"fsc": est.fsc, **{f"fsc_{k}": c for k, c in est.fsc_directional.items()}})
    if pr is not None:
        g.attrs["prtf_method"] = "K full-data reconstructions from random starts, modulus-constrained far fields"
        g.attrs["prtf_runs"] = int(pr.n_runs)
        g.attrs["prtf_random_floor"] = float(pr.random_floor)
        g.attrs["prtf_seed"] = int(pr.seed)
        curves.update({"prtf": pr.prtf, **{f"prtf_{k}": c for k, c in pr.prtf_directional.items()}})
    for name, c in curves.items():
        h = g.create_group(name)
        h.create_dataset("frequency_per_m", data=np.asarray(c.frequency, float))
        h.create_dataset("value", data=np.asarray(c.value, float))
        h.create_dataset("threshold", data=np.asarray(c.threshold, float))
        h.create_dataset("n_voxels", data=np.asarray(c.n_voxels, float))
        h.attrs["crossing_frequency_per_m"] = float(c.crossing_frequency)
        h.attrs["resolution_m"] = float(c.resolution)
        h.attrs["finest_period_m"] = float(c.finest_period)
        h.attrs["threshold_kind"] = "1/e" if name.startswith("prtf") else "half-bit"


def _plot_curves(ax: Any, curves: dict[str, ShellCurve], threshold_label: str) -> None:
    for name, c in curves.items():
        line, = ax.plot(np.asarray(c.frequency) * 1e-6, c.value, "-" if name == "all shells" else "--",
                        label=f"{name} ({resolution_text(c)})")
        ax.plot(np.asarray(c.frequency) * 1e-6, c.threshold, ":", color=line.get_color(), lw=0.8)
    ax.plot([], [], "k:", label=threshold_label)
    ax.legend(fontsize=8)


def save_resolution(path: Path, est: ResolutionEstimate | None, pr: PRTFEstimate | None = None, *,
                    footer: FigureFooter | None = None) -> Path:
    """PNG: the half-data FSC (all shells and the z/y/x cones) with the ½-bit threshold, and/or the PRTF of
    the random-start runs with 1/e and the unrelated-phase level.

    Parameters
    ----------
    path
        The PNG to write.
    est, pr
        The FSC estimate and/or the PRTF estimate (at least one).
    footer
        The provenance line of every pxm figure (:func:`analysis.bragg.outcome.outcome_footer`); None: date and
        version only (:func:`analysis.figure_style.finish_figure`).

    Returns
    -------
    Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.figure_style import finish_figure

    panels = [p for p in (est, pr) if p is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, p in zip(axes[0], panels, strict=True):
        if isinstance(p, ResolutionEstimate):
            _plot_curves(ax, {"all shells": p.fsc, **p.fsc_directional}, "½-bit")
            ax.set_xlabel("spatial frequency (1/µm)")
            ax.set_ylabel("FSC")
            ax.set_title("FSC of two half-data reconstructions")
        else:
            _plot_curves(ax, {"all shells": p.prtf, **p.prtf_directional}, "1/e")
            ax.axhline(p.random_floor, color="0.5", lw=0.8, label=f"{p.n_runs} unrelated runs")
            ax.set_xlabel("|q| (1/µm)")
            ax.set_ylabel("PRTF")
            ax.set_title(f"PRTF of {p.n_runs} runs from random starts")
            ax.set_ylim(0, 1.05)
            ax.legend(fontsize=8)
    out = finish_figure(fig, path, footer, dpi=100)
    assert out is not None
    return out
