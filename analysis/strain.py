"""Strain and lattice tilts from a reconstructed Bragg object, without phase unwrapping.

Post-processing (seed Eqs 14–15; ``docs/geometry.md``, Strain and tilts in the sample frame;
``docs/bragg-ptychography.md``):

* :func:`remove_phase_ramp` — fit and remove φ0 + κ·r on a support (the offset of the q-grid origin from Q);
* :func:`compute_strain` — ε_zz, ω_x, ω_y on the native reconstruction grid from
  the wrap-free central difference arg[ρ(r+Δ)ρ*(r−Δ)]/(2Δ) (seed Eq 15), rotated to
  the lab frame and converted with seed Eq 14;
* :func:`map_to_sample_frame` — trilinear interpolation of those smooth fields onto
  an isotropic (x, y, z) grid; wrapped phase is never interpolated.

Phase sign convention (``phase_sign``): the reconstructed phase is taken to be
φ = phase_sign · Q·u, with u the displacement field. The pxm simulator writes
ρ = s·exp(−i Q·u) with far field F ∝ Σ ρ e^{−iq·r} (a tensile strain moves the
Bragg peak by −Q·ε), so its objects have phase_sign = −1, the default here:
ε_zz = ∂u_z/∂z = phase_sign · (∂φ/∂z)/|Q|. With the opposite transform sign
(Eq 1 of the seed, e^{+iq·r}) pass phase_sign = +1. Tilts follow Eq 14:
ω_x = arcsin(∂u_z/∂y), ω_y = arcsin(∂u_z/∂x); ω_x is then the right-handed
rotation about x and ω_y is minus the right-handed rotation about y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, cast

import numpy as np

from analysis.geometry import BraggGeometry
from analysis.xp import Array, array_module, ndimage_module

__all__ = [
    "StrainOptions",
    "StrainMaps",
    "RampFit",
    "phase_gradient",
    "remove_phase_ramp",
    "compute_strain",
    "strain_from_geometry",
    "map_to_sample_frame",
    "native_lab_coordinates_m",
]


@dataclass(frozen=True, kw_only=True)
class StrainOptions:
    """Options of :func:`compute_strain` (seed Eqs 14–15)."""

    phase_sign: int = -1
    """Sign s in φ = s·Q·u; −1 for the pxm simulator convention ρ = s·e^{−iQ·u} (module docstring)."""
    amplitude_threshold: float = 0.18
    """Voxels with |ρ| below this fraction of max|ρ| are masked (seed: 15–20 %)."""
    remove_ramp: bool = True
    """Fit and remove a linear phase ramp on the mask before differentiating."""

    def __post_init__(self) -> None:
        if self.phase_sign not in (-1, 1):
            raise ValueError(f"StrainOptions.phase_sign must be -1 or +1, got {self.phase_sign!r}")
        if not 0.0 <= self.amplitude_threshold < 1.0:
            raise ValueError(
                f"StrainOptions.amplitude_threshold must lie in [0, 1), got {self.amplitude_threshold!r}; "
                "it is a fraction of the maximum amplitude (seed uses 0.15-0.20)"
            )


@dataclass(frozen=True, kw_only=True)
class StrainMaps:
    """Strain and tilt maps on a 3D grid; invalid voxels are NaN and ``mask`` is False.

    ``frame`` is ``"reconstruction"`` (axes e1, e2, e3 of the native grid) or
    ``"sample"`` (axes x, y, z of the lab/sample frame). ``origin_m`` is the lab
    position (x, y, z) of voxel [0, 0, 0] relative to the grid centre of the
    reconstruction (the voxel N//2 of each axis).
    """

    eps_zz: Array = field(repr=False)
    """Strain ε_zz = ∂u_z/∂z (dimensionless), shape (N_a, N_b, N_c)."""
    omega_x_rad: Array = field(repr=False)
    """Tilt ω_x = arcsin(∂u_z/∂y) in radians (seed Eq 14)."""
    omega_y_rad: Array = field(repr=False)
    """Tilt ω_y = arcsin(∂u_z/∂x) in radians (seed Eq 14)."""
    amplitude: Array = field(repr=False)
    """|ρ| (arbitrary units) on the same grid."""
    mask: Array = field(repr=False)
    """Boolean validity mask (amplitude above threshold, derivative defined)."""
    voxel_size_m: tuple[float, float, float]
    """Voxel size along the three array axes, in metres."""
    origin_m: tuple[float, float, float]
    """Lab (x, y, z) of voxel [0, 0, 0] in metres (see class docstring)."""
    frame: str = "reconstruction"
    """``"reconstruction"`` (e1, e2, e3) or ``"sample"`` (x, y, z)."""


@dataclass(frozen=True, kw_only=True)
class RampFit:
    """Result of :func:`remove_phase_ramp`."""

    corrected: Array = field(repr=False)
    """ρ · exp(−i(φ0 + κ·r)), same shape and dtype as the input."""
    ramp_rad_per_m: tuple[float, ...]
    """κ along each array axis in rad/m (rad/voxel when voxel sizes are 1)."""
    phase_offset_rad: float
    """φ0 at the grid centre (voxel N//2 of each axis)."""


def _check_complex(rho: Any, name: str, ndim: int | None = None) -> None:
    if not hasattr(rho, "ndim") or not np.iscomplexobj(rho):
        raise ValueError(f"{name}: expected a complex array, found {type(rho).__name__} "
                         f"{getattr(rho, 'dtype', '')}; pass the complex reconstruction ρ")
    if ndim is not None and rho.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, found shape {tuple(rho.shape)}")


def _voxels(voxel_size_m: Any, ndim: int) -> tuple[float, ...]:
    v = tuple(float(a) for a in np.broadcast_to(np.asarray(voxel_size_m, float), (ndim,)))
    if not all(math.isfinite(a) and a > 0 for a in v):
        raise ValueError(f"voxel_size_m: expected {ndim} finite positive sizes, found {v}")
    return v


def phase_gradient(rho: Array, voxel_size_m: Any = 1.0) -> tuple[list[Array], Array]:
    """Wrap-free phase gradient ∂_aφ = arg[ρ(r+Δ_a)ρ*(r−Δ_a)]/(2Δ_a) along every axis (seed Eq 15).

    Returns (gradients, valid): one real array per axis in rad/m (rad/voxel for unit
    voxels) and a boolean array, False on the outermost voxel layer where the
    central difference is undefined (gradients are 0 there). Valid while the phase
    changes by less than π over two voxels.
    """
    xp = array_module(rho)
    vox = _voxels(voxel_size_m, rho.ndim)
    valid = xp.ones(rho.shape, dtype=bool)
    grads = []
    for a in range(rho.ndim):
        if rho.shape[a] < 3:
            raise ValueError(f"phase_gradient: axis {a} has {rho.shape[a]} voxels, need >= 3 for a central difference")
        fwd = xp.roll(rho, -1, axis=a)
        bwd = xp.roll(rho, 1, axis=a)
        g = xp.angle(fwd * xp.conj(bwd)) / (2.0 * vox[a])
        edge: list[slice | int] = [slice(None)] * rho.ndim
        for s in (0, -1):
            edge[a] = s
            g[tuple(edge)] = 0
            valid[tuple(edge)] = False
        grads.append(g)
    return grads, valid


def _interior(mask: Array, valid: Array) -> Array:
    """Voxels where the central difference is defined: in ``mask`` with both neighbours on every axis."""
    xp = array_module(mask)
    out = mask & valid
    for a in range(mask.ndim):
        out &= xp.roll(mask, 1, axis=a) & xp.roll(mask, -1, axis=a)
    return out


def _centred_coords(shape: tuple[int, ...], vox: tuple[float, ...], xp: ModuleType) -> list[Array]:
    """Open-mesh coordinates r_a = (n_a − N_a//2)·Δ_a, broadcastable to ``shape``."""
    out = []
    for a, (n, d) in enumerate(zip(shape, vox, strict=True)):
        c = (xp.arange(n) - n // 2) * d
        sh = [1] * len(shape)
        sh[a] = n
        out.append(c.reshape(sh))
    return out


def remove_phase_ramp(rho: Array, *, support: Array | None = None, voxel_size_m: Any = 1.0,
                      n_refine: int = 2) -> RampFit:
    """Fit φ ≈ φ0 + κ·r on ``support`` and return ρ·e^{−i(φ0 + κ·r)}
    (docs/geometry.md, Strain and tilts in the sample frame).

    κ is the amplitude-weighted mean of the wrap-free gradients (Eq 15) over the
    support, refined ``n_refine`` times on the residual; φ0 is arg Σ_S |ρ| ρ e^{−iκ·r}.
    Works in any dimension; ``support`` defaults to |ρ| ≥ 0.18 max|ρ|.
    """
    _check_complex(rho, "remove_phase_ramp: rho")
    xp = array_module(rho)
    vox = _voxels(voxel_size_m, rho.ndim)
    amp = xp.abs(rho)
    if support is None:
        support = amp >= 0.18 * amp.max()
    support = xp.asarray(support, dtype=bool)
    if support.shape != rho.shape:
        raise ValueError(f"remove_phase_ramp: support shape {tuple(support.shape)} != rho shape {tuple(rho.shape)}")
    if int(support.sum()) < 2:
        raise ValueError("remove_phase_ramp: support holds fewer than 2 voxels; lower the threshold or pass a support")
    coords = _centred_coords(rho.shape, vox, xp)
    kappa = [0.0] * rho.ndim
    work = rho
    for _ in range(max(1, n_refine)):
        grads, valid = phase_gradient(work, vox)
        w = amp * _interior(support, valid)
        wsum = float(w.sum())
        if wsum <= 0:
            raise ValueError("remove_phase_ramp: no interior voxel of the support has a defined gradient")
        ramp: Array | int = 0
        for a in range(rho.ndim):
            k = float((w * grads[a]).sum()) / wsum
            kappa[a] += k
        for a in range(rho.ndim):
            ramp = ramp + kappa[a] * coords[a]
        work = rho * xp.exp(-1j * ramp).astype(rho.dtype)
    phi0 = float(xp.angle((amp * work * support).sum()))
    corrected = (work * np.exp(-1j * phi0)).astype(rho.dtype)
    return RampFit(corrected=corrected, ramp_rad_per_m=tuple(kappa), phase_offset_rad=phi0)


def native_lab_coordinates_m(shape: tuple[int, int, int], voxel_size_m: Any,
                             theta_bragg_rad: float) -> tuple[Array, Array, Array]:
    """Lab (x, y, z) in metres of every voxel of the native grid, centred on voxel N//2 (docs/geometry.md, Frames).

    x = r1 sinθ + r3 cosθ, y = r2, z = −r1 cosθ + r3 sinθ; returned as open meshes.
    """
    vox = _voxels(voxel_size_m, 3)
    r1, r2, r3 = _centred_coords(tuple(shape), vox, np)
    s, c = math.sin(theta_bragg_rad), math.cos(theta_bragg_rad)
    return r1 * s + r3 * c, r2 + 0 * r1, -r1 * c + r3 * s


def compute_strain(rho: Array, *, voxel_size_m: tuple[float, float, float], theta_bragg_rad: float,
                   q_bragg_per_m: float, options: StrainOptions = StrainOptions(),
                   support: Array | None = None, amplitude_reference: Array | None = None) -> StrainMaps:
    """ε_zz, ω_x, ω_y on the native reconstruction grid (e1, e2, e3) without unwrapping.

    Gradients by Eq 15 (central difference), rotated to the lab:
    ∂φ/∂z = −cosθ ∂1φ + sinθ ∂3φ, ∂φ/∂x = sinθ ∂1φ + cosθ ∂3φ, ∂φ/∂y = ∂2φ;
    then Eq 14 with the sign s = ``options.phase_sign``: ε_zz = s ∂φ/∂z/|Q|,
    ω_x = arcsin(s ∂φ/∂y/|Q|), ω_y = arcsin(s ∂φ/∂x/|Q|).

    Parameters
    ----------
    rho : (N1, N2, N3) complex
        Reconstructed object on the native grid.
    support : (N1, N2, N3) bool, optional
        Extra restriction of the mask (e.g. the solver's support).
    amplitude_reference : (N1, N2, N3) bool, optional
        Voxels whose largest |ρ| sets the amplitude threshold (default: ``support``, or all voxels),
        e.g. the illuminated support: voxels no probe reached carry no data and must not set it.
    """
    _check_complex(rho, "compute_strain: rho", ndim=3)
    if not (q_bragg_per_m > 0 and math.isfinite(q_bragg_per_m)):
        raise ValueError(f"compute_strain: q_bragg_per_m must be finite and > 0, got {q_bragg_per_m!r}")
    if not 0 < theta_bragg_rad < math.pi / 2:
        raise ValueError(f"compute_strain: theta_bragg_rad must lie in (0, π/2), got {theta_bragg_rad!r}")
    xp = array_module(rho)
    vox = _voxels(voxel_size_m, 3)
    amp = xp.abs(rho)
    mask = xp.ones(rho.shape, dtype=bool)
    if support is not None:
        support = xp.asarray(support, dtype=bool)
        if support.shape != rho.shape:
            raise ValueError(f"compute_strain: support shape {tuple(support.shape)} != rho shape {tuple(rho.shape)}")
        mask = support
    ref = mask if amplitude_reference is None else xp.asarray(amplitude_reference, dtype=bool)
    if ref.shape != rho.shape or not bool(ref.any()):
        raise ValueError(f"compute_strain: the amplitude reference (amplitude_reference, else the support) must be a "
                         f"non-empty mask of shape {tuple(rho.shape)}")
    mask = mask & (amp >= options.amplitude_threshold * xp.max(xp.where(ref, amp, 0)))
    if int(mask.sum()) == 0:
        raise ValueError("compute_strain: no voxel passes the amplitude threshold; lower options.amplitude_threshold")
    work = rho
    if options.remove_ramp:
        work = remove_phase_ramp(rho, support=mask, voxel_size_m=vox).corrected
    (g1, g2, g3), valid = phase_gradient(work, vox)
    both = _interior(mask, valid)
    s, c = math.sin(theta_bragg_rad), math.cos(theta_bragg_rad)
    q = options.phase_sign / q_bragg_per_m
    dz = (-c * g1 + s * g3) * q
    dx = (s * g1 + c * g3) * q
    dy = g2 * q
    nan = xp.asarray(np.nan, dtype=dz.dtype)
    eps = xp.where(both, dz, nan)
    wx = xp.where(both, xp.arcsin(xp.clip(dy, -1, 1)), nan)
    wy = xp.where(both, xp.arcsin(xp.clip(dx, -1, 1)), nan)
    x0, y0, z0 = (float(v.ravel()[0]) for v in native_lab_coordinates_m(rho.shape, vox, theta_bragg_rad))
    return StrainMaps(eps_zz=eps, omega_x_rad=wx, omega_y_rad=wy, amplitude=amp, mask=both,
                      voxel_size_m=cast("tuple[float, float, float]", vox), origin_m=(x0, y0, z0),
                      frame="reconstruction")


def strain_from_geometry(rho: Array, geometry: BraggGeometry, *, options: StrainOptions = StrainOptions(),
                         support: Array | None = None, voxel_size_m: tuple[float, float, float] | None = None,
                         amplitude_reference: Array | None = None) -> StrainMaps:
    """:func:`compute_strain` with θ_B, |Q| and (unless given) the voxel size from ``geometry``.

    A general diffractometer geometry (``geometry.frame``) goes to :func:`analysis.diffractometer.strain_native`:
    ε along Q and the tilts about the axes ⟂ Q (docs/geometry.md), same masking.
    """
    if geometry.frame is not None:
        from analysis.diffractometer import strain_native  # the general frame; imports this module

        return strain_native(rho, geometry, options=options, support=support, voxel_size_m=voxel_size_m,
                             amplitude_reference=amplitude_reference)
    return compute_strain(rho, voxel_size_m=voxel_size_m or geometry.voxel_size_m,
                          theta_bragg_rad=geometry.theta_bragg_rad, q_bragg_per_m=geometry.q_bragg_per_m,
                          options=options, support=support, amplitude_reference=amplitude_reference)


def map_to_sample_frame(maps: StrainMaps, *, theta_bragg_rad: float,
                        voxel_size_m: float | None = None, min_weight: float = 0.5) -> StrainMaps:
    """Interpolate native-grid maps trilinearly onto an isotropic lab (x, y, z) grid
    (docs/geometry.md, Strain and tilts in the sample frame).

    For each target voxel at lab position x, n_a = e_a·x/Δr_a + N_a//2 and the smooth
    fields are interpolated with ``map_coordinates`` (order 1) as normalised
    convolution: Σw·f / Σw with w the validity mask, kept where Σw ≥ ``min_weight``.
    ``voxel_size_m`` defaults to Δr1/cosθ (the seed's 18.9 nm). Output arrays are
    indexed [x, y, z] and cover the bounding box of the native grid.
    """
    if maps.frame != "reconstruction":
        raise ValueError(f"map_to_sample_frame: maps.frame is {maps.frame!r}, expected 'reconstruction'")
    xp = array_module(maps.eps_zz)
    ndi = ndimage_module(xp)
    shape = tuple(maps.eps_zz.shape)
    vox = maps.voxel_size_m
    s, c = math.sin(theta_bragg_rad), math.cos(theta_bragg_rad)
    target = float(voxel_size_m) if voxel_size_m is not None else vox[0] / c
    if not (target > 0 and math.isfinite(target)):
        raise ValueError(f"map_to_sample_frame: voxel_size_m must be > 0, got {voxel_size_m!r}")
    e1, e2, e3 = np.array([s, 0.0, -c]), np.array([0.0, 1.0, 0.0]), np.array([c, 0.0, s])
    # bounding box of the native grid corners in the lab frame
    half = [((n - 1) - n // 2) * d for n, d in zip(shape, vox, strict=True)]
    low = [-(n // 2) * d for n, d in zip(shape, vox, strict=True)]
    corners = np.array([a * e1 + b * e2 + g * e3 for a in (low[0], half[0]) for b in (low[1], half[1])
                        for g in (low[2], half[2])])
    lo = np.floor(corners.min(0) / target) * target
    hi = np.ceil(corners.max(0) / target) * target
    n_out = tuple(int(round((b - a) / target)) + 1 for a, b in zip(lo, hi, strict=True))
    axes = [lo[i] + target * np.arange(n_out[i]) for i in range(3)]
    X, Y, Z = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([X, Y, Z], axis=-1)
    coords = np.stack([pts @ e / d + n // 2 for e, d, n in zip((e1, e2, e3), vox, shape, strict=True)], axis=0)
    coords = xp.asarray(coords)
    w = maps.mask.astype(float)
    wi = ndi.map_coordinates(w, coords, order=1, mode="constant", cval=0.0)
    keep = wi >= min_weight
    nan = xp.asarray(np.nan)

    def interp(f: Array) -> Array:
        f0 = xp.where(maps.mask, f, 0.0)
        out = ndi.map_coordinates(f0 * w, coords, order=1, mode="constant", cval=0.0)
        return xp.where(keep, out / xp.where(keep, wi, 1.0), nan)

    amp = ndi.map_coordinates(maps.amplitude.astype(float), coords, order=1, mode="constant", cval=0.0)
    return StrainMaps(eps_zz=interp(maps.eps_zz), omega_x_rad=interp(maps.omega_x_rad),
                      omega_y_rad=interp(maps.omega_y_rad), amplitude=amp, mask=keep,
                      voxel_size_m=(target, target, target), origin_m=(float(lo[0]), float(lo[1]), float(lo[2])),
                      frame="sample")
