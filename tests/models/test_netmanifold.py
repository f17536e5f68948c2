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


def test_slice_resolution_is_checked_before_anything_is_allocated():
    import tracemalloc

    from models.toy2d import GridTooLargeError

    net = nm.MLP1D(1)
    x, y = nm.make_data(1)
    w = np.zeros(net.n_params)
    d1, d2 = nm.random_plane(net.n_params)
    tracemalloc.start()
    try:
        with pytest.raises(GridTooLargeError, match="at most 1024 x 1024"):
            nm.slice_loss(net, x, y, w, d1, d2, 1.0, 5000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1e6
    assert issubclass(GridTooLargeError, ValueError)
    for bad in (1, 0, -3, 2.5):
        with pytest.raises(ValueError, match="resolution"):
            nm.slice_loss(net, x, y, w, d1, d2, 1.0, bad)
    with pytest.raises(ValueError, match="extent"):
        nm.slice_loss(net, x, y, w, d1, d2, float("nan"), 11)


def test_largest_slice_stays_within_its_memory_budget():
    """At the cap a wide net's slice is computed in row blocks, so its working memory stays bounded (torch's CPU
    allocations are invisible to tracemalloc: measure the peak resident size of a fresh process instead)."""
    code = (
        "import resource, numpy as np\n"
        "from models import netmanifold as nm\n"
        "net = nm.MLP1D(16); x, y = nm.make_data(12); w = net.init(0)\n"
        "d1, d2 = nm.random_plane(net.n_params, seed=1)\n"
        "nm.slice_loss(net, x, y, w, d1, d2, 1.0, 8)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t, grid = nm.slice_loss(net, x, y, w, d1, d2, 1.0, 1024)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "i, j = 100, 900\n"
        "ref = float(nm.loss(net, w + t[i] * d1 + t[j] * d2, x, y))\n"
        "assert grid.shape == (1024, 1024) and np.isfinite(grid).all()\n"
        "assert abs(grid[i, j] - ref) <= 1e-12 * abs(ref), (grid[i, j], ref)\n"
        "print((after - before) * 1024)\n"
    )
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert r.returncode == 0, r.stderr
    grown = float(r.stdout.split()[-1])
    assert grown < 4e8, f"the slice's peak memory grew by {grown / 1e9:.2f} GB"


# (h, n, seed) where the undamped Gauss-Newton search gave up ("DF(w) lost rank") from all ten starts although a
# well-conditioned solution exists: Levenberg-Marquardt finds it
@pytest.mark.parametrize("h, n, seed", [(16, 16, 0), (16, 16, 1), (16, 18, 0), (16, 18, 2), (16, 32, 0), (8, 10, 1),
                                        (8, 10, 2), (8, 16, 0), (8, 16, 1), (4, 10, 0)])
def test_damped_search_finds_a_verified_well_conditioned_solution(h, n, seed):
    import torch

    net = nm.MLP1D(h)
    x, y = nm.make_data(n, seed)
    w = nm.find_solution(net, x, y, seed)
    # verified independently of the solver: a fresh forward pass
    with torch.no_grad():
        r = (net.forward(torch.as_tensor(w), torch.as_tensor(x)) - torch.as_tensor(y)).numpy()
    assert np.linalg.norm(r) < 1e-10
    j = nm.jacobian(net, w, x)
    assert np.linalg.cond(j) < 1e6  # DF has full rank n there: M is a (p - n)-manifold around w
    assert nm.tangent_dimension(j) == net.n_params - n
    # and the walk can start from it
    samples = list(nm.walk(net, x, y, w, steps=3, step_size=0.05, seed=seed))
    assert len(samples) == 4 and max(s.loss for s in samples) < 1e-16


def test_contradictory_data_report_that_no_solution_was_found():
    net = nm.MLP1D(6)
    x = np.array([-1.0, 0.5, 0.5, 1.5])
    y = np.array([0.2, 1.0, -1.0, 0.3])  # the same x with two different y: F(w) = y has no solution
    with pytest.raises(nm.NoSolutionFound, match=r"no solution of F\(w\) = y found .* from 3 initializations") as err:
        nm.find_solution(net, x, y, seed=0, restarts=3)
    # the best residual it reports cannot beat the exact lower bound |y1 - y2| / sqrt(2)
    best = float(str(err.value).split("reached was ")[1].split(";")[0])
    assert best >= round(np.sqrt(2.0), 2)  # printed to 4 significant digits
    assert isinstance(err.value, RuntimeError)
    with pytest.raises(nm.NoSolutionFound, match="more equations than parameters"):
        nm.find_solution(nm.MLP1D(1), *nm.make_data(6), restarts=2)


def test_closed_form_jacobian_matches_autograd():
    import torch

    g = np.random.default_rng(4)
    for h, n in ((1, 1), (3, 5), (16, 40)):
        net = nm.MLP1D(h)
        x = g.uniform(-2, 2, n)
        w = g.normal(0, 2, net.n_params)
        auto = torch.func.jacrev(lambda p, net=net, x=x: net.forward(p, torch.as_tensor(x)))(torch.as_tensor(w))
        auto = auto.numpy()
        assert nm.jacobian(net, w, x).shape == (n, net.n_params)
        assert np.allclose(nm.jacobian(net, w, x), auto, rtol=1e-12, atol=1e-14)


def test_numpy_outputs_match_the_torch_network():
    import torch

    net = nm.MLP1D(5)
    g = np.random.default_rng(7)
    x = g.uniform(-2, 2, 9)
    w = g.normal(0, 1.5, (4, 3, net.n_params))
    with torch.no_grad():
        want = net.forward(torch.as_tensor(w), torch.as_tensor(x)).numpy()
    assert nm.outputs(net, w, x).shape == (4, 3, 9)
    assert np.allclose(nm.outputs(net, w, x), want, rtol=1e-13, atol=1e-15)


def test_search_time_limit_gives_up_honestly():
    import time

    net = nm.MLP1D(16)
    x, y = nm.make_data(48, 0)  # n = p - 1 here: no start converges
    t = time.monotonic()
    with pytest.raises(nm.NoSolutionFound, match=r"initializations \(gave up after 0.3 s\)"):
        nm.find_solution(net, x, y, 0, max_seconds=0.3)
    assert time.monotonic() - t < 2.0
