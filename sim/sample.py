"""Crystal sample model: a strained, truncated, tilted tungsten foil (docs/geometry.md, Operators; seed Methods).

Frame and conventions
---------------------
All coordinates are in the lab/sample frame of :mod:`analysis.geometry` (x, y, z) in
metres, fixed to the crystal at the Bragg condition: z ∥ Q_hkl, x in the scattering
plane, y the rocking axis.

* The displacement field enters only through its component along Q, ``u_z`` (m).
* Complex crystalline density (docs/geometry.md, Frames and Operators): ρ(r) = s(r) · exp(−i Q·u(r)) with
  s ∈ [0, 1] the shape and Q·u = |Q| u_z.
* Kinematic amplitude: A(q) = ∫ P(r) ρ(r) exp(−i q·r) d³r with q = k_f − k_i − Q (seed
  Eq 1 with the e^{−iq·r} sign of docs/geometry.md, Operators). A tensile strain ε (u_z = ε z) therefore
  moves the Bragg peak to q = −|Q| ε ẑ (towards lower |q|, lower Bragg angle).
* Lattice tilts are the lateral derivatives of u_z: ``tilt_x_rad`` = ∂u_z/∂y (rotation
  about x), ``tilt_y_rad`` = ∂u_z/∂x. A tilt moves the peak to q = −|Q| (t_y, t_x, 0).
* ``rocking_centre_offset_deg``: the goniometer offset (from the geometry's θ_B) at
  which this crystal is exactly in Bragg condition (a global misorientation).

Every part is a frozen dataclass; :func:`seed_sample` gives the seed-like phantom,
:func:`uniform_strain_sample` and :func:`tilted_sample` simple ones for tests.
"""

# Why this module is long: the crystal sample model (shapes, displacement fields, misorientation) is one set of
# classes behind one protocol, used together by the simulator.

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import erfc

from analysis.geometry import TUNGSTEN_LATTICE_M, cubic_d_spacing_m

__all__ = [
    "Slab", "GrainBoundary", "HomogeneousDisplacement", "ImplantedLayer", "SurfaceLayers",
    "Dislocation", "CrystalSample", "seed_sample", "uniform_strain_sample", "tilted_sample",
    "rotation_x", "rotation_y",
]

_SQRT_PI = math.sqrt(math.pi)


def rotation_x(angle_rad: float) -> np.ndarray:
    """Right-handed rotation matrix about x by ``angle_rad``."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_y(angle_rad: float) -> np.ndarray:
    """Right-handed rotation matrix about y by ``angle_rad`` (R_y ẑ = (sin, 0, cos))."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _finite(name: str, value: float, *, positive: bool = False, nonneg: bool = False) -> None:
    if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}; give a positive length")
    if nonneg and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _vec3(name: str, v: tuple[float, float, float], *, unit: bool = False) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be 3 finite numbers (x, y, z), got {v!r}")
    if unit:
        n = float(np.linalg.norm(a))
        if n == 0:
            raise ValueError(f"{name} must be a non-zero direction, got {v!r}")
        a = a / n
    return a


def _ramp(d: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """Linear-ramp step: 0 for d <= −w/2, 1 for d >= w/2 (hard step when w = 0)."""
    w = np.asarray(width, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        soft = np.clip(d / np.where(w > 0, w, 1.0) + 0.5, 0.0, 1.0)
    return np.where(w > 0, soft, (d >= 0).astype(float))


# ----------------------------------------------------------------------------- shape
@dataclass(frozen=True, kw_only=True)
class Slab:
    """Foil of thickness ``thickness_m``: |n̂·(r − c)| <= T/2 (docs/geometry.md, Operators).

    n̂ = R_y(tilt_y_deg) R_x(tilt_x_deg) ẑ, right-handed. ``edge_width_m`` > 0 gives
    a linear ramp of that width across each face (0: hard edge).
    """

    thickness_m: float = 0.45e-6
    tilt_x_deg: float = 5.5
    tilt_y_deg: float = -2.0
    centre_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    edge_width_m: float = 0.0

    def __post_init__(self) -> None:
        _finite("Slab.thickness_m", self.thickness_m, positive=True)
        _finite("Slab.tilt_x_deg", self.tilt_x_deg)
        _finite("Slab.tilt_y_deg", self.tilt_y_deg)
        _finite("Slab.edge_width_m", self.edge_width_m, nonneg=True)
        _vec3("Slab.centre_m", self.centre_m)
        if abs(self.tilt_x_deg) >= 60 or abs(self.tilt_y_deg) >= 60:
            raise ValueError(
                f"Slab tilts ({self.tilt_x_deg}°, {self.tilt_y_deg}°) must stay below 60°: "
                "the foil normal must stay close to Q (z)"
            )

    @property
    def normal(self) -> np.ndarray:
        """Unit slab normal n̂ = R_y(tilt_y) R_x(tilt_x) ẑ."""
        return rotation_y(math.radians(self.tilt_y_deg)) @ rotation_x(math.radians(self.tilt_x_deg)) @ np.array(
            [0.0, 0.0, 1.0])

    def normal_coordinate_m(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """t = n̂·(r − c): −T/2 at the bottom face, +T/2 at the top face."""
        n = self.normal
        c = self.centre_m
        return n[0] * (x - c[0]) + n[1] * (y - c[1]) + n[2] * (z - c[2])


@dataclass(frozen=True, kw_only=True)
class GrainBoundary:
    """Plane through ``point_m`` with unit ``normal`` pointing *out of* the crystal.

    The crystal exists where n̂·(r − p) < 0 (beyond the boundary the probed grain is
    absent: another grain diffracts elsewhere).
    """

    point_m: tuple[float, float, float] = (2.2e-6, 0.0, 0.0)
    normal: tuple[float, float, float] = (0.985, 0.0, 0.174)
    edge_width_m: float = 0.0

    def __post_init__(self) -> None:
        _vec3("GrainBoundary.point_m", self.point_m)
        _vec3("GrainBoundary.normal", self.normal, unit=True)
        _finite("GrainBoundary.edge_width_m", self.edge_width_m, nonneg=True)

    @property
    def unit_normal(self) -> np.ndarray:
        """Normalised boundary normal (out of the crystal)."""
        return _vec3("normal", self.normal, unit=True)

    def inside_distance_m(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Signed distance into the crystal (> 0 inside)."""
        n = self.unit_normal
        p = self.point_m
        return -(n[0] * (x - p[0]) + n[1] * (y - p[1]) + n[2] * (z - p[2]))


# ------------------------------------------------------------------ displacement parts
# Each part returns (u_z, ∂u_z/∂x, ∂u_z/∂y, ∂u_z/∂z), all in metres / dimensionless.
Grad = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True, kw_only=True)
class HomogeneousDisplacement:
    """u_z = strain·z + tilt_x_rad·y + tilt_y_rad·x (uniform strain and lattice tilt)."""

    strain: float = 0.0
    tilt_x_rad: float = 0.0
    tilt_y_rad: float = 0.0

    def __post_init__(self) -> None:
        for name in ("strain", "tilt_x_rad", "tilt_y_rad"):
            _finite(f"HomogeneousDisplacement.{name}", getattr(self, name))
            if abs(getattr(self, name)) > 0.05:
                raise ValueError(f"HomogeneousDisplacement.{name} = {getattr(self, name)} is not small "
                                 "(expected |value| <= 0.05); the kinematic model assumes small distortions")

    def displacement(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """u_z only (m)."""
        return self.strain * z + self.tilt_x_rad * y + self.tilt_y_rad * x

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Grad:
        """(u_z, ∂u_z/∂x, ∂u_z/∂y, ∂u_z/∂z) at the points (x, y, z), metres / dimensionless."""
        u = self.displacement(x, y, z)
        one = np.ones_like(u)
        return u, self.tilt_y_rad * one, self.tilt_x_rad * one, self.strain * one


@dataclass(frozen=True, kw_only=True)
class ImplantedLayer:
    """Swollen implanted layer: ε_zz = strain · ½erfc((d − depth)/edge) at depth d.

    d = n̂_s·(p_s − r) is the depth below the implanted surface (plane through
    ``surface_point_m`` with outward ``surface_normal``); u_z = ε(d)·(z − z_ref).
    In the seed the He-implanted layer is ~3 µm deep from the original surface, which
    after lift-out is an edge of the foil (here the +y edge).
    """

    strain: float = 3e-4
    depth_m: float = 2.8e-6
    edge_width_m: float = 0.25e-6
    surface_point_m: tuple[float, float, float] = (0.0, 1.8e-6, 0.0)
    surface_normal: tuple[float, float, float] = (0.0, 1.0, 0.0)
    z_ref_m: float = 0.0

    def __post_init__(self) -> None:
        _finite("ImplantedLayer.strain", self.strain)
        _finite("ImplantedLayer.depth_m", self.depth_m, positive=True)
        _finite("ImplantedLayer.edge_width_m", self.edge_width_m, positive=True)
        _finite("ImplantedLayer.z_ref_m", self.z_ref_m)
        _vec3("ImplantedLayer.surface_point_m", self.surface_point_m)
        _vec3("ImplantedLayer.surface_normal", self.surface_normal, unit=True)

    def displacement(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """u_z only (m), same expression as :meth:`field`."""
        n = _vec3("n", self.surface_normal, unit=True)
        p = self.surface_point_m
        d = n[0] * (p[0] - x) + n[1] * (p[1] - y) + n[2] * (p[2] - z)
        return self.strain * 0.5 * erfc((d - self.depth_m) / self.edge_width_m) * (z - self.z_ref_m)

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Grad:
        """(u_z, ∂u_z/∂x, ∂u_z/∂y, ∂u_z/∂z) at the points (x, y, z), metres / dimensionless."""
        n = _vec3("n", self.surface_normal, unit=True)
        p = self.surface_point_m
        d = n[0] * (p[0] - x) + n[1] * (p[1] - y) + n[2] * (p[2] - z)
        a = (d - self.depth_m) / self.edge_width_m
        eps = self.strain * 0.5 * erfc(a)
        deps_dd = -self.strain * np.exp(-a * a) / (_SQRT_PI * self.edge_width_m)
        zr = z - self.z_ref_m
        u = eps * zr
        # ∂d/∂r = −n
        return u, -n[0] * deps_dd * zr, -n[1] * deps_dd * zr, eps - n[2] * deps_dd * zr


def _erfc_step_integral(s: np.ndarray, length: float, edge: float) -> np.ndarray:
    """∫_0^s ½erfc((s' − L)/w) ds' (closed form)."""
    def prim(v: np.ndarray) -> np.ndarray:
        a = (v - length) / edge
        return 0.5 * edge * (a * erfc(a) - np.exp(-a * a) / _SQRT_PI)
    return prim(s) - prim(np.zeros_like(s))


@dataclass(frozen=True, kw_only=True)
class SurfaceLayers:
    """FIB-damaged surface layers at both slab faces (seed Methods).

    ε_zz = top_strain·½erfc((D_top − L_top)/w_top) + bottom_strain·½erfc((D_bot − L_bot)/w_bot),
    with D the distance below each face along the slab normal, w = edge_fraction·L.
    u_z is the exact integral along the normal (divided by n_z so ∂u_z/∂z = ε).
    """

    top_strain: float = 1.5e-3
    top_depth_m: float = 150e-9
    bottom_strain: float = 1.1e-3
    bottom_depth_m: float = 100e-9
    edge_fraction: float = 0.25

    def __post_init__(self) -> None:
        _finite("SurfaceLayers.top_strain", self.top_strain)
        _finite("SurfaceLayers.bottom_strain", self.bottom_strain)
        _finite("SurfaceLayers.top_depth_m", self.top_depth_m, positive=True)
        _finite("SurfaceLayers.bottom_depth_m", self.bottom_depth_m, positive=True)
        _finite("SurfaceLayers.edge_fraction", self.edge_fraction, positive=True)

    def displacement_on(self, slab: Slab, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """u_z only (m), as in :meth:`field_on` with the constant terms evaluated once."""
        n = slab.normal
        t = slab.normal_coordinate_m(x, y, z)
        half = slab.thickness_m / 2
        wt = self.edge_fraction * self.top_depth_m
        wb = self.edge_fraction * self.bottom_depth_m
        c_half = np.full(1, half)
        top_int = -(_erfc_step_integral(half - t, self.top_depth_m, wt)
                    - _erfc_step_integral(c_half, self.top_depth_m, wt))
        bot_int = (_erfc_step_integral(t + half, self.bottom_depth_m, wb)
                   - _erfc_step_integral(c_half, self.bottom_depth_m, wb))
        return (self.top_strain * top_int / 1.0 + self.bottom_strain * bot_int) / n[2]

    def field_on(self, slab: Slab, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Grad:
        """(u_z, ∂u_z/∂x, ∂u_z/∂y, ∂u_z/∂z) at the points (x, y, z) of ``slab``, metres / dimensionless."""
        n = slab.normal
        t = slab.normal_coordinate_m(x, y, z)
        half = slab.thickness_m / 2
        wt = self.edge_fraction * self.top_depth_m
        wb = self.edge_fraction * self.bottom_depth_m
        d_top = half - t          # depth below the top face
        d_bot = t + half          # depth above the bottom face
        eps = (self.top_strain * 0.5 * erfc((d_top - self.top_depth_m) / wt)
               + self.bottom_strain * 0.5 * erfc((d_bot - self.bottom_depth_m) / wb))
        # ∫_0^t ε dt': top part in terms of d_top = half − t', bottom part of d_bot = t' + half
        top_int = -(_erfc_step_integral(d_top, self.top_depth_m, wt)
                    - _erfc_step_integral(np.full_like(t, half), self.top_depth_m, wt))
        bot_int = (_erfc_step_integral(d_bot, self.bottom_depth_m, wb)
                   - _erfc_step_integral(np.full_like(t, half), self.bottom_depth_m, wb))
        u = (self.top_strain * top_int / 1.0 + self.bottom_strain * bot_int) / n[2]
        # ∂u/∂r = ε(t) n / n_z
        g = eps / n[2]
        return u, g * n[0], g * n[1], g * n[2]


@dataclass(frozen=True, kw_only=True)
class Dislocation:
    """Straight dislocation, isotropic elasticity (Hirth & Lothe, ch. 3).

    Line through ``point_m`` along ``line_direction``; Burgers vector ``burgers_m`` in
    the lab frame (metres). Screw part b_s = b·ξ̂: u = b_s θ/2π ξ̂. Edge part b_e
    (⟂ ξ̂, local X along b_e, Y = ξ̂ × X):
    u_X = b_e/2π [θ + XY/(2(1−ν)R²)], u_Y = −b_e/2π [(1−2ν)/(4(1−ν)) ln R² + (X²−Y²)/(4(1−ν)R²)],
    R² = X² + Y² + r_core². Q·u winds by Q·b around the line (right-handed about ξ̂).
    """

    point_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    line_direction: tuple[float, float, float] = (0.0, 1.0, 0.0)
    burgers_m: tuple[float, float, float] = (0.0, 0.0, 1.119e-10)
    poisson_ratio: float = 0.28
    core_radius_m: float = 1e-9

    def __post_init__(self) -> None:
        _vec3("Dislocation.point_m", self.point_m)
        _vec3("Dislocation.line_direction", self.line_direction, unit=True)
        b = _vec3("Dislocation.burgers_m", self.burgers_m)
        if not 0 < np.linalg.norm(b) < 1e-8:
            raise ValueError(f"Dislocation.burgers_m = {self.burgers_m} m: expected a non-zero vector of "
                             "atomic size (|b| < 10 nm); give metres, e.g. 2.74e-10")
        if not -1.0 < self.poisson_ratio < 0.5:
            raise ValueError(f"Dislocation.poisson_ratio must lie in (−1, 0.5), got {self.poisson_ratio}")
        _finite("Dislocation.core_radius_m", self.core_radius_m, nonneg=True)

    def _frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
        xi = _vec3("xi", self.line_direction, unit=True)
        b = np.asarray(self.burgers_m, float)
        bs = float(b @ xi)
        be_vec = b - bs * xi
        be = float(np.linalg.norm(be_vec))
        if be > 1e-6 * np.linalg.norm(b):
            ex = be_vec / be
        else:
            be = 0.0
            trial = np.array([1.0, 0.0, 0.0]) if abs(xi[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
            ex = trial - (trial @ xi) * xi
            ex /= np.linalg.norm(ex)
        ey = np.cross(xi, ex)
        return xi, ex, ey, bs, be

    def _local(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple:
        """Dislocation frame and the in-plane coordinates (X, Y) of the points, metres."""
        xi, ex, ey, bs, be = self._frame()
        p = self.point_m
        dx, dy, dz = x - p[0], y - p[1], z - p[2]
        X = ex[0] * dx + ex[1] * dy + ex[2] * dz
        Y = ey[0] * dx + ey[1] * dy + ey[2] * dz
        return xi, ex, ey, bs, be, X, Y

    def displacement(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """u_z only (m), same expressions as :meth:`field` without the derivatives."""
        xi, ex, ey, bs, be, X, Y = self._local(x, y, z)
        nu = self.poisson_ratio
        r2 = X * X + Y * Y + self.core_radius_m ** 2
        th = np.arctan2(Y, X)
        two_pi = 2 * math.pi
        k1 = 1.0 / (2 * (1 - nu))
        k2 = (1 - 2 * nu) / (4 * (1 - nu))
        k3 = 1.0 / (4 * (1 - nu))
        c = be / two_pi
        us = bs / two_pi * th
        uX = c * (th + k1 * X * Y / r2)
        uY = -c * (k2 * np.log(r2) + k3 * (X * X - Y * Y) / r2)
        return xi[2] * us + ex[2] * uX + ey[2] * uY

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Grad:
        """(u_z, ∂u_z/∂x, ∂u_z/∂y, ∂u_z/∂z) at the points (x, y, z), metres / dimensionless."""
        xi, ex, ey, bs, be, X, Y = self._local(x, y, z)
        nu = self.poisson_ratio
        r2 = X * X + Y * Y + self.core_radius_m ** 2
        th = np.arctan2(Y, X)
        two_pi = 2 * math.pi
        # θ derivatives (singular only on the line itself)
        rr = np.maximum(X * X + Y * Y, 1e-40)
        dth_dX, dth_dY = -Y / rr, X / rr
        # screw
        us = bs / two_pi * th
        dus_dX, dus_dY = bs / two_pi * dth_dX, bs / two_pi * dth_dY
        # edge
        k1 = 1.0 / (2 * (1 - nu))
        k2 = (1 - 2 * nu) / (4 * (1 - nu))
        k3 = 1.0 / (4 * (1 - nu))
        c = be / two_pi
        uX = c * (th + k1 * X * Y / r2)
        uY = -c * (k2 * np.log(r2) + k3 * (X * X - Y * Y) / r2)
        duX_dX = c * (dth_dX + k1 * (Y / r2 - 2 * X * X * Y / r2 ** 2))
        duX_dY = c * (dth_dY + k1 * (X / r2 - 2 * X * Y * Y / r2 ** 2))
        duY_dX = -c * (k2 * 2 * X / r2 + k3 * (2 * X / r2 - 2 * X * (X * X - Y * Y) / r2 ** 2))
        duY_dY = -c * (k2 * 2 * Y / r2 + k3 * (-2 * Y / r2 - 2 * Y * (X * X - Y * Y) / r2 ** 2))
        # z component: u_z = ξ_z u_s + ex_z u_X + ey_z u_Y
        u = xi[2] * us + ex[2] * uX + ey[2] * uY
        du_dX = xi[2] * dus_dX + ex[2] * duX_dX + ey[2] * duY_dX
        du_dY = xi[2] * dus_dY + ex[2] * duX_dY + ey[2] * duY_dY
        # chain rule: ∂X/∂r = ex, ∂Y/∂r = ey
        return (u, du_dX * ex[0] + du_dY * ey[0], du_dX * ex[1] + du_dY * ey[1],
                du_dX * ex[2] + du_dY * ey[2])


# ------------------------------------------------------------------------ sample
@dataclass(frozen=True, kw_only=True)
class CrystalSample:
    """A single-crystal foil with its displacement field (module docstring for signs).

    ``structure_factor_electrons`` |F_hkl| (electrons per cell, incl. Debye–Waller) and
    ``unit_cell_volume_m3`` set the absolute scattering strength (kinematic
    r_e²|F|²/V_cell²).
    """

    slab: Slab = field(default_factory=Slab)
    grain_boundary: GrainBoundary | None = None
    homogeneous: HomogeneousDisplacement = field(default_factory=HomogeneousDisplacement)
    implanted_layer: ImplantedLayer | None = None
    surface_layers: SurfaceLayers | None = None
    dislocations: tuple[Dislocation, ...] = ()
    rocking_centre_offset_deg: float = 0.0
    structure_factor_electrons: float = 97.0
    """W(220): 2 f_W(sinθ/λ = 0.447 Å⁻¹) e^{−M} ≈ 2 × 50 × 0.97 (approximate)."""
    unit_cell_volume_m3: float = TUNGSTEN_LATTICE_M ** 3

    def __post_init__(self) -> None:
        _finite("CrystalSample.rocking_centre_offset_deg", self.rocking_centre_offset_deg)
        if abs(self.rocking_centre_offset_deg) > 5:
            raise ValueError(f"CrystalSample.rocking_centre_offset_deg = {self.rocking_centre_offset_deg}° "
                             "is not a small misorientation (expected |offset| <= 5°)")
        _finite("CrystalSample.structure_factor_electrons", self.structure_factor_electrons, nonneg=True)
        _finite("CrystalSample.unit_cell_volume_m3", self.unit_cell_volume_m3, positive=True)
        if not isinstance(self.dislocations, tuple) or not all(isinstance(d, Dislocation) for d in self.dislocations):
            raise ValueError(f"CrystalSample.dislocations must be a tuple of Dislocation, got {self.dislocations!r}")

    # -- shape --------------------------------------------------------------
    def occupancy(self, x_m: np.ndarray, y_m: np.ndarray, z_m: np.ndarray,
                  *, line_step_m: np.ndarray | None = None) -> np.ndarray:
        """Shape s(r) in [0, 1]; with ``line_step_m`` = (dx, dy, dz) of a sampling step,
        each step's average along that segment (sub-slice anti-aliasing of the edges).
        """
        x, y, z = (np.asarray(a, float) for a in (x_m, y_m, z_m))
        t = self.slab.normal_coordinate_m(x, y, z)
        half = self.slab.thickness_m / 2
        n = self.slab.normal
        h_slab = 0.0 if line_step_m is None else abs(float(n @ line_step_m))
        w = math.hypot(self.slab.edge_width_m, h_slab)
        s = _ramp(half - t, w) * _ramp(t + half, w)
        if self.grain_boundary is not None:
            gb = self.grain_boundary
            h_gb = 0.0 if line_step_m is None else abs(float(gb.unit_normal @ line_step_m))
            s = s * _ramp(gb.inside_distance_m(x, y, z), math.hypot(gb.edge_width_m, h_gb))
        return s

    def density(self, x_m: np.ndarray, y_m: np.ndarray, z_m: np.ndarray) -> np.ndarray:
        """Ground-truth shape s(r): 1 inside the crystal, 0 outside (ramp if soft edges)."""
        return self.occupancy(x_m, y_m, z_m)

    # -- displacement ----------------------------------------------------------
    def _field(self, x_m: np.ndarray, y_m: np.ndarray, z_m: np.ndarray) -> Grad:
        x, y, z = np.broadcast_arrays(*(np.asarray(a, float) for a in (x_m, y_m, z_m)))
        parts = [self.homogeneous.field(x, y, z)]
        if self.implanted_layer is not None:
            parts.append(self.implanted_layer.field(x, y, z))
        if self.surface_layers is not None:
            parts.append(self.surface_layers.field_on(self.slab, x, y, z))
        parts.extend(d.field(x, y, z) for d in self.dislocations)
        return tuple(sum(p[i] for p in parts) for i in range(4))  # type: ignore[return-value]

    def displacement_z_m(self, x_m: np.ndarray, y_m: np.ndarray, z_m: np.ndarray) -> np.ndarray:
        """u_z(r) in metres (component along Q); the sum of the parts' u_z, no derivatives."""
        x, y, z = np.broadcast_arrays(*(np.asarray(a, float) for a in (x_m, y_m, z_m)))
        u = self.homogeneous.displacement(x, y, z)
        if self.implanted_layer is not None:
            u = u + self.implanted_layer.displacement(x, y, z)
        if self.surface_layers is not None:
            u = u + self.surface_layers.displacement_on(self.slab, x, y, z)
        for d in self.dislocations:
            u = u + d.displacement(x, y, z)
        return u

    def strain_zz(self, x_m: np.ndarray, y_m: np.ndarray, z_m: np.ndarray) -> np.ndarray:
        """ε_zz = ∂u_z/∂z (analytic)."""
        return self._field(x_m, y_m, z_m)[3]

    def tilt_x_rad(self, x_m: np.ndarray, y_m: np.ndarray, z_m: np.ndarray) -> np.ndarray:
        """Lattice rotation about x: ∂u_z/∂y (analytic)."""
        return self._field(x_m, y_m, z_m)[2]

    def tilt_y_rad(self, x_m: np.ndarray, y_m: np.ndarray, z_m: np.ndarray) -> np.ndarray:
        """Lattice rotation about y: ∂u_z/∂x (analytic)."""
        return self._field(x_m, y_m, z_m)[1]

    def complex_density(self, x_m: np.ndarray, y_m: np.ndarray, z_m: np.ndarray, *,
                        q_bragg_per_m: float, line_step_m: np.ndarray | None = None) -> np.ndarray:
        """ρ(r) = s(r) exp(−i |Q| u_z(r)) (complex128)."""
        _finite("q_bragg_per_m", q_bragg_per_m, positive=True)
        x, y, z = np.broadcast_arrays(*(np.asarray(a, float) for a in (x_m, y_m, z_m)))
        s = self.occupancy(x, y, z, line_step_m=line_step_m)
        out = np.zeros(s.shape, complex)
        inside = s != 0                                  # u_z only where the crystal is
        if inside.any():
            u = self.displacement_z_m(x[inside], y[inside], z[inside])
            out[inside] = s[inside] * np.exp(-1j * q_bragg_per_m * u)
        return out


# ------------------------------------------------------------------- constructors
D220_W_M = cubic_d_spacing_m(TUNGSTEN_LATTICE_M, (2, 2, 0))
"""W(220) d-spacing, metres (Q·b = 2π b_z / d_220)."""


def seed_sample(*, rocking_centre_offset_deg: float = 0.012) -> CrystalSample:
    """Seed-like phantom (seed Methods): 0.45 µm W foil tilted (5.5°, −2°), grain
    boundary at x ≈ 2.2 µm, implanted layer (3×10⁻⁴ to 2.8 µm from the +y edge at
    y = 1.8 µm), FIB surface layers, one 2π and one 4π dislocation.
    """
    return CrystalSample(
        slab=Slab(thickness_m=0.45e-6, tilt_x_deg=5.5, tilt_y_deg=-2.0, edge_width_m=5e-9),
        grain_boundary=GrainBoundary(point_m=(2.2e-6, 0.0, 0.0), normal=(0.985, 0.0, 0.174), edge_width_m=5e-9),
        implanted_layer=ImplantedLayer(),
        surface_layers=SurfaceLayers(),
        dislocations=(
            # mixed dislocation, Q·b = 2π
            Dislocation(point_m=(-0.4e-6, 0.3e-6, 0.05e-6), line_direction=(0.2, 1.0, 0.6),
                        burgers_m=(1.2e-10, 0.0, D220_W_M)),
            # a/2<111>-like, Q·b = 4π (b_z = 2 d_220 = a/√2)
            Dislocation(point_m=(0.5e-6, -0.5e-6, -0.05e-6), line_direction=(1.0, 0.3, 0.8),
                        burgers_m=(TUNGSTEN_LATTICE_M / 2, 0.0, 2 * D220_W_M)),
        ),
        rocking_centre_offset_deg=rocking_centre_offset_deg,
    )


def uniform_strain_sample(*, strain: float, thickness_m: float = 0.45e-6,
                          tilt_x_deg: float = 0.0, tilt_y_deg: float = 0.0) -> CrystalSample:
    """Slab with a uniform strain ε_zz = ``strain`` (u_z = ε z) and nothing else."""
    return CrystalSample(slab=Slab(thickness_m=thickness_m, tilt_x_deg=tilt_x_deg, tilt_y_deg=tilt_y_deg),
                         homogeneous=HomogeneousDisplacement(strain=strain))


def tilted_sample(*, tilt_x_rad: float = 0.0, tilt_y_rad: float = 0.0,
                  thickness_m: float = 0.45e-6) -> CrystalSample:
    """Flat slab whose lattice is rotated: u_z = tilt_x_rad·y + tilt_y_rad·x."""
    return CrystalSample(slab=Slab(thickness_m=thickness_m, tilt_x_deg=0.0, tilt_y_deg=0.0),
                         homogeneous=HomogeneousDisplacement(tilt_x_rad=tilt_x_rad, tilt_y_rad=tilt_y_rad))
