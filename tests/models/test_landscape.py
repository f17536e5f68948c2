"""Random-direction loss surfaces (THEORY.md section 6): directions, batched grids, PCA planes."""

import numpy as np
import pytest
import torch

from models import directions as dr
from models import landscape as ls
from models.nets import MLP, MLPSpec, bce_loss, make_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/models/conftest.py

SPECS = [
    MLPSpec(hidden=(16, 16), activation="tanh"),
    MLPSpec(hidden=(12, 12, 12), activation="relu", residual=True),
    MLPSpec(hidden=(20,), activation="gelu", parameterization="ntk"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.activation}-{s.parameterization}-res{s.residual}")
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_batched_grid_equals_the_per_point_loop(spec, dtype, tol):
    x, y = make_data("spirals", 300, seed=1)
    x, y = x.to(dtype), y.to(dtype)
    net = MLP(spec, seed=2).to(dtype)
    center = dr.params_of(net)
    d1 = dr.random_direction(net, 3)
    d2 = dr.random_direction(net, 4)
    t = np.linspace(-1, 1, 7)
    fast = ls.grid_mlp(net, x, y, bce_loss, center, d1, d2, t, t, chunk=5)
    slow = ls.grid_loop(net, x, y, bce_loss, center, d1, d2, t, t)
    assert np.allclose(fast, slow, rtol=tol, atol=tol)
    # the centre of the grid is the trained model itself
    with torch.no_grad():
        assert fast[3, 3] == pytest.approx(float(bce_loss(net(x), y)), rel=tol)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.activation}-{s.parameterization}-res{s.residual}")
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_cpu_grid_on_worker_threads_equals_the_loop_point_for_point(spec, workers):
    """The CPU path (parameters formed by one product, numpy's tanh, runs of points over worker threads) in
    float32: every point where the loop puts it, to 1e-6, on a grid whose axes differ so a transposed or shuffled
    result shows; 10 x 9 points cut into runs that do not divide evenly among the workers."""
    x, y = make_data("spirals", 200, seed=1)
    net = MLP(spec, seed=2)
    center, d1, d2 = dr.params_of(net), dr.random_direction(net, 3), dr.random_direction(net, 4)
    alphas, betas = np.linspace(-1, 0.8, 10), np.linspace(-0.3, 1.2, 9)
    slow = ls.grid_loop(net, x, y, bce_loss, center, d1, d2, alphas, betas)
    aa, bb = np.meshgrid(alphas, betas, indexing="ij")
    before = [p.detach().clone() for p in net.parameters()]
    fast = ls._points_cpu(net, x, y, bce_loss, center, d1, d2, aa.ravel(), bb.ravel(), workers=workers)
    assert np.abs(fast.reshape(aa.shape) - slow).max() < 1e-6
    assert np.abs(ls.grid_mlp(net, x, y, bce_loss, center, d1, d2, alphas, betas) - slow).max() < 1e-6
    assert torch.get_num_threads() == 1  # the fixture's count, restored after the workers ran single-threaded
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))  # the model is left as it was


def test_a_cpu_grid_over_the_memory_cap_is_refused_before_allocating():
    from models.limits import LimitError

    net = MLP(MLPSpec(hidden=(16,)), seed=0)
    c, d1, d2 = dr.params_of(net), dr.random_direction(net, 1), dr.random_direction(net, 2)
    x = torch.zeros(1, 2).expand(10**9, 2)  # a billion points that take no memory: only the check sees them
    y = torch.zeros(1).expand(10**9)
    with pytest.raises(LimitError, match="the loss grid of an MLP 2x16x1 on 1000000000 points would need"):
        ls.grid_mlp(net, x, y, bce_loss, c, d1, d2, np.zeros(3), np.zeros(3))


@pytest.mark.parametrize("name", ["tanh", "relu", "gelu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_the_in_place_activation_matches_torchs(name, dtype):
    z = (torch.linspace(-9, 9, 4001, dtype=torch.float64) ** 3 / 81).to(dtype)  # dense near 0, out to +-9
    want = ls.ACTIVATIONS[name](z.double())
    got = ls._activation_inplace(name)(z)
    tol = {torch.float32: 2e-7, torch.float64: 1e-15, torch.bfloat16: 1e-2}[dtype]
    assert got.dtype == dtype and float((got.double() - want).abs().max()) <= tol * max(1.0, float(want.abs().max()))
    if name != "gelu":
        assert got.data_ptr() == z.data_ptr()  # in place: no new tensor per layer


def test_filter_normalized_rows_and_zero_biases():
    net = MLP(MLPSpec(hidden=(32, 16)), seed=0)
    d = dr.random_direction(net, seed=7)
    for p, u in zip(net.parameters(), d):
        if p.dim() == 1:
            assert torch.all(u == 0)
        else:
            assert torch.allclose(u.norm(dim=1), p.detach().norm(dim=1), rtol=1e-6)
    with_bias = dr.random_direction(net, seed=7, include_bias=True)
    b = [u for p, u in zip(net.parameters(), with_bias) if p.dim() == 1]
    assert all(float(u.norm()) > 0 for u in b)
    # same seed, same plane; another seed, another
    assert all(torch.equal(u, v) for u, v in zip(d, dr.random_direction(net, seed=7)))
    assert not torch.equal(d[0], dr.random_direction(net, seed=8)[0])


def test_orthogonalized_directions_have_zero_cosine():
    net = MLP(MLPSpec(hidden=(16,)), seed=0)
    d1, d2 = dr.random_direction(net, 1), dr.random_direction(net, 2)
    assert abs(dr.cosine(d1, d2)) < 0.5
    assert abs(dr.cosine(d1, dr.orthogonalize(d1, d2))) < 1e-6  # float32 parameters


def test_pca_directions_orthonormal_and_projection_lifts_back():
    rng = np.random.default_rng(0)
    final = rng.normal(size=50)
    path = final + np.cumsum(rng.normal(size=(40, 50)) * np.linspace(1, 0.1, 50), axis=0)[::-1]
    d1, d2, var = dr.pca_directions(path, final)
    assert abs(d1 @ d1 - 1) < 1e-12 and abs(d2 @ d2 - 1) < 1e-12 and abs(d1 @ d2) < 1e-12
    assert var[0] >= var[1] > 0
    coords = dr.project(path, final, d1, d2)
    lifted = dr.lift(coords, final, d1, d2)
    in_plane = final + ((path - final) @ d1)[:, None] * d1 + ((path - final) @ d2)[:, None] * d2
    assert np.allclose(lifted, in_plane, atol=1e-10)
    assert np.allclose(dr.distance_to_plane(path, final, d1, d2), np.linalg.norm(path - in_plane, axis=1))
    assert np.allclose(dr.align(-d1, d1), d1)


def test_filter_normalization_makes_the_surface_scale_invariant():
    """A ReLU net with layer 1 scaled by 10 and layer 2 by 1/10 computes the same function; the filter-normalized
    surface is the same, the raw Gaussian one is not."""
    x, y = make_data("moons", 300, seed=0)
    x, y = x.double(), y.double()
    spec = MLPSpec(hidden=(16,), activation="relu")
    net = MLP(spec, seed=0).double()
    scaled = MLP(spec, seed=0).double()
    with torch.no_grad():
        scaled.layers[0].weight.mul_(10)
        scaled.layers[0].bias.mul_(10)
        scaled.layers[1].weight.div_(10)
        assert torch.allclose(net(x), scaled(x))
    t = np.linspace(-1, 1, 9)

    def surface(model, normalize):
        c = dr.params_of(model)
        return ls.grid_mlp(model, x, y, bce_loss, c, dr.random_direction(model, 1, normalize),
                           dr.random_direction(model, 2, normalize), t, t)

    assert np.allclose(surface(net, "filter"), surface(scaled, "filter"), rtol=1e-9)
    assert not np.allclose(surface(net, None), surface(scaled, None), rtol=1e-3)


def test_progressive_refinement_computes_each_point_once_and_matches():
    x, y = make_data("xor", 200, seed=0)
    net = MLP(MLPSpec(hidden=(8, 8)), seed=0).double()
    x, y = x.double(), y.double()
    c, d1, d2 = dr.params_of(net), dr.random_direction(net, 1), dr.random_direction(net, 2)
    t = np.linspace(-1, 1, 17)
    levels = list(ls.progressive(net, x, y, bce_loss, c, d1, d2, t, t))
    assert [st for st, _ in levels] == [8, 4, 2, 1]
    assert np.isnan(levels[0][1]).sum() == 17 * 17 - 9
    full = ls.grid_mlp(net, x, y, bce_loss, c, d1, d2, t, t)
    assert np.allclose(levels[-1][1], full, atol=1e-12)


@pytest.mark.parametrize("name", ["spirals", "moons", "circles", "xor", "blobs"])
def test_data_sets_are_balanced_and_seeded(name):
    x, y = make_data(name, 500, seed=3)
    assert x.shape == (500, 2) and set(np.unique(y.numpy())) == {0.0, 1.0}
    assert abs(float(y.mean()) - 0.5) < 0.05
    assert torch.equal(x, make_data(name, 500, seed=3)[0])
    with pytest.raises(ValueError, match="unknown data set"):
        make_data("mnist")


def test_live_pca_planes_keep_their_orientation():
    rng = np.random.default_rng(1)
    u_old, v_old = np.linalg.qr(rng.normal(size=(30, 2)))[0].T
    # the next plane comes back swapped and mirrored, slightly rotated
    u_new, v_new = -v_old + 0.01 * rng.normal(size=30), u_old + 0.01 * rng.normal(size=30)
    u, v = dr.align_pair(u_new, v_new, u_old, v_old)
    assert u @ u_old > 0.9 and v @ v_old > 0.9


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_cnn_on_digits_batched_grid_equals_the_loop(dtype, tol):
    from models.nets import SmallCNN, ce_loss

    x, y = make_data("digits", 200, seed=0)
    x = x.to(dtype)
    cnn = SmallCNN(seed=0).to(dtype)
    c, d1, d2 = dr.params_of(cnn), dr.random_direction(cnn, 1), dr.random_direction(cnn, 2)
    # conv filters: every output channel of the direction has its filter's norm
    for p, u in zip(cnn.parameters(), d1):
        if p.dim() == 4:
            assert torch.allclose(u.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1), rtol=1e-5)
    t = np.linspace(-1, 1, 5)
    fast = ls.grid_model(cnn, x, y, ce_loss, c, d1, d2, t, t)
    slow = ls.grid_loop(cnn, x, y, ce_loss, c, d1, d2, t, t)
    assert np.allclose(fast, slow, rtol=tol, atol=tol)
    assert x.shape == (200, 64) and y.dtype == torch.long and int(y.max()) == 9


def test_the_memory_estimate_grows_with_each_part_of_a_request():
    from models import nets
    from models.limits import MEMORY_CAP_BYTES

    base = nets.estimate_bytes(2000, 2, (64, 64), grid=41)
    assert 0 < base < MEMORY_CAP_BYTES / 10  # the CLI's default job is far from the cap
    for bigger in (dict(n_points=4000), dict(hidden=(128, 128)), dict(hidden=(64, 64, 64)), dict(grid=401),
                   dict(checkpoints=31), dict(checkpoints=31, pca=True)):
        kw = {**dict(n_points=2000, in_dim=2, hidden=(64, 64), grid=41), **bigger}
        assert nets.estimate_bytes(**kw) > base, bigger
    assert nets.check_request(2000, 2, (64, 64), grid=41) == base
    cnn = nets.estimate_bytes(1797, 64, (), 10, network="cnn", grid=41)
    assert 0 < cnn < MEMORY_CAP_BYTES / 4


def test_check_request_refuses_with_the_largest_sizes_that_fit():
    from models import nets
    from models.limits import MEMORY_CAP_BYTES, LimitError

    with pytest.raises(LimitError, match="limit") as info:
        nets.check_request(10**8, 2, (64, 64), grid=41)
    n = int(str(info.value).split("at most ")[1].split(" data points")[0])
    assert nets.estimate_bytes(n, 2, (64, 64), grid=41) <= MEMORY_CAP_BYTES < nets.estimate_bytes(n + 1, 2, (64, 64),
                                                                                                   grid=41)
    nets.check_request(n, 2, (64, 64), grid=41)  # the size it names fits
    with pytest.raises(LimitError) as info:
        nets.check_request(2000, 2, (30000, 30000), grid=41, what="the surface lab's network")
    msg = str(info.value)
    assert msg.startswith("the surface lab's network would need") and "data points" not in msg  # 2 points: too big
    w = int(msg.split("at most ")[1].split(" units")[0])
    nets.check_request(2000, 2, (w, w), grid=41)
    with pytest.raises(LimitError):
        nets.check_request(2000, 2, (w + 1, w + 1), grid=41)


def test_data_sets_and_mlps_over_the_memory_cap_are_refused_before_allocating():
    from models.limits import LimitError

    with pytest.raises(LimitError, match="at most .* points"):
        make_data("spirals", 10**12)
    with pytest.raises(LimitError, match="at most .* units"):
        MLP(MLPSpec(hidden=(10**6, 10**6)))


def test_a_batched_chunk_budgets_each_points_copy_of_the_weights():
    # a wide layer and few data points: the chunk is sized by the weights each point needs, not the data alone
    numel = 1024 * 1024
    chunk = ls._chunk_size(4, 1024, 4, layer_numel=numel)
    assert chunk * 3 * numel * 4 <= 2.5e8 and chunk >= 1
    assert ls._chunk_size(2000, 64, 4) == ls._chunk_size(2000, 64, 4, layer_numel=0)  # as before without it
