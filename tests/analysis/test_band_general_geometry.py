"""The measured band along the detector columns in an out-of-plane geometry (issue 19): it bounds the exit
wave P·ρ, not the object ρ, so ``measured_band_mask`` must not cut object content along e2.

The sheared, cropped q-set keeps exit-wave frequencies with |f2 − c2 f3| ≤ N2/(2 N2') (c2 from the e2 shear,
docs/geometry.md, Operators). The probe is invariant only along k̂_i, which is neither e1 nor e2, so it carries
e2 frequencies (rms ≈ 2 bins for a 0.2 µm beam against an out-of-band margin of (N2' − N2)/2 bins): an object
frequency outside the columns' band reaches the measured q-points through the probe. Checked by a brute-force
DFT at the measured q-points.
"""

import math

import numpy as np

from analysis.bragg.operators.fourier import measured_band_mask, shear_per_index_rad
from analysis.diffractometer import asymmetric_out_of_plane, native_sample_coordinates_m


def _setup():
    d = asymmetric_out_of_plane(rocking_step_deg=0.012, detector_distance_m=0.35)
    g = d.bragg_geometry(n_rows_px=12, n_cols_px=12, n_angles=6)
    r = native_sample_coordinates_m(g, g.recon_shape)                 # (N1', N2', N3, 3), sample frame
    b = g.measured_q_basis_per_m() * 2 * math.pi
    e = np.stack([g.lab_axes()[k] for k in ("e1", "e2", "e3")])
    m1, m2, k = (np.arange(n) - n // 2 for n in (g.n_rows_px, g.n_cols_px, g.n_angles))
    q = (m1[:, None, None, None] * b[0] + m2[None, :, None, None] * b[1] + k[None, None, :, None] * b[2]) @ e
    phase = np.exp(-1j * (q.reshape(-1, 3) @ r.reshape(-1, 3).T))      # brute-force DFT at the measured q
    return g, r, phase


def _measured_fraction(phase: np.ndarray, psi: np.ndarray) -> float:
    """Σ|Ψ(q_meas)|² / Σ|ψ|² with the unitary normalisation of the engine (1 for ψ inside the band)."""
    meas = phase @ psi.ravel() / math.sqrt(psi.size)
    return float(np.sum(np.abs(meas) ** 2) / np.sum(np.abs(psi) ** 2))


def test_the_columns_band_bounds_the_exit_wave_but_not_the_object():
    g, r, phase = _setup()
    n1p, n2p, n3 = g.recon_shape
    n2 = g.n_cols_px
    assert n2p > n2 and abs(shear_per_index_rad(g)[1]) > 0                # padded and sheared along e2
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in g.recon_shape], indexing="ij"), axis=-1)
    k2_out = n2p // 2                                                   # f2 ≈ ±½ at f3 = 0: outside the band
    assert abs(k2_out / n2p) > n2 / (2 * n2p)
    wave_out = np.exp(2j * np.pi * k2_out * idx[..., 1] / n2p)
    wave_in = np.exp(2j * np.pi * 2 * idx[..., 1] / n2p)
    # an exit wave outside the columns' band gives no signal at all: the band holds for P·ρ
    assert _measured_fraction(phase, wave_out) < 1e-20
    assert _measured_fraction(phase, wave_in) > 0.999
    # the same object frequency under a focused beam (invariant along k̂_i only) is measured
    k_in = g.lab_axes()["k_in"]
    r_perp = r - (r @ k_in)[..., None] * k_in
    probe = np.exp(-np.sum(r_perp ** 2, axis=-1) / (2 * (0.1e-6) ** 2))  # Gaussian beam, 0.24 µm FWHM
    out = _measured_fraction(phase, probe * wave_out)
    inside = _measured_fraction(phase, probe * wave_in)
    assert out > 0.05, out                                              # a column mask would cut measured data
    assert inside > 3 * out
    # the row band that measured_band_mask keeps is a band of the object frequencies along e1 only
    mask = measured_band_mask(g, g.recon_shape)
    assert mask.shape == (n1p, 1, n3) and mask[0, 0, 0]
