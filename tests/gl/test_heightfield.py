"""The height-field item against the CPU-shaded item it replaces: the same pixels, and only heights uploaded."""

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
import pytest
from PySide6 import QtOpenGL

from tests.gl.test_render import qimage_to_array
from visualizer.gl.heightfield import HeightFieldItem, gradient_weights, slope_valid
from visualizer.gl.surface import CpuSurfaceItem

pytestmark = pytest.mark.gl

# uneven spacing along x, a descending axis along y: the normals must follow numpy.gradient's weights
X = np.concatenate([np.linspace(-1.0, 0.0, 31), np.linspace(0.0, 1.0, 51)[1:]])
Y = np.linspace(1.0, -1.2, 71)
Z = 0.5 * (X[:, None] ** 2 + np.sin(3 * Y[None, :]))


def with_holes() -> np.ndarray:
    z = Z.copy()
    z[20:30, 10:20] = np.nan  # a square hole
    z[50, 40] = np.inf  # one point: any value that is not finite is missing
    z[0, 5:9] = np.nan  # at the edge
    return z


@pytest.fixture
def view(qtbot):
    v = gl.GLViewWidget()
    v.resize(480, 320)
    qtbot.addWidget(v)
    v.show()
    v.setBackgroundColor((0, 0, 0))
    v.setCameraPosition(distance=4.2, elevation=35, azimuth=30)
    return v


def frame(view, item) -> np.ndarray:
    """The view's frame with ``item`` alone in it (rendered into a framebuffer object, off screen)."""
    view.addItem(item)
    try:
        return qimage_to_array(view.grabFramebuffer())
    finally:
        view.removeItem(item)


def both(view, z, wire=False, cmap="viridis", colors=None):
    out = []
    for cls in (CpuSurfaceItem, HeightFieldItem):
        item = cls(pg.colormap.get(cmap))
        item.set_wireframe(wire)
        item.set_data(X, Y, z, colors=colors)
        out.append(frame(view, item))
    return out


def mean_difference_over_surface(a: np.ndarray, b: np.ndarray) -> float:
    """The mean absolute difference (levels of 255) over the pixels either frame draws; both items compute the
    same colours per vertex, so beyond that mean, nearly every pixel must agree to the rounding of a level or two
    (a different gain, or a slope taken across a hole, moves whole regions by more)."""
    surface = (a.sum(-1) > 0) | (b.sum(-1) > 0)
    assert surface.mean() > 0.1, "too little of the surface is on screen to compare"
    diff = np.abs(a - b)[surface]
    assert (diff.max(-1) <= 2).mean() > 0.995
    return float(diff.mean())


@pytest.mark.parametrize("case", ["smooth", "holes", "wireframe", "holes and wireframe"])
def test_pixels_equal_the_cpu_items(view, case):
    z = with_holes() if "holes" in case else Z
    cpu, ours = both(view, z, wire="wireframe" in case)
    assert mean_difference_over_surface(cpu, ours) < 3
    if "wireframe" in case:  # the lines are there (dark pixels on the lit surface), in both
        dark = lambda a: ((a.max(-1) < 40) & (a.sum(-1) > 0)).sum()  # noqa: E731
        assert dark(ours) > 300 and abs(dark(ours) - dark(cpu)) < 0.1 * dark(cpu)


def test_holes_are_left_open(view):
    """Where the CPU item leaves a hole's background, so does the height field (and a full grid covers it)."""
    full = frame(view, make(Z))
    cpu, ours = both(view, with_holes())
    opened = (full.sum(-1) > 0) & (cpu.sum(-1) == 0)  # pixels the hole opens onto the background
    assert opened.sum() > 50
    assert (ours[opened].sum(-1) == 0).mean() > 0.95


def test_given_colours_replace_the_colour_map(view):
    colors = np.zeros(Z.shape + (4,), dtype=np.float32)
    colors[..., 0] = 1.0  # all red
    colors[..., 3] = 1.0
    colors[: len(X) // 2, :, 2] = 1.0  # half magenta
    cpu, ours = both(view, Z, colors=colors)
    assert mean_difference_over_surface(cpu, ours) < 3
    drawn = ours.sum(-1) > 0
    assert (ours[drawn][:, 1] < 10).mean() > 0.99  # no green: the colour map is not used


def make(z, cmap="viridis") -> HeightFieldItem:
    item = HeightFieldItem(pg.colormap.get(cmap))
    item.set_data(X, Y, z)
    return item


@pytest.fixture
def uploads(monkeypatch):
    """Every buffer upload through Qt, as (kind, bytes): counted at QOpenGLBuffer, not by the item."""
    seen = []
    for method in ("allocate", "write"):
        original = getattr(QtOpenGL.QOpenGLBuffer, method)

        def spy(self, *args, _original=original, _method=method):
            seen.append((_method, args[-1]))
            return _original(self, *args)

        monkeypatch.setattr(QtOpenGL.QOpenGLBuffer, method, spy)
    return seen


def test_colour_map_lighting_range_and_scale_changes_upload_no_buffer(view, uploads):
    item = make(Z)
    first = frame(view, item)
    assert uploads  # the first frame uploads the grid, the heights and the strips
    uploads.clear()
    textures = item.uploads["colormap"]
    item.set_colormap(pg.colormap.get("magma"))
    item.set_lighting(ambient=0.3)
    item.set_color_range(-1.0, 2.0)
    item.set_display(scale=1.5, offset=0.2, clip=(-0.5, 0.8))
    item.set_bands(8)
    changed = frame(view, item)
    assert uploads == []
    assert item.uploads["colormap"] == textures + 1  # the new colour map: its lookup texture, once
    assert np.abs(changed - first).mean() > 5  # and the frame did change
    # a new colour map alone gives the CPU item's pixels for that map
    item.set_lighting(ambient=0.48)
    item.set_color_range(*CpuSurfaceItem._finite_range(Z))
    item.set_display()
    item.set_bands(0)
    cpu = CpuSurfaceItem(pg.colormap.get("magma"))
    cpu.set_data(X, Y, Z)
    assert mean_difference_over_surface(frame(view, cpu), frame(view, item)) < 3


def test_a_new_surface_on_the_same_grid_uploads_only_its_heights(view, uploads):
    item = make(Z)
    frame(view, item)
    uploads.clear()
    item.set_data(X, Y, np.cos(Z))
    frame(view, item)
    assert uploads == [("write", (len(X) + 2) * (len(Y) + 2) * 4)]  # one float a vertex (and the padding)
    # new holes add their triangles' index buffer and the slopes' flags; the same holes again, nothing more
    uploads.clear()
    item.set_data(X, Y, with_holes())
    frame(view, item)
    assert len(uploads) == 3
    uploads.clear()
    item.set_data(X, Y, with_holes() + 1.0)
    frame(view, item)
    assert uploads == [("write", (len(X) + 2) * (len(Y) + 2) * 4)]


def test_contour_bands_darken_every_other_band(view):
    item = make(Z)
    plain = frame(view, item)
    item.set_bands(6, strength=0.5)
    banded = frame(view, item)
    drawn = plain.sum(-1) > 0
    ratio = banded[drawn].sum(-1) / np.maximum(plain[drawn].sum(-1), 1)
    # about half the surface keeps its colour, about half is at half brightness
    assert 0.25 < (np.abs(ratio - 1.0) < 0.05).mean() < 0.75
    assert 0.25 < (np.abs(ratio - 0.5) < 0.08).mean() < 0.75


def test_gradient_weights_are_numpys_gradient():
    rng = np.random.default_rng(0)
    for x in (X, Y, np.array([0.0, 0.3]), np.cumsum(rng.uniform(0.1, 1.0, 17))):
        z = rng.normal(size=len(x))
        w = gradient_weights(x).astype(np.float64)
        zp = np.concatenate([[0.0], z, [0.0]])
        ours = w[:, 0] * zp[:-2] + w[:, 1] * zp[1:-1] + w[:, 2] * zp[2:]
        assert np.allclose(ours, np.gradient(z, x), rtol=1e-5, atol=1e-5)


def test_slopes_are_flat_exactly_where_numpys_gradient_is_not_finite():
    z = with_holes()
    valid = slope_valid(np.isfinite(z))
    with np.errstate(invalid="ignore"):
        for axis, coords in ((0, X), (1, Y)):
            finite = np.isfinite(np.gradient(z, coords, axis=axis))
            present = np.isfinite(z)  # only present vertices are drawn
            assert np.array_equal((valid[..., axis] == 255)[present], finite[present])


@pytest.mark.parametrize("prefix", ["", "#version 100\n", "#version 120\n"], ids=["GLSL 1.10", "GLSL ES 1.00",
                                                                                  "GLSL 1.20"])
def test_shaders_compile_as_desktop_glsl_and_glsl_es(view, prefix):
    """pyqtgraph compiles them as GLSL ES 1.00 where the context offers ES2 compatibility, else as the
    context's default GLSL: both (and GLSL 1.20) must compile and link, with and without contour bands."""
    from OpenGL import GL
    from OpenGL.GL import shaders as glshaders

    from visualizer.gl.heightfield import _PROGRAMS

    view.makeCurrent()
    for program in _PROGRAMS.values():
        compiled = [glshaders.compileShader([prefix + s.code], s.shaderType) for s in program.shaders]
        linked = glshaders.compileProgram(*compiled)
        assert GL.glGetAttribLocation(linked, "a_zxp") >= 0
        GL.glDeleteProgram(linked)
