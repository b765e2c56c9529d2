"""The one adjointness contract every operator in analysis.bragg.operators must satisfy."""

from __future__ import annotations

from typing import Any

import numpy as np


def random_complex(rng: np.random.Generator, shape: tuple[int, ...], xp: Any = np,
                   dtype: Any = np.complex128) -> Any:
    """Standard complex normal array of ``shape`` on backend ``xp``."""
    a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return xp.asarray(a, dtype=dtype)


def check_adjoint(op: Any, in_shape: tuple[int, ...], out_shape: tuple[int, ...], *, xp: Any = np,
                  rtol: float = 1e-12, seed: int = 0) -> float:
    """Assert |⟨Ax, y⟩ − ⟨x, Aᴴy⟩| ≤ rtol ‖Ax‖ ‖y‖ on random complex inputs; return the ratio."""
    rng = np.random.default_rng(seed)
    dtype = np.complex128 if rtol < 1e-7 else np.complex64
    x = random_complex(rng, in_shape, xp, dtype)
    y = random_complex(rng, out_shape, xp, dtype)
    ax = op.forward(x)
    ahy = op.adjoint(y)
    assert tuple(ax.shape) == tuple(out_shape), f"forward shape {ax.shape}, expected {out_shape}"
    assert tuple(ahy.shape) == tuple(in_shape), f"adjoint shape {ahy.shape}, expected {in_shape}"
    lhs = complex(xp.vdot(y, ax))          # ⟨Ax, y⟩ = Σ conj(y) Ax
    rhs = complex(xp.vdot(ahy, x))         # ⟨x, Aᴴy⟩ = Σ conj(Aᴴy) x
    scale = float(xp.linalg.norm(ax)) * float(xp.linalg.norm(y))
    ratio = abs(lhs - rhs) / scale
    assert ratio <= rtol, f"{type(op).__name__}: adjoint mismatch {ratio:.3e} > rtol {rtol:.1e}"
    return ratio
