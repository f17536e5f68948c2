"""Real networks and real data (issue 17): checkpoints read safely, every grid point over a whole data set in
batches (DataLoaders), batch-norm state directions, PCA of a checkpoint folder, and the ResNet-20 example."""

import copy
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models import directions as dr
from models import landscape as ls
from models import limits
from models.nets import MLP, MLPSpec, bce_loss, make_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLE = Path(__file__).resolve().parents[2] / "assets" / "examples" / "resnet20.py"


def bn_net(seed: int = 0) -> nn.Module:
    """Linear, batch norm (running statistics far from the data's batch statistics), ReLU, linear."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        net[1].running_mean.copy_(torch.linspace(-1, 1, 6) + seed)
        net[1].running_var.copy_(torch.linspace(0.5, 3, 6) + seed)
        net[1].num_batches_tracked.fill_(7)
    return net


def class_data(n: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def manual_bn_forward(net: nn.Module, x: torch.Tensor, running_mean: torch.Tensor) -> torch.Tensor:
    """The network's output written out by hand, with batch norm on the given running mean and the module's
    running variance (eval mode: the batch's own statistics are not used)."""
    lin1, bn, lin2 = net[0], net[1], net[3]
    h = x @ lin1.weight.T + lin1.bias
    h = (h - running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    return torch.relu(h) @ lin2.weight.T + lin2.bias


def state_copy(net: nn.Module) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_same_state(net: nn.Module, state: dict) -> None:
    now = net.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert torch.equal(now[k], v), k


# ---- load_checkpoint


@pytest.fixture
def saved(tmp_path):
    """A model and another state of it, with a function that saves any object to a file in tmp_path."""
    net, other = bn_net(0), bn_net(1)

    def save(obj, name="ck.pt"):
        path = tmp_path / name
        torch.save(obj, path)
        return path

    return net, other.state_dict(), save


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model_state_dict", "module_prefix", "old_batch_norm"])
def test_load_checkpoint_reads_the_layouts_in_use(saved, wrap):
    net, state, save = saved
    if wrap == "plain":
        obj = state
    elif wrap == "state_dict":  # the reference's training script
        obj = {"acc": 91.5, "epoch": 3, "state_dict": state}
    elif wrap == "model_state_dict":
        obj = {"epoch": 3, "model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []}}
    elif wrap == "module_prefix":  # saved from a DataParallel
        obj = {"module." + k: v for k, v in state.items()}
    else:  # written before batch norm counted its batches
        obj = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    got = dr.load_checkpoint(save(obj), net)
    assert list(got) == list(net.state_dict())
    for k, v in got.items():
        expect = net.state_dict()[k] if wrap == "old_batch_norm" and k.endswith("num_batches_tracked") else state[k]
        assert torch.equal(v, expect), k
    assert not any(torch.equal(got[k], net.state_dict()[k]) for k in ("0.weight", "1.running_mean"))


def refusal(path, net) -> str:
    with pytest.raises(dr.CheckpointError) as info:
        dr.load_checkpoint(path, net)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_load_checkpoint_refuses_a_checkpoint_of_another_model(saved):
    net, state, save = saved
    msg = refusal(save({k: v for k, v in state.items() if k != "3.bias"}), net)
    assert "lacks the model's '3.bias'" in msg
    msg = refusal(save({**state, "4.weight": torch.zeros(2, 2)}), net)
    assert "has '4.weight' that the model does not" in msg
    msg = refusal(save({**state, "3.weight": torch.zeros(3, 6)}), net)
    assert "'3.weight' has shape (3, 6), the model's (2, 6)" in msg
    msg = refusal(save({**state, "0.bias": torch.full((6,), float("nan"))}), net)
    assert "'0.bias' holds NaN" in msg
    msg = refusal(save({"epoch": 3, "weights": state}), net)
    assert "'epoch', 'weights' are not tensors" in msg
    assert "holds a list" in refusal(save([state]), net)


def test_load_checkpoint_refuses_damaged_and_missing_files(saved, tmp_path):
    net, state, save = saved
    good = save(state).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good[: len(good) // 2])
    assert "corrupt or not a torch.save file" in refusal(cut, net)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert "corrupt or not a torch.save file" in refusal(empty, net)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "not a checkpoint that can be read safely" in refusal(noise, net)
    assert "no such file" in refusal(tmp_path / "absent.pt", net)
    assert "not a file" in refusal(tmp_path, net)


def test_load_checkpoint_refuses_a_file_over_the_memory_limit_before_reading_it(saved, tmp_path):
    net, _, _ = saved
    big = tmp_path / "big.pt"
    with open(big, "wb") as f:  # sparse: no disk used, and zeros that torch.load would call corrupt
        f.truncate(limits.MEMORY_CAP_BYTES + 1)
    assert f"over the {limits.human_bytes(limits.MEMORY_CAP_BYTES)} limit" in refusal(big, net)


class Marker:
    """Unpickling this would create the file named in it: a stand-in for code in a hostile checkpoint."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_load_checkpoint_runs_no_code_from_a_pickle(saved, tmp_path):
    net, state, save = saved
    marker = tmp_path / "code_ran"
    msg = refusal(save({"state_dict": state, "hook": Marker(marker)}), net)
    assert "holds a Python object" in msg and "model.state_dict()" in msg
    whole = refusal(save(net), net)  # a whole pickled model
    assert "holds a Python object" in whole
    plain = tmp_path / "plain.pkl"
    with open(plain, "wb") as f:
        pickle.dump(Marker(marker), f)
    refusal(plain, net)
    assert not marker.exists()
    with open(plain, "rb") as f:  # the same pickle unrestricted does run code: the test's premise holds
        pickle.load(f)
    assert marker.exists()


# ---- evaluate_points


def mlp_problem():
    x, y = make_data("spirals", 120, seed=1)
    net = MLP(MLPSpec(hidden=(12, 12), activation="tanh"), seed=2)
    return net, x, y, dr.params_of(net), dr.random_direction(net, 3), dr.random_direction(net, 4)


def test_evaluate_points_equals_the_grid_loop_and_restores_the_model():
    net, x, y, c, d1, d2 = mlp_problem()
    t, s = np.linspace(-1, 1, 5), np.linspace(-0.5, 1.5, 4)
    expect = ls.grid_loop(net, x, y, bce_loss, c, d1, d2, t, s)
    aa, bb = np.meshgrid(t, s, indexing="ij")
    before = state_copy(net)
    net.train()
    loss, acc = ls.evaluate_points(net, (x, y), bce_loss, c, d1, d2, aa.ravel(), bb.ravel())
    assert np.allclose(loss.reshape(aa.shape), expect, rtol=0, atol=1e-6)
    assert_same_state(net, before)
    assert net.training
    # accuracy: the fraction of points on the right side, computed here at one point of the plane
    k = 7
    with torch.no_grad():
        params = {n: ci + aa.ravel()[k] * u + bb.ravel()[k] * v
                  for (n, _), ci, u, v in zip(net.named_parameters(), c, d1, d2)}
        out = torch.func.functional_call(net, params, (x,)).squeeze(-1)
    assert acc[k] == pytest.approx(float(((out > 0).float() == y).float().mean()), abs=1e-9)
    # 1D: d2 None, b ignored
    line, _ = ls.evaluate_points(net, (x, y), bce_loss, c, d1, None, t, None, accuracy=False)
    assert np.allclose(line, ls.grid_loop(net, x, y, bce_loss, c, d1, d2, t, np.zeros(1))[:, 0], atol=1e-6)


def test_batches_and_loaders_give_the_values_of_the_whole_data_set():
    net, x, y, c, d1, d2 = mlp_problem()
    a, b = np.array([0.0, 0.3, -0.7]), np.array([0.0, -0.2, 0.9])
    whole, whole_acc = ls.evaluate_points(net, (x, y), bce_loss, c, d1, d2, a, b)
    for batch_size in (1, 7, 50, 1000):
        loss, acc = ls.evaluate_points(net, (x, y), bce_loss, c, d1, d2, a, b, batch_size=batch_size)
        assert np.allclose(loss, whole, rtol=0, atol=1e-6), batch_size
        assert np.allclose(acc, whole_acc, rtol=0, atol=1e-6), batch_size
    loader = DataLoader(TensorDataset(x, y), batch_size=13, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    as_list = list(zip(x.split(17), y.split(17)))
    for data in (loader, as_list):
        loss, acc = ls.evaluate_points(net, data, bce_loss, c, d1, d2, a, b)
        assert np.allclose(loss, whole, rtol=0, atol=1e-6)
        assert np.allclose(acc, whole_acc, rtol=0, atol=1e-6)


def test_one_shot_iterators_and_bad_data_are_refused():
    net, x, y, c, d1, d2 = mlp_problem()
    batches = list(zip(x.split(40), y.split(40)))
    one_shot = [(lambda: (b for b in batches))(), iter(batches), map(tuple, batches)]
    for data in one_shot:
        with pytest.raises(ValueError, match="one-shot iterator .* pass a list of \\(x, y\\) batches or a DataLoader"):
            ls.evaluate_points(net, data, bce_loss, c, d1, d2, [0.0], [0.0])
    with pytest.raises(ValueError, match="batch 2 of the data is not an \\(x, y\\) pair"):
        ls.evaluate_points(net, [batches[0], x], bce_loss, c, d1, d2, [0.0], [0.0])
    with pytest.raises(ValueError, match="the data set is empty"):
        ls.evaluate_points(net, [], bce_loss, c, d1, d2, [0.0], [0.0])
    with pytest.raises(ValueError, match="same number of rows"):
        ls.evaluate_points(net, (x, y[:-1]), bce_loss, c, d1, d2, [0.0], [0.0])
    with pytest.raises(ValueError, match="batch_size must be"):
        ls.evaluate_points(net, (x, y), bce_loss, c, d1, d2, [0.0], [0.0], batch_size=0)
    with pytest.raises(ValueError, match="d2 has 1 tensors"):
        ls.evaluate_points(net, (x, y), bce_loss, c, d1, d2[:1], [0.0], [0.0])


def test_batch_norm_runs_on_its_running_statistics_and_states_directions_move_them():
    net = bn_net()
    x, y = class_data()
    ce = nn.CrossEntropyLoss()
    before = state_copy(net)
    net.train()
    names = [n for n, _ in dr.entries_of(net, "states")]
    center = [t.clone() for _, t in dr.entries_of(net, "states")]
    shift = [torch.ones_like(t) if n == "1.running_mean" else torch.zeros_like(t)
             for n, t in dr.entries_of(net, "states")]
    loss, _ = ls.evaluate_points(net, (x, y), ce, center, shift, None, [0.0, 0.5], None, "states", batch_size=16)
    with torch.no_grad():
        rm = net[1].running_mean
        manual = [float(ce(manual_bn_forward(net, x, rm + t), y)) for t in (0.0, 0.5)]
        batch_stats = float(ce(copy.deepcopy(net).train()(x), y))  # train mode: the batch's statistics
    assert loss == pytest.approx(manual, abs=1e-6)
    assert abs(batch_stats - manual[0]) > 1e-3  # the check above can tell the two apart
    assert_same_state(net, before)  # running statistics and counts not updated, the shifted mean undone
    assert net.training
    # the model is restored even when the loss function fails half-way
    calls = []

    def failing(out, target):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("loss failed")
        return ce(out, target)

    with pytest.raises(RuntimeError, match="loss failed"):
        ls.evaluate_points(net, (x, y), failing, center, shift, None, [0.0, 1.0], None, "states", batch_size=20)
    assert_same_state(net, before)
    assert names == list(before)


# ---- pca_from_checkpoints


def test_pca_of_a_checkpoint_folder_is_pca_directions_of_the_flattened_checkpoints(tmp_path):
    net = bn_net(0)
    x, _ = class_data(32)
    paths = []
    for epoch in range(5):  # a made-up training path: the weights and the batch statistics drift
        other = bn_net(0)
        with torch.no_grad():
            for k, p in enumerate(other.parameters()):
                p.add_(0.3 * (epoch - 4) * torch.cos(torch.arange(p.numel()) + k).reshape(p.shape) +
                       0.05 * epoch**2 * torch.sin(torch.arange(p.numel()) * 0.7 + k).reshape(p.shape))
            other.train()
            for _ in range(epoch):
                other(x + epoch)
        paths.append(tmp_path / f"model_{epoch}.pt")
        torch.save({"state_dict": other.state_dict(), "epoch": epoch}, paths[-1])
    for dir_type in dr.DIR_TYPES:
        names = [n for n, _ in dr.entries_of(net, dir_type)]
        own = net.state_dict()

        def flat(state, names=names, own=own):  # integer entries (batch counts) held at the model's own
            return np.concatenate([(state[n] if state[n].is_floating_point() else own[n]).double().numpy().ravel()
                                   for n in names])

        rows = np.array([flat(torch.load(p, weights_only=True)["state_dict"]) for p in paths])
        u, v, explained = dr.pca_directions(rows, flat(own))
        d1, d2, got = dr.pca_from_checkpoints(net, [str(p) for p in paths], dir_type)
        assert np.allclose(dr.flatten(d1).double().numpy(), u, atol=1e-7)
        assert np.allclose(dr.flatten(d2).double().numpy(), v, atol=1e-7)
        assert np.allclose(got, explained)
        assert float(np.linalg.norm(u)) == pytest.approx(1.0) and abs(float(u @ v)) < 1e-6
        for d, n in zip(d1, names):
            assert d.shape == own[n].shape and d.dtype == own[n].dtype
            if not own[n].is_floating_point():
                assert torch.all(d == 0)
        moved = dict(zip(names, d1))
        if dir_type == "states":
            assert float(moved["1.running_mean"].norm()) > 0
    with pytest.raises(ValueError, match="at least two checkpoints"):
        dr.pca_from_checkpoints(net, paths[:1])
    same = tmp_path / "same.pt"
    torch.save(net.state_dict(), same)
    with pytest.raises(ValueError, match="do not differ"):
        dr.pca_from_checkpoints(net, [same, same])


# ---- the ResNet-20 example


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("resnet20_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resnet20_is_the_cifar_resnet_20(example):
    net = example.build(0)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == 20  # 6n + 2 weighted layers, n = 3
    assert [c.out_channels for c in convs] == [16] * 7 + [32] * 6 + [64] * 6
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 19 + 2  # two projection shortcuts
    assert 270_000 < sum(p.numel() for p in net.parameters()) < 275_000  # the paper's 0.27M
    with torch.no_grad():
        assert net.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert torch.equal(dr.flatten(dr.params_of(net)), dr.flatten(dr.params_of(example.build(0))))


def test_cifar_like_data_are_cifar_shaped_balanced_and_seeded(example):
    x, y = example.cifar_like(200, seed=3)
    assert x.shape == (200, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.bincount(y, minlength=10).tolist() == [20] * 10
    assert abs(float(x.mean())) < 0.1 and 0.5 < float(x.std()) < 1.5
    x2, y2 = example.cifar_like(200, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(example.cifar_like(200, seed=4)[0], x)
    # a smaller set is the start of a larger one: the factory's images are the first of train()'s
    x3, y3 = example.cifar_like(37, seed=3)
    assert torch.equal(x3, x[:37]) and torch.equal(y3, y[:37])


def test_resnet20_example_trains_saves_a_model_folder_and_gives_a_surface(example, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    example.main(["--out", str(out), "--epochs", "1", "--n", "256"])
    assert "epoch 1: mean training loss" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["final.pt", "model_0.pt", "model_1.pt"]
    net = example.build(0)
    first = dr.load_checkpoint(out / "model_0.pt", net)
    last = dr.load_checkpoint(out / "model_1.pt", net)
    final = dr.load_checkpoint(out / "final.pt", net)
    assert all(torch.equal(last[k], final[k]) for k in final)
    assert torch.load(out / "model_1.pt", weights_only=True)["epoch"] == 1
    x, y = example.cifar_like(256, 0)
    ce = nn.CrossEntropyLoss()

    def loss_at(state):
        c = [state[n] for n, _ in dr.entries_of(net, "states")]
        return ls.evaluate_points(net, (x, y), ce, c, c, None, [0.0], None, "states", batch_size=128)[0][0]

    assert loss_at(final) < loss_at(first)  # the training loss went down (eval mode, running statistics)

    def batch_statistics_loss(state):  # and on the batch's own statistics: learning, not only batch norm's
        model = example.build(0)
        model.load_state_dict(state)
        with torch.no_grad():
            return float(ce(model.train()(x), y))

    assert batch_statistics_loss(final) < batch_statistics_loss(first) - 0.05
    monkeypatch.setenv("LOSSLAB_EXAMPLE_N", "24")
    monkeypatch.setenv("LOSSLAB_EXAMPLE_TEST_N", "12")
    model, loss_fn, train, test = example.factory()
    assert len(train.dataset) == 24 and len(test.dataset) == 12
    dr.apply_entries(model, dr.entries_of(model, "states"), list(final.values()))
    before = state_copy(model)
    center = [t.clone() for _, t in dr.entries_of(model, "states")]
    d1 = dr.make_direction(model, 1, "states")
    d2 = dr.make_direction(model, 2, "states", ignore="none")  # moves the batch-norm statistics too
    loss, acc = ls.evaluate_points(model, train, loss_fn, center, d1, d2, [0.0, 0.5, 0.0], [0.0, 0.0, 0.5],
                                   "states")
    xs, ys = next(iter(DataLoader(train.dataset, batch_size=24)))
    with torch.no_grad():
        logits = model.eval()(xs)
    assert loss[0] == pytest.approx(float(loss_fn(logits, ys)), abs=1e-5)
    assert acc[0] == pytest.approx(float((logits.argmax(1) == ys).float().mean()))
    assert np.all(np.isfinite(loss)) and loss[1] != loss[0] and loss[2] != loss[0]
    assert_same_state(model, before)
    monkeypatch.setenv("LOSSLAB_EXAMPLE_N", "many")
    with pytest.raises(ValueError, match="LOSSLAB_EXAMPLE_N must be a whole number"):
        example.factory()
