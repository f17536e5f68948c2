"""Exports of surfaces and trajectories: mesh as OBJ and PLY, arrays as CSV and NPZ. Written atomically."""

from __future__ import annotations

import io
import os
import tempfile
import threading

import numpy as np

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux: /proc/self/status);
    elsewhere set and restored at once (a file another thread creates meanwhile gets the stricter 0o077)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permission bits ``open()`` gives a new file: 0o666 less the umask (``mkstemp`` gives 0600,
    whatever the umask, so files written through a temporary file are set to this before the rename)."""
    return 0o666 & ~current_umask()


def check_output_path(path: str, suffixes: tuple[str, ...] = (), what: str = "the output") -> str | None:
    """Why ``path`` cannot be written (a missing or unwritable folder, a folder in its place, a name without
    one of ``suffixes``), in one line; None when it can. Checked before long work whose result goes there."""
    if not path:
        return f"{what}: no file name given"
    if suffixes and not path.lower().endswith(tuple(s.lower() for s in suffixes)):
        names = ", ".join(suffixes[:-1]) + (" or " if len(suffixes) > 1 else "") + suffixes[-1]
        return f"{what} {path}: the file name must end in {names}"
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"{what} {path}: that is a folder"
    if not os.path.exists(folder):
        return f"{what} {path}: the folder {folder} does not exist"
    if not os.path.isdir(folder):
        return f"{what} {path}: {folder} is not a folder"
    try:  # the only sure test (permissions, a read-only file system, root's rights): write there
        fd, probe = tempfile.mkstemp(prefix=".losslab-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{what} {path}: the folder {folder} cannot be written ({exc.strerror or exc})"
    return None


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename: a crash or a full
    disk leaves the old file (or none), never half a file, and no temporary file behind. The file gets the
    permissions a plain ``open()`` would give a new file (0o666 less the umask), not mkstemp's 0600."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    mode = new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=".losslab-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
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
