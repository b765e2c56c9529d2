"""Noll-indexed Zernike polynomials on a Cartesian pupil grid (docs/fp-dfxm.md, CRL pupil and Algorithm).

Convention: pupil coordinates (ρ_x, ρ_y) = (ξ, Δ2θ)/α₀, i.e. x along the detector
columns (horizontal, roll direction) and y along the rows (vertical, 2θ direction);
θ = atan2(ρ_y, ρ_x). Normalisation is Noll's: the polynomials are orthonormal in the
mean over the unit disc, so Z2 = 2ρcosθ, Z4 = √3(2ρ²−1), Z6 = √6ρ²cos2θ, Z11 = √5(6ρ⁴−6ρ²+1).

Reference: R. J. Noll, J. Opt. Soc. Am. 66, 207 (1976), doi:10.1364/JOSA.66.000207.
"""

from __future__ import annotations

import math

from analysis.xp import Array, array_module

__all__ = ["noll_to_nm", "zernike", "zernike_basis", "ZERNIKE_NAMES"]

ZERNIKE_NAMES = {
    1: "piston", 2: "tip (x tilt)", 3: "tilt (y tilt)", 4: "defocus", 5: "oblique astigmatism",
    6: "vertical astigmatism", 7: "vertical coma", 8: "horizontal coma", 9: "vertical trefoil",
    10: "oblique trefoil", 11: "primary spherical",
}
"""Common names of the first Noll terms."""


def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial order n and signed azimuthal order m of Noll index ``j`` ≥ 1 (m < 0: sine term)."""
    if not isinstance(j, int) or j < 1:
        raise ValueError(f"noll_to_nm: Noll index must be an int >= 1, got {j!r}")
    n = 0
    first = 1
    while first + n + 1 <= j:          # row n holds n + 1 terms, starting at first = n(n+1)/2 + 1
        first += n + 1
        n += 1
    idx = first
    for abs_m in range(n % 2, n + 1, 2):
        if abs_m == 0:
            if idx == j:
                return n, 0
            idx += 1
            continue
        for jj in (idx, idx + 1):
            if jj == j:
                return n, (abs_m if jj % 2 == 0 else -abs_m)
        idx += 2
    raise AssertionError("unreachable")  # pragma: no cover


def _radial(n: int, abs_m: int, rho: Array) -> Array:
    out = 0.0 * rho
    for s in range((n - abs_m) // 2 + 1):
        coef = ((-1) ** s * math.factorial(n - s)
                / (math.factorial(s) * math.factorial((n + abs_m) // 2 - s) * math.factorial((n - abs_m) // 2 - s)))
        out = out + coef * rho ** (n - 2 * s)
    return out


def zernike(j: int, rho_x: Array, rho_y: Array) -> Array:
    """Noll Zernike Z_j at normalised pupil coordinates (any shape; evaluated also outside ρ ≤ 1)."""
    xp = array_module(rho_x, rho_y)
    n, m = noll_to_nm(j)
    rho = xp.sqrt(rho_x * rho_x + rho_y * rho_y)
    theta = xp.arctan2(rho_y, rho_x)
    r = _radial(n, abs(m), rho)
    if m == 0:
        return math.sqrt(n + 1) * r
    ang = xp.cos(m * theta) if m > 0 else xp.sin(-m * theta)
    return math.sqrt(2 * (n + 1)) * r * ang


def zernike_basis(indices: tuple[int, ...], rho_x: Array, rho_y: Array) -> Array:
    """Stack (len(indices), *rho_x.shape) of Noll Zernikes."""
    xp = array_module(rho_x, rho_y)
    return xp.stack([zernike(j, rho_x, rho_y) for j in indices])
