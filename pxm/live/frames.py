"""Frame assembly: the grid of measured frames and the usable (position, angle) subset."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


# ------------------------------------------------------------------------------------------ frame grid
class FrameGrid:
    """Frames on the (POSITION, ANGLE) grid of a ``raster_rocking_scan`` pattern, in any acquisition order."""

    def __init__(self, positions_um: np.ndarray, angles_deg: np.ndarray, *, position_tolerance_um: float,
                 angle_tolerance_deg: float) -> None:
        self.positions_um = np.asarray(positions_um, float).reshape(-1, 2)
        self.angles_deg = np.asarray(angles_deg, float).ravel()
        self.n_positions, self.n_angles = len(self.positions_um), len(self.angles_deg)
        self.position_tolerance_um, self.angle_tolerance_deg = position_tolerance_um, angle_tolerance_deg
        self.measured = np.zeros((self.n_positions, self.n_angles), bool)
        self.readback_xy_um = np.full((self.n_positions, self.n_angles, 2), np.nan)
        self.readback_theta_deg = np.full((self.n_positions, self.n_angles), np.nan)
        self.frames: np.ndarray | None = None
        self.n_duplicates = 0
        self.rejected: list[dict[str, Any]] = []

    def index(self, x_um: float, y_um: float, theta_deg: float) -> tuple[int, int] | None:
        """(position, angle) of the pattern point nearest to the read-backs, or None beyond tolerance."""
        d = np.hypot(self.positions_um[:, 0] - x_um, self.positions_um[:, 1] - y_um)
        p = int(np.argmin(d))
        da = np.abs(self.angles_deg - theta_deg)
        a = int(np.argmin(da))
        if d[p] > self.position_tolerance_um or da[a] > self.angle_tolerance_deg:
            return None
        return p, a

    def add(self, p: int, a: int, frame: np.ndarray, x_um: float, y_um: float, theta_deg: float) -> bool:
        """Store a frame; a second frame for the same (p, a) is counted as a duplicate and ignored."""
        if self.measured[p, a]:
            self.n_duplicates += 1
            return False
        if self.frames is None:
            self.frames = np.zeros((self.n_positions, self.n_angles) + frame.shape, np.float32)
        self.frames[p, a] = frame
        self.measured[p, a] = True
        self.readback_xy_um[p, a] = (x_um, y_um)
        self.readback_theta_deg[p, a] = theta_deg
        return True

    @property
    def n_measured(self) -> int:
        """Distinct frames stored."""
        return int(self.measured.sum())

    def missing(self) -> list[tuple[int, int]]:
        """(position, angle) pairs with no frame."""
        return [(int(p), int(a)) for p, a in zip(*np.nonzero(~self.measured), strict=True)]

    def stage_xyz_m(self, positions: np.ndarray) -> np.ndarray:
        """(POS, 3) mean read-back of each position (pattern target where none was read), metres."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(self.readback_xy_um[positions], axis=1)
        mean = np.where(np.isfinite(mean), mean, self.positions_um[positions])
        return np.column_stack([mean * 1e-6, np.zeros(len(positions))])

    def angles_read_deg(self) -> np.ndarray:
        """(ANGLE,) mean read-back of each angle (pattern target where none was read)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = np.nanmean(self.readback_theta_deg, axis=0)
        return np.where(np.isfinite(m), m, self.angles_deg)


def select_usable(measured: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(positions, angles, mode) of the largest block the engine can take.

    The engine has one mask per rocking angle, shared by all positions, so a usable block is
    either every position × the angles measured at all of them (``angle_layers``: unmeasured
    angles masked) or the positions measured at every angle × all angles (``complete_positions``).
    """
    n_pos, n_ang = measured.shape
    full_angles = np.nonzero(measured.all(axis=0))[0]
    full_positions = np.nonzero(measured.all(axis=1))[0]
    if len(full_angles) * n_pos >= len(full_positions) * n_ang:
        return np.arange(n_pos), full_angles, "angle_layers"
    return full_positions, np.arange(n_ang), "complete_positions"
