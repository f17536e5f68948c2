"""Three-parameter solution sets against THEORY.md sections 1 and 3, in float64."""

import numpy as np
import pytest
import torch

from models import toy3d
from models.toy2d import Data, GridTooLargeError
from models.train import OptimizerConfig, run_to_end, train


@pytest.mark.parametrize("key", ["tanh", "quadratic", "product"])
def test_one_point_mesh_vertices_lie_on_the_solution_surface(key):
    model, data = toy3d.make_model(key), Data([1.0], [0.5])
    spec = toy3d.GridSpec3(2.5, 48)
    res = toy3d.residual_grid(model, data, spec)
    raw = toy3d.zero_mesh(res[0], spec)
    # unrefined marching cubes: |r| is bounded by the grid spacing times the residual's slope
    slope = max(np.abs(np.gradient(res[0], spec.spacing)).max() for _ in [0])
    assert not raw.empty
    x, y = data.tensors()
    r_raw = (model.forward(torch.as_tensor(raw.vertices), x) - y).abs().numpy()
    assert r_raw.max() <= slope * spec.spacing
    refined = toy3d.zero_mesh(res[0], spec, refine=(model, data, 0))
    assert refined.residual.max() < 1e-10
    assert len(refined.faces) == len(raw.faces)


def test_two_point_curve_satisfies_both_equations_and_lies_on_both_surfaces():
    model, data = toy3d.make_model("tanh"), Data([1.0, -1.0], [0.5, 0.2])
    spec = toy3d.GridSpec3(2.5, 48)
    sol = toy3d.solution_set(model, data, spec)
    assert sol.curves and sum(len(c) for c in sol.curves) > 50
    pts = np.concatenate(sol.curves)
    x, y = data.tensors()
    r = (model.forward(torch.as_tensor(pts), x) - y).abs().numpy()
    assert r.max() < 1e-8
    # each curve point is on (within a grid cell of) each one-point surface mesh
    for mesh in sol.meshes:
        d = np.min(np.linalg.norm(pts[::7, None, :] - mesh.vertices[None, :, :], axis=-1), axis=1)
        assert d.max() < spec.spacing


def test_three_points_linear_model_gives_the_unique_solution():
    model, data = toy3d.make_model("quadratic"), Data([1.0, -1.0, 2.0], [0.5, 0.2, 0.7])
    sol = toy3d.solution_set(model, data, toy3d.GridSpec3(2.5, 40))
    a = np.column_stack([data.x, data.x**2, np.ones(3)])
    want = np.linalg.solve(a, data.y)
    assert sol.points.shape == (1, 3)
    assert np.allclose(sol.points[0], want, atol=1e-10)


def test_linear_model_descent_lands_on_the_projection():
    data = Data([1.0, -0.5], [0.5, 0.3])
    w0 = np.array([[1.5, -1.0, 0.8], [-2.0, 2.0, -1.0]])
    snaps, result = run_to_end(toy3d.descent("quadratic", "", data.x, data.y, w0, "gd", 0.1, 0.9, 1, 50000,
                                             "cpu", 0, scaling="plain"))
    proj = np.array([toy3d.projection_onto_linear_solutions(data, w) for w in w0])
    assert np.max(np.linalg.norm(snaps[-1].params - proj, axis=1)) < 1e-6


def test_lazy_training_moves_less_as_alpha_grows():
    """alpha (f(w) - f(w0)) with loss / alpha^2: the distance travelled shrinks like 1/alpha, and the landing
    point approaches the nearest point of the (scaled) solution set."""
    data = Data([1.0], [0.5])
    w0 = np.array([[0.7, -0.4, 1.2]])
    moved, gaps = [], []
    for alpha in (1.0, 10.0, 100.0):
        snaps, _ = run_to_end(toy3d.descent("tanh", "", data.x, data.y, w0, "gd", 0.05, 0.9, 1, 60000, "cpu", 0,
                                            alpha=alpha))
        w = snaps[-1].params[0]
        assert snaps[-1].loss[0] < 1e-16
        moved.append(np.linalg.norm(w - w0[0]))
        # nearest point of {w : f(w) = f(w0) + y/alpha} from w0, by Gauss-Newton from w0 (min-norm steps)
        model = toy3d.make_model("tanh")
        x = torch.tensor([1.0], dtype=torch.float64)
        f0 = float(model.forward(torch.as_tensor(w0), x)[0, 0])
        target = Data([1.0], [f0 + 0.5 / alpha])
        near, _ = toy3d.correct(model, target, w0, iters=60)
        gaps.append(np.linalg.norm(w - near[0]) / moved[-1])
    assert moved[0] > moved[1] > moved[2]
    assert moved[1] / moved[2] == pytest.approx(10, rel=0.15)
    assert gaps[2] < 0.05 and gaps[2] < gaps[0]


def test_no_solutions_in_view_and_grid_too_fine():
    model, data = toy3d.make_model("custom", "w1**2 + w2**2 + w3**2 + 1"), Data([1.0], [0.0])
    sol = toy3d.solution_set(model, data, toy3d.GridSpec3(2.0, 24))
    assert sol.empty and "no solutions in view" in sol.note
    with pytest.raises(GridTooLargeError, match="GB"):
        toy3d.residual_grid(model, data, toy3d.GridSpec3(2.0, 2000))


def test_expression_in_three_parameters_is_checked():
    from models.expr import ExpressionError

    with pytest.raises(ExpressionError, match="unknown name 'w4'"):
        toy3d.make_model("custom", "w4*x")
    assert toy3d.make_model("custom", "w3*sin(w1*x) + w2").text == "w3*sin(w1*x) + w2"


def test_trainer_three_params_float64():
    model, data = toy3d.make_model("product"), Data([1.0], [0.5])
    x, y = data.tensors()
    snaps, _ = run_to_end(train(lambda w, idx: toy3d.loss(model, w, x, y), [[1.0, 1.0, 1.0]], 1,
                                OptimizerConfig("gd", 0.05), 2000))
    assert snaps[-1].loss[0] < 1e-20 and snaps[-1].params.shape == (1, 3)


def _lazy_distance(alpha: float, **kw) -> tuple[float, float]:
    data = Data([1.0], [0.5])
    w0 = np.array([[0.7, -0.4, 1.2]])
    snaps, _ = run_to_end(toy3d.descent("tanh", "", data.x, data.y, w0, "gd", 0.05, 0.9, 1, 5000, "cpu", 0,
                                        alpha=alpha, **kw))
    return float(np.linalg.norm(snaps[-1].params[0] - w0[0])), float(snaps[-1].loss[0])


def test_lazy_training_is_continuous_across_alpha_one():
    """One formula for every alpha (THEORY.md section 3): alpha = 1 is no special case."""
    d1, loss1 = _lazy_distance(1.0)
    assert loss1 < 1e-20
    for alpha in (1.0 + 1e-9, 1.0 - 1e-9):
        d, _ = _lazy_distance(alpha)
        assert d == pytest.approx(d1, abs=1e-6)
    # and alpha = 1 is the lazy model alpha (f(w) - f(w0)), not f(w) = y
    model = toy3d.make_model("tanh")
    x = torch.tensor([1.0], dtype=torch.float64)
    w0 = torch.tensor([[0.7, -0.4, 1.2]], dtype=torch.float64)
    f0 = model.forward(w0, x)
    assert float(toy3d.loss(model, w0, x, torch.tensor([0.5], dtype=torch.float64), 1.0, f0)[0]) == \
        pytest.approx(0.5 * 0.5**2, rel=1e-12)


def test_lazy_distance_shrinks_like_one_over_alpha():
    """alpha ||w - w0|| tends to the linearized model's ||J^+ y|| = |y| / ||grad f(w0)||."""
    model = toy3d.make_model("tanh")
    w0 = torch.tensor([[0.7, -0.4, 1.2]], dtype=torch.float64)
    j = toy3d.jacobian(model, w0, torch.tensor([1.0], dtype=torch.float64))[0].numpy()
    limit = 0.5 / np.linalg.norm(j)
    scaled = {alpha: alpha * _lazy_distance(alpha)[0] for alpha in (10.0, 100.0, 1000.0)}
    assert scaled[10.0] == pytest.approx(limit, rel=0.15)
    assert scaled[100.0] == pytest.approx(limit, rel=0.02)
    assert scaled[1000.0] == pytest.approx(limit, rel=0.002)
    assert abs(scaled[1000.0] - limit) < abs(scaled[100.0] - limit) < abs(scaled[10.0] - limit)


def test_linear_model_lazy_descent_lands_on_the_shifted_projection():
    """For w1 x + w2 x^2 + w3 the lazy target is X (w - w0) = y / alpha: GD lands on w0 + X^+ y / alpha."""
    data = Data([1.0, -0.5], [0.5, 0.3])
    w0 = np.array([[1.5, -1.0, 0.8], [-2.0, 2.0, -1.0]])
    for alpha in (1.0, 4.0):
        snaps, _ = run_to_end(toy3d.descent("quadratic", "", data.x, data.y, w0, "gd", 0.1, 0.9, 1, 50000, "cpu", 0,
                                            alpha=alpha))
        want = np.array([toy3d.projection_onto_linear_solutions(data, w, alpha=alpha) for w in w0])
        assert np.max(np.linalg.norm(snaps[-1].params - want, axis=1)) < 1e-6


def test_plain_scaling_is_a_separate_choice():
    """scaling='plain' trains f(w) = y itself (the solution set the lab draws); it takes no alpha."""
    data = Data([1.0], [0.5])
    w0 = np.array([[0.7, -0.4, 1.2]])
    snaps, _ = run_to_end(toy3d.descent("tanh", "", data.x, data.y, w0, "gd", 0.05, 0.9, 1, 5000, "cpu", 0,
                                        scaling="plain"))
    model = toy3d.make_model("tanh")
    f = model.forward(torch.as_tensor(snaps[-1].params), torch.tensor([1.0], dtype=torch.float64))
    assert abs(float(f[0, 0]) - 0.5) < 1e-10
    with pytest.raises(ValueError, match="alpha"):
        toy3d.descent("tanh", "", data.x, data.y, w0, "gd", 0.05, 0.9, 1, 10, "cpu", 0, alpha=2.0, scaling="plain")
    with pytest.raises(ValueError, match="scaling"):
        toy3d.descent("tanh", "", data.x, data.y, w0, "gd", 0.05, 0.9, 1, 10, "cpu", 0, scaling="rich")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            toy3d.descent("tanh", "", data.x, data.y, w0, "gd", 0.05, 0.9, 1, 10, "cpu", 0, alpha=bad)
