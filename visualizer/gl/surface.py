"""Grid helpers of the surface items, and the surface item that shades on the CPU (kept for comparison).

The labs draw surfaces with ``visualizer.gl.heightfield.HeightFieldItem``, which keeps the grid on the GPU and
uploads only heights; ``CpuSurfaceItem`` here is its predecessor, measured beside it by ``losslab bench``
(``surface_update_*_cpu_ms``) and the reference its pixels are tested against.

pyqtgraph's stock ``GLSurfacePlotItem`` recomputes smooth normals per vertex in Python (about 0.24 s for a
201x201 grid here). On a regular grid the normal is known from central differences of the heights, which
numpy computes in a fraction of a millisecond; lighting is applied to the vertex colours there too, the grid
is drawn as triangle strips, and the index buffers never change for a given grid size, so an update
re-uploads only positions and colours. Missing heights (NaN, or any value that is not finite) are holes: the
triangles that touch them are not drawn (indexed triangles instead of strips, only while there are holes).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyqtgraph as pg
from OpenGL import GL
from pyqtgraph.opengl import shaders
from pyqtgraph.opengl.GLGraphicsItem import GLGraphicsItem
from PySide6 import QtGui, QtOpenGL

# Lighting is computed on the CPU, per vertex, from the normals numpy already has: a fixed "sun" above
# and in front of the scene. The GPU (or Mesa's software rasterizer) then only interpolates colours, which
# measured ~30% faster per frame under llvmpipe than lighting in a shader.
LIGHT = np.array([0.35, -0.45, 0.82]) / np.linalg.norm([0.35, -0.45, 0.82])
AMBIENT, DIFFUSE, RIM = 0.48, 0.6, 0.05  # gains: colour * (AMBIENT + DIFFUSE |n . LIGHT|) + RIM (1 - n_z)^2


def grid_faces(nx: int, ny: int) -> np.ndarray:
    """Triangle indices (2 per cell) of an nx x ny vertex grid laid out row-major [i over x, j over y]."""
    idx = np.arange(nx * ny, dtype=np.uint32).reshape(nx, ny)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    # the two triangles of each cell are adjacent in the index buffer (friendlier to vertex caches)
    return np.stack([a, b, c, a, c, d], 1).reshape(-1, 3).astype(np.uint32)


def grid_edges(nx: int, ny: int, every: int = 1) -> np.ndarray:
    """Line indices of the grid's wireframe, one line every ``every`` vertices."""
    idx = np.arange(nx * ny, dtype=np.uint32).reshape(nx, ny)
    rows = idx[::every, :]
    cols = idx[:, ::every]
    e1 = np.stack([rows[:, :-1].ravel(), rows[:, 1:].ravel()], 1)
    e2 = np.stack([cols[:-1, :].ravel(), cols[1:, :].ravel()], 1)
    return np.concatenate([e1, e2]).astype(np.uint32)


def grid_normals(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Unit normals (nx*ny, 3) of the height field z[i, j] over axes x[i], y[j], by central differences."""
    gx, gy, inv = _slopes(x, y, z)
    return np.stack([-gx * inv, -gy * inv, inv], axis=-1).reshape(-1, 3)


def _slopes(x: np.ndarray, y: np.ndarray, z: np.ndarray):
    """Slopes by central differences; where a neighbour is missing (NaN) the slope is taken as flat."""
    z32 = z.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore"):
        gx = np.nan_to_num(np.gradient(z32, x.astype(np.float32), axis=0), nan=0.0, posinf=0.0, neginf=0.0)
        gy = np.nan_to_num(np.gradient(z32, y.astype(np.float32), axis=1), nan=0.0, posinf=0.0, neginf=0.0)
    inv = 1.0 / np.sqrt(gx * gx + gy * gy + np.float32(1.0))
    return gx, gy, inv


def shaded_colors(x: np.ndarray, y: np.ndarray, z: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Lit vertex colours as uint8 RGBA (nx*ny, 4): ambient plus two-sided diffuse from LIGHT (the normal
    is (-dz/dx, -dz/dy, 1) normalized), with a faint rim on steep walls; float32, no (n, 3) temporaries."""
    gx, gy, inv = _slopes(x, y, z)
    lx, ly, lz = (np.float32(v) for v in LIGHT)
    d = np.abs((lz - lx * gx - ly * gy) * inv)
    rim = (1.0 - inv) ** 2
    gain = (AMBIENT + DIFFUSE * d).reshape(-1, 1)
    c = np.asarray(colors, dtype=np.float32).reshape(-1, 4)
    out = np.empty(c.shape, dtype=np.uint8)
    rgb = c[:, :3] * gain + (RIM * rim).reshape(-1, 1)
    np.clip(rgb * 255.0 + 0.5, 0, 255, out=rgb)
    out[:, :3] = rgb
    out[:, 3] = np.clip(c[:, 3] * 255.0 + 0.5, 0, 255)
    return out


RESTART = np.uint32(0xFFFFFFFF)
LUT_SIZE = 512  # entries of the colour map's lookup table (a texture of this width on the GPU)


def grid_strips(nx: int, ny: int) -> np.ndarray:
    """Triangle-strip indices of the grid, one strip per pair of rows, separated by a restart index.

    A strip sends one index per triangle instead of three; under Mesa's software rasterizer that made a
    201x201 frame about a third faster than indexed triangles (measured: 35 -> 20 ms at 1280x720).
    """
    idx = np.arange(nx * ny, dtype=np.uint32).reshape(nx, ny)
    out = np.empty((nx - 1, 2 * ny + 1), dtype=np.uint32)
    out[:, 0:2 * ny:2] = idx[:-1]
    out[:, 1:2 * ny:2] = idx[1:]
    out[:, -1] = RESTART
    return out.ravel()


class GridSurfaceBase(GLGraphicsItem):
    """What both surface items share: the colour map as a lookup table, buffers uploaded through Qt, and
    ``uploads`` (a count per buffer name: what each frame sent to the GPU)."""

    def __init__(self, colormap: pg.ColorMap | None = None, glOptions: str = "opaque", parentItem=None) -> None:
        super().__init__(parentItem=parentItem)
        self.setGLOptions(glOptions)
        self._buffers: dict = {}
        self.uploads: Counter = Counter()
        self.z_range = (0.0, 1.0)
        self._shape: tuple[int, int] | None = None
        self._present: np.ndarray | None = None  # which vertices have a height (None: all of them)
        self._wire = False
        self._wire_color = (0.06, 0.07, 0.09, 1.0)
        self._wire_every = 0
        self.set_colormap(colormap or pg.colormap.get("viridis"))

    def set_colormap(self, cmap: pg.ColorMap) -> None:
        self._cmap = cmap
        self._lut = cmap.getLookupTable(0.0, 1.0, LUT_SIZE, alpha=True).astype(np.float32) / 255.0

    def set_wireframe(self, on: bool, color=(0.06, 0.07, 0.09, 1.0), every: int = 0) -> None:
        """Grid lines on the surface, one every ``every`` vertices (0: about 24 across the grid)."""
        self._wire = bool(on)
        self._wire_color = color
        self._wire_every = every
        if self._shape is not None and on:
            self._build_edges()
        self.update()

    @property
    def wireframe(self) -> bool:
        return self._wire

    def _wire_edges(self) -> np.ndarray:
        """(k, 2) the wireframe's lines in grid numbers (i * ny + j), none into a hole."""
        nx, ny = self._shape
        edges = grid_edges(nx, ny, self._wire_every or max(1, min(nx, ny) // 24))
        if self._present is not None:
            edges = edges[self._present[edges].all(axis=1)]
        return np.ascontiguousarray(edges)

    def _build_edges(self) -> None:
        """Each item: the wireframe's index buffer from ``_wire_edges``, uploaded by the next paint."""
        raise NotImplementedError

    def _upload_pending(self) -> None:
        """Each item: send what changed since the last frame to the GPU (the GL context is current); every
        paint starts with it, and ``losslab bench`` times it alone (``surface_new_*``)."""
        raise NotImplementedError

    def colors_for(self, z: np.ndarray, z_range: tuple[float, float] | None = None) -> np.ndarray:
        """The colour map's RGBA (float32 in [0, 1]) of heights z over ``z_range`` (default: their finite range)."""
        lo, hi = z_range if z_range is not None else self._finite_range(z)
        t = (np.nan_to_num(z, nan=lo) - lo) / (hi - lo if hi > lo else 1.0)
        k = np.clip((t * (len(self._lut) - 1)).astype(np.int32), 0, len(self._lut) - 1)
        return self._lut[k]

    def _buffer(self, name: str, kind):
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._buffers[name] = QtOpenGL.QOpenGLBuffer(kind)
        return buf

    def _upload(self, name: str, arr: np.ndarray, kind) -> None:
        buf = self._buffer(name, kind)
        if not buf.isCreated():
            buf.create()
        buf.bind()
        if buf.size() != arr.nbytes:
            buf.allocate(arr, arr.nbytes)
        else:
            buf.write(0, arr, arr.nbytes)
        buf.release()
        self.uploads[name] += 1

    @staticmethod
    def _finite_range(z: np.ndarray) -> tuple[float, float]:
        f = z[np.isfinite(z)]
        if f.size == 0:
            return 0.0, 1.0
        lo, hi = float(f.min()), float(f.max())
        return (lo, hi) if hi > lo else (lo, lo + 1.0)


class CpuSurfaceItem(GridSurfaceBase):
    """A height-coloured surface z[i, j] over (x[i], y[j]) with optional wireframe.

    ``set_data(x, y, z, colors=None)``: z may hold NaN (a hole: the triangles touching it are left out);
    ``colors`` (nx, ny, 4) float32 in [0, 1] overrides the colour map. ``set_colormap`` takes any pyqtgraph
    ColorMap. Only what changed is uploaded: positions and colours on every update, indices when the size or
    the holes change.
    """

    def __init__(self, colormap: pg.ColorMap | None = None, glOptions: str = "opaque", parentItem=None) -> None:
        super().__init__(colormap, glOptions, parentItem)
        self.vertexes: np.ndarray | None = None
        self.colors: np.ndarray | None = None
        self.strips: np.ndarray | None = None
        self.faces: np.ndarray | None = None  # the triangles drawn while the grid has holes (else None: strips)
        self.edges: np.ndarray | None = None
        self._dirty: set[str] = set()

    # --- public API ---------------------------------------------------------------------------
    def set_data(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, colors: np.ndarray | None = None,
                 z_range: tuple[float, float] | None = None) -> None:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        nx, ny = z.shape
        if x.shape != (nx,) or y.shape != (ny,) or nx < 2 or ny < 2:
            raise ValueError("x and y must match z's shape (at least 2x2)")
        lo, hi = z_range if z_range is not None else self._finite_range(z)
        self.z_range = (lo, hi)
        finite = np.isfinite(z)
        present = None if finite.all() else finite.ravel()
        zf = np.where(finite, z, lo)
        resized = self._shape != (nx, ny)
        if resized:
            self._shape = (nx, ny)
            self.strips = grid_strips(nx, ny)
            self._dirty.add("strips")
        holes_changed = not (present is None and self._present is None) and (
            present is None or self._present is None or resized or not np.array_equal(present, self._present))
        if holes_changed:
            self._present = present
            self.faces = None
            if present is not None:
                faces = grid_faces(nx, ny)
                self.faces = np.ascontiguousarray(faces[present[faces].all(axis=1)]).ravel()
                self._dirty.add("faces")
        if self._wire and (resized or holes_changed):
            self._build_edges()
        verts = np.empty((nx, ny, 3), dtype=np.float32)
        verts[..., 0] = x[:, None]
        verts[..., 1] = y[None, :]
        verts[..., 2] = zf
        self.vertexes = verts.reshape(-1, 3)
        if colors is None:
            colors = self.colors_for(zf, (lo, hi))
        # uint8: 4 bytes a vertex instead of 16; a hole's neighbours are lit as if flat towards it
        self.colors = shaded_colors(x, y, np.where(finite, z, np.nan), colors)
        self._dirty |= {"position", "color"}
        self.update()

    # --- drawing --------------------------------------------------------------------------------
    def paint(self) -> None:
        if self.vertexes is None:
            return
        self.setupGLState()
        self._upload_pending()
        mvp = np.array(self.mvpMatrix().data(), dtype=np.float32)
        context = QtGui.QOpenGLContext.currentContext()
        shader = shaders.getShaderProgram(None)
        program = shader.program(es2_compat=context.hasExtension(b"GL_ARB_ES2_compatibility"))
        pos_loc = GL.glGetAttribLocation(program, "a_position")
        col_loc = GL.glGetAttribLocation(program, "a_color")
        self._buffers["position"].bind()
        GL.glVertexAttribPointer(pos_loc, 3, GL.GL_FLOAT, False, 0, None)
        self._buffers["position"].release()
        GL.glEnableVertexAttribArray(pos_loc)
        with shader:
            GL.glUniformMatrix4fv(GL.glGetUniformLocation(program, "u_mvp"), 1, False, mvp)
            self._buffers["color"].bind()
            GL.glVertexAttribPointer(col_loc, 4, GL.GL_UNSIGNED_BYTE, True, 0, None)
            self._buffers["color"].release()
            GL.glEnableVertexAttribArray(col_loc)
            if self.faces is None:
                GL.glEnable(GL.GL_PRIMITIVE_RESTART)
                GL.glPrimitiveRestartIndex(int(RESTART))
                self._buffers["strips"].bind()
                GL.glDrawElements(GL.GL_TRIANGLE_STRIP, self.strips.size, GL.GL_UNSIGNED_INT, None)
                self._buffers["strips"].release()
                GL.glDisable(GL.GL_PRIMITIVE_RESTART)
            elif self.faces.size:  # holes: only the triangles whose three corners have a height
                self._buffers["faces"].bind()
                GL.glDrawElements(GL.GL_TRIANGLES, self.faces.size, GL.GL_UNSIGNED_INT, None)
                self._buffers["faces"].release()
            GL.glDisableVertexAttribArray(col_loc)
            if self._wire and self.edges is not None and self.edges.size and "edges" in self._buffers:
                GL.glVertexAttrib4f(col_loc, *self._wire_color)
                GL.glDepthFunc(GL.GL_LEQUAL)  # lines lie exactly on the surface
                self._buffers["edges"].bind()
                GL.glDrawElements(GL.GL_LINES, self.edges.size, GL.GL_UNSIGNED_INT, None)
                self._buffers["edges"].release()
                GL.glDepthFunc(GL.GL_LESS)
        GL.glDisableVertexAttribArray(pos_loc)

    def _upload_pending(self) -> None:
        vb, ib = QtOpenGL.QOpenGLBuffer.Type.VertexBuffer, QtOpenGL.QOpenGLBuffer.Type.IndexBuffer
        for name in sorted(self._dirty):
            arr = {"position": self.vertexes, "color": self.colors, "strips": self.strips, "faces": self.faces,
                   "edges": self.edges}[name]
            if arr is not None and arr.size:
                self._upload(name, arr, ib if name in ("strips", "faces", "edges") else vb)
        self._dirty.clear()

    # --- helpers --------------------------------------------------------------------------------
    def _build_edges(self) -> None:
        self.edges = self._wire_edges()
        self._dirty.add("edges")
