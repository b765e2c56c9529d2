"""Difference map on the detector-conjugate lattice, with a thin-layer support found by the data (issue 14).

pxm's engine works on an orthogonal grid (e1, e2, e3) and carries the rocking shear in its transform
(docs/geometry.md, Operators). The measured q-points m1 Δq e1 + m2 Δq e2 + m3 Δq3 û (U = 1) have a real-space
dual of their own: the lattice a_k with a_k · b_l = 2π δ_kl / N_k, on which the model is a plain centred 3D FFT,
I_j = |fftshift(fftn(ρ[view_j] · P))|², periodic over one view (ptypy's "natural" frame, r3 ∥ k̂_f, r1 ∥ Q in the
symmetric case). A thin crystalline layer is a slab |n̂·(r − r_c)| ≤ T/2 there too, but on this lattice a slab
about one voxel thick holds the layer *exactly* (it picks whole voxels), where the orthogonal grid's image of the
same layer spreads over its neighbours (docs/benchmarks.md, "Difference map before ePIE": 21 % outside a 0.3 µm
slab).

With the probe flat across a view along r3 (an extruded beam at grazing incidence), the data constrain a layer
along r3 mostly through which voxels the support keeps, and whether the map converges from the flat start depends
on the slab's offset and thickness at a fraction of a voxel (ptypy's case, 20 iterations: a 0.2 µm slab centred
on the layer or 20 nm above reaches E 0.02, 20 nm below 0.40, 40 nm off 0.63-0.67; a 0.25 µm slab centred on it
stalls at 0.6, a 0.3 µm slab 61 nm off converges). The data tell the slabs that work apart:
:func:`thin_layer_search` runs a short difference map (Thibault et al., Science 321, 379 (2008),
doi:10.1126/science.1158573) for each candidate slab (offsets over one lattice period along n̂, thicknesses given)
and keeps the slab whose map fits the data best (lowest R-factor), then continues the map there. Probe held
(known probe); one exit wave per position in memory.
"""

# Why this module is long: difference map on the detector-conjugate lattice and the thin-layer support the data find
# there: one solver whose lattice transform, support search and DM step share one state (issue 14).

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft as sfft
from scipy.ndimage import map_coordinates

from analysis.geometry import BraggGeometry

__all__ = ["DetectorLattice", "LatticeScan", "LayerTrial", "LayerSearchResult", "lattice_scan",
           "lattice_probe_from_p2", "slab_on_lattice", "lattice_r_factor", "difference_map", "thin_layer_search",
           "ThinLayerOptions", "ThinLayerResult", "reconstruct_thin_layer", "write_thin_layer_result",
           "check_line_scan", "detector_lattice_to_grid", "grid_to_detector_lattice", "lattice_model_amplitudes",
           "fitted_r_factor", "photon_counts", "low_counts", "poisson_nll", "poisson_refine", "PoissonRefinement"]


@dataclass(frozen=True, kw_only=True)
class DetectorLattice:
    """The real-space lattice dual to the measured q-grid of a geometry at U = 1."""

    vectors_lab_m: np.ndarray = field(repr=False)
    """(3, 3): row k is the lab (x, y, z) step of one index along array axis k (detector row n1, column n2,
    rocking angle n3), metres."""
    view_shape: tuple[int, int, int]
    """(N1, N2, NM): one view = one 3D pattern's shape."""

    @classmethod
    def from_geometry(cls, geometry: BraggGeometry) -> DetectorLattice:
        """a_k = 2π (B⁻ᵀ)_k / N_k with B's rows Δq e1, Δq e2 and the q-step of one measured angle along û."""
        ax = geometry.lab_axes()
        e = np.stack([ax["e1"], ax["e2"], ax["e3"]])
        u_lab = np.asarray(geometry.rocking_direction) @ e
        dq3 = geometry.upsampling * geometry.dq_rocking_per_m
        b = np.stack([geometry.dq_detector_per_m * e[0], geometry.dq_detector_per_m * e[1], dq3 * u_lab])
        shape = (geometry.n_rows_px, geometry.n_cols_px, geometry.n_angles)
        a = 2 * np.pi * np.linalg.inv(b).T / np.asarray(shape, float)[:, None]
        return cls(vectors_lab_m=a, view_shape=shape)

    def to_indices(self, lab_m: np.ndarray) -> np.ndarray:
        """Lab points (..., 3) → fractional lattice coordinates (..., 3)."""
        return np.asarray(lab_m, float) @ np.linalg.inv(self.vectors_lab_m)

    def to_lab_m(self, indices: np.ndarray) -> np.ndarray:
        """Lattice coordinates (..., 3) → lab points (..., 3), metres."""
        return np.asarray(indices, float) @ self.vectors_lab_m


@dataclass(frozen=True, kw_only=True)
class LatticeScan:
    """Where each view sits in the object lattice."""

    starts: np.ndarray = field(repr=False)
    """(POS, 3) int: object index of each view's voxel [0, 0, 0]."""
    object_shape: tuple[int, int, int]
    """Shape of the object lattice array (covers every view)."""
    origin_lab_m: np.ndarray = field(repr=False)
    """Lab position of object voxel [0, 0, 0], metres (relative to the stage origin: probe at r = −s)."""
    max_residual_vox: float
    """Largest distance of a probe position from the lattice point it is rounded to, in voxels (ptypy rounds the
    same way; the probe is not shifted by the remainder)."""


def lattice_scan(lattice: DetectorLattice, stage_xyz_m: np.ndarray) -> LatticeScan:
    """Views for stage positions s (POS, 3): the probe centre (view index N//2) at r = −s, rounded to the lattice
    through the first position (ptypy rounds every view the same way).
    """
    c = lattice.to_indices(-np.asarray(stage_xyz_m, float))
    anchor = c[0]                                   # the lattice passes through the first probe position
    r = np.rint(c - anchor)
    half = np.asarray(lattice.view_shape) // 2
    lo = (r - half).min(axis=0)
    starts = (r - half - lo).astype(np.int64)
    shape = tuple(int(v) for v in starts.max(axis=0) + np.asarray(lattice.view_shape))
    return LatticeScan(starts=starts, object_shape=(shape[0], shape[1], shape[2]),
                       origin_lab_m=lattice.to_lab_m(anchor + lo),
                       max_residual_vox=float(np.abs(c - anchor - r).max(initial=0.0)))


def lattice_probe_from_p2(lattice: DetectorLattice, geometry: BraggGeometry, p2: np.ndarray) -> np.ndarray:
    """The probe on one view of the lattice, (N1, N2, NM), from pxm's section P2 (N2, N3) on ``geometry``.

    Each lattice point r (view centre at 0) is carried along k̂_i to the plane e1·r = 0 of P2 (the beam does not
    change along k̂_i) and P2 is interpolated there (linear; zero outside P2's window). ``geometry`` may use any U.
    """
    p2 = np.asarray(p2)
    if p2.shape != geometry.recon_shape[1:]:
        raise ValueError(f"lattice_probe_from_p2: P2 shape {p2.shape}, expected {geometry.recon_shape[1:]} "
                         "for this geometry")
    ax = geometry.lab_axes()
    shape = np.asarray(lattice.view_shape)
    idx = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij"), axis=-1)
    r = lattice.to_lab_m(idx)
    r = r - ((r @ ax["e1"]) / float(ax["e1"] @ ax["k_in"]))[..., None] * ax["k_in"]
    _, dr2, dr3 = geometry.voxel_size_m
    n2, n3 = p2.shape
    coords = np.stack([(r @ ax["e2"]) / dr2 + n2 // 2, (r @ ax["e3"]) / dr3 + n3 // 2])
    out = (map_coordinates(p2.real.astype(float), coords, order=1, mode="constant")
           + 1j * map_coordinates(p2.imag.astype(float), coords, order=1, mode="constant"))
    return np.asarray(out, np.complex128)


def slab_on_lattice(lattice: DetectorLattice, scan: LatticeScan, normal: np.ndarray, thickness_m: float,
                    offset_m: float = 0.0, centre_lab_m: np.ndarray | None = None) -> np.ndarray:
    """S = [|n̂·(r − r_c) − offset| ≤ T/2] on the object lattice (bool ``scan.object_shape``).

    r_c: ``centre_lab_m`` or the mean probe position of the scan (the centre of the views).
    """
    if not thickness_m > 0:
        raise ValueError(f"slab_on_lattice: thickness_m must be > 0, got {thickness_m}")
    n = np.asarray(normal, float)
    n = n / np.linalg.norm(n)
    if centre_lab_m is None:
        half = np.asarray(lattice.view_shape) // 2
        centre_lab_m = scan.origin_lab_m + lattice.to_lab_m(scan.starts.mean(axis=0) + half)
    steps = lattice.vectors_lab_m @ n                                  # n̂·a_k
    h = [(np.arange(m) * s) for m, s in zip(scan.object_shape, steps, strict=True)]
    d = (h[0][:, None, None] + h[1][None, :, None] + h[2][None, None, :]
         + float((scan.origin_lab_m - np.asarray(centre_lab_m, float)) @ n) - offset_m)
    return np.asarray(np.abs(d) <= thickness_m / 2)


def _views(scan: LatticeScan, shape: tuple[int, int, int]) -> list[tuple[slice, slice, slice]]:
    return [(slice(int(s[0]), int(s[0]) + shape[0]), slice(int(s[1]), int(s[1]) + shape[1]),
             slice(int(s[2]), int(s[2]) + shape[2])) for s in scan.starts]


def _fwd(x: np.ndarray) -> np.ndarray:
    return np.asarray(sfft.fftshift(sfft.fftn(x)))


def _inv(x: np.ndarray) -> np.ndarray:
    return np.asarray(sfft.ifftn(sfft.ifftshift(x)))


def lattice_r_factor(obj: np.ndarray, amplitudes: np.ndarray, mask: np.ndarray, probe: np.ndarray,
                     scan: LatticeScan) -> float:
    """R = Σ|√I − |Ψ|| / Σ√I over the measured pixels, Ψ_j = fftshift(fftn(ρ[view_j] · P))."""
    num = den = 0.0
    mask = np.broadcast_to(np.asarray(mask, bool), probe.shape)
    for j, v in enumerate(_views(scan, probe.shape)):
        a = np.abs(_fwd(obj[v] * probe))
        num += float(np.abs(a - amplitudes[j])[mask].sum())
        den += float(amplitudes[j][mask].sum())
    return num / max(den, 1e-30)


def difference_map(amplitudes: np.ndarray, mask: np.ndarray, probe: np.ndarray, scan: LatticeScan,
                   support: np.ndarray, n_iterations: int, start: np.ndarray | None = None) -> np.ndarray:
    """Difference map (β = 1) on the lattice, probe held; returns the object Π_O ψ after ``n_iterations``.

    ``amplitudes`` (POS, N1, N2, NM) = √I; ``mask`` broadcasts to one pattern (True = measured; unmeasured pixels
    keep the model's value); the start is ρ = 1 on the support unless ``start`` is given.
    """
    if n_iterations < 0:
        raise ValueError(f"difference_map: n_iterations must be >= 0, got {n_iterations}")
    views = _views(scan, probe.shape)
    msk = np.broadcast_to(np.asarray(mask, bool), probe.shape)
    amplitudes = np.asarray(amplitudes, np.float32)                # single precision: 2× faster, same result
    probe = np.asarray(probe, np.complex64)
    den = np.zeros(scan.object_shape, np.float32)
    for v in views:
        den[v] += np.abs(probe) ** 2
    lit = den > 1e-6 * den.max()
    sup = np.asarray(support, bool) & lit
    obj = sup.astype(np.complex64) if start is None else np.where(sup, start, 0).astype(np.complex64)
    psi = [obj[v] * probe for v in views]
    pc = np.conj(probe)

    def overlap(waves: list[np.ndarray]) -> np.ndarray:
        num = np.zeros(scan.object_shape, np.complex64)
        for v, w in zip(views, waves, strict=True):
            num[v] += pc * w
        return np.where(sup, num / np.where(lit, den, 1.0), 0)

    for _ in range(n_iterations):
        obj = overlap(psi)
        for j, v in enumerate(views):
            o = obj[v] * probe
            f = _fwd(2 * o - psi[j])
            f = np.where(msk, amplitudes[j] * (f / np.maximum(np.abs(f), 1e-30)), f)
            psi[j] = psi[j] + _inv(f) - o
    return overlap(psi).astype(np.complex128)


@dataclass(frozen=True, kw_only=True)
class LayerTrial:
    """One candidate slab of :func:`thin_layer_search` and how well its short map fits the data."""

    thickness_m: float
    offset_m: float
    n_voxels: int
    r_factor: float
    nll: float | None = None
    """Poisson negative log-likelihood of the short map's object (global factor fitted), when scored by it."""


@dataclass(frozen=True, kw_only=True)
class LayerSearchResult:
    """The object on the chosen slab and every slab tried."""

    object: np.ndarray = field(repr=False)
    """ρ on the object lattice (``scan.object_shape``)."""
    support: np.ndarray = field(repr=False)
    chosen: LayerTrial
    """The slab kept, with the R-factor of the final map on it."""
    trials: tuple[LayerTrial, ...]
    r_history: tuple[float, ...] = ()
    """R-factor on the chosen slab after the search's short map and after each restarted chunk of the finish (and
    after the Poisson refinement, when it ran)."""
    score: str = "r_factor"
    """What picked the slab and the chunk kept: ``r_factor`` or ``likelihood`` (Poisson)."""
    refinement: PoissonRefinement | None = None
    """The Poisson maximum-likelihood refinement of the map's result, when it ran."""


def thin_layer_search(amplitudes: np.ndarray, mask: np.ndarray, probe: np.ndarray, lattice: DetectorLattice,
                      scan: LatticeScan, normal: np.ndarray, thicknesses_m: tuple[float, ...], *,
                      n_offsets: int = 12, n_search_iterations: int = 20,
                      n_iterations: int = 60, restart_every: int = 10, score: str = "r_factor",
                      n_ml_iterations: int = 0, seed: int = 0) -> LayerSearchResult:
    """Pick the slab (thickness × offset along n̂) whose short difference map fits the data best, then finish there.

    Offsets: ``n_offsets`` values over one lattice period along n̂ (the largest |n̂·a_k|: shifting a slab by it
    moves every voxel's membership by one whole row). Candidates that select the same voxels as one tried
    before are skipped. On the chosen slab the map goes on in chunks of ``restart_every`` iterations, each restarted
    from the previous chunk's object, and the state with the lowest R-factor is returned: with noisy data the map
    with memory drifts away from the object (ptypy's case with Poisson noise, 1.5×10⁷ photons per pattern:
    E 0.07 after the 20-iteration search, 0.45 after 60 more with memory, 0.06 with restarts every 10).
    Cost: ≈ (distinct candidates × ``n_search_iterations`` + ``n_iterations``) map iterations.

    ``n_ml_iterations`` > 0: the kept state is then refined by :func:`poisson_refine` on the chosen slab (L-BFGS on
    the Poisson likelihood of the counts ``amplitudes``²).

    ``score="likelihood"`` (low counts, :func:`low_counts`): no difference map. Each candidate slab gets
    ``n_search_iterations`` of :func:`poisson_refine` from two starts, ρ = 1 and ρ = e^{iφ} on the slab (φ uniform
    random, ``seed``, the same for every candidate); the lower Poisson negative log-likelihood (:func:`poisson_nll`)
    of the two ranks the candidate, and the chosen one is refined for ``n_iterations + n_ml_iterations`` more. At
    low counts the map's amplitude projection puts √n of pixels with 0 or 1 photon on the object and stalls far
    from it, and every short map's R is noise. Neither start works everywhere (ptypy's case at 1.5×10⁶ photons per
    pattern, 0.2 µm slab on the layer: 13 positions, 60 Poisson its from ρ = 1 E 0.90, from a random phase 0.0084;
    the 3-position CI subset, 60 its from ρ = 1 0.105).
    """
    if not thicknesses_m or n_offsets < 1 or restart_every < 1:
        raise ValueError("thin_layer_search: give at least one thickness, n_offsets >= 1 and restart_every >= 1")
    if score not in ("r_factor", "likelihood"):
        raise ValueError(f"thin_layer_search: score {score!r}; use 'r_factor' or 'likelihood'")
    counts = np.asarray(amplitudes, float) ** 2

    def rank(o: np.ndarray) -> tuple[float, float | None]:
        r = lattice_r_factor(o, amplitudes, mask, probe, scan)
        return (r, None) if score == "r_factor" else (r, poisson_nll(o, counts, mask, probe, scan))
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    period = float(np.abs(lattice.vectors_lab_m @ n).max())
    seen: set[bytes] = set()
    trials: list[LayerTrial] = []
    best: tuple[float, np.ndarray, np.ndarray, LayerTrial] | None = None
    for t in thicknesses_m:
        for k in range(n_offsets):
            off = (k / n_offsets - 0.5) * period
            sup = slab_on_lattice(lattice, scan, n, t, off)
            key = np.packbits(sup).tobytes()
            if key in seen or not sup.any():
                continue
            seen.add(key)
            if score == "likelihood":                  # the Poisson fit itself, two starts (see above)
                phase = np.exp(2j * np.pi * np.random.default_rng(seed).random(sup.shape))
                fits = [poisson_refine(counts, mask, probe, scan, sup, start, n_iterations=n_search_iterations)
                        for start in (sup.astype(complex), sup * phase)]
                obj = min(fits, key=lambda f: f.nll_end).object
            else:
                obj = difference_map(amplitudes, mask, probe, scan, sup, n_search_iterations)
            r, nll = rank(obj)
            trial = LayerTrial(thickness_m=float(t), offset_m=float(off), n_voxels=int(sup.sum()), r_factor=r,
                               nll=nll)
            trials.append(trial)
            key_val = r if nll is None else nll
            if best is None or key_val < best[0]:
                best = (key_val, obj, sup, trial)
    if best is None:
        raise ValueError("thin_layer_search: every candidate slab is empty; check the normal and thicknesses")
    v_best, obj, sup, trial = best
    r, nll = trial.r_factor, trial.nll
    done = 0
    cur = obj
    history = [r]
    while done < n_iterations and score == "r_factor":     # restarted chunks, the best state kept (docstring)
        k = min(restart_every, n_iterations - done)
        cur = difference_map(amplitudes, mask, probe, scan, sup, k, start=cur)
        done += k
        r_cur, nll_cur = rank(cur)
        history.append(r_cur)
        v_cur = r_cur if nll_cur is None else nll_cur
        if v_cur < v_best:
            v_best, r, nll, obj = v_cur, r_cur, nll_cur, cur
    refinement = None
    n_ml = n_ml_iterations + (n_iterations if score == "likelihood" else 0)
    if n_ml > 0:
        refinement = poisson_refine(counts, mask, probe, scan, sup, obj, n_iterations=n_ml)
        obj = refinement.object
        r = lattice_r_factor(obj, amplitudes, mask, probe, scan)
        nll = poisson_nll(obj, counts, mask, probe, scan)
        history.append(r)
    chosen = LayerTrial(thickness_m=trial.thickness_m, offset_m=trial.offset_m, n_voxels=trial.n_voxels,
                        r_factor=r, nll=nll)
    return LayerSearchResult(object=obj, support=sup, chosen=chosen, trials=tuple(trials), r_history=tuple(history),
                             score=score, refinement=refinement)


@dataclass(frozen=True, kw_only=True)
class ThinLayerOptions:
    """Settings of :func:`reconstruct_thin_layer` (``pxm reconstruct-thin-layer``)."""

    thicknesses_m: tuple[float, ...] = (0.15e-6, 0.2e-6, 0.25e-6)
    """Slab thicknesses tried; the data pick one (with its offset) by the R-factor of a short map."""
    normal: tuple[float, float, float] | None = None
    """Slab normal in the lab (x, y, z); None: the dataset's /sample tilt, else Q̂ (a film ⟂ Q)."""
    n_offsets: int = 12
    """Slab offsets tried per thickness, over one lattice period along the normal."""
    n_search_iterations: int = 20
    """Difference-map iterations per candidate slab."""
    n_iterations: int = 60
    """Difference-map iterations on the chosen slab."""
    score: str = "auto"
    """What ranks the candidate slabs and the restarted chunks: ``r_factor``, ``likelihood`` (Poisson) or ``auto``
    (likelihood when the data are photon counts at low flux: :func:`low_counts`)."""
    n_ml_iterations: int = 50
    """L-BFGS iterations of the Poisson maximum-likelihood refinement of the map's result (0: none); it runs on
    photon counts only (:func:`photon_counts`: a noise-free simulation keeps the map's result)."""

    @classmethod
    def for_sample(cls, sample: dict[str, object] | None, **overrides: Any) -> ThinLayerOptions:
        """Thicknesses 0.75/1/1.25 × the sample's ``thickness_m`` when it has one (else the defaults)."""
        t = (sample or {}).get("thickness_m")
        kw: dict[str, Any] = {}
        if isinstance(t, (int, float)) and t > 0:
            kw["thicknesses_m"] = (0.75 * t, float(t), 1.25 * t)
        return cls(**{**kw, **overrides})

    def __post_init__(self) -> None:
        if not self.thicknesses_m or not all(t > 0 for t in self.thicknesses_m):
            raise ValueError(f"thin layer: thicknesses {self.thicknesses_m!r}; give one or more values > 0 in metres")
        if self.n_offsets < 1 or self.n_search_iterations < 0 or self.n_iterations < 0 or self.n_ml_iterations < 0:
            raise ValueError("thin layer: offsets must be >= 1 and iteration counts >= 0")
        if self.score not in ("auto", "r_factor", "likelihood"):
            raise ValueError(f"thin layer: score {self.score!r}; use 'auto', 'r_factor' or 'likelihood'")


@dataclass(frozen=True, kw_only=True)
class ThinLayerResult:
    """What :func:`reconstruct_thin_layer` found, with where each voxel sits."""

    search: LayerSearchResult
    lattice: DetectorLattice
    scan: LatticeScan
    probe: np.ndarray = field(repr=False)
    """The probe on one view of the lattice (N1, N2, NM)."""
    normal: np.ndarray = field(repr=False)
    """Unit slab normal used (lab)."""


def _sample_normal(sample: dict[str, object], geometry: BraggGeometry) -> np.ndarray:
    from analysis.bragg.solvers.support import slab_normal

    tx, ty = sample.get("tilt_x_deg"), sample.get("tilt_y_deg")
    if isinstance(tx, (int, float)) and isinstance(ty, (int, float)):
        return slab_normal(float(tx), float(ty))
    return np.asarray(geometry.lab_axes()["q_hat"], float)


def reconstruct_thin_layer(frames: np.ndarray, mask: np.ndarray, stage_xyz_m: np.ndarray, geometry: BraggGeometry,
                           p2: np.ndarray, p2_geometry: BraggGeometry, *, sample: dict[str, object] | None = None,
                           options: ThinLayerOptions = ThinLayerOptions()) -> ThinLayerResult:
    """A thin crystalline layer from a Bragg scan with a known probe, on the detector lattice (no oracle).

    ``frames`` (POS, ANGLE, N1, N2) as in a pxm dataset (angles increasing, centred on the measured planes),
    ``mask`` (N1, N2) or (ANGLE, N1, N2), ``stage_xyz_m`` (POS, 3); ``p2`` the probe section on ``p2_geometry`` (any U).
    """
    f = np.asarray(frames, float)
    if f.ndim != 4 or f.shape[2:] != (geometry.n_rows_px, geometry.n_cols_px) or f.shape[1] != geometry.n_angles:
        raise ValueError(f"thin layer: frames {f.shape}, expected (POS, {geometry.n_angles}, {geometry.n_rows_px}, "
                         f"{geometry.n_cols_px})")
    lattice = DetectorLattice.from_geometry(geometry)
    scan = lattice_scan(lattice, stage_xyz_m)
    probe = lattice_probe_from_p2(lattice, p2_geometry, p2)
    normal = (np.asarray(options.normal, float) if options.normal is not None
              else _sample_normal(dict(sample or {}), geometry))
    amplitudes = np.sqrt(np.moveaxis(np.clip(f, 0, None), 1, -1))
    m = np.asarray(mask, bool)
    m = np.moveaxis(m, 0, -1) if m.ndim == 3 else m[:, :, None]     # (ANGLE, N1, N2) or (N1, N2) → (N1, N2, ·)
    score = options.score if options.score != "auto" else ("likelihood" if low_counts(f, mask) else "r_factor")
    n_ml = options.n_ml_iterations if score == "likelihood" or photon_counts(f, mask) else 0
    search = thin_layer_search(amplitudes, m, probe, lattice, scan, normal,
                               tuple(options.thicknesses_m), n_offsets=options.n_offsets,
                               n_search_iterations=options.n_search_iterations, n_iterations=options.n_iterations,
                               score=score, n_ml_iterations=n_ml)
    return ThinLayerResult(search=search, lattice=lattice, scan=scan, probe=probe,
                           normal=normal / np.linalg.norm(normal))


def check_line_scan(lattice: DetectorLattice, scan: LatticeScan) -> None:
    """Refuse (ValueError, one line) a scan whose views differ along the detector rows or the rocking axis.

    Only then is the object lattice one view (one period) along n1 and n3, and the transfer to pxm's grid
    (:func:`detector_lattice_to_grid`) exact: a line scan along y (the detector columns' direction).
    """
    s = np.asarray(scan.starts)
    n1, _, nm = lattice.view_shape
    if np.ptp(s[:, 0]) or np.ptp(s[:, 2]) or scan.object_shape[0] != n1 or scan.object_shape[2] != nm:
        raise ValueError("thin-layer recipe: the scan moves the probe across the detector rows or the beam (not a "
                         "line scan along y), so the lattice object has no exact image on pxm's grid; use "
                         "--recipe default")


def detector_lattice_to_grid(obj: np.ndarray, lattice: DetectorLattice, scan: LatticeScan, transfer: Any) -> np.ndarray:
    """ρ on the detector lattice (``scan.object_shape``) → the same object on pxm's orthogonal grid.

    ``transfer``: an :class:`analysis.bragg.ptypy_bragg.LatticeTransfer` of the grid (a y line scan). The two lattices
    share their vectors (both are dual to the measured q-points): transfer index (k3, k1, k2) is detector-lattice
    index (−k1, k2, k3) about the transfer's centre, periodic over one view along n1 and n3 (the model's FFT);
    the sub-voxel distance between the two lattices is a phase ramp on the transform. Exact on the measured band.
    """
    check_line_scan(lattice, scan)
    n1, _, nm = lattice.view_shape
    n3 = int(transfer.geometry.recon_shape[2])
    if n3 != nm or int(transfer.geometry.n_rows_px) != n1:
        raise ValueError(f"detector_lattice_to_grid: the grid's (N1, N3) = ({transfer.geometry.n_rows_px}, {n3}) "
                         f"is not the lattice view's ({n1}, {nm}); use the grid at U = 1")
    no2 = int(transfer.object_shape[1])
    p = lattice.to_indices(np.asarray(transfer.lattice_centre_lab_m()) - scan.origin_lab_m)
    p0 = np.rint(p)
    i1 = np.mod(int(p0[0]) - (np.arange(n1) - n1 // 2), n1)
    i2 = int(p0[1]) + np.arange(no2) - no2 // 2
    i3 = np.mod(int(p0[2]) + np.arange(n3) - n3 // 2, nm)
    ok = (i2 >= 0) & (i2 < scan.object_shape[1])
    lat = np.zeros((n3, n1, no2), complex)
    vals = np.asarray(obj)[np.ix_(i1, i2[ok], i3)]                    # (k1, k2, k3)
    lat[:, :, ok] = np.moveaxis(vals, 2, 0)
    # lat[k] holds ρ at (transfer point k) − ε, ε = (p − p0)·a: the grid object ρ(r + ε) undoes it
    return np.asarray(transfer.lattice_to_grid(lat, shift_lab_m=lattice.to_lab_m(p - p0)))


def write_thin_layer_result(path: str, result: ThinLayerResult, *, metadata: dict[str, object] | None = None) -> None:
    """HDF5: /object and /support on the lattice, /probe, the lattice vectors and origin (lab, metres: voxel i
    sits at origin + i·vectors), the chosen slab and every slab tried (JSON).
    """
    import json

    import h5py

    s = result.search
    with h5py.File(path, "w") as h:
        h.attrs["format"] = "pxm-thin-layer-result"
        h.attrs["metadata_json"] = json.dumps(metadata or {})
        h["object"] = s.object.astype(np.complex64)
        h["support"] = s.support
        h["probe"] = result.probe.astype(np.complex64)
        h["lattice_vectors_lab_m"] = result.lattice.vectors_lab_m
        h["origin_lab_m"] = result.scan.origin_lab_m
        h["view_starts"] = result.scan.starts
        h["slab_normal_lab"] = result.normal
        h.attrs["axes"] = "n1 (detector row), n2 (detector column), n3 (rocking angle)"
        h.attrs["placement"] = ("voxel (i1, i2, i3) sits at origin_lab_m + i @ lattice_vectors_lab_m, lab/sample "
                                "frame (x, y, z) in metres, probe at r = -stage position")
        h.attrs["chosen_json"] = json.dumps(s.chosen.__dict__)
        h.attrs["trials_json"] = json.dumps([t.__dict__ for t in s.trials])
        h.attrs["r_factor"] = s.chosen.r_factor


def grid_to_detector_lattice(obj: np.ndarray, lattice: DetectorLattice, scan: LatticeScan,
                             transfer: Any) -> np.ndarray:
    """ρ on pxm's orthogonal grid (any U) → its values on the detector lattice: the inverse of
    :func:`detector_lattice_to_grid`, exact on the measured band.

    ``transfer``: the :class:`analysis.bragg.ptypy_bragg.LatticeTransfer` of the grid (a y line scan). At U the grid's
    box is U views long along n3, and so is the result: shape (N1, ``scan.object_shape[1]``, U·NM), the detector
    view's centre (index NM//2) at index U·NM//2; at U = 1 it is ``scan.object_shape``. Evaluate it with
    :func:`lattice_model_amplitudes` (which folds the U periods onto one view, as the measured planes do).
    """
    check_line_scan(lattice, scan)
    n1, _, nm = lattice.view_shape
    g = transfer.geometry
    n3 = int(g.recon_shape[2])
    if int(g.n_rows_px) != n1 or n3 % nm:
        raise ValueError(f"grid_to_detector_lattice: the grid's (N1, N3) = ({g.n_rows_px}, {n3}) is not the "
                         f"lattice view's ({n1}, U × {nm})")
    no2 = int(transfer.object_shape[1])
    p = lattice.to_indices(np.asarray(transfer.lattice_centre_lab_m()) - scan.origin_lab_m)
    p0 = np.rint(p)
    # detector point of transfer index k = transfer point k − ε (see detector_lattice_to_grid): sample ρ(r − ε)
    lat = np.asarray(transfer.grid_to_lattice(obj, shift_lab_m=-lattice.to_lab_m(p - p0)))   # (k3, k1, k2)
    d = n3 // 2 - nm // 2
    i1 = np.mod(int(p0[0]) - (np.arange(n1) - n1 // 2), n1)
    i2 = int(p0[1]) + np.arange(no2) - no2 // 2
    i3 = np.mod(int(p0[2]) + np.arange(n3) - n3 // 2 + d, n3)
    ok = (i2 >= 0) & (i2 < scan.object_shape[1])
    out = np.zeros((n1, scan.object_shape[1], n3), complex)
    vals = np.moveaxis(lat, 0, 2)[:, ok, :]                          # (k1, k2, k3)
    out[np.ix_(i1, i2[ok], i3)] = vals
    return out


def lattice_model_amplitudes(obj: np.ndarray, probe: np.ndarray, lattice: DetectorLattice,
                             scan: LatticeScan) -> np.ndarray:
    """|Ψ_j| (POS, N1, N2, NM) of the lattice model for an object U views long along n3.

    ``obj`` (N1, S2, U·NM) (:func:`grid_to_detector_lattice`) and ``probe`` (N1, N2, U·NM)
    (:func:`lattice_probe_from_p2` on a lattice whose view is U·NM long), both with the detector view's centre at
    index U·NM//2. The measured planes are every U-th plane of the U·NM-point transform, i.e. the NM-point
    transform of ρ·P folded onto one view; at U = 1 this is :func:`lattice_r_factor`'s model. Line scans along y
    only (one view along n1 and n3).
    """
    check_line_scan(lattice, scan)
    n1, n2, n3 = probe.shape
    nm = int(lattice.view_shape[2])
    if n3 % nm or obj.shape[0] != n1 or obj.shape[2] != n3 or (n1, n2) != lattice.view_shape[:2]:
        raise ValueError(f"lattice_model_amplitudes: object {obj.shape} and probe {probe.shape} are not U views "
                         f"of {lattice.view_shape} along n3")
    u, d = n3 // nm, n3 // 2 - nm // 2
    out = np.empty((len(scan.starts), n1, n2, nm), np.float32)
    for j, s in enumerate(np.asarray(scan.starts)):
        x = obj[:, int(s[1]):int(s[1]) + n2, :] * probe
        y = np.roll(x.reshape(n1, n2, u, nm).sum(axis=2), -d, axis=2)   # extended index e ↔ view index e − d
        out[j] = np.abs(_fwd(y))
    return out


def fitted_r_factor(model_amplitudes: np.ndarray, amplitudes: np.ndarray, mask: np.ndarray,
                    background: np.ndarray | None = None) -> tuple[float, float]:
    """(R, s): the lowest R = Σ|√I − √(s²|Ψ|² + b)| / Σ√I over the measured pixels, over one real factor s > 0.

    The lattice's FFT is unnormalised and pxm's grid operator has its own normalisation: the same object fits the
    same data up to one global factor, fitted here (bounded search on log s about the least-squares value).
    ``background`` b (N1, N2, NM) or None.
    """
    from scipy.optimize import minimize_scalar

    m = np.broadcast_to(np.asarray(mask, bool), amplitudes.shape[1:])
    a = np.asarray(amplitudes, float)[:, m]
    b2 = (np.asarray(model_amplitudes, float)[:, m]) ** 2
    bg = 0.0 if background is None else np.broadcast_to(np.asarray(background, float)[m], a.shape)
    den = max(float(a.sum()), 1e-30)
    s0 = float(np.sum(a * np.sqrt(b2)) / max(float(b2.sum()), 1e-30))
    if not s0 > 0:
        return 1.0, 1.0

    def r_at(log_s: float) -> float:
        return float(np.abs(a - np.sqrt(10.0 ** (2 * log_s) * b2 + bg)).sum()) / den

    ls0 = float(np.log10(s0))
    fit = minimize_scalar(r_at, bounds=(ls0 - 1.0, ls0 + 1.0), method="bounded", options={"xatol": 1e-4})
    return (float(fit.fun), float(10.0 ** fit.x)) if fit.fun <= r_at(ls0) else (r_at(ls0), s0)


# ------------------------------------------------------------------------------------------ Poisson likelihood
LOW_COUNT_PHOTONS = 10
"""A pixel with at most this many photons is in the Poisson regime (√n far from the amplitude it estimates)."""
LOW_COUNT_FRACTION = 0.05
""":func:`low_counts`: the data are low-count when more than this fraction of the photons lie in such pixels."""


def photon_counts(frames: np.ndarray, mask: np.ndarray) -> bool:
    """True when every measured pixel of ``frames`` (POS, ANGLE, N1, N2) holds a whole number (photon counts, the
    data the Poisson likelihood describes); noise-free simulations and processed data are not.
    """
    f = np.asarray(frames)
    m = np.asarray(mask, bool)
    c = f[..., m] if m.ndim == 2 else f[:, m]
    return bool(c.size) and bool(np.all(np.abs(c - np.rint(c)) < 1e-6))


def low_counts(frames: np.ndarray, mask: np.ndarray) -> bool:
    """True when ``frames`` are photon counts (whole numbers) and more than :data:`LOW_COUNT_FRACTION` of the photons
    lie in measured pixels of at most :data:`LOW_COUNT_PHOTONS` counts.

    On ptypy's case with Poisson noise (seed 1): 2.2 % at 1.5×10⁷ photons per 3D pattern (the R-factor picks the
    slab right there), 15 % at 1.5×10⁶ and 48 % at 1.5×10⁵ (it picks wrong); noise-free (non-integer) data: False.
    ``mask`` (N1, N2) or (ANGLE, N1, N2), True = measured.
    """
    if not photon_counts(frames, mask):
        return False
    f = np.asarray(frames)                                             # (POS, ANGLE, N1, N2)
    m = np.asarray(mask, bool)
    c = f[..., m] if m.ndim == 2 else f[:, m]
    total = float(c.sum())
    return total > 0 and float(c[c <= LOW_COUNT_PHOTONS].sum()) > LOW_COUNT_FRACTION * total


def _lit_support(probe: np.ndarray, scan: LatticeScan, support: np.ndarray) -> np.ndarray:
    den = np.zeros(scan.object_shape, np.float32)
    for v in _views(scan, probe.shape):
        den[v] += np.abs(probe) ** 2
    return np.asarray(support, bool) & (den > 1e-6 * den.max())


def poisson_nll(obj: np.ndarray, counts: np.ndarray, mask: np.ndarray, probe: np.ndarray, scan: LatticeScan, *,
                fit_scale: bool = True) -> float:
    """Poisson negative log-likelihood Σ (I − n ln I) over the measured pixels, I = c²|fftshift(fftn(ρ[view]·P))|².

    ``counts`` (POS, N1, N2, NM) = n (photons); ``fit_scale``: c² = Σn / ΣI (the likelihood's own optimum of one
    global factor), else c = 1. The constant Σ ln n! is left out, so values compare between objects on the same data.
    """
    msk = np.broadcast_to(np.asarray(mask, bool), probe.shape)
    model = np.stack([np.abs(_fwd(obj[v] * probe)) ** 2 for v in _views(scan, probe.shape)])
    n = np.asarray(counts, float)[:, msk]
    i = model[:, msk].astype(float)
    c2 = float(n.sum() / max(i.sum(), 1e-300)) if fit_scale else 1.0
    i = c2 * i
    floor = 1e-9 * max(float(i.mean()), 1e-300)
    return float(np.sum(i - n * np.log(i + floor)))


@dataclass(frozen=True, kw_only=True)
class PoissonRefinement:
    """What :func:`poisson_refine` did."""

    object: np.ndarray = field(repr=False)
    nll_start: float
    nll_end: float
    n_evaluations: int
    n_iterations: int


def poisson_refine(counts: np.ndarray, mask: np.ndarray, probe: np.ndarray, scan: LatticeScan, support: np.ndarray,
                   start: np.ndarray, *, n_iterations: int = 50) -> PoissonRefinement:
    """Maximum-likelihood refinement of ρ on the support for Poisson counts, the lattice model, probe held (L-BFGS).

    L(ρ) = Σ_j Σ_q∈measured (I_jq − n_jq ln I_jq), I_j = |Ψ_j|², Ψ_j = fftshift(fftn(ρ[view_j]·P)). Its gradient is
    analytic: ∂L/∂Ψ* = (1 − n/I) Ψ, and the adjoint of the unnormalised centred FFT is N · ifftn∘ifftshift, so
    ∂L/∂ρ* = Σ_j P* · N ifftn(ifftshift((1 − n/I) Ψ_j)) on view j; with ρ = a + ib, ∇_a L = 2 Re, ∇_b L = 2 Im of it.
    scipy's L-BFGS-B minimises L over (a, b) on the voxels of the support the probe lights, from ``start`` (scaled
    once to the likelihood's optimal global factor). At low counts the amplitude fit of the difference map weights
    the empty pixels wrongly (√n of a pixel with 0 or 1 photon); this is the noise model of the data.
    """
    from scipy.optimize import minimize

    if n_iterations < 0:
        raise ValueError(f"poisson_refine: n_iterations must be >= 0, got {n_iterations}")
    views = _views(scan, probe.shape)
    msk = np.broadcast_to(np.asarray(mask, bool), probe.shape)
    sup = _lit_support(probe, scan, support)
    n_all = np.asarray(counts, float)
    p = np.asarray(probe, complex)
    pc = np.conj(p)
    size = float(np.prod(probe.shape))
    total = float(sum(n_all[j][msk].sum() for j in range(len(views))))
    floor = 1e-9 * total / max(len(views) * int(msk.sum()), 1)
    obj0 = np.where(sup, np.asarray(start, complex), 0)
    i_sum = sum(float((np.abs(_fwd(obj0[v] * p)) ** 2)[msk].sum()) for v in views)
    obj0 = obj0 * np.sqrt(total / max(i_sum, 1e-300))
    nv = int(sup.sum())
    evals = 0

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evals
        evals += 1
        obj = np.zeros(scan.object_shape, complex)
        obj[sup] = x[:nv] + 1j * x[nv:]
        grad = np.zeros(scan.object_shape, complex)
        val = 0.0
        for j, v in enumerate(views):
            psi = _fwd(obj[v] * p)
            i = np.abs(psi) ** 2 + floor
            n = n_all[j]
            val += float(np.sum((i - n * np.log(i))[msk]))
            g = np.where(msk, (1.0 - n / i) * psi, 0)
            grad[v] += pc * (size * _inv(g))
        gs = grad[sup]
        return val, np.concatenate([2 * gs.real, 2 * gs.imag])

    x0 = np.concatenate([obj0[sup].real, obj0[sup].imag])
    f0 = fun(x0)[0]
    if n_iterations == 0 or nv == 0:
        return PoissonRefinement(object=obj0, nll_start=f0, nll_end=f0, n_evaluations=evals, n_iterations=0)
    res = minimize(fun, x0, jac=True, method="L-BFGS-B",
                   options={"maxiter": n_iterations, "maxcor": 10, "ftol": 1e-15, "gtol": 0.0})
    obj = np.zeros(scan.object_shape, complex)
    obj[sup] = res.x[:nv] + 1j * res.x[nv:]
    return PoissonRefinement(object=obj, nll_start=f0, nll_end=float(res.fun), n_evaluations=evals,
                             n_iterations=int(res.nit))
