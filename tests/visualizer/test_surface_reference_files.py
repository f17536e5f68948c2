"""The surface lab on files the reference loss-landscape tool writes (issue 17): written by
tests/reference_layout.py, independent of models.surface_io, and checked pixel by pixel in the lab's 2D view:
each value at its own coordinates, gaps drawn as gaps, a 1D file as its curve; what the lab saves read back by
the independent reader; refused files in a dialog (the Open button) and on the command line (exit status)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest

from tests.reference_layout import (
    read_reference_directions,
    read_reference_surface,
    write_reference_directions,
    write_reference_surface,
)
from visualizer.labs.surface import SurfaceLab

BACKGROUND = (0x0D, 0x0F, 0x14)  # the 2D view's plot background: what a gap shows


@pytest.fixture
def lab(qtbot, fresh_settings):
    w = SurfaceLab(restore=False, start=False)
    w.resize(1100, 760)
    qtbot.addWidget(w)
    qtbot.addWidget(w.controls())
    w.show()
    w.msgs = []
    w.message.connect(lambda text, error: w.msgs.append((text, error)))
    w.widget("log_scale").setChecked(False)  # linear colours: a distinct colour for each distinct value
    yield w
    w.shutdown()


def drawn(qtbot, lab):
    qtbot.waitUntil(lambda: lab.shown is not None and lab.shown["values"] is lab.grid_values and not lab.busy(),
                    timeout=30000)


def levels_per_cell(nx: int, ny: int, seed: int = 0) -> np.ndarray:
    """A distinct value for each cell, in a shuffled order (any misplaced cell shows), indexed [ix, iy]."""
    return 1.0 + np.random.default_rng(seed).permutation(nx * ny).reshape(nx, ny).astype(np.float64)


CASES = {
    "square": dict(x=np.linspace(-1, 1, 9), y=np.linspace(-1, 1, 9)),
    "11x7": dict(x=np.linspace(-1, 1, 11), y=np.linspace(-1, 1, 7)),
    "asymmetric": dict(x=np.linspace(-0.5, 1.5, 9), y=np.linspace(-1, 1, 8)),
    "descending": dict(x=np.linspace(1, -1, 7), y=np.linspace(-0.5, 1.5, 6)),  # the reference's 1:-1:N
    "partial": dict(x=np.linspace(-1, 1, 10), y=np.linspace(-1, 1, 8), partial=True),
    "uneven": dict(x=np.array([-1, -0.6, -0.1, 0.2, 1.0]), y=np.array([-1, 0, 0.3, 0.45, 1])),  # not a linspace
}


def rgb_at(img, widget_point) -> tuple[int, int, int]:
    c = img.pixelColor(int(round(widget_point.x())), int(round(widget_point.y())))
    return c.red(), c.green(), c.blue()


@pytest.mark.parametrize("case", list(CASES))
def test_each_value_is_drawn_at_its_own_coordinates(qtbot, lab, tmp_path, case):
    spec = CASES[case]
    x, y = spec["x"], spec["y"]
    values = levels_per_cell(len(x), len(y))
    missing = None
    if spec.get("partial"):
        missing = np.zeros(values.shape, bool)
        missing[:, len(y) // 2:] = True  # the reference stopped halfway: its -1 stays there
        missing[0, 0] = True
        values[2, 1], values[3, 2] = np.inf, np.nan  # not finite: gaps as well
    path = str(tmp_path / f"{case}.h5")
    write_reference_surface(path, x, y, {"train_loss": values}, missing=missing)  # no train_acc
    ref = read_reference_surface(path)  # the independent reader's view of the file
    loss = ref["train_loss"]
    assert lab.open_surface(path)
    drawn(qtbot, lab)
    assert not [m for m in lab.msgs if m[1]], lab.msgs
    view = lab.plane_view
    assert not lab.showing_curve() and lab.scene.container.isVisible()
    # the contours and the legend lie over the colours: out of the way for this check (they are checked below)
    view.contours.setVisible(False)
    view.legend.setVisible(False)
    (x0, x1), (y0, y1) = view.plot.getViewBox().viewRange()
    # the view opens on the grid's cells exactly: zoomed out a little, what lies beyond them shows too
    assert x0 <= min(x) and x1 >= max(x) and y0 <= min(y) and y1 >= max(y)
    view.plot.getViewBox().setRange(xRange=(x0, x1), yRange=(y0, y1), padding=0.15)
    img = view.grab().toImage()
    gap = ~np.isfinite(loss)
    lo, hi = float(loss[~gap].min()), float(loss[~gap].max())
    cmap = pg.colormap.get("viridis")
    expected = {v: tuple(int(c) for c in cmap.map((v - lo) / (hi - lo), mode="byte")[:3])
                for v in np.unique(loss[~gap])}
    palette = np.array(list(expected.values()), dtype=float)
    def toward(t: np.ndarray, i: int) -> float:
        """A point of the cell of t[i], 30% of the way to a neighbour (its cell ends halfway there)."""
        j = i + 1 if i + 1 < len(t) else i - 1
        return t[i] + 0.3 * (t[j] - t[i])

    for ix, a in enumerate(ref["x"]):
        for iy, b in enumerate(ref["y"]):
            for pa, pb in ((a, b), (toward(ref["x"], ix), b), (a, toward(ref["y"], iy))):
                got = rgb_at(img, view.view_to_widget(pa, pb))
                if gap[ix, iy]:
                    assert got == BACKGROUND, (case, a, b, pa, pb, got)
                    continue
                want = np.array(expected[loss[ix, iy]], dtype=float)
                err = np.abs(palette - np.array(got, dtype=float)).sum(1)
                # the pixel is this cell's colour (to a LUT step), and no other cell's colour is as close
                assert np.abs(want - got).sum() <= 12, (case, a, b, pa, pb, got, want)
                assert err.min() == pytest.approx(np.abs(want - got).sum()), (case, a, b, pa, pb)
    # outside the grid's cells: the background (the image covers the cells and no more)
    xs = np.sort(ref["x"])
    beyond = xs[-1] + 0.75 * (xs[-1] - xs[-2])  # the last cell reaches half a step past its coordinate
    assert rgb_at(img, view.view_to_widget(beyond, float(np.mean(ref["y"])))) == BACKGROUND
    # the colour bar is the file's finite range, the 3D view's extent its coordinates
    assert tuple(view.colorbar.levels()) == pytest.approx((lo, hi))
    assert lab.scene.extent == pytest.approx((min(x), max(x), min(y), max(y)))
    text = lab.caption.text()
    assert f"surface of {len(x)} x {len(y)} points" in text
    if gap.any():
        assert f"{int(gap.sum())} of {gap.size} points missing" in text
    else:
        assert "missing" not in text
    # the 3D view leaves the gaps' triangles out: every drawn triangle has three corners with a value
    surf = lab.scene.surface
    if gap.any():
        order = np.argsort(ref["x"]), np.argsort(ref["y"])
        present = np.isfinite(loss[order[0]][:, order[1]]).ravel()
        faces = surf.faces.reshape(-1, 3)
        assert len(faces) and present[faces].all()
        assert surf.faces is not None and len(faces) < 2 * (len(x) - 1) * (len(y) - 1)
    else:
        assert surf.faces is None  # no holes: the fast strips


def test_contours_lie_at_their_level_on_an_asymmetric_grid(qtbot, lab, tmp_path):
    """L = 2 + a on [-0.5, 1.5] x [-1, 1]: every contour is the vertical line a = level - 2, across all of b."""
    path = str(tmp_path / "lin.h5")
    x, y = np.linspace(-0.5, 1.5, 11), np.linspace(-1, 1, 7)
    write_reference_surface(path, x, y, {"train_loss": lambda a, b: 2 + a})
    assert lab.open_surface(path)
    drawn(qtbot, lab)
    levels = np.linspace(1.5, 3.5, 14)[1:-1]  # twelve levels strictly inside the range (independently)
    lines = lab.shown["contours"]
    assert len(lines) == len(levels)
    a_of = sorted(float(np.mean(p[:, 0])) for p in lines)
    assert a_of == pytest.approx(list(levels - 2), abs=1e-9)
    for p in lines:
        assert np.ptp(p[:, 0]) < 1e-9 and p[:, 1].min() == pytest.approx(-1) and p[:, 1].max() == pytest.approx(1)
    # and they are what the 2D view draws
    cx, cy = lab.plane_view.contours.getData()
    assert np.nanmin(cx) == pytest.approx(levels[0] - 2) and np.nanmax(cx) == pytest.approx(levels[-1] - 2)


def test_a_1d_file_is_its_curve_with_its_gaps(qtbot, lab, tmp_path):
    path = str(tmp_path / "line.h5")
    a = np.linspace(-1, 2, 16)
    missing = np.zeros(16, bool)
    missing[10:13] = True
    write_reference_surface(path, a, None, {"train_loss": lambda v: 1 + (v - 0.5) ** 2,
                                            "train_acc": lambda v: 90 - 10 * abs(v)}, missing=missing)
    ref = read_reference_surface(path)
    assert lab.open_surface(path)
    drawn(qtbot, lab)
    assert lab.showing_curve() and lab.active_view() is lab.curve_plot
    assert not lab.scene.container.isVisible() and lab.curve_plot.isVisible()
    cx, cy = lab.curve.xData, lab.curve.yData
    assert np.array_equal(cx, ref["x"])
    assert np.array_equal(np.isnan(cy), np.isnan(ref["train_loss"]))
    assert np.allclose(cy[~missing], ref["train_loss"][~missing], rtol=1e-12)
    assert np.allclose(lab.curve_gaps.xData, a[missing])  # the gaps are marked where they are
    assert lab.curve_plot.getAxis("bottom").labelText.startswith("a")
    assert lab.curve_plot.getAxis("left").labelText == "L" and not lab.curve_plot.getAxis("left").logMode
    text = lab.caption.text()
    assert "1D curve of 16 points" in text and "3 of 16 points missing" in text
    # log scale: the same values on a log axis
    lab.widget("log_scale").setChecked(True)
    qtbot.waitUntil(lambda: lab.shown["log"] and not lab.busy(), timeout=30000)
    assert np.allclose(lab.curve.yData[~missing], ref["train_loss"][~missing], rtol=1e-12)
    assert lab.curve_plot.getAxis("left").logMode and "log" in lab.curve_plot.getAxis("left").labelText
    assert not lab.export_mesh(str(tmp_path / "line.obj")) and not (tmp_path / "line.obj").exists()
    # a 2D file after it: the 2D and 3D views come back
    write_reference_surface(str(tmp_path / "sq.h5"), np.linspace(-1, 1, 5), np.linspace(-1, 1, 5),
                            {"train_loss": lambda u, v: 1 + u * u + v * v})
    assert lab.open_surface(str(tmp_path / "sq.h5"))
    drawn(qtbot, lab)
    assert not lab.showing_curve() and lab.scene.container.isVisible()


@pytest.mark.parametrize("one_d", [False, True])
def test_an_opened_file_saved_again_keeps_its_values_and_dir_file(qtbot, lab, tmp_path, one_d):
    x = np.linspace(1, -1, 7)  # descending, as the reference may write it: kept in its order
    y = None if one_d else np.linspace(-0.5, 1.5, 5)
    shape = (7,) if one_d else (7, 5)
    rng = np.random.default_rng(3)
    missing = rng.random(shape) < 0.25
    arrays = {"train_loss": rng.uniform(0.1, 3, shape), "train_acc": np.round(rng.uniform(10, 99, shape), 3),
              "test_loss": rng.uniform(0.1, 3, shape)}
    src = str(tmp_path / "ref.h5")
    write_reference_surface(src, x, y, arrays, dir_file="ref_dirs.h5", missing=missing)
    assert lab.open_surface(src)
    drawn(qtbot, lab)
    out = str(tmp_path / "again.h5")
    assert lab.save_surface(out)
    a, b = read_reference_surface(src), read_reference_surface(out)
    assert np.array_equal(a["x"], b["x"]) and (b["y"] is None if one_d else np.array_equal(a["y"], b["y"]))
    assert b["dir_file"] == "ref_dirs.h5"
    assert set(b) == set(a)
    for name in arrays:
        assert np.array_equal(a[name], b[name], equal_nan=True), name  # percent accuracies, the same numbers
    assert np.nanmax(b["train_acc"]) > 1
    assert not (tmp_path / "again.h5.dirs.h5").exists()  # its directions are the file's own (dir_file)


def test_a_computed_surface_is_saved_with_its_directions(qtbot, lab, tmp_path, monkeypatch):
    import torch

    from models import surface_io
    from models.nets import build_net, loss_for, make_data

    lab.apply_settings({"n": 200, "hidden": "6x5", "steps": 30, "grid": 7, "extent": 0.8})
    lab.train()
    qtbot.waitUntil(lab.surface_ready, timeout=180000)
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "s.h5"
    assert lab.save_surface(str(out))
    ref = read_reference_surface(str(out))
    t = np.linspace(-0.8, 0.8, 7)
    assert np.allclose(ref["x"], t) and np.allclose(ref["y"], t)
    assert np.array_equal(ref["train_loss"], lab.grid_values)  # exactly what was computed, on its own grid
    assert ref["dir_file"] == "s.h5.dirs.h5"
    xdir, ydir = read_reference_directions(str(folder / ref["dir_file"]))
    s = lab.state
    data_x, data_y = make_data(s.data, s.n, s.noise, s.seed)
    net = build_net(s.network, (6, 5), s.activation, s.parameterization, s.residual, data_x, data_y, s.seed)
    params = list(net.parameters())
    assert [d.shape for d in xdir] == [d.shape for d in ydir] == [tuple(p.shape) for p in params]
    # the saved directions are the ones the surface was evaluated with: one of its values, computed again
    centre = lab.checkpoints[-1]
    i, j = 1, 5
    point = centre + t[i] * np.concatenate([d.ravel() for d in xdir]) + t[j] * np.concatenate(
        [d.ravel() for d in ydir])
    with torch.no_grad():
        k = 0
        for p in params:
            p.copy_(torch.as_tensor(point[k:k + p.numel()].reshape(p.shape), dtype=p.dtype))
            k += p.numel()
        value = float(loss_for(data_y)(net(data_x), data_y))
    assert value == pytest.approx(ref["train_loss"][i, j], rel=1e-4)
    assert sorted(p.name for p in folder.iterdir()) == ["s.h5", "s.h5.dirs.h5"]  # no temporary file left
    # the directions cannot be written: neither file is, and nothing is left behind

    def disk_full(*a, **k):
        raise OSError("No space left on device")

    monkeypatch.setattr(surface_io, "write_directions", disk_full)
    lab.msgs.clear()
    assert not lab.save_surface(str(folder / "t.h5"))
    assert lab.msgs[-1][1] and "No space left" in lab.msgs[-1][0]
    assert sorted(p.name for p in folder.iterdir()) == ["s.h5", "s.h5.dirs.h5"]


def refused_files(tmp_path) -> dict:
    """Files that are not surfaces: a missing one, junk, a direction file given as a surface."""
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an HDF5 file at all")
    dirs = str(tmp_path / "d.h5.dirs.h5")
    write_reference_directions(dirs, [np.ones((2, 3))], [np.ones((2, 3))])
    return {"missing": (str(tmp_path / "nothere.h5"), "no such file"),
            "junk": (str(junk), "cannot read it as an HDF5"),
            "directions": (dirs, "a direction file")}


def test_the_open_button_shows_a_refused_file_in_a_dialog(qtbot, lab, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog, QMessageBox

    good = str(tmp_path / "good.h5")
    write_reference_surface(good, np.linspace(-1, 1, 5), np.linspace(-1, 1, 5), {"train_loss": lambda a, b: 1 + a})
    assert lab.open_surface(good)
    drawn(qtbot, lab)
    values, caption = lab.grid_values, lab.caption.text()
    for name, (path, words) in refused_files(tmp_path).items():
        monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, p=path, **k: (p, ""))
        lab.msgs.clear()
        lab.widget("action:open").click()
        box = lab.refusal
        qtbot.waitUntil(lambda b=box: b is not None and b.isVisible(), timeout=5000)
        assert [b for b in lab.findChildren(QMessageBox) if b.isVisible()] == [box], name
        assert path in box.text() and words in box.text(), (name, box.text())
        assert not [m for m in lab.msgs if m[1]], name  # a dialog, not an error line
        assert lab.grid_values is values and lab.caption.text() == caption, name
    lab.refusal.close()


def test_the_command_line_refuses_a_file_before_any_window(tmp_path, monkeypatch, capsys):
    import subprocess
    import sys

    from visualizer import app, cli

    def no_window(**kw):
        raise AssertionError("a window was opened")

    monkeypatch.setattr(app, "run_app", no_window)
    for name, (path, words) in refused_files(tmp_path).items():
        assert cli.main([path]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"losslab: {path}: ") and words in err, (name, err)
    # the real command: its exit status and its one line on stderr
    path, words = refused_files(tmp_path)["directions"]
    env = dict(__import__("os").environ, LOSSLAB_CONFIG_DIR=str(tmp_path / "cfg"))
    run = subprocess.run([sys.executable, "-m", "visualizer", path], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and words in run.stderr


def test_the_3d_view_leaves_the_missing_half_open(qtbot, lab, tmp_path):
    """Rendered from above: a file whose half b > 0 is missing covers about half of what the whole file covers
    (drawn at the lowest level, as before issue 17, it would cover as much)."""
    x = y = np.linspace(-1, 1, 21)
    f = {"train_loss": lambda a, b: 1 + a * a + b * b}
    missing = np.zeros((21, 21), bool)
    missing[:, 11:] = True
    write_reference_surface(str(tmp_path / "full.h5"), x, y, f)
    write_reference_surface(str(tmp_path / "half.h5"), x, y, f, missing=missing)

    def covered(name: str) -> float:
        assert lab.open_surface(str(tmp_path / name))
        drawn(qtbot, lab)
        lab.scene.floor.setVisible(False)  # only the surface against the background
        lab.scene.set_home((0, 0, 0.3 * lab.scene.zheight), 4.0, elevation=90, azimuth=-90)  # from above
        bgra = lab.scene.render_offscreen(400, 400)
        return float((np.abs(bgra[..., :3].astype(int) - BACKGROUND[::-1]).sum(-1) > 30).mean())

    full, half = covered("full.h5"), covered("half.h5")
    assert full > 0.2 and 0.3 * full < half < 0.7 * full, (full, half)
