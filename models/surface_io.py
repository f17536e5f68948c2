"""Surface and direction files in the layout of the reference loss-landscape code (tomgoldstein/loss-landscape).

Surface file: datasets ``xcoordinates`` (nx), ``ycoordinates`` (ny), ``train_loss`` / ``train_acc`` (and
``test_loss`` / ``test_acc`` when present) and ``dir_file`` (the direction file's name). The reference fills
its 2D arrays in ``meshgrid(x, y).ravel()`` order: flat entry k = iy * nx + ix holds the value at
(x[ix], y[iy]); missing values are -1. Here surfaces are arrays indexed [ix, iy] with NaN for missing.
Direction file: groups ``xdirection`` and ``ydirection``, one dataset per parameter named '0', '1', ... in the
model's parameter order.

Files are written atomically (a temporary file, then a rename); a corrupt or truncated file raises
SurfaceFileError with the file's name and what is wrong, and nothing is overwritten.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

ARRAYS = ("train_loss", "train_acc", "test_loss", "test_acc")


class SurfaceFileError(ValueError):
    """An unreadable or malformed surface/direction file."""


@dataclass
class Surface:
    x: np.ndarray
    y: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (nx, ny), NaN = not computed
    dir_file: str = ""

    def missing(self, name: str = "train_loss") -> np.ndarray:
        return np.isnan(self.values[name])


def to_reference(values: np.ndarray) -> np.ndarray:
    """[ix, iy] with NaN -> the reference's (nx, ny) array filled in meshgrid ravel order, -1 for missing."""
    nx, ny = values.shape
    flat = np.where(np.isnan(values), -1.0, values).T.ravel()  # k = iy * nx + ix
    return flat.reshape(nx, ny)


def from_reference(arr: np.ndarray, nx: int, ny: int) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if arr.size != nx * ny:
        raise SurfaceFileError(f"an array of {arr.size} values cannot hold a {nx} x {ny} grid")
    out = arr.ravel().reshape(ny, nx).T.copy()
    out[out == -1] = np.nan
    return out


def _atomic_h5(path: str, fill) -> None:
    import h5py

    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise OSError(f"cannot write to {folder}")
    fd, tmp = tempfile.mkstemp(suffix=".h5.tmp", dir=folder)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_surface(path: str, s: Surface, attrs: dict | None = None) -> None:
    def fill(f):
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        f["xcoordinates"] = np.asarray(s.x, dtype=np.float64)
        f["ycoordinates"] = np.asarray(s.y, dtype=np.float64)
        f["dir_file"] = s.dir_file
        for name, v in s.values.items():
            f[name] = to_reference(v)

    _atomic_h5(path, fill)


def read_surface(path: str) -> Surface:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "xcoordinates" not in f:
                raise SurfaceFileError(f"{path}: no 'xcoordinates' dataset: not a loss-surface file")
            x = np.asarray(f["xcoordinates"][...], dtype=np.float64).ravel()
            y = np.asarray(f["ycoordinates"][...], dtype=np.float64).ravel() if "ycoordinates" in f else np.zeros(1)
            vals = {}
            for name in ARRAYS:
                if name in f:
                    vals[name] = from_reference(f[name][...], len(x), len(y))
            if not vals:
                raise SurfaceFileError(f"{path}: no loss or accuracy arrays ({', '.join(ARRAYS)})")
            d = f["dir_file"][()] if "dir_file" in f else b""
            d = d.decode() if isinstance(d, bytes) else str(d)
    except SurfaceFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise SurfaceFileError(f"{path}: cannot read it as an HDF5 surface file ({exc})") from None
    return Surface(x, y, vals, d)


def write_directions(path: str, xdir: list[np.ndarray], ydir: list[np.ndarray]) -> None:
    def fill(f):
        for name, d in (("xdirection", xdir), ("ydirection", ydir)):
            g = f.create_group(name)
            for i, t in enumerate(d):
                g.create_dataset(str(i), data=np.asarray(t))

    _atomic_h5(path, fill)


def read_directions(path: str, shapes: list[tuple] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            out = []
            for name in ("xdirection", "ydirection"):
                if name not in f:
                    raise SurfaceFileError(f"{path}: no '{name}' group: not a direction file")
                g = f[name]
                out.append([np.asarray(g[str(i)][...]) for i in range(len(g))])
    except SurfaceFileError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise SurfaceFileError(f"{path}: cannot read it as an HDF5 direction file ({exc})") from None
    if shapes is not None:
        for d in out:
            if [tuple(t.shape) for t in d] != [tuple(s) for s in shapes]:
                raise SurfaceFileError(f"{path}: its directions do not match this model's parameter shapes")
    return out[0], out[1]
