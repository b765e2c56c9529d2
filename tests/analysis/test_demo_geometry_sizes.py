"""``pxm demo --geometry NAME`` takes the sizes ``--roi``, ``--raster``, ``--angles`` (issue 19: larger runs)."""

import pytest

from pxm.cli import _general_demo_sizes, build_parser, main
from pxm.geometry_demo import GeneralDemoOptions


def _args(*argv: str):
    return build_parser().parse_args(["demo", "--geometry", "asymmetric-out-of-plane", *argv])


def test_sizes_reach_the_general_demo_and_defaults_stay_small():
    assert _general_demo_sizes(_args()) == {}
    opts = GeneralDemoOptions(geometry="asymmetric-out-of-plane", **_general_demo_sizes(_args()))
    assert (opts.roi_px, opts.n_raster, opts.n_angles) == (20, 3, 10)
    big = _general_demo_sizes(_args("--roi", "48", "48", "--raster", "7", "--angles", "12"))
    assert big == {"roi_px": 48, "n_raster": 7, "n_angles": 12}
    opts = GeneralDemoOptions(geometry="asymmetric-out-of-plane", **big)
    assert (opts.roi_px, opts.n_raster, opts.n_angles) == (48, 7, 12)


def test_a_rectangular_crop_is_refused_in_one_line(tmp_path, capsys):
    code = main(["demo", "--geometry", "asymmetric-out-of-plane", "--roi", "20", "24", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and "--roi 20 24" in err and "equal ROWS and COLS" in err
    with pytest.raises(ValueError, match="n_raster"):
        GeneralDemoOptions(geometry="asymmetric-out-of-plane", **_general_demo_sizes(_args("--raster", "0")))
