"""Per-frame validity (frames not yet measured are left free, seed Eq 13 with ω = 0) and
``Reconstruction.update_frames`` (new data enters a running reconstruction)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.bragg.engine import Recipe, Reconstruction, SupportSchedule
from testing.bragg_problem import engine_inputs, make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem(upsampling=1, n_side=3, seed=4)


def _inputs(p):
    return engine_inputs(p, with_object_shape=True)


def _recipe(n_ml: int = 0) -> Recipe:
    sched = SupportSchedule(thickness_schedule_m=((0, 0.55e-6),), shrinkwrap_start_iter=None)
    return Recipe(n_epie_iterations=4, n_ml_iterations=n_ml, support=sched)


def test_frame_valid_per_angle_equals_the_detector_mask(problem):
    """Invalid (POS, ANGLE) frames for every position ≡ masking those angles for all (ePIE and ML)."""
    kw = _inputs(problem)
    n_pos, n_ang = kw["frames"].shape[:2]
    off = np.arange(n_ang) % 3 == 1
    masked = dict(kw, mask=kw["mask"] & ~off[:, None, None])
    ref = Reconstruction(**masked, recipe=_recipe(2)).iterate(6).result()
    fv = np.broadcast_to(~off[None, :], (n_pos, n_ang)).copy()
    frames = kw["frames"].copy()
    frames[:, off] = np.nan                                       # not measured: any content
    got = Reconstruction(**dict(kw, frames=frames), frame_valid=fv, recipe=_recipe(2)).iterate(6).result()
    np.testing.assert_allclose(got.object, ref.object, rtol=0, atol=1e-4 * np.abs(ref.object).max())
    np.testing.assert_allclose(got.probe, ref.probe, rtol=0, atol=1e-4 * np.abs(ref.probe).max())
    np.testing.assert_allclose(got.costs, ref.costs, rtol=1e-4)
    pix = np.broadcast_to(fv[:, :, None, None], kw["frames"].shape).copy()
    got4 = Reconstruction(**dict(kw, frames=frames), frame_valid=pix, recipe=_recipe(2)).iterate(6).result()
    np.testing.assert_allclose(got4.object, got.object, rtol=0, atol=1e-5 * np.abs(ref.object).max())


def test_invalid_frames_are_left_free(problem):
    """Content of invalid frames (here one whole position and a few pixels) never matters."""
    kw = _inputs(problem)
    fv = np.ones(kw["frames"].shape, bool)
    fv[2] = False
    fv[0, 1, :4, :4] = False
    a, b = kw["frames"].copy(), kw["frames"].copy()
    a[~fv] = 0.0
    b[~fv] = 1e9
    ra = Reconstruction(**dict(kw, frames=a), frame_valid=fv, recipe=_recipe()).iterate(3).result()
    rb = Reconstruction(**dict(kw, frames=b), frame_valid=fv, recipe=_recipe()).iterate(3).result()
    np.testing.assert_array_equal(ra.object, rb.object)
    np.testing.assert_array_equal(ra.background, rb.background)
    with pytest.raises(ValueError, match="frame_valid: shape"):
        Reconstruction(**kw, frame_valid=fv[:, :1], recipe=_recipe())
    with pytest.raises(ValueError, match="frame_valid: dtype"):
        Reconstruction(**kw, frame_valid=fv.astype(np.uint8), recipe=_recipe())


def test_update_frames_carries_the_state_over(problem):
    kw = _inputs(problem)
    n_pos, n_ang = kw["frames"].shape[:2]
    fv = np.zeros((n_pos, n_ang), bool)
    fv[:, : n_ang // 2] = True
    rec = Reconstruction(**kw, frame_valid=fv, recipe=_recipe()).iterate(2)
    obj, probe = rec.result().object, rec.result().probe
    rec.update_frames(kw["frames"])                               # the rest of the scan arrived
    np.testing.assert_array_equal(rec.result().object, obj)
    np.testing.assert_array_equal(rec.result().probe, probe)
    assert rec.data.frame_valid is None and rec.iteration == 2
    rec.iterate(2)
    res = rec.result()
    assert res.iterations == 4 and len(res.costs) == 4 and np.all(np.isfinite(res.object))
    assert not np.array_equal(res.object, obj)
    with pytest.raises(ValueError, match="update_frames"):
        rec.update_frames(kw["frames"][:-1])


def test_add_frames_with_validity(problem):
    kw = _inputs(problem)
    n0 = 5
    rec = Reconstruction(**dict(kw, frames=kw["frames"][:n0], stage_xyz_m=kw["stage_xyz_m"][:n0]),
                         recipe=_recipe()).iterate(1)
    fv = np.ones(kw["frames"][n0:].shape[:2], bool)
    fv[0] = False
    rec.add_frames(kw["frames"][n0:], kw["stage_xyz_m"][n0:], frame_valid=fv)
    assert rec.data.frame_valid.shape == kw["frames"].shape[:2]
    assert not rec.data.has_data(n0) and rec.data.has_data(n0 + 1) and rec.data.has_data(0)
    rec.iterate(2)
    assert np.all(np.isfinite(rec.result().object))
