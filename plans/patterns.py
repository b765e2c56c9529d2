"""Scan trajectories as pure functions (no messages): raster, Archimedean spiral, rocking angles, FP-DFXM diversity."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from cycler import Cycler, cycler

from analysis.dfxm import FPDFXMGeometry


def _check_step(name: str, step: float) -> float:
    if isinstance(step, bool) or not isinstance(step, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(step).__name__}")
    if not (math.isfinite(step) and step != 0):
        raise ValueError(f"{name} must be finite and non-zero, got {step!r}; give the spacing between points")
    return float(step)


def _check_count(name: str, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}; a scan needs at least one point")
    return int(n)


def raster_positions_um(nx: int, ny: int, step_um: float, *, centre_um: tuple[float, float] = (0.0, 0.0),
                        jitter_fraction: float = 0.0, seed: int | None = None) -> np.ndarray:
    """Raster of ``nx × ny`` (x, y) positions in µm, x fastest, centred on ``centre_um``.

    ``jitter_fraction`` adds uniform noise of ±fraction·|step| per coordinate (seeded by
    ``seed``) to break the raster's periodicity. Returns an (nx·ny, 2) float64 array.
    """
    nx, ny = _check_count("nx", nx), _check_count("ny", ny)
    step = _check_step("step_um", step_um)
    if not (0.0 <= jitter_fraction < 0.5):
        raise ValueError(f"jitter_fraction must lie in [0, 0.5), got {jitter_fraction!r}")
    xs = (np.arange(nx) - (nx - 1) / 2) * step + centre_um[0]
    ys = (np.arange(ny) - (ny - 1) / 2) * step + centre_um[1]
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    pos = np.stack([xx.ravel(), yy.ravel()], axis=1)
    if jitter_fraction > 0:
        rng = np.random.default_rng(seed)
        pos = pos + rng.uniform(-1, 1, size=pos.shape) * jitter_fraction * abs(step)
    return pos


def archimedean_spiral_um(n_points: int, step_um: float, *,
                          centre_um: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """``n_points`` (x, y) positions in µm on an Archimedean spiral r = b·φ.

    Arm spacing 2πb = |step| and arc spacing ≈ |step|: φ_k = √(4πk), r_k = |step|·√(k/π).
    Returns an (n_points, 2) float64 array starting at the centre.
    """
    n = _check_count("n_points", n_points)
    step = abs(_check_step("step_um", step_um))
    k = np.arange(n, dtype=float)
    phi = np.sqrt(4 * math.pi * k)
    r = step * np.sqrt(k / math.pi)
    return np.stack([centre_um[0] + r * np.cos(phi), centre_um[1] + r * np.sin(phi)], axis=1)


def rocking_angles_deg(centre_deg: float, step_deg: float, n_angles: int) -> np.ndarray:
    """``n_angles`` goniometer angles (deg) of spacing ``step_deg`` centred on ``centre_deg``.

    An even count has no angle at ``centre_deg`` (it lies half a step between the middle two); the engine
    places q3 from the recorded angles (:func:`analysis.geometry.rocking_shift_steps`).
    """
    n = _check_count("n_angles", n_angles)
    step = _check_step("step_deg", step_deg)
    if not math.isfinite(centre_deg):
        raise ValueError(f"centre_deg must be finite, got {centre_deg!r}")
    return centre_deg + (np.arange(n) - (n - 1) / 2) * step


RASTER_ROCKING_ORDERS = ("angle_outer", "raster_outer")
"""Loop orders of the raster × rocking scan: the whole raster at each angle, or a rocking curve at each position."""


def raster_rocking_cycler(x: Any, y: Any, theta: Any, *, positions_um: Any, angles_deg: Any,
                          order: str = "angle_outer") -> Cycler:
    """The raster × rocking trajectory as a cycler for ``bluesky.plans.scan_nd`` (no messages).

    ``x``, ``y``, ``theta`` are the motors (or their names, to rebuild the trajectory from a start
    document's ``plan_pattern_args``); ``positions_um`` (POS, 2) and ``angles_deg`` (ANGLE,) are absolute.
    ``"angle_outer"`` gives ANGLE × POS points (the raster at each angle), ``"raster_outer"`` POS × ANGLE;
    (x, y) always move together.
    """
    pos = np.asarray(positions_um, dtype=float)
    ang = np.asarray(angles_deg, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] < 1 or ang.ndim != 1 or ang.size < 1:
        raise ValueError(f"positions_um {pos.shape} and angles_deg {ang.shape}: expected (n_positions >= 1, 2) "
                         "and (n_angles >= 1,)")
    raster = cycler(x, pos[:, 0].tolist()) + cycler(y, pos[:, 1].tolist())
    rocking = cycler(theta, ang.tolist())
    if order == "angle_outer":
        return rocking * raster
    if order == "raster_outer":
        return raster * rocking
    raise ValueError(f"order must be one of {RASTER_ROCKING_ORDERS}, got {order!r}")


# --- FP-DFXM diversity (docs/fp-dfxm.md, Diversity scans) -------------------------------------------------------------
FP_DIVERSITY_KINDS = ("rock_roll", "two_theta_roll", "lens_translation")
"""How the FP diversity grid is driven: rows by rocking (thin film) or 2θ or lens z, columns by roll or lens y."""


def fp_shifts_from_offsets(geometry: FPDFXMGeometry, *, rock_rad: Any = 0.0, roll_rad: Any = 0.0,
                           two_theta_rad: Any = 0.0, lens_z_m: Any = 0.0,
                           lens_y_m: Any = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(FRAME, 2) (row, col) spectrum shifts (rad) and image shifts (m) of motor offsets
    (docs/fp-dfxm.md, Diversity scans).

    Rows (vertical, scattering plane): 2δφ (thin-film rocking) + Δ2θ + Δz/d1; columns
    (horizontal): 2 sinθ δχ + Δy/d1. The lens translation also moves the image by
    Δ(1 + 1/M). Offsets broadcast to one common length.
    """
    rock, roll, tth, lz, ly = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, float)) for v in
                                                    (rock_rad, roll_rad, two_theta_rad, lens_z_m, lens_y_m)))
    d1 = geometry.objective.sample_distance_m
    s_row = 2 * rock + tth + lz / d1
    s_col = 2 * math.sin(geometry.bragg_angle_rad) * roll + ly / d1
    scale = 1 + 1 / geometry.objective.magnification
    return np.stack([s_row, s_col], axis=1), np.stack([lz * scale, ly * scale], axis=1)


def _frozen(a: Any) -> np.ndarray:
    out = np.array(a, dtype=float)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, kw_only=True)
class FPDiversitySettings:
    """Absolute motor targets of an FP-DFXM diversity scan, one row per frame, and the shifts they give.

    Angles in degrees (goniometer ``theta`` rocking, ``chi`` roll, ``tth`` objective arm),
    lens translations in µm (``z`` vertical, ``y`` horizontal). ``shifts_rad`` (FRAME, 2)
    (row, col) and ``image_shifts_m`` follow from the offsets to the ``*_centre`` values
    (:func:`fp_shifts_from_offsets`); ``step_px`` is the grid step in frequency pixels.
    """

    kind: str
    n_side: int
    step_px: int
    theta_deg: np.ndarray
    chi_deg: np.ndarray
    tth_deg: np.ndarray
    lens_z_um: np.ndarray
    lens_y_um: np.ndarray
    theta_centre_deg: float
    chi_centre_deg: float
    tth_centre_deg: float
    lens_centre_um: tuple[float, float]
    """(z, y) centre of the lens translation, µm."""
    shifts_rad: np.ndarray
    image_shifts_m: np.ndarray

    @property
    def n_frames(self) -> int:
        """Number of settings (frames)."""
        return int(self.theta_deg.shape[0])

    def to_metadata(self) -> dict[str, Any]:
        """JSON-ready dict (the start document's ``pattern``)."""
        return {"kind": "fp_diversity", "diversity": self.kind, "n_side": self.n_side, "step_px": self.step_px,
                "theta_deg": self.theta_deg.tolist(), "chi_deg": self.chi_deg.tolist(),
                "tth_deg": self.tth_deg.tolist(), "lens_z_um": self.lens_z_um.tolist(),
                "lens_y_um": self.lens_y_um.tolist(), "theta_centre_deg": self.theta_centre_deg,
                "chi_centre_deg": self.chi_centre_deg, "tth_centre_deg": self.tth_centre_deg,
                "lens_centre_um": list(self.lens_centre_um), "shifts_rad": self.shifts_rad.tolist(),
                "image_shifts_m": self.image_shifts_m.tolist(),
                "units": {"angles": "deg", "lens": "um", "shifts": "rad", "image_shifts": "m"}}

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any]) -> FPDiversitySettings:
        """Inverse of :meth:`to_metadata`; ValueError on missing keys or ragged lengths."""
        keys = ("diversity", "n_side", "step_px", "theta_deg", "chi_deg", "tth_deg", "lens_z_um", "lens_y_um",
                "theta_centre_deg", "chi_centre_deg", "tth_centre_deg", "lens_centre_um", "shifts_rad",
                "image_shifts_m")
        missing = [k for k in keys if k not in md]
        if missing:
            raise ValueError(f"FP diversity settings metadata lacks {missing}; build it with "
                             "plans.patterns.fp_diversity_settings(...).to_metadata()")
        out = cls(kind=str(md["diversity"]), n_side=int(md["n_side"]), step_px=int(md["step_px"]),
                  theta_deg=_frozen(md["theta_deg"]), chi_deg=_frozen(md["chi_deg"]), tth_deg=_frozen(md["tth_deg"]),
                  lens_z_um=_frozen(md["lens_z_um"]), lens_y_um=_frozen(md["lens_y_um"]),
                  theta_centre_deg=float(md["theta_centre_deg"]), chi_centre_deg=float(md["chi_centre_deg"]),
                  tth_centre_deg=float(md["tth_centre_deg"]),
                  lens_centre_um=(float(md["lens_centre_um"][0]), float(md["lens_centre_um"][1])),
                  shifts_rad=_frozen(md["shifts_rad"]), image_shifts_m=_frozen(md["image_shifts_m"]))
        out.check()
        return out

    def check(self) -> None:
        """ValueError unless every per-frame array has the same length (>= 2) and is finite."""
        n = self.theta_deg.shape
        arrays = {"theta_deg": self.theta_deg, "chi_deg": self.chi_deg, "tth_deg": self.tth_deg,
                  "lens_z_um": self.lens_z_um, "lens_y_um": self.lens_y_um}
        if len(n) != 1 or n[0] < 2 or any(a.shape != n for a in arrays.values()):
            raise ValueError(f"FP diversity settings: per-frame arrays must be 1D of one length >= 2, got "
                             f"{ {k: a.shape for k, a in arrays.items()} }")
        if self.shifts_rad.shape != (n[0], 2) or self.image_shifts_m.shape != (n[0], 2):
            raise ValueError(f"FP diversity settings: shifts must be ({n[0]}, 2), got {self.shifts_rad.shape}, "
                             f"{self.image_shifts_m.shape}")
        for k, a in {**arrays, "shifts_rad": self.shifts_rad, "image_shifts_m": self.image_shifts_m}.items():
            if not np.all(np.isfinite(a)):
                raise ValueError(f"FP diversity settings: {k} contains NaN or inf")


def fp_diversity_settings(geometry: FPDFXMGeometry, *, n_side: int, step_px: int, kind: str = "rock_roll",
                          theta_centre_deg: float | None = None, chi_centre_deg: float = 0.0,
                          tth_centre_deg: float | None = None,
                          lens_centre_um: tuple[float, float] = (0.0, 0.0)) -> FPDiversitySettings:
    """``n_side × n_side`` square grid of pupil shifts, ``step_px`` frequency pixels apart, as motor targets.

    The step is a whole number of frequency pixels λ/(n_px Δx) so the reconstruction's
    integer spectrum grid holds exactly (docs/fp-dfxm.md, Sampling: about 60% overlap, step ≈ 0.64·2NA_rms).
    Rows (slow) are driven by rocking (``rock_roll``, thin film: δφ = s/2), 2θ
    (``two_theta_roll``: Δ2θ = s) or the lens z (``lens_translation``: Δz = s·d1); columns
    (fast) by roll (δχ = s / 2 sinθ) or lens y (Δy = s·d1). Centres default to θ_B and 2θ_B; the grid
    is centred for odd ``n_side`` and one step off-centre for even ``n_side`` (offsets stay whole pixels).
    """
    n = _check_count("n_side", n_side)
    step = _check_count("step_px", step_px)
    if kind not in FP_DIVERSITY_KINDS:
        raise ValueError(f"kind must be one of {FP_DIVERSITY_KINDS}, got {kind!r}")
    if geometry.reflection is None:
        raise ValueError("fp_diversity_settings: geometry has no reflection metadata (θ_B is needed); pass "
                         "FPDFXMGeometry(reflection=Reflection(hkl=..., d_spacing_m=...))")
    theta_b_deg = math.degrees(geometry.bragg_angle_rad)
    theta_c = theta_b_deg if theta_centre_deg is None else float(theta_centre_deg)
    tth_c = 2 * theta_b_deg if tth_centre_deg is None else float(tth_centre_deg)
    for name, v in (("theta_centre_deg", theta_c), ("chi_centre_deg", chi_centre_deg), ("tth_centre_deg", tth_c),
                    ("lens_centre_um", lens_centre_um[0]), ("lens_centre_um", lens_centre_um[1])):
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v!r}")
    k = (np.arange(n) - (n - 1) // 2) * step * geometry.angle_per_freq_px_rad   # on the integer grid for even n
    s_row, s_col = (a.ravel() for a in np.meshgrid(k, k, indexing="ij"))
    zeros = np.zeros_like(s_row)
    d1 = geometry.objective.sample_distance_m
    sin_t = math.sin(geometry.bragg_angle_rad)
    rock = s_row / 2 if kind == "rock_roll" else zeros
    tth = s_row if kind == "two_theta_roll" else zeros
    roll = s_col / (2 * sin_t) if kind != "lens_translation" else zeros
    lens_z = s_row * d1 if kind == "lens_translation" else zeros
    lens_y = s_col * d1 if kind == "lens_translation" else zeros
    shifts, image = fp_shifts_from_offsets(geometry, rock_rad=rock, roll_rad=roll, two_theta_rad=tth,
                                           lens_z_m=lens_z, lens_y_m=lens_y)
    out = FPDiversitySettings(kind=kind, n_side=n, step_px=step,
                              theta_deg=_frozen(theta_c + np.degrees(rock)),
                              chi_deg=_frozen(chi_centre_deg + np.degrees(roll)),
                              tth_deg=_frozen(tth_c + np.degrees(tth)),
                              lens_z_um=_frozen(lens_centre_um[0] + lens_z * 1e6),
                              lens_y_um=_frozen(lens_centre_um[1] + lens_y * 1e6),
                              theta_centre_deg=theta_c, chi_centre_deg=float(chi_centre_deg), tth_centre_deg=tth_c,
                              lens_centre_um=(float(lens_centre_um[0]), float(lens_centre_um[1])),
                              shifts_rad=_frozen(shifts), image_shifts_m=_frozen(image))
    out.check()
    return out
