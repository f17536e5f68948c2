"""Pixel tests with a real OpenGL context (Xvfb + Mesa)."""

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
import pytest
from pyqtgraph.opengl.MeshData import MeshData

from visualizer.gl.heightfield import HeightFieldItem
from visualizer.gl.surface import grid_faces, grid_normals


def qimage_to_array(img):
    img = img.convertToFormat(img.Format.Format_RGBA8888)
    ptr = img.constBits()
    arr = np.frombuffer(ptr, dtype=np.uint8, count=img.sizeInBytes()).reshape(img.height(), img.bytesPerLine() // 4, 4)
    return arr[:, : img.width(), :3].astype(int)


def test_grid_normals_agree_with_meshdata_normals():
    x = np.linspace(-2, 2, 41)
    y = np.linspace(-1, 1.5, 37)
    z = np.sin(x[:, None]) * np.cos(2 * y[None, :])
    verts = np.stack(np.broadcast_arrays(x[:, None], y[None, :], z), -1).reshape(-1, 3)
    md = MeshData(vertexes=verts, faces=grid_faces(len(x), len(y)))
    ref = md.vertexNormals()
    ours = grid_normals(x, y, z).reshape(len(x), len(y), 3)[1:-1, 1:-1].reshape(-1, 3)
    ref = ref.reshape(len(x), len(y), 3)[1:-1, 1:-1].reshape(-1, 3)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cos = np.clip((ours * ref).sum(1), -1, 1)
    assert np.degrees(np.arccos(cos)).max() < 1.5


def test_surface_item_draws_height_colours(qtbot):
    view = gl.GLViewWidget()
    view.resize(400, 300)
    qtbot.addWidget(view)
    view.show()
    view.setBackgroundColor((0, 0, 0))
    item = HeightFieldItem(pg.colormap.get("viridis"))
    view.addItem(item)
    x = np.linspace(-1, 1, 61)
    item.set_data(x, x, 0.5 * (x[:, None] ** 2 + x[None, :] ** 2))
    view.setCameraPosition(distance=4, elevation=35, azimuth=30)
    arr = qimage_to_array(view.grabFramebuffer())
    drawn = arr.sum(-1) > 30
    assert drawn.mean() > 0.1
    # viridis: the low centre is purple-blue, the high rim yellow-green; both must be on screen
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    assert ((b > r + 20) & drawn).sum() > 100
    assert ((g > b + 40) & (r > 60)).sum() > 100
    # an update with a different size re-uploads and still draws
    x2 = np.linspace(-1, 1, 201)
    item.set_data(x2, x2, np.zeros((201, 201)))
    assert (qimage_to_array(view.grabFramebuffer()).sum(-1) > 30).mean() > 0.05


@pytest.mark.gl
def test_whole_app_draws_surface_and_manifold(qtbot, fresh_settings):
    from visualizer.app import MainWindow

    win = MainWindow(lab="manifold2d")
    win.resize(1400, 800)
    qtbot.addWidget(win)
    win.show()
    lab = win.lab()
    qtbot.waitUntil(lambda: lab.landscape is not None, timeout=30000)
    run = lab.start_descent([2.0, -2.5])
    qtbot.waitUntil(lambda: run.finished, timeout=30000)
    qtbot.wait(300)
    shot = qimage_to_array(lab.scene.grabFramebuffer())
    bg = np.array([13, 15, 20])
    drawn = np.abs(shot - bg).sum(-1) > 40
    assert drawn.mean() > 0.08, "the 3D view drew too little"
    r, g, b = shot[..., 0], shot[..., 1], shot[..., 2]
    assert ((g > b + 40) & (r > 60)).sum() > 200, "no high (yellow-green) surface colour in the 3D view"
    # the trajectory's orange is drawn in 3D
    assert ((r > 200) & (g > 120) & (g < 190) & (b < 80)).sum() > 5
    # the 2D view shows the white manifold curve where the formula puts it
    img = lab.plane.grab().toImage()
    arr = qimage_to_array(img)
    dpr = img.devicePixelRatio()
    w1 = 1.0
    p = lab.plane.view_to_widget(w1, 0.8 / np.tanh(w1))
    px, py = int(p.x() * dpr), int(p.y() * dpr)
    patch = arr[py - 3: py + 4, px - 3: px + 4]
    assert (patch.min(-1) > 220).any(), "no white manifold pixel at the curve's position"
    whole = arr.min(-1) > 230
    assert whole.sum() > 300
    # and the window as a whole renders (Ctrl+S path)
    path = win.save_screenshot(str(fresh_settings / "shot.png"))
    from PySide6.QtGui import QImage

    assert path and not QImage(path).isNull()
    win.close()
