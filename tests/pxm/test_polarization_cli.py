"""`pxm polarization`: a results file's strain map of BaTiO3 c/a domains -> |P| maps, file and Tiled."""

import h5py
import numpy as np
import pytest

from analysis.dataset import write_results
from analysis.polarization import equilibrium_polarization, projected_strain, spontaneous_strain
from analysis.strain import StrainMaps
from pxm.cli import main


def _ps_c_per_m2() -> float:
    p = equilibrium_polarization("BaTiO3", np.zeros((3, 3)), np.array([0.0, 0.0, 0.25]))
    return float(np.linalg.norm(p))


@pytest.fixture
def results_file(tmp_path):
    ps = _ps_c_per_m2()
    eps_c = float(projected_strain(spontaneous_strain(np.array([0.0, 0.0, ps]), "BaTiO3"), (0, 0, 2)))
    eps_a = float(projected_strain(spontaneous_strain(np.array([ps, 0.0, 0.0]), "BaTiO3"), (0, 0, 2)))
    eps = np.full((6, 8, 4), eps_c)
    eps[:, 4:, :] = eps_a                      # 90° c/a domain wall at the middle of axis 1
    mask = np.ones(eps.shape, bool)
    mask[0] = False                            # unmeasured layer
    eps[0] = np.nan
    maps = StrainMaps(eps_zz=eps, omega_x_rad=np.zeros_like(eps), omega_y_rad=np.zeros_like(eps),
                      amplitude=np.ones_like(eps), mask=mask, voxel_size_m=(20e-9,) * 3, origin_m=(0.0,) * 3,
                      frame="sample")
    path = tmp_path / "results.h5"
    write_results(path, object=np.ones(eps.shape, np.complex64), probe=np.ones((4, 4), np.complex64),
                  voxel_size_m=(20e-9,) * 3, strain=maps, provenance={"raw_uid": "0" * 32})
    return path, ps


def test_polarization_cli_recovers_domain_magnitudes(results_file, capsys):
    path, ps = results_file
    assert main(["polarization", str(path), "--material", "BaTiO3", "--hkl", "0", "0", "2"]) == 0
    with h5py.File(path, "r") as f:
        g = f["/polarization/sample"]
        mag = g["magnitude_c_per_m2"][()]
        n_eq = g["n_equivalent"][()]
        assert g.attrs["material"] == "BaTiO3"
        assert g["polarization_c_per_m2"].attrs["units"] == "C/m^2"
    assert np.all(np.isnan(mag[0]))                                    # unmeasured stays unknown
    np.testing.assert_allclose(mag[1:], ps, rtol=0.02)                 # |P| to 2 % in both domains
    assert set(np.unique(n_eq[1:, :4])) == {2} and set(np.unique(n_eq[1:, 4:])) == {4}   # ±P vs x/y variants
    assert "symmetry-equivalent" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["--material", "Unobtainium", "--hkl", "0", "0", "2"], "Unobtainium"),
    (["--material", "BaTiO3", "--hkl", "0", "0", "0"], "hkl"),
])
def test_bad_material_or_reflection_is_named(results_file, capsys, argv, match):
    path, _ = results_file
    assert main(["polarization", str(path), *argv]) == 1
    assert match in capsys.readouterr().err


def test_polarization_is_published_next_to_the_run(results_file, tiled_service, tiled_layout):
    from tiled.queries import Key

    path, ps = results_file
    _, _, processed = tiled_layout
    assert main(["polarization", str(path), "--material", "BaTiO3", "--hkl", "0", "0", "2", "--publish",
                 "--tiled-uri", tiled_service.uri, "--api-key", tiled_service.config.api_key]) == 0
    hits = processed.search(Key("raw_uid") == "0" * 32)
    keys = [k for k in hits if "-polarization-" in k]
    assert keys, list(hits)
    node = processed[keys[-1]]
    assert node.metadata["material"] == "BaTiO3" and node.metadata["hkl"] == [0.0, 0.0, 2.0]
    np.testing.assert_allclose(node["magnitude_c_per_m2"][1:], ps, rtol=0.02)
