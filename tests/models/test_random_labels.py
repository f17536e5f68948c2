"""The random-labels engine (issue 16): networks fit noise; the clean test accuracy shows what they learned."""

import numpy as np
import pytest

from models import random_labels as rl

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GAUSS = dict(kind="gaussian", n=200, classes=2, n_test=2000, data_seed=0)


def test_fully_shuffled_labels_are_fitted_and_the_clean_test_stays_at_chance():
    data = dict(GAUSS, n=1000)
    for seed in (0, 1, 2):
        last = rl.train_to_fit(data, [1.0], widths=(128, 128), steps=2000, seed=seed)
        assert last.train_acc[0] == 1.0 and last.fit_step[0] == last.step > 0
        assert last.init is None and last.test_acc is not None
        assert abs(last.test_acc[0] - 0.5) <= 0.05, (seed, last.test_acc)
    assert rl.make_data(**data).x_test.shape == (2000, 20)


def test_true_labels_fit_faster_than_shuffled_ones_for_three_seeds():
    for seed in (0, 1, 2):
        last = rl.train_to_fit(GAUSS, [0.0, 1.0], widths=(128, 128), steps=2000, seed=seed)
        t_true, t_rand = last.fit_step
        assert 0 < t_true < t_rand, (seed, last.fit_step)
        assert last.test_acc[0] > 0.85  # the true labels generalize


def test_test_accuracy_falls_and_steps_to_fit_grow_with_the_fraction():
    data = dict(GAUSS, classes=4)
    last = rl.train_to_fit(data, [0.0, 0.5, 1.0], widths=(128, 128), optimizer="gd", lr=0.5, steps=2000, seed=0)
    a0, a5, a1 = last.test_acc
    t0, t5, t1 = last.fit_step
    assert a0 > a5 > a1 and a0 > 0.75 and abs(a1 - 0.25) < 0.06
    assert 0 < t0 < t5 < t1


def test_corrupted_labels_are_drawn_once_and_kept_for_every_epoch():
    d = rl.make_data(**GAUSS)
    a = rl.corrupt_labels(d.y, 0.5, 2, seed=3)
    assert np.array_equal(a, rl.corrupt_labels(d.y, 0.5, 2, seed=3))  # the same seed, the same labels
    assert not np.array_equal(a, rl.corrupt_labels(d.y, 0.5, 2, seed=4))
    assert np.array_equal(rl.corrupt_labels(d.y, 0.0, 2, seed=3), d.y)
    full = rl.corrupt_labels(d.y, 1.0, 2, seed=3)
    assert 0.35 < np.mean(full != d.y) < 0.65  # uniform over both classes: about half differ
    # the network fits the labels announced at step 0 and keeps fitting them: redrawn labels each step would
    # leave the training accuracy near chance after the fit
    gen = rl.fit_run(data=GAUSS, fractions=[1.0, 0.5], widths=(128, 128), steps=160, eval_every=40, seed=0)
    steps = list(gen)
    labels = steps[0].init.labels
    assert labels.shape == (2, 200) and steps[0].init.corrupted[0] == int((labels[0] != d.y).sum())
    fit = steps[-1].fit_step
    assert np.all(fit > 0)
    after = [s.train_acc for s in steps if s.step >= fit.max()]
    assert len(after) > 20 and all(np.all(a == 1.0) for a in after)
    measured = {s.step for s in steps if s.test_acc is not None}
    assert {0, 40, 80, 120, 160} <= measured and measured <= {0, 40, 80, 120, 160, *fit.tolist()}


def test_batched_runs_equal_separately_trained_modules():
    import torch

    fr = [0.0, 0.5, 1.0]
    d = rl.make_data(**GAUSS)
    batched = list(rl.fit_run(data=GAUSS, fractions=fr, widths=(64, 32), steps=30, eval_every=10, seed=5))
    # the same runs as torch.nn.Modules, one after another, with torch.optim.Adam
    params = rl.init_params([20, 64, 32, 2], 3, 5)
    x = torch.as_tensor(d.x)
    labels = batched[0].init.labels
    for k in range(3):
        net = rl.separate_module(params, k)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        y = torch.as_tensor(labels[k])
        for t in range(31):
            logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            acc = float((logits.argmax(1) == y).float().mean())
            wn = float(torch.sqrt(sum((p.detach() ** 2).sum() for p in net.parameters())))
            assert batched[t].loss[k] == pytest.approx(float(loss.detach()), rel=1e-5, abs=1e-6)
            assert batched[t].train_acc[k] == acc
            assert batched[t].wnorm[k] == pytest.approx(wn, rel=1e-5)
            if t == 30:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_gd_step_is_plain_gradient_descent_and_bad_runs_are_refused_in_words():
    import torch

    params = rl.init_params([3, 4, 2], 2, 0)
    before = [p.detach().clone() for p in params]
    x = torch.randn(5, 3)
    y = torch.tensor([[0, 1, 0, 1, 1], [1, 1, 0, 0, 1]])
    loss = torch.nn.functional.cross_entropy(rl.forward(params, x).reshape(-1, 2), y.reshape(-1),
                                             reduction="none").view(2, 5).mean(1).sum()
    loss.backward()
    rl.BatchedOptimizer(params, "gd", 0.1).step()
    for b, p in zip(before, params):
        torch.testing.assert_close(p.detach(), b - 0.1 * p.grad)
    for bad, words in (({"fractions": [1.5]}, "between 0 and 1"), ({"fractions": []}, "corruption fractions"),
                       ({"optimizer": "sgd"}, "optimizer"), ({"lr": -1.0}, "positive"),
                       ({"widths": [0]}, "hidden layers")):
        kw = {"data": GAUSS, "fractions": [0.0], **bad}
        with pytest.raises(ValueError, match=words):
            next(rl.fit_run(**kw))
    with pytest.raises(ValueError, match="training points n from 4 to 1500"):
        rl.make_data("digits", n=1700)


def test_digits_load_and_fit():
    d = rl.make_data("digits", n=300, data_seed=1)
    assert d.x.shape == (300, 64) and d.classes == 10 and len(d.y_test) == 1797 - 300
    last = rl.train_to_fit(dict(kind="digits", n=300, data_seed=1), [0.0, 1.0], widths=(128,), steps=2000, lr=3e-3)
    assert np.all(last.train_acc == 1.0)
    assert last.test_acc[0] > 0.85 and last.test_acc[1] < 0.2


def test_toy_flipped_label_is_followed_by_the_refit_boundary():
    pts, lab = rl.toy_preset("blobs", 30, seed=0)
    fit = rl.fit_toy(pts, lab, seed=0)
    assert fit.fitted and np.array_equal(fit.pred, lab) and fit.values.shape == (160, 160)
    assert fit.xs[0] == -rl.TOY_DRAWN_EXTENT and fit.xs[-1] == rl.TOY_DRAWN_EXTENT
    # flip a point deep inside its class: the refit boundary contorts to take it in
    i = int(np.argmax(np.where(lab == 1, pts @ np.array([0.8, 0.6]), -np.inf)))
    flipped = lab.copy()
    flipped[i] = 1 - flipped[i]
    refit = rl.fit_toy(pts, flipped, seed=0)
    assert refit.fitted and refit.pred[i] == flipped[i]
    # the grid shows it too: the cell nearest the point has the flipped sign
    gi, gj = (np.abs(refit.xs - pts[i, 1]).argmin(), np.abs(refit.xs - pts[i, 0]).argmin())
    assert (refit.values[gi, gj] > 0) == bool(flipped[i])
    assert (fit.values[gi, gj] > 0) == bool(lab[i])
    for name in rl.TOY_PRESETS:
        p, y = rl.toy_preset(name, 24)
        assert p.shape == (24, 2) and set(np.unique(y)) == {0, 1}
