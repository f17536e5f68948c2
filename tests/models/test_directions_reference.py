"""Directions as the reference loss-landscape tool makes them (net_plotter.py: create_random_direction,
normalize_direction, normalize_directions_for_weights / _for_states, create_target_direction), checked against
a re-statement of that behaviour written here, loop by loop, independently of models.directions."""

import numpy as np
import pytest
import torch
from torch import nn

from models import directions as dr

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_bn_net(seed: int = 0) -> nn.Module:
    """A convolution, batch norm (with running statistics away from their initial 0 and 1), a linear layer."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 4))
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 3, 6, 6) * 2 + 1)
    return net


def reference_normalized(raw: list, weights: list, norm: str, ignore: str) -> list:
    """The reference's normalize_directions_for_weights / _for_states applied to raw Gaussian draws:
    one-dimensional entries become zero ('biasbn') or a copy of the weights; the others are rescaled filter by
    filter (a loop over the first dimension, + 1e-10 in the denominator), as a layer, entrywise by the weights,
    or to unit norm per filter / per layer."""
    out = []
    for d, w in zip(raw, weights):
        d, w = d.double().clone(), w.double()
        if d.dim() <= 1:
            out.append(torch.zeros_like(w) if ignore == "biasbn" else w.clone())
            continue
        if norm == "filter":
            for i in range(d.shape[0]):
                d[i] = d[i] * (w[i].norm() / (d[i].norm() + 1e-10))
        elif norm == "layer":
            d = d * (w.norm() / d.norm())
        elif norm == "weight":
            d = d * w
        elif norm == "dfilter":
            for i in range(d.shape[0]):
                d[i] = d[i] / (d[i].norm() + 1e-10)
        elif norm == "dlayer":
            d = d / d.norm()
        out.append(d)
    return out


@pytest.mark.parametrize("dir_type", dr.DIR_TYPES)
@pytest.mark.parametrize("ignore", dr.IGNORES)
@pytest.mark.parametrize("norm", dr.NORMS)
def test_make_direction_is_the_reference_normalization_of_its_draws(norm, ignore, dir_type):
    net = small_bn_net()
    entries = dr.entries_of(net, dir_type)
    raw = dr.make_direction(net, 5, dir_type, norm="none", ignore=ignore)
    got = dr.make_direction(net, 5, dir_type, norm=norm, ignore=ignore)
    floats = [(d, (n, w)) for d, (n, w) in zip(raw, entries) if w.is_floating_point()]
    expect = reference_normalized([d for d, _ in floats], [w for _, (_, w) in floats], norm, ignore)
    got_floats = [g for g, (_, w) in zip(got, entries) if w.is_floating_point()]
    assert len(got) == len(entries)
    for g, e, (_, (name, w)) in zip(got_floats, expect, floats):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        assert torch.allclose(g.double(), e, rtol=1e-5, atol=1e-7), name
    # integer entries (num_batches_tracked) never move
    for g, (name, w) in zip(got, entries):
        if not w.is_floating_point():
            assert g.dtype == w.dtype and torch.all(g == 0), name


def test_filter_norms_of_the_direction_are_the_weights_filter_norms():
    net = small_bn_net()
    conv, linear = net[0].weight.detach(), net[4].weight.detach()
    d = dict(zip([n for n, _ in net.named_parameters()], dr.make_direction(net, 1)))
    for i in range(conv.shape[0]):  # per output channel of the convolution
        assert float(d["0.weight"][i].norm()) == pytest.approx(float(conv[i].norm()), rel=1e-5)
    for i in range(linear.shape[0]):  # per output unit of the linear layer
        assert float(d["4.weight"][i].norm()) == pytest.approx(float(linear[i].norm()), rel=1e-5)
    # not merely the weights rescaled: a random direction of them
    assert abs(dr.cosine([d["4.weight"]], [linear])) < 0.3
    layer = dict(zip(d, dr.make_direction(net, 1, norm="layer")))
    assert float(layer["0.weight"].norm()) == pytest.approx(float(conv.norm()), rel=1e-5)
    unit = dict(zip(d, dr.make_direction(net, 1, norm="dfilter")))
    assert np.allclose(unit["4.weight"].norm(dim=1).numpy(), 1.0, atol=1e-6)
    assert float(dict(zip(d, dr.make_direction(net, 1, norm="dlayer")))["4.weight"].norm()) == pytest.approx(1.0)


def test_states_entries_include_the_batch_norm_buffers_in_state_dict_order():
    net = small_bn_net()
    names = [n for n, _ in dr.entries_of(net, "states")]
    assert names == list(net.state_dict())
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(names)
    assert [n for n, _ in dr.entries_of(net, "weights")] == [n for n, _ in net.named_parameters()]
    d = dict(zip(names, dr.make_direction(net, 2, "states", ignore="none")))
    # ignore='none': one-dimensional entries are a copy of the model's (the reference's d.copy_(w))
    assert torch.equal(d["1.running_var"], net[1].running_var)
    assert torch.equal(d["1.weight"], net[1].weight.detach())
    assert torch.all(d["1.num_batches_tracked"] == 0)
    zero = dict(zip(names, dr.make_direction(net, 2, "states")))
    assert all(torch.all(zero[n] == 0) for n in names if zero[n].dim() <= 1)
    # the weights' draws do not depend on the treatment of the one-dimensional entries
    assert torch.equal(zero["0.weight"], d["0.weight"]) and torch.equal(zero["4.weight"], d["4.weight"])


def test_the_draws_are_seeded_standard_gaussians():
    net = nn.Linear(256, 64)
    raw = dr.make_direction(net, 11, norm="none")[0].double().flatten()
    assert abs(float(raw.mean())) < 0.03
    assert float(raw.std()) == pytest.approx(1.0, abs=0.03)
    z = (raw - raw.mean()) / raw.std()
    assert float((z**4).mean()) == pytest.approx(3.0, abs=0.2)  # a uniform draw's kurtosis is 1.8
    assert torch.equal(dr.make_direction(net, 11)[0], dr.make_direction(net, 11)[0])
    assert not torch.equal(dr.make_direction(net, 11)[0], dr.make_direction(net, 12)[0])
    # the surface lab's random_direction is the reference default (filter, biasbn) of the same draws
    for u, v in zip(dr.make_direction(net, 11), dr.random_direction(net, 11)):
        assert torch.allclose(u, v, rtol=1e-6, atol=0)


def test_unknown_choices_are_refused_by_name():
    net = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="norm must be one of filter, layer"):
        dr.make_direction(net, 0, norm="filters")
    with pytest.raises(ValueError, match="ignore must be one of biasbn, none"):
        dr.make_direction(net, 0, ignore="bias")
    with pytest.raises(ValueError, match="dir_type must be one of weights, states"):
        dr.entries_of(net, "state")


def test_target_direction_is_the_other_state_minus_the_model():
    net, other = small_bn_net(0), small_bn_net(1)
    with torch.no_grad():
        other(torch.randn(4, 3, 6, 6))  # one more batch counted: integer entries differ too
    state = other.state_dict()
    for dir_type in dr.DIR_TYPES:
        got = dr.target_direction(net, state, dir_type)
        for g, (name, w) in zip(got, dr.entries_of(net, dir_type)):
            if w.is_floating_point():
                assert torch.equal(g, state[name] - net.state_dict()[name]), name
            else:
                assert torch.all(g == 0), name
    with pytest.raises(ValueError, match="no entry '4.bias'"):
        dr.target_direction(net, {k: v for k, v in state.items() if k != "4.bias"}, "weights")
    with pytest.raises(ValueError, match="'4.bias' has shape"):
        dr.target_direction(net, {**state, "4.bias": torch.zeros(3)}, "weights")


def test_apply_entries_copies_into_the_model_and_checks_everything_first():
    net = small_bn_net()
    entries = dr.entries_of(net, "states")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    values = [t + 1 if t.is_floating_point() else t + 3 for _, t in entries]
    dr.apply_entries(net, entries, values)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k] + (1 if v.is_floating_point() else 3)), k
    bad = list(values)
    bad[-1] = torch.zeros(7)
    dr.apply_entries(net, entries, [before[name] for name, _ in entries])
    with pytest.raises(ValueError, match="entry '4.bias': a value of shape"):
        dr.apply_entries(net, entries, bad)
    with pytest.raises(ValueError, match="values for"):
        dr.apply_entries(net, entries, values[:-1])
    for k, v in net.state_dict().items():  # nothing copied by the refused calls
        assert torch.equal(v, before[k]), k
