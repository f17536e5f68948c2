"""Camera keyframes and their interpolation, as pure functions (no Qt), for scenes and recordings.

The view direction is interpolated spherically (slerp of the unit vectors that azimuth and elevation define,
so a move through azimuth 360 -> 0 takes the short way), the distance logarithmically (a zoom feels uniform),
the centre linearly, all with an easing of the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EASINGS = ("linear", "ease-in-out", "ease-in", "ease-out")


@dataclass(frozen=True)
class Camera:
    azimuth: float = -60.0  # degrees
    elevation: float = 28.0  # degrees, in (-90, 90)
    distance: float = 10.0  # > 0
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)


def ease(t: float, kind: str = "ease-in-out") -> float:
    """Monotone easing of t in [0, 1] with ease(0) = 0 and ease(1) = 1 exactly."""
    if kind not in EASINGS:
        raise ValueError(f"unknown easing '{kind}'; choose one of {', '.join(EASINGS)}")
    t = min(1.0, max(0.0, float(t)))
    if kind == "linear":
        return t
    if kind == "ease-in":
        return t * t * t
    if kind == "ease-out":
        return 1.0 - (1.0 - t) ** 3
    return t * t * (3.0 - 2.0 * t)


def _unit(az: float, el: float) -> tuple[float, float, float]:
    a, e = math.radians(az), math.radians(el)
    return (math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e))


def _angles(v: tuple[float, float, float]) -> tuple[float, float]:
    x, y, z = v
    return math.degrees(math.atan2(y, x)), math.degrees(math.asin(max(-1.0, min(1.0, z))))


def slerp(u, v, t: float):
    dot = max(-1.0, min(1.0, sum(a * b for a, b in zip(u, v))))
    omega = math.acos(dot)
    if omega < 1e-9:
        return u
    s = math.sin(omega)
    w0, w1 = math.sin((1 - t) * omega) / s, math.sin(t * omega) / s
    return tuple(w0 * a + w1 * b for a, b in zip(u, v))


def interpolate(k0: Camera, k1: Camera, t: float, easing: str = "ease-in-out") -> Camera:
    """The camera a fraction t of the way from k0 to k1; exactly k0 at t = 0 and k1 at t = 1."""
    if t <= 0.0:
        return k0
    if t >= 1.0:
        return k1
    s = ease(t, easing)
    az, el = _angles(slerp(_unit(k0.azimuth, k0.elevation), _unit(k1.azimuth, k1.elevation), s))
    # keep the azimuth continuous with k0's winding (so 350 -> 370 rather than a jump back to 10)
    az += 360.0 * round((k0.azimuth + s * _short(k0.azimuth, k1.azimuth) - az) / 360.0)
    dist = math.exp((1 - s) * math.log(k0.distance) + s * math.log(k1.distance))
    center = tuple((1 - s) * a + s * b for a, b in zip(k0.center, k1.center))
    return Camera(az, el, dist, center)


def _short(a0: float, a1: float) -> float:
    """The signed shortest turn from azimuth a0 to a1, in (-180, 180]."""
    d = (a1 - a0) % 360.0
    return d - 360.0 if d > 180.0 else d


def camera_at(keys: list[tuple[float, Camera]], time: float, easing: str = "ease-in-out") -> Camera:
    """The camera at ``time`` on a timeline of (time, keyframe) pairs sorted by time."""
    if not keys:
        return Camera()
    if time <= keys[0][0]:
        return keys[0][1]
    for (t0, c0), (t1, c1) in zip(keys, keys[1:]):
        if time <= t1:
            return interpolate(c0, c1, (time - t0) / (t1 - t0) if t1 > t0 else 1.0, easing)
    return keys[-1][1]
