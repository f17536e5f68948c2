"""Walks on and slices through the solution manifold of an MLP 1-h-1 (THEORY.md section 1), float64."""

import numpy as np
import pytest

from models import netmanifold as nm


@pytest.fixture(scope="module")
def problem():
    net = nm.MLP1D(8)
    x, y = nm.make_data(10)
    w = nm.find_solution(net, x, y, seed=0)
    return net, x, y, w


def test_solution_and_walk_samples_fit_exactly(problem):
    net, x, y, w = problem
    assert nm.loss(net, w, x, y) < 1e-20
    gen = nm.walk(net, x, y, w, steps=25, step_size=0.1, seed=1)
    samples = list(gen)
    assert len(samples) == 26
    assert max(s.loss for s in samples) < 1e-10
    # the walk really moves along M
    assert np.linalg.norm(samples[-1].w - samples[0].w) > 0.3


def test_tangent_dimension_is_p_minus_n(problem):
    net, x, y, w = problem
    p, n = net.n_params, len(x)
    j = nm.jacobian(net, w, x)
    assert j.shape == (n, p)
    assert nm.tangent_dimension(j) == p - n


def test_loss_rises_between_two_solutions(problem):
    net, x, y, w = problem
    w2 = nm.find_solution(net, x, y, seed=5)
    assert np.linalg.norm(w2 - w) > 0.1
    t, lv = nm.segment_loss(net, x, y, w, w2)
    assert lv[0] < 1e-20 and lv[-1] < 1e-20
    assert lv.max() > 1e-4  # not convex across the manifold


def test_slice_is_vectorized_and_zero_at_its_centre(problem):
    net, x, y, w = problem
    d1, d2 = nm.random_plane(net.n_params, seed=3)
    assert abs(d1 @ d2) < 1e-12 and abs(np.linalg.norm(d1) - 1) < 1e-12
    t, grid = nm.slice_loss(net, x, y, w, d1, d2, 1.0, 41)
    assert grid.shape == (41, 41) and grid[20, 20] < 1e-20
    a, b = t[7], t[30]
    assert grid[7, 30] == pytest.approx(float(nm.loss(net, w + a * d1 + b * d2, x, y)), rel=1e-12)


def test_singular_jacobian_stops_the_walk_with_a_reason():
    net = nm.MLP1D(3)
    x, y = nm.make_data(4)
    # all hidden units identical and a = 0: the Jacobian's columns collapse, rank < n
    w = np.concatenate([np.zeros(3), np.zeros(3), np.ones(3), [0.0]])
    with pytest.raises(nm.SingularJacobian, match="lost rank"):
        nm.project(net, w, x, y)
    gen = nm.walk(net, x, y, w, steps=5)
    next(gen)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert "lost rank" in stop.value.value or "singular" in stop.value.value.lower()


def test_pca_coordinates(problem):
    net, x, y, w = problem
    samples = np.array([s.w for s in nm.walk(net, x, y, w, steps=15, step_size=0.1, seed=2)])
    coords, var = nm.pca3(samples)
    assert coords.shape == (16, 3) and 0.0 < var[0] <= 1.0 and var[0] >= var[1] >= var[2]
