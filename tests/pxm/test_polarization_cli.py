"""`pxm polarization`: a results file's strain map of BaTiO3 c/a domains -> |P| maps, file and Tiled."""

import h5py
import numpy as np
import pytest

from analysis.dataset import write_results
from analysis.ferro import equilibrium_polarization, projected_strain, spontaneous_strain
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
    out = path.with_name("pol.h5")
    assert main(["polarization", str(path), "--material", "BaTiO3", "--hkl", "0", "0", "2", "-o", str(out)]) == 0
    with h5py.File(path, "r") as f:
        assert "polarization" not in f                                 # the input is never written
    with h5py.File(out, "r") as f:
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


def test_polarization_is_published_next_to_the_run(results_file, tiled_service, tiled_layout, capsys):
    """Found by query from the run's uid, an xarray dataset with dims, units and sample-frame coordinates."""
    from tiled.client import from_uri

    from pxm.polarization import find_polarization_results
    from pxm.publication import find_results

    path, ps = results_file
    _, _, processed = tiled_layout
    assert main(["polarization", str(path), "--material", "BaTiO3", "--hkl", "0", "0", "2", "--publish",
                 "--tiled-uri", tiled_service.uri, "--api-key", tiled_service.config.api_key]) == 0
    keys = find_results(processed, "0" * 32, kind="polarization")
    assert keys and keys == find_polarization_results(processed, "0" * 32)
    assert f"published /processed/{keys[-1]}" in capsys.readouterr().out and "http" not in keys[-1]
    node = processed[keys[-1]]
    md = node.metadata
    assert md["material"] == "BaTiO3" and md["hkl"] == [0.0, 0.0, 2.0] and "raw_uri" not in md
    assert md["raw_key"] == f"raw/{'0' * 32}" and md["raw_runs"] == {"0" * 32: f"raw/{'0' * 32}"}
    assert md["source_results"] == str(path.resolve())
    np.testing.assert_allclose(node["magnitude_c_per_m2"][1:], ps, rtol=0.02)
    ds = from_uri(tiled_service.uri, api_key=tiled_service.config.api_key)["processed"][keys[-1]].read()
    assert ds["magnitude_c_per_m2"].dims == ("x", "y", "z") and ds["magnitude_c_per_m2"].attrs["units"] == "C/m^2"
    assert ds["polarization_c_per_m2"].dims == ("x", "y", "z", "p_component")
    assert ds["stress_along_g_pa"].attrs["units"] == "Pa" and ds["x"].attrs["units"] == "m"
    np.testing.assert_allclose(ds["y"].values, np.arange(8) * 20e-9)      # voxel 20 nm from the map's origin


# --------------------------------------------------------------------------- physics sanity gates (issue 17)
def _geometry(d_spacing_m, hkl):
    import dataclasses

    from analysis.geometry import seed_geometry
    return dataclasses.replace(seed_geometry(n_angles=9, n_rows_px=32, n_cols_px=32), d_spacing_m=d_spacing_m,
                               hkl=hkl, bragg_angle_deg=None)


def _with_geometry(src, dst, geometry, provenance):
    from analysis.dataset import read_results
    r = read_results(src)
    write_results(dst, object=r["object"], probe=r["probe"], voxel_size_m=r["voxel_size_m"], strain=r["strain"],
                  geometry=geometry, provenance=provenance)
    return dst


@pytest.fixture
def tungsten_results(results_file):
    """What `pxm reconstruct` writes for the README's W (220) dataset: /geometry hkl and d, a sample name."""
    from analysis.geometry import seed_geometry
    path, _ = results_file
    return _with_geometry(path, path.with_name("w220.h5"), seed_geometry(),
                          {"raw_uid": "0" * 32, "sample_name": "W-1Re foil, He-implanted (simulated)"})


def test_mismatched_material_is_refused_and_nothing_is_written(tungsten_results, capsys):
    before = tungsten_results.read_bytes()
    rc = main(["polarization", str(tungsten_results), "--material", "BaTiO3", "--hkl", "0", "0", "2"])
    err = capsys.readouterr().err
    assert rc == 1
    assert len(err.strip().splitlines()) == 1                          # one clear line
    assert "hkl (2 2 0)" in err and "BaTiO3 (0 0 2)" in err and "d = 1.1191 Å" in err and "--force" in err
    assert tungsten_results.read_bytes() == before
    assert not list(tungsten_results.parent.glob("*polarization*"))


def test_force_inverts_anyway_into_a_new_file(tungsten_results, capsys):
    before = tungsten_results.read_bytes()
    out = tungsten_results.with_name("forced.h5")
    assert main(["polarization", str(tungsten_results), "--material", "BaTiO3", "--hkl", "0", "0", "2", "--force",
                 "-o", str(out)]) == 0
    assert "warning: --force" in capsys.readouterr().err
    assert tungsten_results.read_bytes() == before
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == "pxm-polarization"
        assert f["/polarization/sample"].attrs["sample_check"] == "forced"


def test_d_spacing_alone_is_checked(results_file, capsys):
    """No material name and no hkl recorded: the geometry's d-spacing still tells W (220) from BaTiO3 (002)."""
    from analysis.geometry import TUNGSTEN_LATTICE_M, cubic_d_spacing_m
    path, _ = results_file
    w = _with_geometry(path, path.with_name("d_only.h5"), _geometry(cubic_d_spacing_m(TUNGSTEN_LATTICE_M, (2, 2, 0)),
                                                                      None), {})
    assert main(["polarization", str(w), "--material", "BaTiO3", "--hkl", "0", "0", "2"]) == 1
    assert "off BaTiO3 d_002" in capsys.readouterr().err


@pytest.mark.parametrize("d_m", [2.0045e-10, 2.018e-10, 1.996e-10])      # cubic parent, c and a domains
def test_matching_record_runs_without_warning(results_file, capsys, d_m):
    from analysis.sample_record import sample_record
    path, ps = results_file
    geom = _geometry(d_m, (0, 0, 2))
    bto = _with_geometry(path, path.with_name("bto.h5"), geom,
                         {"sample": sample_record({"name": "BaTiO3 film", "material": "BaTiO3"}, geom)})
    assert main(["polarization", str(bto), "--material", "BaTiO3", "--hkl", "0", "0", "2"]) == 0
    io = capsys.readouterr()
    assert "warning" not in io.err
    out = bto.with_name("bto-polarization-BaTiO3-002.h5")                # default: a new file beside the results
    assert f"wrote {out}:/polarization/sample" in io.out
    with h5py.File(out, "r") as f:
        assert f["/polarization/sample"].attrs["sample_check"] == "match"
    with h5py.File(bto, "r") as f:
        assert "polarization" not in f


def test_output_never_overwrites_the_input_or_another_file(results_file, capsys):
    path, _ = results_file
    before = path.read_bytes()
    base = ["polarization", str(path), "--material", "BaTiO3", "--hkl", "0", "0", "2"]
    assert main([*base, "-o", str(path)]) == 1
    assert "refusing to write the polarization maps into the results file" in capsys.readouterr().err
    other = path.with_name("other.h5")
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "pxm-bragg-results"
    assert main([*base, "-o", str(other)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert path.read_bytes() == before
    out = path.with_name("pol.h5")
    assert main([*base, "-o", str(out)]) == 0 and main([*base, "-o", str(out)]) == 0   # its own file: updated


# --------------------------------------------------------------------------- no back-links (issue 17 point 3)
class _RawRunThatMustNotBeWritten:
    """Stands in for a raw run's client: readable metadata, and any write fails the test."""

    def __init__(self, uid: str) -> None:
        self.metadata = {"start": {"uid": uid}, "stop": {"exit_status": "success"}}

    def update_metadata(self, *args, **kwargs):
        raise AssertionError("a publication wrote into a raw run's metadata")


def test_maps_of_two_runs_name_both_and_write_neither(tiled_layout):
    """2D FP-DFXM maps from two raw runs: both uids and keys in the result, found from each uid by query, the
    raw runs untouched; dims row, col with coordinates in m from the image centre."""
    import uuid

    from pxm.polarization import PolarizationMaps, find_polarization_results, publish_polarization
    from pxm.publication import find_results

    _, _, processed = tiled_layout
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    mag = np.full((4, 5), 0.26)
    maps = PolarizationMaps(material="BaTiO3", hkl=(0.0, 0.0, 2.0), strain_frame="fp-c+fp-a",
                            polarization_c_per_m2=np.stack([0 * mag, 0 * mag, mag], -1), magnitude_c_per_m2=mag,
                            n_equivalent=np.full(mag.shape, 2), stress_along_g_pa=np.zeros(mag.shape),
                            branch_gap_j_per_m3=np.full(mag.shape, 1e6), voxel_size_m=(50e-9, 50e-9))
    run = _RawRunThatMustNotBeWritten(first)
    node = publish_polarization(processed, first, maps, raw_run=run, also_raw_uids=[second],
                                extra_arrays={"variant_label": np.ones(mag.shape, np.int8)})
    key = node.item["id"]
    md = processed[key].metadata
    assert md["raw_runs"] == {first: f"raw/{first}", second: f"raw/{second}"} and md["raw_key"] == f"raw/{first}"
    assert "raw_uri" not in md and run.metadata == {"start": {"uid": first}, "stop": {"exit_status": "success"}}
    assert find_polarization_results(processed, first) == [key] == find_polarization_results(processed, second)
    assert find_results(processed, first, kind="polarization") == [key]
    ds = processed[key].read()
    assert ds["magnitude_c_per_m2"].dims == ("row", "col") and ds["variant_label"].dims == ("row", "col")
    np.testing.assert_allclose(ds["col"].values, (np.arange(5) - 2) * 50e-9)
    assert ds["n_equivalent"].attrs["units"] == "1" and ds["branch_gap_j_per_m3"].attrs["units"] == "J/m^3"
    with pytest.raises(ValueError, match="raw run given is"):
        publish_polarization(processed, second, maps, raw_run=run)
