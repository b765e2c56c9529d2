"""FP-DFXM: independent simulator (sim.dfxm) → Zernike-EPRY reconstruction (issue 6 "Must show").

The simulator works on a 2× finer grid than the reconstruction's high-resolution grid,
applies continuous spectrum shifts as phase ramps, evaluates the CRL pupil analytically
(including the physical-aperture tails beyond the frame's band) and point-samples the
field: the reconstruction never sees data from its own operator. Geometry: 17 keV,
88 Be lenslets (NA_rms = 0.295 mrad), 40 nm raw pixels, 64² frames, ×4 upsampling,
7 × 7 diversity grid at 14 frequency pixels (0.399 mrad, 58% overlap), BaTiO₃ (002).
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.dfxm import (
    FPDFXMGeometry,
    FPOptions,
    Reflection,
    estimate_pupil_center_rad,
    misalignment_readout,
    phase_error_rms_rad,
    reconstruct_fp_dfxm,
)
from sim.dfxm import bars_exit_field, crystal_exit_field, grid_shifts_rad, simulate_frames

REFLECTION = Reflection(hkl=(0, 0, 2), d_spacing_m=2.018e-10)
# defocus, astigmatism, coma, spherical (docs/fp-dfxm.md, Algorithm)
TRUE_ZERNIKE_RAD = {4: 0.5, 6: 0.35, 8: 0.25, 11: 0.4}
FINE = 2


def _geometry(**kw: object) -> FPDFXMGeometry:
    return FPDFXMGeometry(reflection=REFLECTION, n_px=64, upsampling=4, pixel_size_m=40e-9, **kw)


def _shifts(geom: FPDFXMGeometry) -> np.ndarray:
    return grid_shifts_rad(7, 14 * geom.angle_per_freq_px_rad)


@pytest.fixture(scope="module")
def aberrated_run():
    geom = _geometry()
    truth = crystal_exit_field(geom.hr_n_px * FINE, geom.hr_pixel_size_m / FINE, REFLECTION, 17.0, dislocations=(),
                               grain_fraction=None)
    shifts = _shifts(geom)
    frames = simulate_frames(truth.exit_field, geom.hr_pixel_size_m / FINE, geom, shifts,
                             zernike_rad=TRUE_ZERNIKE_RAD, photons_peak=2e4, seed=1)
    truth_hr = truth.exit_field[::FINE, ::FINE]
    rec = reconstruct_fp_dfxm(frames, shifts, geom, options=FPOptions(n_iterations=150))
    ign = reconstruct_fp_dfxm(frames, shifts, geom, options=FPOptions(n_iterations=150, recover_pupil=False))
    return geom, truth_hr, rec, ign


def test_zernike_coefficients_recovered_within_0p05_rad(aberrated_run):
    _, _, rec, _ = aberrated_run
    for j, c in rec.zernike_rad.items():
        assert abs(c - TRUE_ZERNIKE_RAD.get(j, 0.0)) <= 0.05, (j, c, rec.zernike_rad)


def test_pupil_recovery_lowers_object_phase_error(aberrated_run):
    _, truth_hr, rec, ign = aberrated_run
    c = slice(32, 224)                    # interior: the periodic field edge is not a physical boundary
    err_rec = phase_error_rms_rad(rec.object[c, c], truth_hr[c, c])
    err_ign = phase_error_rms_rad(ign.object[c, c], truth_hr[c, c])
    print(f"phase rms: Zernike-EPRY {err_rec:.3f} rad, aberrations ignored {err_ign:.3f} rad")
    assert err_ign >= 0.25                # issue 6: ignoring the aberrations costs ≥ 0.25 rad (measured 0.26)
    assert err_rec <= 0.5 * err_ign
    assert rec.error_history[-1] < 0.5 * ign.error_history[-1]


def test_object_phase_error_meets_issue_target(aberrated_run):
    """Issue 6: ≤ 0.1 rad rms with pupil recovery (measured 0.077 with the centre-of-mass start; 0.31 flat)."""
    _, truth_hr, rec, _ = aberrated_run
    c = slice(32, 224)
    assert phase_error_rms_rad(rec.object[c, c], truth_hr[c, c]) <= 0.1


def test_misalignment_readout_defocus(aberrated_run):
    geom, _, rec, _ = aberrated_run
    out = misalignment_readout(rec, geom)
    true_dz = geom.defocus_m_from_z4(TRUE_ZERNIKE_RAD[4])
    assert abs(out.defocus_m - true_dz) <= 0.1 * abs(true_dz)
    assert out.image_shift_m.shape == (49, 2)


def test_pupil_center_from_frame_brightness():
    center = (0.12e-3, -0.08e-3)
    geom = _geometry()
    truth = crystal_exit_field(geom.hr_n_px * FINE, geom.hr_pixel_size_m / FINE, REFLECTION, 17.0,
                               dislocations=(), texture_amplitude=0.05)
    shifts = _shifts(geom)
    frames = simulate_frames(truth.exit_field, geom.hr_pixel_size_m / FINE, geom, shifts,
                             pupil_center_rad=center, photons_peak=2e4)
    est = estimate_pupil_center_rad(frames, shifts)
    assert np.allclose(est, center, atol=0.03e-3), est


def test_resolution_beyond_conventional_dfxm():
    """Bars of 32 nm half-pitch: beyond λ/2NA_rms = 123 nm and outside the single pupil; FP resolves them."""
    geom = _geometry(mode="transmission")
    period_m = 64e-9                      # 40 periods in the 2.56 µm field; λ/p = 1.14 mrad > band edge 0.91 mrad
    n_fine = geom.hr_n_px * FINE
    obj = bars_exit_field(n_fine, geom.hr_pixel_size_m / FINE, period_m=period_m)
    shifts = _shifts(geom)
    frames = simulate_frames(obj, geom.hr_pixel_size_m / FINE, geom, shifts, photons_peak=2e4, seed=2)
    rec = reconstruct_fp_dfxm(frames, shifts, geom, options=FPOptions(n_iterations=60, recover_pupil=False))
    n_cyc = round(geom.hr_n_px * geom.hr_pixel_size_m / period_m)
    lam, na = geom.wavelength_m, geom.objective.na_rms_rad
    assert period_m / 2 < lam / (2 * na) / 3          # ≥ 3× finer than conventional DFXM

    def modulation(img: np.ndarray) -> float:
        f = np.abs(np.fft.fft(img.mean(axis=0)))
        return float(f[n_cyc] / f[0])

    truth_mod = modulation(obj[::FINE, ::FINE])
    conv = np.sqrt(frames[len(frames) // 2])          # centre frame = conventional (single-pupil) image
    conv_mod = float(np.abs(np.fft.fft(conv.mean(axis=0)))[n_cyc % 64] / np.abs(np.fft.fft(conv.mean(axis=0)))[0]) \
        if n_cyc < 32 else 0.0
    fp_mod = modulation(rec.object)
    print(f"bars modulation at 32 nm half-pitch: truth {truth_mod:.3f}, FP {fp_mod:.3f}, conventional {conv_mod:.3f}")
    assert fp_mod >= 0.6 * truth_mod                 # measured 0.325 of 0.363 (0.098 from a flat start)
    assert conv_mod < 0.05 * truth_mod


def test_crystal_with_dislocations_reconstructs():
    """Default crystal: finite grain, strain/roll domains, two dislocations (±1 vortices), aberrated CRL.

    The start carries the vortices found from the circulation of the centre-of-mass gradient and
    integrates the rest over the bright grain (``initial_phase="diversity_support"``). Phase error
    scored inside the grain, outside a core radius of one FP resolution element λ/(2NA_syn).
    """
    from analysis.dfxm import find_phase_vortices

    geom = _geometry()
    sim = crystal_exit_field(geom.hr_n_px * FINE, geom.hr_pixel_size_m / FINE, REFLECTION, 17.0, seed=3)
    shifts = _shifts(geom)
    frames = simulate_frames(sim.exit_field, geom.hr_pixel_size_m / FINE, geom, shifts,
                             zernike_rad=TRUE_ZERNIKE_RAD, photons_peak=2e4, seed=4)
    truth = sim.exit_field[::FINE, ::FINE]
    rec = reconstruct_fp_dfxm(frames, shifts, geom, options=FPOptions(n_iterations=150,
                                                                      initial_phase="diversity_support"))
    n = geom.hr_n_px
    true_cores = [(0.3 * n, 0.62 * n, 1), (0.7 * n, 0.35 * n, -1)]    # crystal_exit_field defaults (fractions)
    na_syn = 2 * geom.objective.na_rms_rad + float(np.hypot(*shifts.T).max())
    core_px = geom.wavelength_m / (2 * na_syn) / geom.hr_pixel_size_m
    rr, cc = np.mgrid[0:n, 0:n]
    keep = np.abs(truth) > 0.05 * np.abs(truth).max()                  # inside the grain
    for r0, c0, _ in true_cores:
        keep &= np.hypot(rr - r0, cc - c0) > core_px
    err = phase_error_rms_rad(rec.object, truth, weights=np.abs(truth) ** 2 * keep)
    print(f"dislocation crystal: phase rms {err:.3f} rad (core radius {core_px:.1f} HR px)")
    assert err <= 0.15                                                  # issue 6 gap 1 (measured 0.07)
    found = find_phase_vortices(rec.object)
    assert len(found) == 2, found
    for r0, c0, wind in true_cores:
        v = min(found, key=lambda v: np.hypot(v.row_px - r0, v.col_px - c0))
        assert v.winding == wind
        assert np.hypot(v.row_px - r0, v.col_px - c0) * geom.hr_pixel_size_m <= 20e-9     # half a raw pixel
    for j, c in rec.zernike_rad.items():
        assert abs(c - TRUE_ZERNIKE_RAD.get(j, 0.0)) <= 0.05, rec.zernike_rad
    # the curl-free start alone (pre-issue behaviour) cannot hold the vortices
    flat = reconstruct_fp_dfxm(frames, shifts, geom, options=FPOptions(n_iterations=20, initial_phase="flat"))
    assert phase_error_rms_rad(flat.object, truth, weights=np.abs(truth) ** 2 * keep) > 2 * err


def test_crl_tilt_simulated_lenslet_by_lenslet_and_read_out():
    """A CRL pitch/yaw about the entrance shifts the absorption aperture by τ·Σh(z−z_p)/Σh² (docs/fp-dfxm.md).

    The simulator multiplies 88 displaced lenslet Gaussians; the analysis reads the tilt from the
    pupil centre estimated from frame brightness (tolerance: that estimate's 0.03 mrad / 0.286).
    """
    from analysis.dfxm import crl_tilt_from_pupil_center_rad
    from sim.dfxm import crl_pupil

    geom = _geometry()
    tilt_rad, pivot_m = (0.5e-3, -0.3e-3), 0.0
    k = geom.objective.pupil_shift_per_tilt(tilt_pivot_m=pivot_m)
    assert k == pytest.approx(0.286, abs=0.002)
    assert abs(geom.objective.pupil_shift_per_tilt()) < 0.02          # about the centre: nearly symmetric
    a = np.linspace(-1.5e-3, 1.5e-3, 301)
    ar, ac = np.meshgrid(a, a, indexing="ij")
    p2 = np.abs(crl_pupil(ar, ac, geom, crl_tilt_rad=tilt_rad, tilt_pivot_m=pivot_m)) ** 2
    centroid = ((p2 * ar).sum() / p2.sum(), (p2 * ac).sum() / p2.sum())
    np.testing.assert_allclose(centroid, np.array(tilt_rad) * k, rtol=5e-3)          # sim product = closed form
    truth = crystal_exit_field(geom.hr_n_px * FINE, geom.hr_pixel_size_m / FINE, REFLECTION, 17.0,
                               dislocations=(), texture_amplitude=0.05)
    shifts = _shifts(geom)
    frames = simulate_frames(truth.exit_field, geom.hr_pixel_size_m / FINE, geom, shifts, photons_peak=2e4,
                             crl_tilt_rad=tilt_rad, tilt_pivot_m=pivot_m)
    center = estimate_pupil_center_rad(frames, shifts)
    rec = reconstruct_fp_dfxm(frames, shifts, geom, options=FPOptions(n_iterations=3), pupil_center_rad=center)
    out = misalignment_readout(rec, geom, tilt_pivot_m=pivot_m)
    print(f"CRL tilt (pitch, yaw) true {tilt_rad} rad, read {out.crl_tilt_rad}")
    assert np.allclose(out.crl_tilt_rad, tilt_rad, atol=0.1e-3)     # measured 0.035 / 0.025 mrad off
    assert out.crl_tilt_rad == pytest.approx(crl_tilt_from_pupil_center_rad(center, geom, tilt_pivot_m=pivot_m))
    with pytest.raises(ValueError, match="not observable"):
        h = geom.objective.lenslet_ray_heights_m_per_rad()
        blind_pivot_m = float(np.sum(h * geom.objective.lenslet_positions_m(tilt_pivot_m=0.0)) / np.sum(h))
        crl_tilt_from_pupil_center_rad(center, geom, tilt_pivot_m=blind_pivot_m)
