"""Exports of surfaces and trajectories: mesh as OBJ and PLY, arrays as CSV and NPZ. Written atomically."""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename: a crash or a full
    disk leaves the old file (or none), never half a file, and no temporary file behind."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".losslab-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def grid_mesh(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (nx*ny, 3) and triangles (2 per cell) of a height field z[i, j] over (x[i], y[j]).
    Cells touching a non-finite value are left out (gaps stay gaps)."""
    nx, ny = z.shape
    verts = np.column_stack([np.repeat(x, ny), np.tile(y, nx), np.nan_to_num(z.ravel(), nan=0.0, posinf=0.0)])
    idx = np.arange(nx * ny).reshape(nx, ny)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    good = np.isfinite(z)
    cell_ok = (good[:-1, :-1] & good[1:, :-1] & good[1:, 1:] & good[:-1, 1:]).ravel()
    faces = np.concatenate([np.stack([a, b, c], 1)[cell_ok], np.stack([a, c, d], 1)[cell_ok]])
    return verts, faces


def write_obj(path: str, verts: np.ndarray, faces: np.ndarray) -> None:
    buf = io.StringIO()
    buf.write("# losslab loss surface\n")
    np.savetxt(buf, verts, fmt="v %.9g %.9g %.9g")
    np.savetxt(buf, faces + 1, fmt="f %d %d %d")
    atomic_write(path, buf.getvalue().encode())


def write_ply(path: str, verts: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian PLY (float32 vertices, int32 triangle indices)."""
    header = (f"ply\nformat binary_little_endian 1.0\ncomment losslab loss surface\nelement vertex {len(verts)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n").encode()
    v = np.asarray(verts, dtype="<f4").tobytes()
    f = np.zeros(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    f["n"] = 3
    f["i"] = faces
    atomic_write(path, header + v + f.tobytes())


def write_npz(path: str, **arrays) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write(path, buf.getvalue())


def write_csv(path: str, columns: dict[str, np.ndarray]) -> None:
    names = list(columns)
    data = np.column_stack([np.asarray(columns[n], dtype=np.float64).ravel() for n in names])
    buf = io.StringIO()
    np.savetxt(buf, data, delimiter=",", header=",".join(names), comments="", fmt="%.10g")
    atomic_write(path, buf.getvalue().encode())


def surface_columns(x: np.ndarray, y: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    """Long format: one row per grid point (a, b, loss)."""
    aa, bb = np.meshgrid(x, y, indexing="ij")
    return {"a": aa.ravel(), "b": bb.ravel(), "loss": values.ravel()}
