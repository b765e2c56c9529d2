import numpy as np
import pytest

from plans.patterns import archimedean_spiral_um, raster_positions_um, rocking_angles_deg


def test_raster_shape_order_and_centre():
    pos = raster_positions_um(3, 2, 0.5, centre_um=(1.0, -1.0))
    assert pos.shape == (6, 2)
    np.testing.assert_allclose(pos[:3, 0], [0.5, 1.0, 1.5])      # x fastest
    np.testing.assert_allclose(pos[:3, 1], [-1.25] * 3)
    np.testing.assert_allclose(pos.mean(axis=0), [1.0, -1.0])


def test_raster_jitter_seeded_and_bounded():
    a = raster_positions_um(4, 4, 1.0, jitter_fraction=0.2, seed=3)
    b = raster_positions_um(4, 4, 1.0, jitter_fraction=0.2, seed=3)
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - raster_positions_um(4, 4, 1.0))) <= 0.2


def test_spiral_spacing():
    pos = archimedean_spiral_um(200, 0.3)
    assert pos.shape == (200, 2)
    np.testing.assert_array_equal(pos[0], [0.0, 0.0])
    d = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert np.all(np.abs(d[20:] - 0.3) < 0.03)


def test_rocking_angles():
    np.testing.assert_allclose(rocking_angles_deg(43.9, 0.01, 3), [43.89, 43.9, 43.91])


@pytest.mark.parametrize("call, match", [
    (lambda: rocking_angles_deg(43.9, 0.0, 9), "non-zero"),
    (lambda: rocking_angles_deg(43.9, 0.01, 0), ">= 1"),
    (lambda: raster_positions_um(3, 3, 0.0), "non-zero"),
    (lambda: raster_positions_um(3, 3, 1.0, jitter_fraction=0.7), "jitter_fraction"),
    (lambda: archimedean_spiral_um(0, 1.0), ">= 1"),
])
def test_bad_pattern_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
