"""An independent writer and reader of the reference loss-landscape tool's files (tomgoldstein/loss-landscape).

Written from the reference code's behaviour, not from ``models.surface_io``: the tests use it to check that
losslab opens what the reference wrote and that the reference would read what losslab writes.

How the reference lays a surface file out (``plot_surface.py``: ``setup_surface_file`` and ``crunch``;
``scheduler.get_unplotted_indices``):
- ``dir_file``: the direction file's name, a string dataset;
- ``xcoordinates = linspace(xmin, xmax, xnum)``; ``ycoordinates`` likewise, absent for a 1D plot;
- ``train_loss`` and ``train_acc`` created as ``-ones(shape)`` with shape ``(nx,)`` (1D) or ``(nx, ny)``
  (2D: note the order), then filled point by point as ``losses.ravel()[k] = loss`` where ``k`` walks
  ``meshgrid(xcoordinates, ycoordinates)`` raveled: ``k = iy * nx + ix`` holds the value at ``(x[ix], y[iy])``.
  A point whose value is still <= 0 (the -1 sentinel) is unplotted. Accuracies are percent (100 * correct /
  total). ``test_loss`` / ``test_acc`` follow the same layout when the test set is evaluated.
- the direction file: groups ``xdirection`` and ``ydirection`` (``h5_util.write_list``), one dataset per tensor
  named '0', '1', ... in the model's ``parameters()`` order (``dir_type = weights``) or ``state_dict()`` order
  (``dir_type = states``).
"""

from __future__ import annotations

import h5py
import numpy as np


def write_reference_surface(path: str, x, y=None, arrays: dict | None = None, dir_file: str = "dirs.h5",
                            missing: np.ndarray | None = None) -> None:
    """A surface file as the reference writes it.

    ``arrays``: name -> a function ``f(xv, yv)`` of the coordinates (1D: ``f(xv)``) giving the value there, or an
    array of values indexed ``[ix, iy]`` (1D: ``[ix]``). ``missing``: a boolean mask indexed like the values
    (True: the reference never got to that point, its -1 stays)."""
    x = np.asarray(x, dtype=np.float64)
    y = None if y is None else np.asarray(y, dtype=np.float64)
    with h5py.File(path, "w") as f:
        f["dir_file"] = dir_file
        f["xcoordinates"] = x
        if y is not None:
            f["ycoordinates"] = y
        shape = x.shape if y is None else (len(x), len(y))
        for name, source in (arrays or {}).items():
            vals = -np.ones(shape=shape)
            if y is None:
                coords = x.ravel()
                idx = [(i,) for i in range(len(x))]
            else:
                xm, ym = np.meshgrid(x, y)  # (ny, nx)
                coords = np.c_[xm.ravel(), ym.ravel()]
                idx = [(k % len(x), k // len(x)) for k in range(len(x) * len(y))]
            for k, c in enumerate(coords):
                if missing is not None and missing[idx[k]]:
                    continue
                if callable(source):
                    v = source(c) if y is None else source(c[0], c[1])
                else:
                    v = np.asarray(source)[idx[k]]
                vals.ravel()[k] = v
            f[name] = vals


def read_reference_surface(path: str) -> dict:
    """What the reference's plotting code reads from a surface file, as values indexed [ix, iy] (1D: [ix]) with
    NaN where the reference would see an unplotted point (<= 0 for a loss, the -1 sentinel for any array)."""
    out: dict = {}
    with h5py.File(path, "r") as f:
        x = f["xcoordinates"][:]
        y = f["ycoordinates"][:] if "ycoordinates" in f else None
        out["x"], out["y"] = x, y
        raw = f["dir_file"][()]
        out["dir_file"] = raw.decode() if isinstance(raw, bytes) else str(raw)
        for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
            if name not in f:
                continue
            a = np.array(f[name][:], dtype=np.float64)
            expect = x.shape if y is None else (len(x), len(y))
            assert a.shape == expect, f"{name}: shape {a.shape}, the reference creates {expect}"
            flat = a.ravel()
            if y is None:
                v = flat.copy()
            else:
                v = np.empty((len(x), len(y)))
                for k in range(flat.size):
                    v[k % len(x), k // len(x)] = flat[k]
            v[v == -1] = np.nan
            out[name] = v
    return out


def write_reference_directions(path: str, xdir: list, ydir: list | None = None) -> None:
    """A direction file as ``h5_util.write_list`` writes it (a 1D plot has only ``xdirection``)."""
    with h5py.File(path, "w") as f:
        for name, d in (("xdirection", xdir), ("ydirection", ydir)):
            if d is None:
                continue
            g = f.create_group(name)
            for i, t in enumerate(d):
                g.create_dataset(str(i), data=np.asarray(t))


def read_reference_directions(path: str) -> tuple[list, list | None]:
    with h5py.File(path, "r") as f:
        def read(name):
            if name not in f:
                return None
            g = f[name]
            return [np.array(g[str(i)]) for i in range(len(g))]
        return read("xdirection"), read("ydirection")
