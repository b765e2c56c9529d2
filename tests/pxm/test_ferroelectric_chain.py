"""pxm.ferroelectric pieces without a server: LGD truth of the film, options, labels, merging."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pxm.ferroelectric import (
    FerroelectricDemoOptions,
    VariantPolarization,
    classify_variant,
    combine_variant_maps,
    polarization_from_fp_run,
    sample_truth,
    variant_reference_strain,
)
from pxm.polarization import PolarizationMaps, ambiguity_report
from sim.ferroelectric import VARIANT_A, VARIANT_C, VARIANT_NONE, ca_domain_pattern


def test_variant_reference_strains_are_the_spec_numbers():
    assert variant_reference_strain("c", material="BaTiO3", hkl=(0, 0, 2)) == pytest.approx(6.760e-3, abs=1e-6)
    assert variant_reference_strain("a", material="BaTiO3", hkl=(0, 0, 2)) == pytest.approx(-2.298e-3, abs=1e-6)


def test_sample_truth_follows_the_lgd_model_under_stress():
    pat = ca_domain_pattern(32, 5e-9, variants=("c", "a"), stress_bump_pa=100e6, stress_bump_center_frac=(0.25, 0.5),
                            stress_bump_width_frac=0.05)
    truth = sample_truth(pat, material="BaTiO3", hkl=(0, 0, 2))
    p = truth.polarization_c_per_m2
    assert p[0, 0] == pytest.approx([0, 0, 0.2600], abs=2e-4)              # stress-free c: P_s ẑ, e33 = Q11 P_s²
    assert truth.strain_g[0, 0] == pytest.approx(6.760e-3, abs=2e-6)
    assert p[-1, 0] == pytest.approx([0.2600, 0, 0], abs=2e-4)             # a: P_s x̂, ε_zz = Q12 P_s²
    assert truth.strain_g[-1, 0] == pytest.approx(-2.298e-3, abs=2e-6)
    # +100 MPa along z (docs/polarization.md, Known answers)
    assert p[8, 16, 2] == pytest.approx(0.2680, abs=5e-4)
    assert truth.strain_g[8, 16] == pytest.approx(8.088e-3, abs=5e-6)      # Q11 P² + s11 σ


def test_options_reject_what_the_chain_cannot_do():
    with pytest.raises(ValueError, match="00l"):
        FerroelectricDemoOptions(hkl=(1, 1, 0))
    with pytest.raises(ValueError, match="variant"):
        FerroelectricDemoOptions(scanned_variants=("c", "b"))
    with pytest.raises(ValueError, match="bright_fraction"):
        FerroelectricDemoOptions(bright_fraction=1.5)
    with pytest.raises(ValueError, match="once"):
        FerroelectricDemoOptions(scanned_variants=("c", "c"))


def test_strain_without_a_parent_lattice_is_refused():
    geom = FerroelectricDemoOptions().geometry(6.76e-3)
    data = SimpleNamespace(uid="u" * 8, start={"sample": {"name": "no parent d"}}, geometry=geom)
    out = SimpleNamespace(data=data, result=SimpleNamespace(object=np.ones((8, 8))),
                          maps=SimpleNamespace(strain=np.zeros((8, 8))))
    with pytest.raises(ValueError, match="parent_d_spacing_m"):
        polarization_from_fp_run(out, material="BaTiO3")
    vp = polarization_from_fp_run(out, material="BaTiO3", parent_d_spacing_m=2.0045e-10)   # zero relative strain
    assert vp.strain_offset == pytest.approx(6.76e-3, rel=1e-6)
    assert np.nanmax(np.abs(vp.maps.magnitude_c_per_m2 - 0.2600)) < 1e-3
    assert (vp.maps.n_equivalent[vp.bright] == 2).all()


def _maps(p: np.ndarray, n_eq: np.ndarray) -> PolarizationMaps:
    return PolarizationMaps(material="BaTiO3", hkl=(0.0, 0.0, 2.0), strain_frame="t", polarization_c_per_m2=p,
                            magnitude_c_per_m2=np.linalg.norm(p, axis=-1), n_equivalent=n_eq,
                            stress_along_g_pa=np.zeros(p.shape[:-1]), branch_gap_j_per_m3=np.full(p.shape[:-1], 1e6),
                            voxel_size_m=(1e-8, 1e-8))


def test_labels_merge_and_ambiguity_report():
    nan = np.nan
    p_c = np.array([[[0, 0, 0.26], [nan, nan, nan]]])
    p_a = np.array([[[nan, nan, nan], [0.26, 0, 0]]])
    assert classify_variant(p_c).tolist() == [[VARIANT_C, VARIANT_NONE]]
    parts = [VariantPolarization(variant=v, uid=v * 8, strain_offset=0.0, bright=np.isfinite(p[..., 0]),
                                 relative_amplitude=np.ones((1, 2)),
                                 maps=_maps(p, np.where(np.isfinite(p[..., 0]), k, 0)))
             for v, p, k in (("c", p_c, 2), ("a", p_a, 4))]
    maps, source = combine_variant_maps(parts)
    assert source.tolist() == [[1, 2]]
    assert classify_variant(maps.polarization_c_per_m2).tolist() == [[VARIANT_C, VARIANT_A]]
    rep = ambiguity_report(maps)
    assert rep["n_equivalent_counts"] == {"2": 1, "4": 1} and rep["n_small_gap"] == 0
    assert any("180°" in s for s in rep["undetermined"]) and any("x/y" in s for s in rep["undetermined"])
