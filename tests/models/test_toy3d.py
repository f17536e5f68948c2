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
                                             "cpu", 0))
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
