"""Bounded-memory storage of an optimization trajectory.

What is measured is kept (every step's loss and gradient norm, in growable arrays); what is drawn is
decimated (the parameter path keeps at most ``max_points`` points by doubling its stride when full, plus
the latest point), so a run of 10^6 steps costs megabytes, not a growing scene.
"""

from __future__ import annotations

import numpy as np


class _Growable:
    def __init__(self, width: int = 0, dtype=np.float64, capacity: int = 1024) -> None:
        shape = (capacity,) if width == 0 else (capacity, width)
        self.data = np.empty(shape, dtype=dtype)
        self.n = 0

    def append(self, value) -> None:
        if self.n == len(self.data):
            new = np.empty((2 * len(self.data),) + self.data.shape[1:], dtype=self.data.dtype)
            new[: self.n] = self.data[: self.n]
            self.data = new
        self.data[self.n] = value
        self.n += 1

    def view(self) -> np.ndarray:
        return self.data[: self.n]


class Trajectory:
    """One trajectory: full per-step metrics, decimated parameter path."""

    def __init__(self, n_params: int, max_points: int = 4096, max_measured: int | None = None) -> None:
        """``max_measured`` None keeps every step's metrics; a number caps them (stride doubling), for
        runs of many trajectories at once where every step of every one would not fit in memory."""
        self.max_points = max_points
        self.max_measured = max_measured
        self._mstride = 1
        self.steps = _Growable(dtype=np.int64)
        self.loss = _Growable()
        self.grad_norm = _Growable()
        self._path = _Growable(n_params)
        self._path_loss = _Growable()
        self._stride = 1
        self.last_params: np.ndarray | None = None
        self.last_loss = float("nan")
        self.last_step = -1
        self.diverged = False

    def append(self, step: int, params: np.ndarray, loss: float, grad_norm: float) -> None:
        if step % self._mstride == 0:
            self.steps.append(step)
            self.loss.append(loss)
            self.grad_norm.append(grad_norm)
            if self.max_measured is not None and self.steps.n >= self.max_measured:
                self._mstride *= 2
                keep = self.steps.view() % self._mstride == 0
                for g in (self.steps, self.loss, self.grad_norm):
                    kept = g.view()[keep].copy()
                    g.n = len(kept)
                    g.data[: g.n] = kept
        self.last_params = np.array(params, dtype=np.float64)
        self.last_loss = float(loss)
        self.last_step = int(step)
        if step % self._stride == 0:
            self._path.append(params)
            self._path_loss.append(loss)
            if self._path.n >= self.max_points:
                self._decimate()

    def _decimate(self) -> None:
        self._stride *= 2
        for g in (self._path, self._path_loss):
            kept = g.view()[::2].copy()
            g.n = len(kept)
            g.data[: g.n] = kept

    @property
    def path(self) -> np.ndarray:
        """The drawn path (decimated), always ending at the latest point."""
        p = self._path.view()
        if self.last_params is not None and (len(p) == 0 or not np.array_equal(p[-1], self.last_params)):
            return np.vstack([p, self.last_params[None, :]])
        return p.copy()

    @property
    def path_loss(self) -> np.ndarray:
        lv = self._path_loss.view()
        if self.last_params is not None and len(self._path.view()) and not np.array_equal(
                self._path.view()[-1], self.last_params):
            return np.append(lv, self.last_loss)
        return lv.copy()

    @property
    def nbytes(self) -> int:
        return sum(g.data.nbytes for g in (self.steps, self.loss, self.grad_norm, self._path, self._path_loss))
