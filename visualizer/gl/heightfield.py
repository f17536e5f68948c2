"""The surface item every lab shares: a height field whose grid lives on the GPU, shaded by the GPU.

The grid's (x, y) positions, the gradient coefficients of its spacing and the index buffers (triangle strips,
the triangles left while there are holes, the wireframe's lines) are uploaded when the grid's shape or
coordinates change; a new surface on the same grid uploads one float per vertex (the heights). The vertex
shader reads each vertex's four neighbours from that same buffer (attribute pointers at other offsets into a
padded copy of the grid), so normals by central differences, lighting and the colour map (a lookup texture,
its range a uniform) are computed there; colour-map, lighting, range and z-scale changes upload nothing but
uniforms (a new colour map: its 512-texel texture). The colours are computed per vertex, as the CPU item
(``visualizer.gl.surface.CpuSurfaceItem``) computes them, so both draw the same pixels; under Mesa's software
rasterizer a trivial fragment shader is what keeps a frame fast. Missing heights (NaN, any value that is not
finite as a float32, the GPU's heights) are holes exactly as there: triangles with a corner missing are left
out of the index buffer (rebuilt only when the missing set changes), and a slope towards a missing neighbour is
taken as flat.

Measured here (Mesa llvmpipe, 1280x720): a new 401x401 surface costs 0.4 ms in ``set_data`` against the CPU
item's 8 ms, but the frame itself (about 33 ms: setting up 320k triangles, each vertex shaded twice by the
strips) is the same for both, so the whole update is only ~1.2x faster there; on a GPU the frame is not the
cost. Drawing fewer triangles than the grid has would be faster and not the same picture. Where that frame goes
(a 201x201 surface, 80k triangles): 5.3 ms in ``paintGL`` on the GUI thread (vertex shading, triangle setup
and binning; 4.7 ms for the CPU item) and 6.8 ms in ``glFinish`` (llvmpipe's threads rasterizing; the same for
both). With the rasterizer discarding everything, the vertex stage alone is 1.9 ms (CPU item 1.2 ms); a vertex
shader without its colour-map fetch, or without the bands' varying, changed neither figure measurably.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pyqtgraph as pg
from OpenGL import GL
from pyqtgraph.opengl.shaders import FragmentShader, ShaderProgram, VertexShader
from PySide6 import QtGui, QtOpenGL

from visualizer.gl.surface import (
    AMBIENT,
    DIFFUSE,
    LIGHT,
    LUT_SIZE,
    RESTART,
    RIM,
    GridSurfaceBase,
    grid_faces,
    grid_strips,
)

FLOAT_MAX = 3.4e38  # an unbounded clip range, as a float a GLSL ES uniform can hold

# GLSL 1.10/1.20 and GLSL ES 1.00 alike (pyqtgraph prefixes "#version 100" where the context offers ES2
# compatibility, as Mesa's does): no integer arithmetic, a 2D lookup texture one texel high, texture2DLod in
# the vertex shader.
_VERTEX = """
uniform mat4 u_mvp;
uniform vec2 u_clip;        // heights are clamped to [u_clip.x, u_clip.y] before they are drawn
uniform vec2 u_zmap;        // drawn height = (clamped height - u_zmap.x) * u_zmap.y
uniform vec2 u_range;       // the colour map spans heights u_range.x .. u_range.x + 1 / u_range.y
uniform sampler2D u_lut;    // the colour map, LUT_SIZE x 1 texels
uniform float u_lut_size;
uniform vec3 u_light;       // unit vector towards the light
uniform vec3 u_shade;       // ambient, diffuse and rim gains
uniform float u_own_colors; // 1: the vertex colours given (a_color) instead of the colour map
uniform vec4 u_solid;       // the wireframe's colour, drawn when u_solid_on is 1
uniform float u_solid_on;
attribute vec2 a_position;
attribute float a_z;
attribute float a_zxm;
attribute float a_zxp;
attribute float a_zym;
attribute float a_zyp;
attribute vec3 a_cx;        // d/dx = a_cx . (z[i-1], z[i], z[i+1]), numpy.gradient's weights for this spacing
attribute vec3 a_cy;
attribute vec2 a_valid;     // 0 where the slope along x (y) would reach a missing height: flat there
attribute vec4 a_color;
varying vec4 v_color;
varying float v_t;

float drawn(float h) {
    return (clamp(h, u_clip.x, u_clip.y) - u_zmap.x) * u_zmap.y;
}

void main() {
    float z = drawn(a_z);
    float gx = dot(a_cx, vec3(drawn(a_zxm), z, drawn(a_zxp))) * a_valid.x;
    float gy = dot(a_cy, vec3(drawn(a_zym), z, drawn(a_zyp))) * a_valid.y;
    float inv = inversesqrt(gx * gx + gy * gy + 1.0);
    float d = abs((u_light.z - u_light.x * gx - u_light.y * gy) * inv);
    float rim = (1.0 - inv) * (1.0 - inv);
    v_t = (a_z - u_range.x) * u_range.y;
    float k = clamp(floor(v_t * (u_lut_size - 1.0)), 0.0, u_lut_size - 1.0);
    vec4 base = mix(texture2DLod(u_lut, vec2((k + 0.5) / u_lut_size, 0.5), 0.0), a_color, u_own_colors);
    vec4 lit = vec4(clamp(base.rgb * (u_shade.x + u_shade.y * d) + u_shade.z * rim, 0.0, 1.0), base.a);
    v_color = mix(lit, u_solid, u_solid_on);
    gl_Position = u_mvp * vec4(a_position, z, 1.0);
}
"""

_FRAGMENT = """
#ifdef GL_ES
precision mediump float;
#endif
uniform vec2 u_bands;       // contour bands: how many over the colour range, how much darker every other one
varying vec4 v_color;
varying float v_t;
void main() {
    vec4 c = v_color;
#ifdef BANDS
    c.rgb *= 1.0 - u_bands.y * mod(floor(v_t * u_bands.x), 2.0);
#endif
    gl_FragColor = c;
}
"""

# pyqtgraph caches compiled programs globally (valid because the app's contexts share objects): these two are
# compiled once per process, the banded one only when bands are first drawn
_PROGRAMS = {
    False: ShaderProgram("losslab_heightfield", [VertexShader(_VERTEX), FragmentShader(_FRAGMENT)]),
    True: ShaderProgram("losslab_heightfield_bands",
                        [VertexShader(_VERTEX), FragmentShader("#define BANDS 1\n" + _FRAGMENT)]),
}

# (attribute, offset in floats into the padded heights (nx + 2, ny + 2)) for vertex v = i (ny + 2) + j, whose own
# height is at padded (i + 1, j + 1)
_HEIGHT_ATTRIBUTES = (("a_zxm", lambda ny: 1), ("a_z", lambda ny: ny + 3), ("a_zxp", lambda ny: 2 * ny + 5),
                      ("a_zym", lambda ny: ny + 2), ("a_zyp", lambda ny: ny + 4))


def gradient_weights(x: np.ndarray) -> np.ndarray:
    """(n, 3) float32 weights w with dz/dx[i] = w[i] . (z[i-1], z[i], z[i+1]): numpy.gradient's second-order
    formula for any spacing inside, one-sided first differences at the two ends (a weight on a neighbour
    beyond the end is 0)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.zeros((len(x), 3))
    h = np.diff(x)
    d1, d2 = h[:-1], h[1:]
    w[1:-1, 0] = -d2 / (d1 * (d1 + d2))
    w[1:-1, 1] = (d2 - d1) / (d1 * d2)
    w[1:-1, 2] = d1 / (d2 * (d1 + d2))
    w[0, 1:] = -1.0 / h[0], 1.0 / h[0]
    w[-1, :2] = -1.0 / h[-1], 1.0 / h[-1]
    return w.astype(np.float32)


def slope_valid(present: np.ndarray) -> np.ndarray:
    """(nx, ny, 2) uint8: 255 where the slope along x (y) uses only present heights, as numpy.gradient's
    would be finite (the vertex and both neighbours inside; the vertex and its one neighbour at an end)."""
    p = np.pad(present, 1, constant_values=True)
    vx = p[:-2, 1:-1] & p[1:-1, 1:-1] & p[2:, 1:-1]
    vy = p[1:-1, :-2] & p[1:-1, 1:-1] & p[1:-1, 2:]
    return np.stack([vx, vy], axis=-1).astype(np.uint8) * np.uint8(255)


class HeightFieldItem(GridSurfaceBase):
    """A height-coloured surface z[i, j] over (x[i], y[j]) with optional wireframe and contour bands.

    ``set_data(x, y, z, colors=None, z_range=None)``: z may hold NaN (a hole); ``colors`` (nx, ny, 4) float32
    in [0, 1] overrides the colour map (uploaded with the heights); ``z_range`` is the colour map's range
    (default: the finite range of z). ``set_display(scale, offset, clip)`` maps heights to drawn heights;
    ``set_colormap``, ``set_lighting``, ``set_color_range``, ``set_bands`` and ``set_wireframe`` change
    uniforms (and the colour map's texture, the wireframe's index buffer) only.

    ``faces`` are the triangles drawn while the grid has holes, numbered as the grid (i * ny + j), else None.
    """

    def __init__(self, colormap: pg.ColorMap | None = None, glOptions: str = "opaque", parentItem=None) -> None:
        self._lut_dirty = True  # before the base class sets the first colour map through set_colormap
        super().__init__(colormap, glOptions, parentItem)
        self._coords: tuple[np.ndarray, np.ndarray] | None = None
        self._heights: np.ndarray | None = None  # padded (nx + 2, ny + 2) float32, the uploaded layout
        self._colors: np.ndarray | None = None  # (nx, ny + 2, 4) uint8 given colours, or None: the colour map
        self.faces: np.ndarray | None = None
        self._index_counts: dict[str, int] = {}
        self._pending: dict[str, np.ndarray] = {}  # what the next paint uploads, by buffer name
        self._texture = None
        self._display = (1.0, 0.0, (-FLOAT_MAX, FLOAT_MAX))
        self._light = tuple(float(v) for v in LIGHT)
        self._shade = (AMBIENT, DIFFUSE, RIM)
        self._bands = (0, 0.0)

    # --- public API ---------------------------------------------------------------------------
    def set_colormap(self, cmap: pg.ColorMap) -> None:
        super().set_colormap(cmap)
        self._lut_dirty = True
        self.update()

    def set_color_range(self, lo: float, hi: float) -> None:
        """The heights the colour map spans (uniforms only)."""
        self.z_range = (float(lo), float(hi))
        self.update()

    def set_display(self, scale: float = 1.0, offset: float = 0.0, clip: tuple[float, float] | None = None) -> None:
        """Drawn height = (z clamped to ``clip`` - offset) * scale; normals follow (uniforms only)."""
        lo, hi = clip if clip is not None else (-FLOAT_MAX, FLOAT_MAX)
        self._display = (float(scale), float(offset), (float(lo), float(hi)))
        self.update()

    def set_lighting(self, direction=None, ambient: float | None = None, diffuse: float | None = None,
                     rim: float | None = None) -> None:
        """The light (a direction towards it) and the gains of ambient, two-sided diffuse and rim light."""
        if direction is not None:
            d = np.asarray(direction, dtype=np.float64)
            self._light = tuple(float(v) for v in d / np.linalg.norm(d))
        a, d, r = self._shade
        self._shade = (a if ambient is None else float(ambient), d if diffuse is None else float(diffuse),
                       r if rim is None else float(rim))
        self.update()

    def set_bands(self, count: int, strength: float = 0.18) -> None:
        """Contour bands: ``count`` bands over the colour range, every other one darker by ``strength``
        (0 bands: none)."""
        self._bands = (max(0, int(count)), float(strength))
        self.update()

    def set_data(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, colors: np.ndarray | None = None,
                 z_range: tuple[float, float] | None = None) -> None:
        z = np.asarray(z)
        nx, ny = z.shape
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.shape != (nx,) or y.shape != (ny,) or nx < 2 or ny < 2:
            raise ValueError("x and y must match z's shape (at least 2x2)")
        resized = self._shape != (nx, ny)
        if resized:
            self._shape = (nx, ny)
            self._heights = np.zeros((nx + 2, ny + 2), dtype=np.float32)
            self._pending["strips"] = self._to_vertices(grid_strips(nx, ny))
            self._present = None
            self.faces = None
            self._coords = None
        if self._coords is None or not (np.array_equal(x, self._coords[0]) and np.array_equal(y, self._coords[1])):
            self._set_grid(x, y)
        inner = self._heights[1:-1, 1:-1]
        inner[...] = z
        finite = np.isfinite(inner)
        present = None if finite.all() else finite.ravel()
        if z_range is not None:
            lo, hi = z_range
        else:
            lo, hi = self._finite_range(inner) if present is not None else (float(inner.min()), float(inner.max()))
            hi = hi if hi > lo else lo + 1.0
        self.z_range = (float(lo), float(hi))
        if present is not None:
            inner[~finite] = lo  # never drawn: a stand-in the shader can compute with
        same_holes = (present is None and self._present is None) or (
            present is not None and self._present is not None and np.array_equal(present, self._present))
        if not same_holes:
            self._set_holes(present)
        if self._wire and (resized or not same_holes):
            self._build_edges()
        self._pending["heights"] = self._heights
        if colors is None:
            self._colors = None
        else:
            rgba = np.zeros((nx, ny + 2, 4), dtype=np.uint8)
            rgba[:, :ny] = np.clip(np.asarray(colors, dtype=np.float32).reshape(nx, ny, 4) * 255.0 + 0.5, 0, 255)
            self._colors = rgba
            self._pending["color"] = rgba
        self.update()

    # --- grid and holes (uploaded when they change) ---------------------------------------------------
    def _to_vertices(self, idx: np.ndarray) -> np.ndarray:
        """Grid vertex numbers (i * ny + j) to the GPU's (i * (ny + 2) + j); restart indices stay."""
        ny = self._shape[1]
        i, j = np.divmod(idx, np.uint32(ny))
        out = (i * np.uint32(ny + 2) + j).astype(np.uint32)
        return np.where(idx == RESTART, RESTART, out).astype(np.uint32)

    def _set_grid(self, x: np.ndarray, y: np.ndarray) -> None:
        nx, ny = self._shape
        self._coords = (x.copy(), y.copy())
        grid = np.zeros((nx, ny + 2, 8), dtype=np.float32)  # x, y, x weights (3), y weights (3)
        grid[:, :ny, 0] = x[:, None]
        grid[:, :ny, 1] = y[None, :]
        grid[:, :ny, 2:5] = gradient_weights(x)[:, None, :]
        grid[:, :ny, 5:8] = gradient_weights(y)[None, :, :]
        self._pending["grid"] = grid

    def _set_holes(self, present: np.ndarray | None) -> None:
        nx, ny = self._shape
        self._present = present
        self.faces = None
        if present is not None:
            faces = grid_faces(nx, ny)
            self.faces = np.ascontiguousarray(faces[present[faces].all(axis=1)]).ravel()
            self._pending["faces"] = self._to_vertices(self.faces)
            valid = np.zeros((nx, ny + 2, 2), dtype=np.uint8)
            valid[:, :ny] = slope_valid(present.reshape(nx, ny))
            self._pending["valid"] = valid

    def _build_edges(self) -> None:
        self._pending["edges"] = self._to_vertices(self._wire_edges().ravel())

    # --- drawing --------------------------------------------------------------------------------
    def paint(self) -> None:
        if self._shape is None:
            return
        self.setupGLState()
        self._upload_pending()
        context = QtGui.QOpenGLContext.currentContext()
        es2 = context.hasExtension(b"GL_ARB_ES2_compatibility")
        shader = _PROGRAMS[self._bands[0] > 0]
        program = shader.program(es2_compat=es2)
        loc = {name: GL.glGetAttribLocation(program, name) for name in
               ("a_position", "a_cx", "a_cy", "a_valid", "a_color", *(n for n, _ in _HEIGHT_ATTRIBUTES))}
        enabled = []

        def attribute(name: str, buffer: str, size: int, kind, normalized: bool, stride: int, offset: int) -> None:
            if loc[name] < 0:
                return
            self._buffers[buffer].bind()
            GL.glVertexAttribPointer(loc[name], size, kind, normalized, stride, ctypes.c_void_p(offset) if offset else None)
            self._buffers[buffer].release()
            GL.glEnableVertexAttribArray(loc[name])
            enabled.append(loc[name])

        ny = self._shape[1]
        attribute("a_position", "grid", 2, GL.GL_FLOAT, False, 32, 0)
        attribute("a_cx", "grid", 3, GL.GL_FLOAT, False, 32, 8)
        attribute("a_cy", "grid", 3, GL.GL_FLOAT, False, 32, 20)
        for name, offset in _HEIGHT_ATTRIBUTES:
            attribute(name, "heights", 1, GL.GL_FLOAT, False, 0, 4 * offset(ny))
        if self._present is not None:
            attribute("a_valid", "valid", 2, GL.GL_UNSIGNED_BYTE, True, 0, 0)
        elif loc["a_valid"] >= 0:
            GL.glVertexAttrib2f(loc["a_valid"], 1.0, 1.0)
        if self._colors is not None:
            attribute("a_color", "color", 4, GL.GL_UNSIGNED_BYTE, True, 0, 0)
        elif loc["a_color"] >= 0:
            GL.glVertexAttrib4f(loc["a_color"], 0.0, 0.0, 0.0, 1.0)
        GL.glActiveTexture(GL.GL_TEXTURE0)
        GL.glBindTexture(GL.GL_TEXTURE_2D, self._texture)
        try:
            with shader:
                self._set_uniforms(shader)
                if self.faces is None:
                    GL.glEnable(GL.GL_PRIMITIVE_RESTART)
                    GL.glPrimitiveRestartIndex(int(RESTART))
                    self._draw("strips", GL.GL_TRIANGLE_STRIP)
                    GL.glDisable(GL.GL_PRIMITIVE_RESTART)
                else:  # holes: only the triangles whose three corners have a height
                    self._draw("faces", GL.GL_TRIANGLES)
                if self._wire and self._index_counts.get("edges"):
                    GL.glUniform1f(shader.uniform("u_solid_on"), 1.0)
                    GL.glDepthFunc(GL.GL_LEQUAL)  # lines lie exactly on the surface
                    self._draw("edges", GL.GL_LINES)
                    GL.glDepthFunc(GL.GL_LESS)
        finally:
            GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
            for i in enabled:
                GL.glDisableVertexAttribArray(i)

    def _upload_pending(self) -> None:
        vb, ib = QtOpenGL.QOpenGLBuffer.Type.VertexBuffer, QtOpenGL.QOpenGLBuffer.Type.IndexBuffer
        for name, arr in self._pending.items():
            is_index = name in ("strips", "faces", "edges")
            if is_index:
                self._index_counts[name] = arr.size
            if arr.size:
                self._upload(name, arr, ib if is_index else vb)
        self._pending.clear()
        if self._lut_dirty:
            if self._texture is None:
                self._texture = GL.glGenTextures(1)
            GL.glBindTexture(GL.GL_TEXTURE_2D, self._texture)
            for p in (GL.GL_TEXTURE_MIN_FILTER, GL.GL_TEXTURE_MAG_FILTER):
                GL.glTexParameteri(GL.GL_TEXTURE_2D, p, GL.GL_NEAREST)
            for p in (GL.GL_TEXTURE_WRAP_S, GL.GL_TEXTURE_WRAP_T):
                GL.glTexParameteri(GL.GL_TEXTURE_2D, p, GL.GL_CLAMP_TO_EDGE)
            lut = np.ascontiguousarray(np.round(self._lut * 255.0).astype(np.uint8))
            GL.glTexImage2D(GL.GL_TEXTURE_2D, 0, GL.GL_RGBA, LUT_SIZE, 1, 0, GL.GL_RGBA, GL.GL_UNSIGNED_BYTE, lut)
            GL.glBindTexture(GL.GL_TEXTURE_2D, 0)
            self.uploads["colormap"] += 1
            self._lut_dirty = False

    def _set_uniforms(self, shader: ShaderProgram) -> None:
        mvp = np.array(self.mvpMatrix().data(), dtype=np.float32)
        GL.glUniformMatrix4fv(shader.uniform("u_mvp"), 1, False, mvp)
        scale, offset, (clo, chi) = self._display
        lo, hi = self.z_range
        GL.glUniform2f(shader.uniform("u_clip"), clo, chi)
        GL.glUniform2f(shader.uniform("u_zmap"), offset, scale)
        GL.glUniform2f(shader.uniform("u_range"), lo, 1.0 / (hi - lo) if hi > lo else 1.0)
        GL.glUniform1i(shader.uniform("u_lut"), 0)
        GL.glUniform1f(shader.uniform("u_lut_size"), float(LUT_SIZE))
        GL.glUniform3f(shader.uniform("u_light"), *self._light)
        GL.glUniform3f(shader.uniform("u_shade"), *self._shade)
        GL.glUniform1f(shader.uniform("u_own_colors"), 1.0 if self._colors is not None else 0.0)
        GL.glUniform4f(shader.uniform("u_solid"), *self._wire_color)
        GL.glUniform1f(shader.uniform("u_solid_on"), 0.0)
        if self._bands[0] > 0:
            GL.glUniform2f(shader.uniform("u_bands"), float(self._bands[0]), self._bands[1])

    def _draw(self, name: str, mode) -> None:
        count = self._index_counts.get(name, 0)
        if not count:
            return
        self._buffers[name].bind()
        GL.glDrawElements(mode, count, GL.GL_UNSIGNED_INT, None)
        self._buffers[name].release()
