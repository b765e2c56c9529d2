"""Ferroelectric FP-DFXM demo: c/a domains of BaTiO₃ → two FP scans → strain → polarization → Tiled.

``pxm dfxm-demo --ferroelectric`` = :func:`run_ferroelectric_demo`. c and a domains differ in d₀₀₂
by ~0.9 % (Δ2θ ≈ 3 mrad against a ~0.6 mrad pupil), so one FP scan sees one variant: the chain
runs one :func:`plans.fp_dfxm_scan` per variant, its 2θ set for that variant's stress-free lattice
(see ``docs/polarization.md``). Each run is reconstructed (:func:`pxm.dfxm.reconstruct_fp_run`),
its relative strain is anchored to the cubic parent with ``InversionOptions.strain_offset`` =
d_ref/d_parent − 1 (from the run's reflection metadata) and inverted with the one-reflection LGD
inversion; the two maps are merged on their bright voxels and published with
:func:`pxm.polarization.publish_polarization`, naming both raw runs (which are never written to).

The sample's truth (P and ε_g of the LGD model under a local stress) is computed here with
``analysis.ferro`` and handed to ``sim.ferroelectric`` as data.
"""

# Why this module is long: `pxm dfxm-demo --ferroelectric` is one chain (two FP scans, strain, polarization, Tiled)
# run top to bottom over one session.

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from analysis.dfxm import FPDFXMGeometry, Reflection
from pxm.dfxm import DFXMDemoOptions, FPRunResult
from pxm.polarization import PolarizationMaps
from sim.ferroelectric import VARIANT_A, VARIANT_C, VARIANT_NONE

__all__ = ["FerroelectricDemoOptions", "FerroelectricTruth", "VariantPolarization", "FerroelectricChainResult",
           "variant_direction", "variant_reference_strain", "sample_truth", "acquire_ferroelectric_runs",
           "polarization_from_fp_run", "classify_variant", "combine_variant_maps", "run_ferroelectric_chain",
           "run_ferroelectric_job", "print_chain_summary", "run_ferroelectric_demo"]


def variant_direction(variant: str) -> tuple[float, float, float]:
    """Unit polarization direction of a variant in the cubic frame: c → [001], a → [100]."""
    directions = {"c": (0.0, 0.0, 1.0), "a": (1.0, 0.0, 0.0)}
    if variant not in directions:
        raise ValueError(f"variant: {variant!r}, expected 'c' (P ∥ [001]) or 'a' (P ∥ [100])")
    return directions[variant]


@dataclass(frozen=True, kw_only=True)
class FerroelectricDemoOptions:
    """Sample, scans and inversion of the ferroelectric FP-DFXM demo (BaTiO₃ 002 at 17 keV)."""

    fp: DFXMDemoOptions = field(default_factory=DFXMDemoOptions)
    """Size, diversity grid, exposure and iterations of each FP scan (the reflection is set per variant)."""
    material: str = "BaTiO3"
    """LGD coefficient set (``analysis.ferro.MATERIALS``)."""
    hkl: tuple[int, int, int] = (0, 0, 2)
    """The measured reflection in the cubic parent frame (a 00l reflection: c ∥ ĝ, a ⊥ ĝ)."""
    parent_d_spacing_m: float = 2.0045e-10
    """Cubic-parent d of ``hkl`` (BaTiO₃: c/2 = 2.018 Å is the c variant at e33 = 6.76e-3)."""
    temperature_k: float = 298.0
    variants: tuple[str, ...] = ("c", "a", "c", "a")
    """Domain stripes of the simulated film, top to bottom."""
    scanned_variants: tuple[str, ...] = ("c", "a")
    """One FP scan per entry, its 2θ set for that variant's stress-free lattice."""
    stress_bump_pa: float = 60e6
    """Peak of the Gaussian elastic stress σ_gg in the film (changes |P| by ~±2 %)."""
    wall_width_m: float = 10e-9
    bright_fraction: float = 0.35
    """Voxels with |O| ≥ this × the 99th-percentile |O| of a scan are inverted (then eroded by 1 px)."""
    fine: int = 2
    """Simulator grid = the reconstruction's high-resolution grid / ``fine``."""

    def __post_init__(self) -> None:
        if tuple(self.hkl[:2]) != (0, 0) or self.hkl[2] == 0:
            raise ValueError(f"FerroelectricDemoOptions.hkl: the c/a demo needs a 00l reflection, got {self.hkl!r}")
        for v in (*self.variants, *self.scanned_variants):
            variant_direction(v)
        if not self.scanned_variants or len(set(self.scanned_variants)) != len(self.scanned_variants):
            raise ValueError("FerroelectricDemoOptions.scanned_variants: give each variant to scan once, got "
                             f"{self.scanned_variants!r}")
        if not (self.parent_d_spacing_m > 0 and self.wall_width_m > 0 and 0 < self.bright_fraction < 1):
            raise ValueError("FerroelectricDemoOptions: parent_d_spacing_m and wall_width_m must be > 0 and "
                             f"bright_fraction in (0, 1); got {self.parent_d_spacing_m!r}, {self.wall_width_m!r}, "
                             f"{self.bright_fraction!r}")
        if not (isinstance(self.fine, int) and self.fine >= 1):
            raise ValueError(f"FerroelectricDemoOptions.fine must be an int >= 1, got {self.fine!r}")

    def geometry(self, reference_strain: float) -> FPDFXMGeometry:
        """FP-DFXM geometry of a scan whose 2θ is set for d = d_parent (1 + ``reference_strain``)."""
        f = self.fp
        refl = Reflection(hkl=cast("tuple[int, int, int]", tuple(int(v) for v in self.hkl)),
                          d_spacing_m=self.parent_d_spacing_m * (1 + reference_strain))
        return FPDFXMGeometry(reflection=refl, n_px=f.n_px, upsampling=f.upsampling, pixel_size_m=f.pixel_size_m)


def variant_reference_strain(variant: str, *, material: str, hkl: tuple[int, int, int],
                             temperature_k: float = 298.0) -> float:
    """Stress-free ε_g = ĝ·e0(P_s d̂)·ĝ of a variant vs the cubic parent (BaTiO₃ 00l: c 6.76e-3, a −2.30e-3)."""
    from analysis.ferro import projected_strain, spontaneous_polarization_c_per_m2, spontaneous_strain

    p_s = spontaneous_polarization_c_per_m2(material, temperature_k)
    p = p_s * np.asarray(variant_direction(variant))
    return float(projected_strain(spontaneous_strain(p, material), hkl))


@dataclass(frozen=True, kw_only=True)
class FerroelectricTruth:
    """LGD ground truth of the simulated film on the simulator grid (ROW, COL)."""

    pattern: Any = field(repr=False)
    """The :class:`sim.ferroelectric.DomainPattern` (variant labels, stress, amplitude)."""
    polarization_c_per_m2: np.ndarray = field(repr=False)
    """(ROW, COL, 3) P: local equilibrium of each variant under σ_gg, rotated across the walls."""
    strain_g: np.ndarray = field(repr=False)
    """(ROW, COL) ε_g = ĝ·e0(P)·ĝ + s_gg σ_gg relative to the cubic parent."""

    def on_object_grid(self, fine: int) -> tuple[np.ndarray, np.ndarray]:
        """(|P| (ROW, COL), variant label (ROW, COL)) point-sampled on the reconstruction grid."""
        return (np.linalg.norm(self.polarization_c_per_m2, axis=-1)[::fine, ::fine],
                np.asarray(self.pattern.variant)[::fine, ::fine])


def sample_truth(pattern: Any, *, material: str, hkl: tuple[int, int, int],
                 temperature_k: float = 298.0) -> FerroelectricTruth:
    """P and ε_g of a :class:`sim.ferroelectric.DomainPattern` from the LGD model (docs/polarization.md, Equations).

    Each voxel's c and a states are relaxed under the uniaxial stress σ_gg ĝĝ
    (:func:`analysis.ferro.equilibrium_polarization`); across a wall P = cos β P_c + sin β P_a,
    β = (π/2)(1 − c_weight) (a rotation profile, not a phase-field wall).
    """
    from analysis.ferro import (
        InversionOptions,
        directional_compliance_per_pa,
        equilibrium_polarization,
        projected_strain,
        reflection_unit_vector,
        spontaneous_polarization_c_per_m2,
        spontaneous_strain,
    )

    g = reflection_unit_vector(hkl)
    sigma_pa = np.asarray(pattern.stress_along_g_pa, float)
    stress = sigma_pa[..., None, None] * np.outer(g, g)
    p_s = spontaneous_polarization_c_per_m2(material, temperature_k)
    opts = InversionOptions(temperature_k=temperature_k)
    relaxed = {v: equilibrium_polarization(
        material, stress, np.broadcast_to(p_s * np.asarray(variant_direction(v)), sigma_pa.shape + (3,)), opts)
        for v in ("c", "a")}
    beta = 0.5 * math.pi * (1.0 - np.asarray(pattern.c_weight, float))
    p = np.cos(beta)[..., None] * relaxed["c"] + np.sin(beta)[..., None] * relaxed["a"]
    eps = (projected_strain(spontaneous_strain(p, material), hkl)
           + directional_compliance_per_pa(material, hkl) * sigma_pa)
    return FerroelectricTruth(pattern=pattern, polarization_c_per_m2=np.asarray(p), strain_g=np.asarray(eps))


def acquire_ferroelectric_runs(raw_catalog: Any, raw_dir: Path, documents_dir: Path, opts: FerroelectricDemoOptions, *,
                               log: Any = print) -> tuple[FerroelectricTruth, dict[str, str]]:
    """Simulate the film and run one FP-DFXM scan per scanned variant into ``raw_catalog``; return (truth, uids)."""
    from pxm.dfxm import acquire_fp_run
    from sim.dfxm import DFXMSimulator
    from sim.ferroelectric import ca_domain_pattern, strain_exit_field

    g0 = opts.geometry(0.0)
    n_fine, dx_fine_m = g0.hr_n_px * opts.fine, g0.hr_pixel_size_m / opts.fine
    pattern = ca_domain_pattern(n_fine, dx_fine_m, variants=opts.variants, wall_width_m=opts.wall_width_m,
                                stress_bump_pa=opts.stress_bump_pa, seed=opts.fp.seed)
    truth = sample_truth(pattern, material=opts.material, hkl=opts.hkl, temperature_k=opts.temperature_k)
    uids: dict[str, str] = {}
    for variant in opts.scanned_variants:
        eps_ref = variant_reference_strain(variant, material=opts.material, hkl=opts.hkl,
                                           temperature_k=opts.temperature_k)
        geom = opts.geometry(eps_ref)
        assert geom.reflection is not None             # FerroelectricDemoOptions.geometry() always sets it
        exit_field = strain_exit_field(truth.strain_g, pattern.amplitude, dx_fine_m, geom.reflection,
                                       geom.objective.energy_kev, reference_strain=eps_ref)
        source = DFXMSimulator(exit_field, dx_fine_m, geom, zernike_rad=opts.fp.zernike_rad,
                               peak_rate_counts_per_s=opts.fp.peak_rate_counts_per_s)
        sample = {"name": f"{opts.material} c/a film (simulated), 2θ set for the {variant} variant",
                  "material": opts.material, "simulated": True, "ferroelectric_variant": variant,
                  "parent_d_spacing_m": opts.parent_d_spacing_m, "reference_strain": eps_ref,
                  "domains": list(opts.variants), "stress_bump_pa": opts.stress_bump_pa,
                  "true_zernike_rad": {str(k): v for k, v in opts.fp.zernike_rad.items()}}
        log(f"{variant} variant: d_ref = {geom.reflection.d_spacing_m * 1e10:.4f} Å (ε_ref = {eps_ref:+.3e})")
        uids[variant] = acquire_fp_run(raw_catalog, raw_dir, documents_dir, source, geom, opts.fp, sample=sample,
                                       md={"purpose": "fp-dfxm-ferroelectric"}, log=log)
    return truth, uids


@dataclass(frozen=True, kw_only=True)
class VariantPolarization:
    """Polarization inverted from one variant's FP run."""

    variant: str
    uid: str
    strain_offset: float
    """d_ref/d_parent − 1 added to the run's relative strain (``InversionOptions.strain_offset``)."""
    bright: np.ndarray = field(repr=False)
    """(ROW, COL) bool: voxels that were inverted."""
    relative_amplitude: np.ndarray = field(repr=False)
    """(ROW, COL) |O| / its 99th percentile."""
    maps: PolarizationMaps = field(repr=False)


def _bright_mask(obj: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    amp = np.abs(np.asarray(obj))
    rel = amp / max(float(np.percentile(amp, 99)), 1e-30)
    bright = rel >= fraction
    core = bright.copy()                     # erode by 1 px: the central-difference strain uses both neighbours
    for axis in (0, 1):
        for shift in (1, -1):
            core &= np.roll(bright, shift, axis=axis)
    return core, rel


def polarization_from_fp_run(out: FPRunResult, *, material: str, parent_d_spacing_m: float | None = None,
                             bright_fraction: float = 0.35, temperature_k: float = 298.0) -> VariantPolarization:
    """One-reflection LGD inversion of a reconstructed FP run, its strain anchored to the cubic parent.

    The offset is d_ref/d_parent − 1 with d_ref from the run's reflection and d_parent given or read
    from ``sample.parent_d_spacing_m`` of the start document (ValueError if neither).
    """
    from analysis.ferro import InversionOptions, invert_reflections

    start = out.data.start
    raw_sample = start.get("sample")
    sample = raw_sample if isinstance(raw_sample, dict) else {}
    d_parent_m = parent_d_spacing_m if parent_d_spacing_m is not None else sample.get("parent_d_spacing_m")
    if d_parent_m is None or not d_parent_m > 0:
        raise ValueError(f"run {out.data.uid}: no cubic-parent d-spacing; pass parent_d_spacing_m (the strain "
                         "reference lattice: docs/polarization.md, Conventions) or record sample.parent_d_spacing_m "
                         "in the start document")
    refl = out.data.geometry.reflection
    if refl is None:
        raise ValueError(f"run {out.data.uid}: no reflection metadata; cannot anchor the strain")
    offset = refl.d_spacing_m / d_parent_m - 1.0
    bright, rel = _bright_mask(out.result.object, bright_fraction)
    if not bright.any():
        raise ValueError(f"run {out.data.uid}: no voxel brighter than {bright_fraction} of the 99th-percentile "
                         "amplitude; nothing to invert")
    eps = np.where(bright, np.asarray(out.maps.strain, float), 0.0)
    inv = invert_reflections(eps[..., None], [tuple(refl.hkl)], material, mask=bright,
                             options=InversionOptions(temperature_k=temperature_k, strain_offset=offset))
    p = np.asarray(inv.polarization_c_per_m2, float)
    variant = sample.get("ferroelectric_variant", "?")
    dx_m = out.data.geometry.hr_pixel_size_m
    maps = PolarizationMaps(material=material,
                            hkl=cast("tuple[float, float, float]", tuple(float(v) for v in refl.hkl)),
                            strain_frame=f"fp-{variant}",
                            polarization_c_per_m2=p, magnitude_c_per_m2=np.linalg.norm(p, axis=-1),
                            n_equivalent=np.asarray(inv.n_equivalent),
                            stress_along_g_pa=np.asarray(inv.stress_along_g_pa)[..., 0],
                            branch_gap_j_per_m3=np.asarray(inv.branch_gap_j_per_m3), voxel_size_m=(dx_m, dx_m))
    return VariantPolarization(variant=variant, uid=out.data.uid, strain_offset=offset, bright=bright,
                               relative_amplitude=rel, maps=maps)


def classify_variant(p_c_per_m2: np.ndarray) -> np.ndarray:
    """Label (…) int8 of P (…, 3): 1 (c) where |P_z| is the largest component, 2 (a) otherwise, 0 where NaN."""
    p = np.abs(np.asarray(p_c_per_m2, float))
    label = np.where(p[..., 2] >= np.maximum(p[..., 0], p[..., 1]), VARIANT_C, VARIANT_A)
    return np.where(np.all(np.isfinite(p), axis=-1), label, VARIANT_NONE).astype(np.int8)


def combine_variant_maps(parts: list[VariantPolarization]) -> tuple[PolarizationMaps, np.ndarray]:
    """Merge per-variant maps: each voxel from the scan where it is brightest (relative amplitude).

    Returns the merged maps and (ROW, COL) int8 index+1 of the scan used (0: dark in every scan).
    """
    if not parts:
        raise ValueError("combine_variant_maps: no per-variant maps to merge")
    rel = np.stack([np.where(v.bright, v.relative_amplitude, -np.inf) for v in parts])
    pick = np.argmax(rel, axis=0)
    lit = np.isfinite(np.max(rel, axis=0))
    m0 = parts[0].maps

    def merged(name: str, fill: float) -> np.ndarray:
        stack = np.stack([np.asarray(getattr(v.maps, name)) for v in parts])
        out = np.take_along_axis(stack, pick[None, ..., None] if stack.ndim == 4 else pick[None], axis=0)[0]
        return np.where(lit[..., None] if out.ndim == 3 else lit, out, fill)

    maps = PolarizationMaps(material=m0.material, hkl=m0.hkl, strain_frame="+".join(v.maps.strain_frame for v in parts),
                            polarization_c_per_m2=merged("polarization_c_per_m2", math.nan),
                            magnitude_c_per_m2=merged("magnitude_c_per_m2", math.nan),
                            n_equivalent=merged("n_equivalent", 0),
                            stress_along_g_pa=merged("stress_along_g_pa", math.nan),
                            branch_gap_j_per_m3=merged("branch_gap_j_per_m3", math.nan), voxel_size_m=m0.voxel_size_m)
    return maps, np.where(lit, pick + 1, 0).astype(np.int8)


@dataclass(frozen=True, kw_only=True)
class FerroelectricChainResult:
    """Everything the chain produced: truth, runs, reconstructions, maps and the published keys."""

    truth: FerroelectricTruth = field(repr=False)
    uids: dict[str, str]
    fp: dict[str, FPRunResult] = field(repr=False)
    parts: list[VariantPolarization] = field(repr=False)
    maps: PolarizationMaps = field(repr=False)
    variant_label: np.ndarray = field(repr=False)
    """(ROW, COL) int8 c/a label of the merged P (0: not inverted)."""
    source_scan: np.ndarray = field(repr=False)
    """(ROW, COL) int8: 1 + index into ``parts`` of the scan each voxel came from (0: none)."""
    ambiguity: dict[str, Any]
    fp_keys: dict[str, str]
    polarization_key: str
    elapsed_s: dict[str, float]


def run_ferroelectric_chain(raw: Any, processed: Any, raw_dir: Path, documents_dir: Path,
                            opts: FerroelectricDemoOptions, *, log: Any = print) -> FerroelectricChainResult:
    """Acquire one FP run per variant, reconstruct, invert, merge and publish to ``processed``."""
    from analysis.dfxm import FPOptions
    from pxm.dfxm import publish_fp_run, reconstruct_fp_run
    from pxm.polarization import ambiguity_report, publish_polarization

    t0 = time.perf_counter()
    truth, uids = acquire_ferroelectric_runs(raw, raw_dir, documents_dir, opts, log=log)
    t_acq = time.perf_counter() - t0
    fp: dict[str, FPRunResult] = {}
    fp_keys: dict[str, str] = {}
    parts: list[VariantPolarization] = []
    t_rec = t_inv = 0.0
    for variant, uid in uids.items():
        log(f"{variant} variant: reconstructing run {uid[:8]} ({opts.fp.iterations} sweeps) ...")
        t1 = time.perf_counter()
        fp[variant] = reconstruct_fp_run(raw[uid], options=FPOptions(n_iterations=opts.fp.iterations))
        node = publish_fp_run(processed, raw[uid], fp[variant])
        fp_keys[variant] = node.item["id"]
        t2 = time.perf_counter()
        parts.append(polarization_from_fp_run(fp[variant], material=opts.material, bright_fraction=opts.bright_fraction,
                                              temperature_k=opts.temperature_k))
        t_rec, t_inv = t_rec + t2 - t1, t_inv + time.perf_counter() - t2
    maps, source = combine_variant_maps(parts)
    label = classify_variant(maps.polarization_c_per_m2)
    report = ambiguity_report(maps)
    scan_of = {i + 1: v.variant for i, v in enumerate(parts)}
    lit = source > 0
    scan_label = np.array([VARIANT_NONE] + [VARIANT_C if v.variant == "c" else VARIANT_A for v in parts], np.int8)
    # consistency: does the inversion's label agree with the variant the voxel's scan was set for?
    agree = label[lit] == scan_label[source[lit]]
    report["label_matches_scan_fraction"] = float(np.mean(agree)) if lit.any() else math.nan
    extra_md = {"raw_uids": dict(uids), "fp_results": dict(fp_keys),
                "strain_offsets": {v.variant: v.strain_offset for v in parts},
                "parent_d_spacing_m": opts.parent_d_spacing_m, "temperature_k": opts.temperature_k,
                "bright_fraction": opts.bright_fraction, "ambiguity": report,
                "variant_label_codes": {"0": "not inverted", str(VARIANT_C): "c (P along ĝ)",
                                        str(VARIANT_A): "a (P perpendicular to ĝ)"},
                "source_scan_codes": {"0": "dark in every scan", **{str(k): v for k, v in scan_of.items()}}}
    first = next(iter(uids.values()))
    node = publish_polarization(processed, first, maps, raw_run=raw[first], source="pxm dfxm-demo --ferroelectric",
                                extra_metadata=extra_md, extra_arrays={"variant_label": label, "source_scan": source},
                                also_raw_uids=[u for u in uids.values() if u != first])
    return FerroelectricChainResult(truth=truth, uids=uids, fp=fp, parts=parts, maps=maps, variant_label=label,
                                    source_scan=source, ambiguity=report, fp_keys=fp_keys,
                                    polarization_key=node.item["id"],
                                    elapsed_s={"acquisition_s": t_acq, "reconstruction_s": t_rec,
                                               "inversion_s": t_inv, "total_s": time.perf_counter() - t0})


def run_ferroelectric_job(raw: Any, processed: Any, raw_dir: Path, documents_dir: Path,
                          opts: FerroelectricDemoOptions, *, figures_dir: str | Path | None = None,
                          log: Any = print) -> tuple[FerroelectricChainResult, list[Path]]:
    """The whole job of ``pxm dfxm-demo --ferroelectric`` (and ``pxm.simulate_ferroelectric``) in a Tiled session.

    :func:`run_ferroelectric_chain`, then the logbook figures of both scans and the polarization maps in
    ``figures_dir`` (:func:`pxm.logbook_figures.ferroelectric_figures`; none when None). Returns the chain's
    result and the figures written.
    """
    res = run_ferroelectric_chain(raw, processed, raw_dir, documents_dir, opts, log=log)
    figures: list[Path] = []
    if figures_dir is not None:
        from pxm.logbook_figures import ferroelectric_figures

        figures = [Path(f) for f in ferroelectric_figures(Path(figures_dir), res)]
    return res, figures


def print_chain_summary(res: FerroelectricChainResult, *, uri: str, key_file: str | Path) -> None:
    """Print runs, |P| against the simulator's truth, the ambiguity report and where the results live.

    The Tiled API key is never printed: the lines name ``key_file`` (:func:`pxm.catalog.write_key_file`, 0600).
    """
    for v, uid in res.uids.items():
        print(f"run ({v} variant): {uid}  → /processed/{res.fp_keys[v]}")
    valid = np.isfinite(res.maps.magnitude_c_per_m2)
    mag = res.maps.magnitude_c_per_m2[valid]
    print(f"polarization: {int(valid.sum())} voxels inverted; |P| mean {mag.mean():.4f} C/m², "
          f"range {mag.min():.4f}–{mag.max():.4f} C/m²; c {int((res.variant_label == VARIANT_C).sum())}, "
          f"a {int((res.variant_label == VARIANT_A).sum())} voxels")
    fine = res.truth.strain_g.shape[0] // res.maps.magnitude_c_per_m2.shape[0]
    mag_true, label_true = res.truth.on_object_grid(fine)
    err = res.maps.magnitude_c_per_m2[valid] - mag_true[valid]
    print(f"vs simulator truth: |P| error rms {np.sqrt(np.mean(err**2)):.2e} C/m² (mean {err.mean():+.1e}); "
          f"c/a label right on {np.mean(res.variant_label[valid] == label_true[valid]):.1%} of the inverted voxels")
    a = res.ambiguity
    print(f"ambiguity: n_equivalent {a['n_equivalent_counts']}; {a['n_small_gap']} voxels with a branch gap below "
          f"{a['small_gap_threshold_j_per_m3']:.0e} J/m³; undetermined: {'; '.join(a['undetermined'])}")
    print("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in res.elapsed_s.items()))
    print(f"published: /processed/{res.polarization_key}")
    print(f"read it back (shell: export PXM_TILED_API_KEY=$(cat {key_file})), in Python:")
    print("    import os; from tiled.client import from_uri")
    print(f"    pol = from_uri('{uri}', api_key=os.environ['PXM_TILED_API_KEY'])['processed']"
          f"['{res.polarization_key}']")
    print("    pol['magnitude_c_per_m2'][:], pol['variant_label'][:], pol.metadata['ambiguity']")


def run_ferroelectric_demo(server: Any, opts: FerroelectricDemoOptions, *, tiled_uri: str | None = None,
                           figures_dir: Path | None = None) -> int:
    """Start (or reach) Tiled, run :func:`run_ferroelectric_job` and print where everything lives.

    ``figures_dir``: also write the logbook figures of both scans and the polarization maps there
    (:func:`pxm.logbook_figures.ferroelectric_figures`).
    """
    from pxm.catalog import tiled_session, write_key_file
    from pxm.runengine import interrupt_between_scans

    with interrupt_between_scans(), tiled_session(server, tiled_uri) as session:   # Ctrl-C: docs/reliability.md
        res, figures = run_ferroelectric_job(session.raw, session.processed, server.raw_path,
                                             server.data_dir / "documents", opts, figures_dir=figures_dir)
        key_file = write_key_file(server.data_dir, server.api_key)    # the key never goes on a printed line
        print_chain_summary(res, uri=session.uri, key_file=key_file)
        for path in figures:
            print(f"wrote {path}")
    return 0
