"""Bounded-memory storage of an optimization trajectory.

``Snapshot`` is the trainer's state after a step (models.train yields them), ``SnapshotBatch`` consecutive
snapshots packed as arrays (how they cross the pipe from the trainer's process). What is measured is kept
(every step's loss and gradient norm, in growable arrays); what is drawn is decimated (the parameter path keeps at most ``max_points`` points by doubling its stride when full, plus
the latest point), so a run of 10^6 steps costs megabytes, not a growing scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Snapshot:
    """The state after ``step`` optimizer steps: parameters (N, p), full-data loss and gradient norm (N,)."""

    step: int
    params: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    active: np.ndarray
    diverged: np.ndarray
    metrics: dict = field(default_factory=dict)

    @staticmethod
    def pack_batch(items: list):
        """What a child process sends for ``items``: a SnapshotBatch where they pack (see there), else the list."""
        return SnapshotBatch.pack(items)


@dataclass
class SnapshotBatch:
    """Consecutive snapshots of one run as arrays with a leading step axis (m, ...): what the trainer's child
    process sends, one pickle of six arrays instead of m objects of five arrays each (measured: a 30 Hz batch of
    ~150 snapshots overflowed the pipe's buffer, and the trainer waited on the GUI to read it). It reads as a
    sequence of Snapshots (len, index, iteration) where one is wanted; the labs take its arrays whole."""

    steps: np.ndarray  # (m,)
    params: np.ndarray  # (m, N, p)
    loss: np.ndarray  # (m, N)
    grad_norm: np.ndarray  # (m, N)
    active: np.ndarray  # (m, N) bool
    diverged: np.ndarray  # (m, N) bool

    @classmethod
    def pack(cls, items: list):
        """``items`` packed, when they are plain Snapshots of one shape without metrics; else ``items``."""
        if not items or any(type(s) is not Snapshot or s.metrics for s in items):
            return items
        if len({s.params.shape for s in items}) != 1:
            return items
        return cls(np.array([s.step for s in items], dtype=np.int64), np.stack([s.params for s in items]),
                   np.stack([s.loss for s in items]), np.stack([s.grad_norm for s in items]),
                   np.stack([s.active for s in items]), np.stack([s.diverged for s in items]))

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, j: int) -> Snapshot:
        return Snapshot(int(self.steps[j]), self.params[j], self.loss[j], self.grad_norm[j], self.active[j],
                        self.diverged[j])

    def __iter__(self):
        return (self[j] for j in range(len(self)))


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

    def extend(self, values: np.ndarray) -> None:
        values = np.asarray(values)
        need = self.n + len(values)
        if need > len(self.data):
            new = np.empty((max(need, 2 * len(self.data)),) + self.data.shape[1:], dtype=self.data.dtype)
            new[: self.n] = self.data[: self.n]
            self.data = new
        self.data[self.n:need] = values
        self.n = need

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
                self._thin_measured()
        self.last_params = np.array(params, dtype=np.float64)
        self.last_loss = float(loss)
        self.last_step = int(step)
        if step % self._stride == 0:
            self._path.append(params)
            self._path_loss.append(loss)
            if self._path.n >= self.max_points:
                self._decimate()

    def extend(self, steps: np.ndarray, params: np.ndarray, loss: np.ndarray, grad_norm: np.ndarray) -> None:
        """``append`` of every row, in order, with arrays: the same measured steps, path and decimations as one
        append per row (a batch from the trainer costs a few array operations, not a Python call per step)."""
        steps = np.asarray(steps, dtype=np.int64)
        m = len(steps)
        if m == 0:
            return
        j = 0
        while j < m:  # measured: every step whose index the stride divides, the stride doubling at the cap
            sel = np.nonzero(steps[j:] % self._mstride == 0)[0] + j
            room = len(sel) if self.max_measured is None else self.max_measured - self.steps.n
            take = sel[:room]
            for g, v in ((self.steps, steps), (self.loss, loss), (self.grad_norm, grad_norm)):
                g.extend(np.asarray(v)[take])
            if self.max_measured is None or self.steps.n < self.max_measured:
                break
            self._thin_measured()
            j = int(take[-1]) + 1 if len(take) else m
        j = 0
        while j < m:  # the drawn path: likewise, up to max_points, then decimated
            sel = np.nonzero(steps[j:] % self._stride == 0)[0] + j
            take = sel[: self.max_points - self._path.n]
            self._path.extend(np.asarray(params)[take])
            self._path_loss.extend(np.asarray(loss)[take])
            if self._path.n < self.max_points:
                break
            self._decimate()
            j = int(take[-1]) + 1 if len(take) else m
        self.last_params = np.array(params[-1], dtype=np.float64)
        self.last_loss = float(loss[-1])
        self.last_step = int(steps[-1])

    def _thin_measured(self) -> None:  # at the cap: every other measured step goes, the stride doubles
        self._mstride *= 2
        keep = self.steps.view() % self._mstride == 0
        for g in (self.steps, self.loss, self.grad_norm):
            kept = g.view()[keep].copy()
            g.n = len(kept)
            g.data[: g.n] = kept

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
