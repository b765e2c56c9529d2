"""Forward ptychography (ePIE / mPIE) recovers a synthetic probe and Siemens-star object.

The data are simulated here with plain numpy FFTs (no sim import): a Siemens star
transmission, a defocused, aberrated rectangular-NA probe, an Archimedean spiral in
metres and a detector with a masked gap cross; noise-free counts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from analysis.forward_ptycho import (
    ForwardGeometry,
    ForwardPtychoOptions,
    forward_ptychography,
    positions_to_pixels,
    rectangular_na_probe,
)
from analysis.metrics import object_error, probe_error

N = 64
GEOM = ForwardGeometry(energy_kev=8.0, detector_distance_m=0.45, detector_pixel_size_m=55e-6)
DX = GEOM.object_pixel_size_m(N)  # ≈ 19.8 nm
NA = (1.0e-3, 0.6e-3)


def siemens_star(n: int, n_spokes: int = 18) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] - n / 2 + 0.5
    ang, r = np.arctan2(yy, xx), np.hypot(yy, xx)
    star = ((np.sin(n_spokes * ang) > 0) & (r < 0.42 * n)).astype(float)
    star = ndimage.gaussian_filter(star, 0.8)
    return (1.0 - 0.3 * star) * np.exp(1j * 0.8 * star)


def archimedean_spiral(n_points: int, step_px: float) -> np.ndarray:
    """Points on r = step·θ/2π, spaced ≈ step along the arc, in pixels (row, col)."""
    pts, theta = [], 2 * math.pi
    for _ in range(n_points):
        r = step_px * theta / (2 * math.pi)
        pts.append((r * math.sin(theta), r * math.cos(theta)))
        theta += step_px / r
    return np.array(pts)


def true_probe() -> np.ndarray:
    rng = np.random.default_rng(7)
    aberr = ndimage.gaussian_filter(rng.standard_normal((N, N)), 6)
    aberr = np.fft.ifftshift(aberr * 1.0 / np.abs(aberr).max())
    p = rectangular_na_probe((N, N), pixel_size_m=DX, wavelength_m=GEOM.wavelength_m, na_rows=NA[0],
                             na_cols=NA[1], defocus_m=60e-6, total_intensity=1e6)
    return np.fft.ifft2(np.fft.fft2(p) * np.exp(1j * aberr))


def simulate(obj, probe, pos_px, mask):
    frames = []
    k = np.fft.fftfreq(N)
    for p in pos_px:
        o = np.floor(p).astype(int)
        f = p - o
        pj = np.fft.ifft2(np.fft.fft2(probe) * np.exp(-2j * np.pi * (k[:, None] * f[0] + k[None, :] * f[1])))
        psi = pj * obj[o[0]:o[0] + N, o[1]:o[1] + N]
        frames.append(np.fft.fftshift(np.abs(np.fft.fft2(psi, norm="ortho")) ** 2))
    frames = np.array(frames) * mask  # dead pixels read 0
    return frames


@pytest.fixture(scope="module")
def dataset():
    mask = np.ones((N, N), bool)
    mask[:, 40:43] = False  # chip gaps, off the central beam
    mask[22:24, :] = False
    spiral = archimedean_spiral(90, 4.0)
    centre = 80.0
    pos_px = spiral + centre - N / 2 + np.array([0.31, 0.77])
    obj = np.ones((160, 160), complex)
    obj[20:140, 20:140] = siemens_star(120)
    probe = true_probe()
    frames = simulate(obj, probe, pos_px, mask)
    return dict(frames=frames, mask=mask, pos_px=pos_px, pos_m=pos_px * DX, obj=obj, probe=probe)


def _errors(res, ds):
    off, _ = positions_to_pixels(ds["pos_m"], DX, margin_px=2)
    o0 = np.floor(ds["pos_px"][0]).astype(int) - off[0]
    truth = ds["obj"][o0[0]:o0[0] + res.object.shape[0], o0[1]:o0[1] + res.object.shape[1]]
    # region well illuminated by the true probe
    illum = np.zeros(res.object.shape)
    for o in off:
        illum[o[0]:o[0] + N, o[1]:o[1] + N] += np.abs(ds["probe"]) ** 2
    region = illum > 0.3 * illum.max()
    e_obj = object_error(res.object, truth, support=region)
    e_probe = probe_error(res.probe, ds["probe"])
    return e_obj.error, e_probe.error, probe_error(res.probe, ds["probe"], intensity_weighted=True).error


@pytest.mark.parametrize("algorithm,n_iter,tol", [("epie", 100, 0.04), ("mpie", 60, 0.03)])
def test_recovers_probe_and_object(dataset, algorithm, n_iter, tol):
    init = rectangular_na_probe((N, N), pixel_size_m=DX, wavelength_m=GEOM.wavelength_m,
                                na_rows=NA[0], na_cols=NA[1], defocus_m=40e-6)
    opts = ForwardPtychoOptions(algorithm=algorithm, n_iterations=n_iter,
                                **({"object_step": 0.2, "probe_step": 0.5} if algorithm == "mpie" else {}))
    res = forward_ptychography(dataset["frames"], dataset["pos_m"], pixel_size_m=DX, initial_probe=init,
                               mask=dataset["mask"], options=opts)
    e_obj, e_probe, e_probe_w = _errors(res, dataset)
    h = res.error_history
    print(f"{algorithm}: E_obj={e_obj:.4f} E_P={e_probe:.4f} E_P(I-weighted)={e_probe_w:.4f} "
          f"data error {h[0]:.2e} -> {h[-1]:.2e}")
    assert h[-1] < 0.05 * h[0]
    assert e_probe < tol and e_obj < tol
    assert res.initial_probe.shape == res.probe.shape


def test_rectangular_na_probe_and_bad_inputs(dataset):
    p = rectangular_na_probe((N, N), pixel_size_m=DX, wavelength_m=GEOM.wavelength_m, na_rows=NA[0],
                             na_cols=NA[1], total_intensity=5.0)
    assert np.sum(np.abs(p) ** 2) == pytest.approx(5.0)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(p)))
    assert np.count_nonzero(spec > 1e-9 * spec.max()) < 0.3 * N * N  # band-limited by the NA rectangle
    with pytest.raises(ValueError, match="shape"):
        forward_ptychography(dataset["frames"][:, :10], dataset["pos_m"], pixel_size_m=DX, initial_probe=p)
    with pytest.raises(ValueError, match="positions_m"):
        forward_ptychography(dataset["frames"], dataset["pos_m"][:5], pixel_size_m=DX, initial_probe=p)
    bad = dataset["frames"].copy()
    bad[0, 0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        forward_ptychography(bad, dataset["pos_m"], pixel_size_m=DX, initial_probe=p)
    with pytest.raises(ValueError, match="algorithm"):
        ForwardPtychoOptions(algorithm="dm")
