"""Keyframe interpolation as pure functions (no Qt)."""

import numpy as np
import pytest

from visualizer.recording.keyframes import EASINGS, Camera, camera_at, ease, interpolate


@pytest.mark.parametrize("kind", EASINGS)
def test_easing_hits_endpoints_and_is_monotone(kind):
    assert ease(0.0, kind) == 0.0 and ease(1.0, kind) == 1.0
    v = [ease(t, kind) for t in np.linspace(0, 1, 201)]
    assert all(b >= a for a, b in zip(v, v[1:]))


def test_endpoints_exact_and_distance_logarithmic():
    a = Camera(10, 20, 2.0, (0, 0, 0))
    b = Camera(80, 40, 32.0, (1, 2, 3))
    assert interpolate(a, b, 0.0) == a and interpolate(a, b, 1.0) == b
    mid = interpolate(a, b, 0.5, "linear")
    assert mid.distance == pytest.approx(8.0)  # geometric mean, not 17
    assert mid.center == pytest.approx((0.5, 1.0, 1.5))


def test_no_flip_when_the_azimuth_wraps():
    a, b = Camera(350, 10, 5), Camera(10, 10, 5)
    az = [interpolate(a, b, t, "linear").azimuth for t in np.linspace(0, 1, 41)]
    turn = np.degrees(np.unwrap(np.radians(az)))  # the direction the camera actually looks from
    steps = np.diff(turn)
    assert np.all(steps > 0) and np.all(steps < 1.0)  # a 20 degree turn through 0, never the long way round
    assert turn[-1] - turn[0] == pytest.approx(20.0)
    assert az[-1] == 10  # the endpoint is the keyframe itself


def test_timeline():
    keys = [(0.0, Camera(0, 10, 4)), (2.0, Camera(90, 10, 4)), (3.0, Camera(90, 60, 8))]
    assert camera_at(keys, -1) == keys[0][1] and camera_at(keys, 5) == keys[-1][1]
    assert camera_at(keys, 2.0) == keys[1][1]
    assert 0 < camera_at(keys, 1.0).azimuth < 90
