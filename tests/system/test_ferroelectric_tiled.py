"""Ferroelectric FP-DFXM chain: two FP scans (one per c/a variant's 2θ) under the real RunEngine into Tiled,
reconstruction, one-reflection LGD inversion anchored to the cubic parent, polarization published.

Checked against the simulator's LGD truth (BaTiO₃, 298 K, 60 MPa stress bump): |P| to 2.5e-3 C/m² rms
(1 % of P_s; measured 1.0e-3). The bound follows from the FP strain error (measured 2e-4 rms at this
size) times dP/dε of the unknown-stress inversion (≈ 6 C/m² for c, ≈ 3 for a domains), with 2× margin.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from pxm.dfxm import DFXMDemoOptions
from pxm.ferroelectric import (
    FerroelectricDemoOptions,
    print_chain_summary,
    run_ferroelectric_chain,
    variant_reference_strain,
)
from pxm.polarization import find_polarization_results
from pxm.publication import find_results
from sim.ferroelectric import VARIANT_A, VARIANT_C

P_S_C_PER_M2 = 0.26  # BaTiO3 at 298 K (Li, Cross, Chen 2005 coefficients)


@pytest.fixture(scope="module")
def chain(tiled_service, tiled_layout, tmp_path_factory):
    _, raw, processed = tiled_layout
    raw_dir = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    raw_dir.mkdir(parents=True)
    opts = FerroelectricDemoOptions(fp=DFXMDemoOptions(n_px=16, n_side=3, step_px=3, exposure_s=0.05, iterations=20))
    res = run_ferroelectric_chain(raw, processed, raw_dir, tmp_path_factory.mktemp("docs"), opts, log=lambda *a: None)
    return opts, raw, processed, res


def test_two_variant_scans_land_in_tiled_at_their_own_two_theta(chain):
    opts, raw, _, res = chain
    assert set(res.uids) == {"c", "a"}
    d_m = {}
    for variant, uid in res.uids.items():
        start = raw[uid].metadata["start"]
        assert raw[uid].metadata["stop"]["exit_status"] == "success" and start["plan_name"] == "fp_dfxm_scan"
        assert start["sample"]["ferroelectric_variant"] == variant
        d_m[variant] = start["reflection"]["d_spacing_m"]
    # 2θ set for each variant: d_c/d_a − 1 = (1 + Q11 Ps²)/(1 + Q12 Ps²) − 1 ≈ 0.906 %
    assert d_m["c"] / d_m["a"] - 1 == pytest.approx(0.00906, abs=5e-5)
    eps_c = variant_reference_strain("c", material="BaTiO3", hkl=(0, 0, 2))
    assert {p.variant: p.strain_offset for p in res.parts}["c"] == pytest.approx(eps_c, rel=1e-9)


def test_polarization_magnitude_and_variants_match_the_truth(chain):
    opts, _, _, res = chain
    mag_true, label_true = res.truth.on_object_grid(opts.fine)
    mag = res.maps.magnitude_c_per_m2
    ok = np.isfinite(mag)
    assert ok.mean() > 0.75                                   # both variants imaged: the walls stay dark
    for variant, code in (("c", VARIANT_C), ("a", VARIANT_A)):
        assert (ok & (label_true == code)).sum() > 0.3 * ok.size, variant
    err = mag[ok] - mag_true[ok]
    rms = float(np.sqrt(np.mean(err**2)))
    print(f"|P| error rms {rms:.2e}, mean {err.mean():+.2e} C/m²; truth spread {mag_true[ok].std():.2e}")
    assert rms < 2.5e-3 and abs(err.mean()) < 1e-3
    # the un-anchored strain (no strain_offset) would be off by ε_ref: |P| errors of tens of percent
    assert np.all(np.abs(mag[ok] - P_S_C_PER_M2) < 0.03 * P_S_C_PER_M2)
    # the map follows the stress bump's |P| changes inside the c domains (truth range 0.260–0.265 C/m²)
    c = ok & (label_true == VARIANT_C)
    assert np.corrcoef(mag[c], mag_true[c])[0, 1] > 0.3
    assert np.mean(res.variant_label[ok] == label_true[ok]) >= 0.99


def test_published_maps_report_the_ambiguities_and_name_both_runs(chain, capsys):
    _, raw, processed, res = chain
    node = processed[res.polarization_key]
    md = node.metadata
    assert md["raw_uids"] == res.uids and set(md["fp_results"]) == {"c", "a"}
    amb = md["ambiguity"]
    assert set(amb["n_equivalent_counts"]) == {"2", "4"}        # c: ±P; a: ±x, ±y
    assert any("180°" in s for s in amb["undetermined"]) and any("x/y" in s for s in amb["undetermined"])
    assert amb["branch_gap_j_per_m3"]["min"] > 1e5 and amb["label_matches_scan_fraction"] == 1.0
    np.testing.assert_allclose(node["magnitude_c_per_m2"][:], res.maps.magnitude_c_per_m2.astype(np.float32))
    n_eq = node["n_equivalent"][:]
    label = node["variant_label"][:]
    assert np.all(n_eq[label == VARIANT_C] == 2) and np.all(n_eq[label == VARIANT_A] == 4)
    assert md["raw_runs"] == {uid: f"raw/{uid}" for uid in res.uids.values()} and "raw_uri" not in md
    assert tuple(node["magnitude_c_per_m2"].dims) == ("row", "col") == tuple(node["variant_label"].dims)
    for variant, uid in res.uids.items():
        assert "analysis" not in raw[uid].metadata                          # the raw runs are never written to
        assert res.polarization_key in find_polarization_results(processed, uid)   # found by query from each run
        assert res.fp_keys[variant] in find_results(processed, uid)
        assert processed[res.fp_keys[variant]].metadata["raw_uid"] == uid
    print_chain_summary(res, uri="http://tiled", key_file="/data/api-key")   # `pxm dfxm-demo --ferroelectric` prints
    out = capsys.readouterr().out
    assert "PXM_TILED_API_KEY=$(cat /data/api-key)" in out and "api_key='" not in out    # the key file, never the key
    assert "c/a label right on 100.0%" in out and "undetermined: the sign of P" in out and res.polarization_key in out
