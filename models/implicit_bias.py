"""The implicit-bias lab's engine (THEORY.md section 5): a linear model through the origin trained on separable
(or not) two-class data by gradient descent and its steepest-descent relatives, for millions of steps, against the
exact max-margin geometry it should converge to. No Qt; numba (the JIT of the long runs) and scipy (the LPs and the
QP) are imported inside the functions that need them, so building the lab imports neither.

Conventions. Everything works on the signed rows z_n = y_n x_n (y_n in {-1, +1}; x_n with the optional constant
bias feature appended), so a margin is z_n . w and the *sum* loss is L(w) = sum_n l(z_n . w) with
    logistic     l(m) = log(1 + exp(-m))
    exponential  l(m) = exp(-m)
    square       l(m) = 1/2 (1 - m)^2      (regression onto the labels: no implicit bias, the contrast)
The sum (not the mean) is what THEORY.md states its constants for: the step-size limit 8 / sigma_max(Z)^2 of the
logistic loss, w(t) = w_hat log t + w_tilde with eta exp(-z_n . w_tilde) = alpha_n, L(w(t)) t -> sum alpha_n / eta.

Optimizers (g the gradient, each converging in direction to the max-margin separator of its norm):
    gd          w <- w - eta g                                   (l2: the hard-margin SVM)
    coordinate  w_i <- w_i - eta ||g||_inf sign(g_i), i = argmax |g_i|   (greedy; l1 steepest descent)
    sign        w <- w - eta ||g||_1 sign(g)                     (l-infinity steepest descent)
and the normalized variants ngd, ncoordinate, nsign with eta / L(w) in place of eta (the same limits, reached at a
much faster rate than the fixed step's 1/log t).

``run`` is the trainer generator: a numba-compiled loop advances every run a chunk of steps at a time, writing
checkpoints at log-spaced step counts into preallocated arrays, and yields a ``Trace`` after each chunk, so a GUI
streams a 10^7-step run while it goes and stops it by closing the generator. ``reference_run`` is the same math
as a plain numpy loop (the check of the JIT and the benchmark's baseline).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .limits import LimitError

LOSSES = ("logistic", "exponential", "square")
OPTIMIZERS = ("gd", "ngd", "coordinate", "ncoordinate", "sign", "nsign")
#: the norm whose max-margin direction each optimizer converges to (THEORY.md 5, Gunasekar et al. 2018)
OPTIMIZER_NORM = {"gd": "l2", "ngd": "l2", "coordinate": "l1", "ncoordinate": "l1", "sign": "linf", "nsign": "linf"}
NORMS = ("l2", "l1", "linf")
PRESETS_2D = ("clean", "far", "nearly", "nonsep", "single")
PRESETS_3D = ("cube", "tilted")
PRESETS = PRESETS_2D + PRESETS_3D

MAX_POINTS = 2000
MAX_DIM = 8  # 2D or 3D points, plus the bias feature: 4 in the lab
MAX_RUNS = len(LOSSES) * len(OPTIMIZERS)  # every loss with every optimizer at once
MAX_STEPS = 10**8
CHECKPOINTS_PER_DECADE = 20
#: directions closer than this (degrees) count as the same
COINCIDE_TOL_DEG = 1e-4
#: the work of one chunk of ``run`` (point-steps, summed over runs; 6-30 ns each here): 10-60 ms, so a GUI
#: streams smoothly and a close takes effect at once
CHUNK_WORK = 2_000_000
MIN_CHUNK = 16

_LOSS_ID = {name: i for i, name in enumerate(LOSSES)}
_OPT_ID = {name: i for i, name in enumerate(OPTIMIZERS)}  # id // 2: 0 gd, 1 coordinate, 2 sign; id % 2: normalized


# ---------------------------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class Dataset:
    """Points x (n, 2) or (n, 3) as drawn, labels y in {-1, +1}, and the bias feature: ``bias`` = 0 means none,
    otherwise that constant is appended as a last coordinate (the model stays linear through the origin in the
    augmented space, and the SVM is computed there too)."""

    x: np.ndarray
    y: np.ndarray
    bias: float = 0.0
    name: str = ""

    @property
    def features(self) -> np.ndarray:
        return with_bias(self.x, self.bias) if self.bias else self.x

    @property
    def z(self) -> np.ndarray:
        """The signed rows y_n x_n (bias included) every function of this module takes."""
        return signed_rows(self.features, self.y)

    @property
    def n(self) -> int:
        return len(self.y)


def with_bias(x: np.ndarray, value: float = 1.0) -> np.ndarray:
    """``x`` with a constant column ``value`` appended (a bias as a third feature of 2D data)."""
    x = np.asarray(x, dtype=np.float64)
    return np.concatenate([x, np.full((len(x), 1), float(value))], axis=1)


def signed_rows(x, y) -> np.ndarray:
    """z_n = y_n x_n as float64, after checking shapes, labels and finiteness (ValueError saying what is wrong)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"points are an (n, d) array, not shape {x.shape}")
    if y.shape != (len(x),):
        raise ValueError(f"{len(x)} points need {len(x)} labels, not shape {y.shape}")
    if not np.all((y == 1) | (y == -1)):
        raise ValueError("labels are -1 or +1")
    z = y[:, None] * x
    check_rows(z)
    return z


def check_rows(z) -> np.ndarray:
    """Validate signed rows: a finite (n, d) array with 1 <= n <= MAX_POINTS, 1 <= d <= MAX_DIM."""
    z = np.asarray(z)
    if z.ndim != 2 or z.shape[0] < 1 or z.shape[1] < 1:
        raise ValueError(f"data are a non-empty (n, d) array of rows y_n x_n, not shape {z.shape}")
    if z.shape[0] > MAX_POINTS:
        raise LimitError(f"{z.shape[0]} points asked; the lab takes at most {MAX_POINTS}")
    if z.shape[1] > MAX_DIM:
        raise LimitError(f"{z.shape[1]} coordinates asked; the lab takes at most {MAX_DIM}")
    if not np.issubdtype(z.dtype, np.floating) and not np.issubdtype(z.dtype, np.integer):
        raise ValueError(f"data must be numbers, not {z.dtype}")
    if not np.all(np.isfinite(z)):
        raise ValueError("data contain a non-finite value (nan or inf)")
    return z


# The clean set: support vectors x = (1, 0) (label +1) and x = (1, -2) (label -1), i.e. z = (1, 0) and (-1, 2).
# w = (1, 1) meets both with equality and w = 1.5 z_1 + 0.5 z_2 with both weights positive, so it is the SVM:
# w_hat = (1, 1), alpha = (1.5, 0.5), margin 1/sqrt(2), sum alpha = ||w_hat||^2 = 2. Every other point has
# |x_1 + x_2| >= 2 on its side, so its margin z . w_hat >= 2: twice the support margin (gap 2, attained). The
# other points were picked (on a half-unit grid, spread out) so that the square loss's limit, the least-squares
# fit of z . w = 1, points 9.9 degrees away from w_hat: the contrast is visible.
_CLEAN_SUPPORT = [((1.0, 0.0), 1), ((1.0, -2.0), -1)]
_CLEAN_POS = [(3.0, 1.5), (3.0, -0.5), (1.5, 0.5), (3.0, 0.5), (-1.0, 3.0), (0.5, 1.5), (1.0, 2.5), (1.0, 1.0),
              (2.0, 2.5)]
_CLEAN_NEG = [(-1.0, -1.5), (-3.0, 0.0), (1.0, -3.0), (-2.0, -0.5), (-3.0, -1.0), (-2.0, -1.5), (-2.0, -2.5),
              (0.5, -2.5), (-1.5, -1.0)]
CLEAN_W_HAT = np.array([1.0, 1.0])
CLEAN_ALPHA_SUPPORT = np.array([1.5, 0.5])  # the duals of the two support vectors (rows 0 and 1)
# The single-point set: only z = (2, 1) is tight for l2 (w_hat = (0.4, 0.2)), every other row has z_1 >= 2.5,
# z_1 + z_2 >= 3.5 and 2 z_1 + z_2 >= 6, so the l1 direction is e_1 (margin 2, z = (2, 1) tight), the
# l-infinity one (1, 1) (margin 3): three directions 26.6, 0 and 45 degrees, as THEORY.md says for one tight point.
_SINGLE_POS = [(2.0, 1.0), (3.0, 1.0), (2.5, 2.0), (3.5, 0.0), (3.0, 2.5), (4.0, 1.0)]
_SINGLE_NEG = [(-3.0, -0.5), (-2.5, -1.5), (-3.5, -1.0), (-3.0, -2.0), (-4.0, 0.3)]
SINGLE_DIRECTIONS_DEG = {"l2": math.degrees(math.atan2(1, 2)), "l1": 0.0, "linf": 45.0}


def _from_lists(pos, neg, name: str, bias: float) -> Dataset:
    x = np.array(list(pos) + list(neg), dtype=np.float64)
    y = np.array([1.0] * len(pos) + [-1.0] * len(neg))
    return Dataset(x, y, float(bias), name)


def make_preset(name: str, bias: float = 0.0, n: int = 40, seed: int = 0) -> Dataset:
    """A named data set (float64, labels in {-1, +1}):

    clean   20 points in 2D, the SVM through the origin known in closed form (``CLEAN_W_HAT``, the two support
            vectors first), every other margin at least twice the support margin;
    far     the clean support vectors with every other point pushed 3x farther out (margins >= 6: only the
            support vectors matter);
    nearly  the clean set plus two positive points just inside the boundary on either side of the origin:
            separable through the origin, by a margin ten times thinner;
    nonsep  the clean set plus one point of each class inside the other's cluster: not separable through the origin;
    single  2D, one point alone tight for the SVM, so the l2, l1 and l-infinity directions all differ
            (``SINGLE_DIRECTIONS_DEG``);
    cube    ``n`` points uniform in the cube [-1, 1]^3 labelled by a plane through the origin, those closer to it
            than 0.1 dropped (a 3D mode; seeded);
    tilted  3D, 9 points where the l2, l1 and l-infinity max-margin directions differ pairwise by 17 to 41 degrees
            (two support vectors; found by a seeded search for a set where coordinate and sign descent visibly
            converge to their own directions within 10^6 steps).

    ``bias`` (0: none) appends a constant feature (see ``Dataset``)."""
    if name == "clean":
        pos = [_CLEAN_SUPPORT[0][0], *_CLEAN_POS]
        neg = [_CLEAN_SUPPORT[1][0], *_CLEAN_NEG]
        d = _from_lists(pos, neg, name, bias)
        # support vectors first: rows 0 (positive) and 1 (negative)
        order = np.r_[0, len(pos), np.arange(1, len(pos)), np.arange(len(pos) + 1, len(pos) + len(neg))]
        return Dataset(d.x[order], d.y[order], d.bias, name)
    if name == "far":
        c = make_preset("clean")
        x = c.x.copy()
        x[2:] *= 3.0
        return Dataset(x, c.y.copy(), float(bias), name)
    if name == "nearly":
        c = make_preset("clean")
        x = np.concatenate([c.x, [[-1.9, 2.0], [2.0, -1.9]]])
        return Dataset(x, np.r_[c.y, 1.0, 1.0], float(bias), name)
    if name == "nonsep":
        c = make_preset("clean")
        x = np.concatenate([c.x, [[-2.0, -1.0], [1.5, 1.0]]])
        return Dataset(x, np.r_[c.y, 1.0, -1.0], float(bias), name)
    if name == "single":
        return _from_lists(_SINGLE_POS, _SINGLE_NEG, name, bias)
    if name == "cube":
        n = int(n)
        if not 2 <= n <= MAX_POINTS:
            raise LimitError(f"the cube preset draws 2 to {MAX_POINTS} points, not {n}")
        rng = np.random.default_rng(int(seed))
        normal = np.array([0.6, -0.3, 0.74])
        normal /= np.linalg.norm(normal)
        pts: list[np.ndarray] = []
        while len(pts) < n:
            p = rng.uniform(-1, 1, 3)
            if abs(p @ normal) >= 0.1:
                pts.append(p)
        x = np.array(pts)
        return Dataset(x, np.where(x @ normal > 0, 1.0, -1.0), float(bias), name)
    if name == "tilted":
        pos = [(-0.96, -0.46, -0.23), (-0.95, -0.72, -0.41), (-0.36, -0.08, -0.3), (-0.68, -0.8, -0.29),
               (-0.39, -0.93, 0.89), (0.51, -0.25, 0.75)]
        neg = [(0.5, 0.56, -0.96), (0.76, 0.37, 0.19), (0.99, 0.28, -0.22)]
        return _from_lists(pos, neg, name, bias)
    raise ValueError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")


# ---------------------------------------------------------------------------------------------------------------
# exact geometry through the origin


def angle_deg(a, b) -> np.ndarray:
    """The angle (degrees) between a and b along the last axis, accurate for tiny angles (2 atan2 of the
    difference and the sum of the unit vectors); nan where either is zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ua = a / np.linalg.norm(a, axis=-1, keepdims=True)
        ub = b / np.linalg.norm(b, axis=-1, keepdims=True)
        return np.degrees(2 * np.arctan2(np.linalg.norm(ua - ub, axis=-1), np.linalg.norm(ua + ub, axis=-1)))


def norm_of(w, norm: str) -> np.ndarray:
    """||w|| in "l2", "l1" or "linf" along the last axis."""
    w = np.asarray(w, dtype=np.float64)
    if norm == "l2":
        return np.linalg.norm(w, axis=-1)
    if norm == "l1":
        return np.abs(w).sum(axis=-1)
    if norm == "linf":
        return np.abs(w).max(axis=-1)
    raise ValueError(f"unknown norm '{norm}'; choose one of {', '.join(NORMS)}")


def min_normalized_margin(z, w, norm: str = "l2") -> np.ndarray:
    """min_n z_n . w / ||w|| (in ``norm``) for w of shape (..., d): the quantity each optimizer's max-margin
    problem maximizes; nan where w = 0."""
    z = np.asarray(z, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ z.T).min(axis=-1) / norm_of(w, norm)


_LP_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


def _margin_lp(z: np.ndarray, norm: str) -> tuple[float, np.ndarray, object]:
    """max t s.t. z_n . w >= t, ||w|| <= 1 for norm l1 or linf, as a linear program (HiGHS). Returns t*, the
    maximizer w and the LP's matrices (for the uniqueness check)."""
    from scipy.optimize import linprog

    n, d = z.shape
    if norm == "linf":  # variables (w, t), |w_j| <= 1
        a_ub = np.hstack([-z, np.ones((n, 1))])
        b_ub = np.zeros(n)
        bounds = [(-1.0, 1.0)] * d + [(None, None)]
        lift = np.hstack([np.eye(d), np.zeros((d, 1))])
    elif norm == "l1":  # w = u - v, u, v >= 0, sum(u + v) <= 1; variables (u, v, t)
        a_ub = np.vstack([np.hstack([-z, z, np.ones((n, 1))]), np.r_[np.ones(2 * d), 0.0][None, :]])
        b_ub = np.r_[np.zeros(n), 1.0]
        bounds = [(0.0, None)] * (2 * d) + [(None, None)]
        lift = np.hstack([np.eye(d), -np.eye(d), np.zeros((d, 1))])
    else:
        raise ValueError(f"the margin LP is for l1 or linf, not '{norm}'")
    c = np.zeros(a_ub.shape[1])
    c[-1] = -1.0
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs", options=_LP_OPTIONS)
    if res.status != 0:
        raise RuntimeError(f"the {norm} margin LP failed: {res.message}")
    return float(res.x[-1]), lift @ res.x, (a_ub, b_ub, bounds, lift)


@dataclass(frozen=True)
class Separability:
    """The exact test of separability through the origin: the LP max t s.t. z_n . w >= t, |w_j| <= 1; the data
    are separable iff t* > tol (tol scales with the data)."""

    separable: bool
    margin: float  # t*: the l-infinity max margin (<= 0 when not separable)
    w: np.ndarray  # a maximizer
    tol: float


def separability(z) -> Separability:
    """Whether some w through the origin has z_n . w > 0 for every n (THEORY.md 5: 'separable through the
    origin'), by the exact LP; with a bias feature, pass the augmented rows."""
    z = np.asarray(check_rows(z), dtype=np.float64)
    t, w, _ = _margin_lp(z, "linf")
    tol = 1e-9 * max(1.0, float(np.abs(z).sum(axis=1).max()))
    return Separability(bool(t > tol), t, w, tol)


@dataclass(frozen=True)
class SVM:
    """The hard-margin SVM through the origin: w_hat = argmin ||w||_2 s.t. z_n . w >= 1."""

    w_hat: np.ndarray
    alpha: np.ndarray  # (n,) dual variables, >= 0, zero off the support: w_hat = sum_n alpha_n z_n
    support: np.ndarray  # indices of the support vectors (alpha_n > 0)
    margin: float  # 1 / ||w_hat||: the l2 max margin
    margins: np.ndarray  # (n,) z_n . w_hat (1 on the support, > 1 elsewhere)
    gap: float  # the smallest non-support margin over the support margin (inf when every point is support)
    kkt_residual: float  # max violation of primal feasibility, stationarity, complementarity, alpha >= 0
    spans: bool  # the support vectors span R^d, so w_tilde fixes every coordinate of w(t)'s offset
    curvature_min: float  # lambda_min of sum_n alpha_n z_n z_n^T on the support span (<= 1; see settle_exponent)

    @property
    def direction(self) -> np.ndarray:
        return self.w_hat / np.linalg.norm(self.w_hat)

    @property
    def alpha_sum(self) -> float:
        return float(self.alpha.sum())

    @property
    def settle_exponent(self) -> float:
        """The power of 1/t at which w(t) - w_hat log t - w_tilde dies out, from linearizing the dynamics around
        the prediction (this module's derivation, not THEORY.md's): the offset r obeys dr/dlog t = -A r with
        A = sum alpha_n z_n z_n^T on the support span, forced by the non-support points at t^-(gap-1) and by the
        loss's and the step's second-order terms at t^-1. A's Rayleigh quotient along w_hat is exactly 1, so the
        exponent is at most 1; a gap near 1 or a flat A means slow settling."""
        return float(min(self.curvature_min, self.gap - 1.0, 1.0))


def _svm_kkt(z: np.ndarray, w: np.ndarray, alpha: np.ndarray) -> float:
    m = z @ w
    scale = max(1.0, float(np.linalg.norm(w)))
    return float(max(np.max(np.maximum(0.0, 1.0 - m)), np.max(np.abs(w - alpha @ z)) / scale,
                     np.max(np.abs(alpha * (m - 1.0))), np.max(np.maximum(0.0, -alpha))))


def hard_margin_svm(z) -> SVM:
    """Solve min ||w||^2 / 2 s.t. z_n . w >= 1 exactly (no intercept: THEORY.md 5), to about 1e-12 here.

    This is a least-distance program; Lawson and Hanson reduce it to non-negative least squares: with
    E = [Z^T; 1^T] and f = e_{d+1}, the NNLS solution u >= 0 of min ||E u - f|| gives the residual r = E u - f,
    w_hat = -r_{1:d} / r_{d+1} and the duals alpha = u / (-r_{d+1}). NNLS is itself a finite active-set method;
    the support found is then polished by solving Z_S Z_S^T alpha_S = 1 on it and kept if the KKT conditions hold
    at least as well. Raises ValueError when the data are not separable through the origin."""
    from scipy.optimize import nnls

    z = np.asarray(check_rows(z), dtype=np.float64)
    n, d = z.shape
    if not separability(z).separable:
        raise ValueError("the data are not linearly separable through the origin: no hard-margin SVM")
    e = np.vstack([z.T, np.ones((1, n))])
    f = np.zeros(d + 1)
    f[-1] = 1.0
    u, _ = nnls(e, f, maxiter=50 * n + 100)
    r = e @ u - f
    if not r[-1] < 0:
        raise ValueError("the data are not linearly separable through the origin: no hard-margin SVM")
    alpha = u / (-r[-1])
    w = -r[:d] / r[-1]
    best = (_svm_kkt(z, w, alpha), w, alpha)
    # polish on the support found
    s = np.flatnonzero(alpha > 1e-12 * alpha.max())
    zs = z[s]
    a_s = np.linalg.lstsq(zs @ zs.T, np.ones(len(s)), rcond=None)[0]
    if np.all(a_s > 0):
        a2 = np.zeros(n)
        a2[s] = a_s
        w2 = a_s @ zs
        res2 = _svm_kkt(z, w2, a2)
        if res2 <= best[0]:
            best = (res2, w2, a2)
    kkt, w, alpha = best
    support = np.flatnonzero(alpha > 1e-12 * alpha.max())
    margins = z @ w
    rest = np.delete(margins, support)
    zs = z[support]
    rank = int(np.linalg.matrix_rank(zs, tol=1e-10 * np.abs(zs).max()))
    a_mat = (zs * alpha[support, None]).T @ zs
    q = np.linalg.svd(zs, full_matrices=False)[2][:rank].T  # an orthonormal basis of the support span
    curv = float(np.linalg.eigvalsh(q.T @ a_mat @ q).min())
    return SVM(w_hat=w, alpha=alpha, support=support, margin=1.0 / float(np.linalg.norm(w)), margins=margins,
               gap=float(rest.min()) if len(rest) else math.inf, kkt_residual=kkt, spans=rank == d,
               curvature_min=curv)


@dataclass(frozen=True)
class MaxMargin:
    """argmax_{||w|| <= 1} min_n z_n . w for one norm."""

    norm: str
    w: np.ndarray  # the maximizer, ||w||_norm = 1
    margin: float  # min_n z_n . w at it
    unique: bool  # the maximizer is unique (LPs can have a face of them)

    @property
    def direction(self) -> np.ndarray:
        return self.w / np.linalg.norm(self.w)


def max_margin(z, norm: str) -> MaxMargin:
    """The max-margin direction for "l2" (the SVM, normalized), "l1" or "linf" (LPs: |w_j| <= 1 for l-infinity;
    w = u - v, u, v >= 0, sum(u + v) <= 1 for l1). Uniqueness of an LP's maximizer is checked by minimizing and
    maximizing each coordinate over the optimal face. ValueError when not separable."""
    from scipy.optimize import linprog

    z = np.asarray(check_rows(z), dtype=np.float64)
    if norm == "l2":
        svm = hard_margin_svm(z)
        return MaxMargin("l2", svm.direction, svm.margin, True)
    if norm not in ("l1", "linf"):
        raise ValueError(f"unknown norm '{norm}'; choose one of {', '.join(NORMS)}")
    t, w, (a_ub, b_ub, bounds, lift) = _margin_lp(z, norm)
    if not t > 1e-9 * max(1.0, float(np.abs(z).sum(axis=1).max())):
        raise ValueError("the data are not linearly separable through the origin: no max-margin direction")
    # the optimal face: every point of the LP with t >= t* (1 - 1e-9); is w constant on it?
    bounds_face = list(bounds[:-1]) + [(t * (1 - 1e-9), None)]
    unique = True
    for j in range(z.shape[1]):
        span = []
        for sign in (1.0, -1.0):
            res = linprog(sign * lift[j], A_ub=a_ub, b_ub=b_ub, bounds=bounds_face, method="highs",
                          options=_LP_OPTIONS)
            span.append(sign * res.fun if res.status == 0 else np.nan)
        if not abs(span[1] - span[0]) < 1e-6:
            unique = False
            break
    w = w / norm_of(w, norm)
    return MaxMargin(norm, w, float((z @ w).min()), unique)


@dataclass(frozen=True)
class Geometry:
    """Everything the lab shows about the data's geometry through the origin."""

    separability: Separability
    svm: SVM | None  # None when not separable
    max_margin: dict  # norm -> MaxMargin ("l2", "l1", "linf"); empty when not separable
    angles_deg: dict  # "l2-l1", "l2-linf", "l1-linf" -> the angle between those directions
    coincide: bool  # all three directions within COINCIDE_TOL_DEG (false when not separable)

    @property
    def separable(self) -> bool:
        return self.separability.separable

    def direction(self, optimizer_or_norm: str) -> np.ndarray:
        """The unit max-margin direction an optimizer (or a norm) converges to."""
        return self.max_margin[OPTIMIZER_NORM.get(optimizer_or_norm, optimizer_or_norm)].direction


def geometry(z) -> Geometry:
    """The separability test, the SVM and the three max-margin directions, and whether they coincide."""
    z = np.asarray(check_rows(z), dtype=np.float64)
    sep = separability(z)
    if not sep.separable:
        return Geometry(sep, None, {}, {}, False)
    svm = hard_margin_svm(z)
    mm = {"l2": MaxMargin("l2", svm.direction, svm.margin, True), "l1": max_margin(z, "l1"),
          "linf": max_margin(z, "linf")}
    angles = {f"{a}-{b}": float(angle_deg(mm[a].w, mm[b].w)) for a, b in (("l2", "l1"), ("l2", "linf"),
                                                                           ("l1", "linf"))}
    return Geometry(sep, svm, mm, angles, all(v < COINCIDE_TOL_DEG for v in angles.values()))


def w_tilde(svm: SVM, z, eta: float) -> np.ndarray:
    """The offset of w(t) = w_hat log t + w_tilde (THEORY.md 5): the solution of eta exp(-z_n . w_tilde) = alpha_n,
    i.e. z_n . w_tilde = log(eta / alpha_n), on the support vectors, taken in their span (the least-norm solution;
    exact when the support vectors are independent). Outside that span (``svm.spans`` false) the offset is not
    fixed by the support vectors and the prediction covers only its projection."""
    eta = _check_eta(eta)
    z = np.asarray(z, dtype=np.float64)
    s = svm.support
    return np.linalg.lstsq(z[s], np.log(eta / svm.alpha[s]), rcond=None)[0]


def predicted_w(svm: SVM, wt: np.ndarray, t) -> np.ndarray:
    """w_hat log t + w_tilde at step counts t (shape (..., d))."""
    t = np.asarray(t, dtype=np.float64)
    return np.log(t)[..., None] * svm.w_hat + wt


def predicted_angle_deg(svm: SVM, wt: np.ndarray, t) -> np.ndarray:
    """The angle between w_hat log t + w_tilde and w_hat (degrees): the sharper prediction of the measured angle,
    whose leading order is ||w_tilde_perp|| / (||w_hat|| log t), the bare 1/log t curve."""
    return angle_deg(predicted_w(svm, wt, t), svm.w_hat)


def loss_hessian(z, w, loss: str) -> np.ndarray:
    """The Hessian of the sum loss at w: Z^T diag(l''(z_n . w)) Z."""
    z = np.asarray(z, dtype=np.float64)
    m = z @ np.asarray(w, dtype=np.float64)
    if loss == "logistic":
        p = 0.5 * (1 + np.tanh(-m / 2))  # sigma(-m), stable
        curv = p * (1 - p)
    elif loss == "exponential":
        with np.errstate(over="ignore"):
            curv = np.exp(-m)
    elif loss == "square":
        curv = np.ones_like(m)
    else:
        raise ValueError(f"unknown loss '{loss}'; choose one of {', '.join(LOSSES)}")
    return (z * curv[:, None]).T @ z


def _curvature(h: np.ndarray, geometry_norm: str) -> float:
    """The largest curvature v^T H v over the unit ball of the norm the step is steepest in: l2 (gd) lambda_max;
    l1 (coordinate) max_i H_ii (a convex quadratic peaks at a vertex of the l1 ball); l-infinity (sign) the max
    over the 2^d vertices of the cube."""
    if geometry_norm == "l2":
        return float(np.linalg.eigvalsh(h).max())
    if geometry_norm == "l1":
        return float(np.diag(h).max())
    d = h.shape[0]
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * d, indexing="ij")).reshape(d, -1).T
    return float(np.einsum("ki,ij,kj->k", signs, h, signs).max())


def stability_limit(z, loss: str, optimizer: str = "gd", w=None) -> float:
    """The step size below which a step is guaranteed to decrease the sum loss (the descent lemma: 2 / curvature
    in the optimizer's norm). For gd: logistic 8 / sigma_max(Z)^2 (its smoothness is 1/4), square 2 / sigma_max^2,
    exponential (no global limit) the local 2 / lambda_max(Hessian at w), w = 0 by default. Coordinate and sign
    descent use the curvature in l1 and l-infinity (logistic: of Z^T Z / 4). The normalized variants scale by
    L(w): the local limit 2 L(w) / curvature(Hessian at w)."""
    z = np.asarray(check_rows(z), dtype=np.float64)
    _check_name(loss, LOSSES, "loss")
    _check_name(optimizer, OPTIMIZERS, "optimizer")
    w = np.zeros(z.shape[1]) if w is None else _check_w(w, z.shape[1])
    geo = OPTIMIZER_NORM[optimizer]
    normalized = _OPT_ID[optimizer] % 2 == 1
    if loss in ("logistic", "square") and not normalized:
        beta = 0.25 if loss == "logistic" else 1.0
        return 2.0 / (beta * _curvature(z.T @ z, geo))
    limit = 2.0 / _curvature(loss_hessian(z, w, loss), geo)
    return limit * loss_value(z, w, loss)[0] if normalized else limit


def loss_value(z, w, loss: str) -> tuple[float, float]:
    """The sum loss at w and its logarithm, evaluated without overflow (the log stays finite where the loss
    underflows)."""
    z = np.asarray(z, dtype=np.float64)
    m = z @ np.asarray(w, dtype=np.float64)
    ls, s = _loss_shifted_np(m, _LOSS_ID[loss])
    with np.errstate(divide="ignore"):
        logl = float(np.log(ls) - s)
    return (float(ls) if s == 0 else float(ls * np.exp(-s))), logl


# ---------------------------------------------------------------------------------------------------------------
# runs: the shared math (numpy reference) and the JIT loop


@dataclass(frozen=True)
class RunSpec:
    """One run: a loss, an optimizer and its step size (several run at once on the same data)."""

    loss: str = "logistic"
    optimizer: str = "gd"
    eta: float = 0.1

    @property
    def norm(self) -> str:
        return OPTIMIZER_NORM[self.optimizer]


@dataclass(frozen=True)
class Trace:
    """A snapshot of ``run``: the checkpoints reached so far (copies) and where every run is now."""

    specs: tuple
    steps: np.ndarray  # (k,) step counts of the checkpoints reached: 0, 1, 2, ... log-spaced ..., up to t
    w: np.ndarray  # (R, k, d) w at each checkpoint (nan after a run stopped)
    loss: np.ndarray  # (R, k) L(w) (it can underflow to 0 on long normalized runs: see log_loss)
    log_loss: np.ndarray  # (R, k) log L(w), finite where L underflows
    t: int  # steps done
    total: int  # steps asked
    w_now: np.ndarray  # (R, d) every run's current w (the last finite one for a stopped run)
    stopped_at: np.ndarray  # (R,) -1 for a healthy run; else the step whose update gave a non-finite w
    dtype: str

    @property
    def done(self) -> bool:
        return self.t >= self.total

    @property
    def diverged(self) -> np.ndarray:
        return self.stopped_at >= 0

    def norms(self) -> np.ndarray:
        """(R, k) ||w||_2 at the checkpoints."""
        return np.linalg.norm(self.w, axis=-1)

    def at(self, t: int) -> np.ndarray:
        """(R, d) w at the checkpoint with step count t (ValueError if t is not one)."""
        k = np.flatnonzero(self.steps == t)
        if not len(k):
            raise ValueError(f"step {t} is not a checkpoint")
        return self.w[:, k[0]]


def checkpoint_steps(steps: int, per_decade: int = CHECKPOINTS_PER_DECADE) -> np.ndarray:
    """The step counts a run records: 0, then round(10^(j / per_decade)) for j = 0, 1, ... (duplicates merged),
    then ``steps`` itself: a log-time axis from t = 1 to the end."""
    steps = _check_steps(steps)
    per_decade = int(per_decade)
    if not 1 <= per_decade <= 1000:
        raise ValueError(f"checkpoints per decade are 1 to 1000, not {per_decade}")
    if steps == 0:
        return np.zeros(1, dtype=np.int64)
    j = np.arange(0, int(math.floor(per_decade * math.log10(steps))) + 2)
    ts = np.unique(np.round(10.0 ** (j / per_decade)).astype(np.int64))
    ts = ts[ts < steps]
    return np.r_[0, ts, steps].astype(np.int64)


def _check_name(name, choices, what: str) -> str:
    if name not in choices:
        raise ValueError(f"unknown {what} '{name}'; choose one of {', '.join(choices)}")
    return name


def _check_eta(eta) -> float:
    try:
        eta = float(eta)
    except (TypeError, ValueError):
        raise ValueError(f"the step size must be a number, not {eta!r}") from None
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"the step size must be positive and finite, not {eta}")
    return eta


def _check_steps(steps) -> int:
    whole = isinstance(steps, int | np.integer) or (isinstance(steps, float) and steps.is_integer())
    if isinstance(steps, bool) or not whole:
        raise ValueError(f"the number of steps is a whole number, not {steps!r}")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"the number of steps cannot be negative ({steps})")
    if steps > MAX_STEPS:
        raise LimitError(f"{steps} steps asked; a run takes at most {MAX_STEPS:.0e}")
    return steps


def _check_w(w, d: int) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (d,):
        raise ValueError(f"w is a vector of {d} coordinates, not shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("w contains a non-finite value")
    return w


def _check_specs(specs) -> tuple:
    if isinstance(specs, RunSpec):
        specs = (specs,)
    specs = tuple(specs)
    if not specs:
        raise ValueError("give at least one run (a RunSpec)")
    if len(specs) > MAX_RUNS:
        raise LimitError(f"{len(specs)} runs asked; at most {MAX_RUNS} run at once")
    for s in specs:
        if not isinstance(s, RunSpec):
            raise ValueError(f"a run is a RunSpec, not {type(s).__name__}")
        _check_name(s.loss, LOSSES, "loss")
        _check_name(s.optimizer, OPTIMIZERS, "optimizer")
        _check_eta(s.eta)
    return specs


def _check_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"runs are float64 (the default) or float32, not {dt}")
    return dt


def _prepare(z, specs, steps, w0, dtype):
    z = check_rows(z)
    specs = _check_specs(specs)
    steps = _check_steps(steps)
    dt = _check_dtype(dtype)
    n, d = z.shape
    r = len(specs)
    if w0 is None:
        w = np.zeros((r, d))
    else:
        w0 = np.asarray(w0, dtype=np.float64)
        if w0.shape == (d,):
            w0 = np.tile(w0, (r, 1))
        if w0.shape != (r, d):
            raise ValueError(f"w0 is ({d},) or ({r}, {d}) for {r} runs in {d} coordinates, not shape {w0.shape}")
        if not np.all(np.isfinite(w0)):
            raise ValueError("w0 contains a non-finite value")
        w = w0.copy()
    return np.ascontiguousarray(z, dtype=dt), specs, steps, dt, np.ascontiguousarray(w, dtype=dt)


def _loss_shifted_np(m: np.ndarray, loss_id: int) -> tuple:
    """(sum_n l(m_n) e^s, s) with the shift s = max(0, min m) (logistic), min m (exponential), 0 (square), so the
    scaled sum neither overflows nor underflows; L = that e^-s."""
    with np.errstate(all="ignore"):
        return _loss_shifted_raw(m, loss_id)


def _loss_shifted_raw(m: np.ndarray, loss_id: int) -> tuple:
    dt = m.dtype.type
    if loss_id == 2:
        return dt(0.5) * ((dt(1) - m) ** 2).sum(), dt(0)
    mmin = m.min()
    if loss_id == 1:
        return np.exp(mmin - m).sum(), mmin
    s = mmin if mmin > 0 else dt(0)
    u = np.exp(-np.abs(m))  # exp(-m) where m > 0, exp(m) where m <= 0
    return _logistic_sum(m, u, s), s


def _logistic_sum(m: np.ndarray, u: np.ndarray, s) -> np.ndarray:
    """sum_n log(1 + exp(-m_n)) e^s from u = exp(-|m|): log1p(u) e^(s) as (log1p(u) / u) exp(s - m) where m > 0
    (finite however large s is), -m + log1p(u) where m <= 0 (then s = 0)."""
    dt = m.dtype.type
    lu = np.log1p(u)
    if s == 0:
        lp = lu
    else:
        safe = np.where(u > 0, u, dt(1))
        lp = np.where(u > 0, lu / safe, dt(1)) * np.exp(s - m)
    return np.where(m > 0, lp, lu - m).sum()


def _coefficients_np(m: np.ndarray, loss_id: int, normalized: bool) -> tuple:
    """The step's weights c_n (so that -g = sum c_n z_n, scaled by e^s) and the scaled loss sum Ls (only when
    normalized: then -g / L = sum c_n z_n / Ls). The same formulas as the JIT loop; call it under
    np.errstate(all="ignore") (exp overflows to inf on a diverging step, which the caller then reports)."""
    dt = m.dtype.type
    if loss_id == 2:
        c = dt(1) - m
        return c, (dt(0.5) * (c * c).sum() if normalized else dt(1))
    if loss_id == 1:
        if not normalized:
            return np.exp(-m), dt(1)
        c = np.exp(m.min() - m)
        return c, c.sum()
    u = np.exp(-np.abs(m))
    if not normalized:
        return np.where(m > 0, u, dt(1)) / (dt(1) + u), dt(1)
    mmin = m.min()
    s = mmin if mmin > 0 else dt(0)
    e = u if s == 0 else np.exp(s - m)
    c = np.where(m > 0, e, dt(1)) / (dt(1) + u)
    return c, _logistic_sum(m, u, s)


def _step_np(z: np.ndarray, w: np.ndarray, loss_id: int, opt_id: int, eta) -> np.ndarray:
    """One update of one run in numpy (the reference for the JIT loop; under np.errstate(all="ignore"))."""
    normalized = opt_id % 2 == 1
    c, ls = _coefficients_np(z @ w, loss_id, normalized)
    direc = c @ z  # -g (times e^s)
    if normalized:
        if ls == 0:
            return w.copy()
        scale = eta / ls
    else:
        scale = eta
    kind = opt_id // 2
    if kind == 0:
        return w + scale * direc
    if kind == 1:
        i = int(np.argmax(np.abs(direc)))
        out = w.copy()
        out[i] = w[i] + scale * direc[i]
        return out
    return w + (scale * np.abs(direc).sum()) * np.sign(direc)


def _kernel_py(z, w, etas, loss_ids, opt_ids, t0, t1, ck, k0, out_w, out_loss, out_logloss, stopped, consts):
    """The JIT loop (compiled by numba; plain Python otherwise): advance every run that has not stopped from step
    t0 to t1, recording (w_t, L(w_t), log L(w_t)) whenever t is the checkpoint ck[k] (k from k0). The math is
    ``_coefficients_np`` / ``_step_np`` written out per point, in the arrays' own dtype (``consts`` holds 0, 1/2
    and 1 in it, so a float32 run stays float32). A non-finite update stops that run: w keeps its last finite
    value and ``stopped[r]`` the step that failed."""
    n, d = z.shape
    nruns = w.shape[0]
    nck = ck.shape[0]
    zero = consts[0]
    half = consts[1]
    one = consts[2]
    m = np.empty(n, dtype=z.dtype)
    c = np.empty(n, dtype=z.dtype)
    direc = np.empty(d, dtype=z.dtype)
    prev = np.empty(d, dtype=z.dtype)
    for r in range(nruns):
        if stopped[r] >= 0:
            continue
        eta = etas[r]
        lid = loss_ids[r]
        kind = opt_ids[r] // 2
        normalized = opt_ids[r] % 2 == 1
        k = k0
        for t in range(t0, t1):
            for i in range(n):
                acc = zero
                for j in range(d):
                    acc += z[i, j] * w[r, j]
                m[i] = acc
            mmin = m[0]
            for i in range(1, n):
                if m[i] < mmin:
                    mmin = m[i]
            if k < nck and ck[k] == t:  # record the state at step t
                s = zero
                ls = zero
                if lid == 2:
                    for i in range(n):
                        ls += half * (one - m[i]) * (one - m[i])
                elif lid == 1:
                    s = mmin
                    for i in range(n):
                        ls += np.exp(s - m[i])
                else:
                    if mmin > zero:
                        s = mmin
                    for i in range(n):
                        if m[i] > zero:
                            u = np.exp(-m[i])
                            if s == zero:
                                ls += np.log1p(u)
                            else:
                                ratio = np.log1p(u) / u if u > zero else one
                                ls += ratio * np.exp(s - m[i])
                        else:
                            ls += -m[i] + np.log1p(np.exp(m[i]))
                for j in range(d):
                    out_w[r, k, j] = w[r, j]
                out_logloss[r, k] = np.log(ls) - s if ls > zero else -np.inf
                out_loss[r, k] = ls if s == zero else ls * np.exp(-s)
                k += 1
            # the step's weights (see _coefficients_np)
            ls = one
            if lid == 2:
                if normalized:
                    ls = zero
                for i in range(n):
                    c[i] = one - m[i]
                    if normalized:
                        ls += half * c[i] * c[i]
            elif lid == 1:
                s = mmin if normalized else zero
                if normalized:
                    ls = zero
                for i in range(n):
                    c[i] = np.exp(s - m[i])
                    if normalized:
                        ls += c[i]
            else:
                s = mmin if (normalized and mmin > zero) else zero
                if normalized:
                    ls = zero
                for i in range(n):
                    if m[i] > zero:
                        u = np.exp(-m[i])
                        e = u if s == zero else np.exp(s - m[i])
                        c[i] = e / (one + u)
                        if normalized:
                            if s == zero:
                                ls += np.log1p(u)
                            else:
                                ratio = np.log1p(u) / u if u > zero else one
                                ls += ratio * e
                    else:
                        u = np.exp(m[i])
                        c[i] = one / (one + u)
                        if normalized:
                            ls += -m[i] + np.log1p(u)
            for j in range(d):
                acc = zero
                for i in range(n):
                    acc += c[i] * z[i, j]
                direc[j] = acc
            if normalized:
                if ls == zero:
                    continue  # an exact fit of the square loss: nothing moves
                scale = eta / ls
            else:
                scale = eta
            for j in range(d):
                prev[j] = w[r, j]
            if kind == 0:
                for j in range(d):
                    w[r, j] = w[r, j] + scale * direc[j]
            elif kind == 1:
                best = 0
                for j in range(1, d):
                    if abs(direc[j]) > abs(direc[best]):
                        best = j
                w[r, best] = w[r, best] + scale * direc[best]
            else:
                l1 = zero
                for j in range(d):
                    l1 += abs(direc[j])
                step = scale * l1
                for j in range(d):
                    if direc[j] > zero:
                        w[r, j] = w[r, j] + step
                    elif direc[j] < zero:
                        w[r, j] = w[r, j] - step
            bad = False
            for j in range(d):
                if not math.isfinite(w[r, j]):
                    bad = True
            if bad:
                for j in range(d):
                    w[r, j] = prev[j]
                stopped[r] = t + 1
                break
    return 0


def _numba_cache_in_tree() -> bool:
    """numba's cache=True writes to NUMBA_CACHE_DIR if set, else to the __pycache__ folder beside this file if
    that is writable, else to a user-wide folder (~/.cache/numba). Cache only in the second case: inside the
    package, where Python keeps its own bytecode."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return False
    here = Path(__file__).resolve().parent
    pycache = here / "__pycache__"
    return os.access(pycache, os.W_OK) if pycache.exists() else os.access(here, os.W_OK)


_KERNEL = None


def _kernel():
    """The compiled loop (numba imported and the loop compiled on first use; one specialization per dtype)."""
    global _KERNEL
    if _KERNEL is None:
        import numba

        _KERNEL = numba.njit(cache=_numba_cache_in_tree(), nogil=True, error_model="numpy")(_kernel_py)
    return _KERNEL


def _run_arrays(specs, nck: int, d: int, dt):
    r = len(specs)
    etas = np.array([s.eta for s in specs], dtype=dt)
    loss_ids = np.array([_LOSS_ID[s.loss] for s in specs], dtype=np.int64)
    opt_ids = np.array([_OPT_ID[s.optimizer] for s in specs], dtype=np.int64)
    out_w = np.full((r, nck, d), np.nan, dtype=dt)
    out_loss = np.full((r, nck), np.nan, dtype=dt)
    out_logloss = np.full((r, nck), np.nan, dtype=dt)
    stopped = np.full(r, -1, dtype=np.int64)
    return etas, loss_ids, opt_ids, out_w, out_loss, out_logloss, stopped


def _record_final(z, w, specs, k, out_w, out_loss, out_logloss, stopped) -> None:
    for r, s in enumerate(specs):
        if stopped[r] < 0:
            out_w[r, k] = w[r]
            ls, s_ = _loss_shifted_np(z @ w[r], _LOSS_ID[s.loss])
            with np.errstate(all="ignore"):
                out_logloss[r, k] = np.log(ls) - s_ if ls > 0 else -np.inf
                out_loss[r, k] = ls if s_ == 0 else ls * np.exp(-s_)


def _trace(specs, ck, k, t, total, w, out_w, out_loss, out_logloss, stopped, dt) -> Trace:
    return Trace(specs=specs, steps=ck[:k].copy(), w=out_w[:, :k].copy(), loss=out_loss[:, :k].copy(),
                 log_loss=out_logloss[:, :k].copy(), t=int(t), total=int(total), w_now=w.copy(),
                 stopped_at=stopped.copy(), dtype=str(dt))


def run(z, specs: RunSpec | Sequence[RunSpec], steps: int, *, w0=None, dtype=np.float64,
        per_decade: int = CHECKPOINTS_PER_DECADE, chunk_steps: int | None = None) -> Iterator[Trace]:
    """Train every run in ``specs`` on the signed rows ``z`` for ``steps`` steps from ``w0`` (zero by default;
    one vector for all, or one per run), yielding a ``Trace`` after every chunk of steps (``chunk_steps``, by
    default about CHUNK_WORK point-steps, and never past the end). The last trace has ``done`` true and holds
    every checkpoint (``checkpoint_steps``). Closing the generator stops the run between chunks. A run whose
    update turns non-finite stops there (``Trace.stopped_at``); the others go on. ValueError (or LimitError) on a
    bad argument, before any work."""
    zd, specs, steps, dt, w = _prepare(z, specs, steps, w0, dtype)
    ck = checkpoint_steps(steps, per_decade)
    n, d = zd.shape
    if chunk_steps is None:
        chunk_steps = max(MIN_CHUNK, CHUNK_WORK // (n * len(specs)))
    chunk_steps = int(chunk_steps)
    if chunk_steps < 1:
        raise ValueError(f"a chunk is at least one step, not {chunk_steps}")
    etas, loss_ids, opt_ids, out_w, out_loss, out_logloss, stopped = _run_arrays(specs, len(ck), d, dt)
    consts = np.array([0.0, 0.5, 1.0], dtype=dt)
    kernel = _kernel()
    return _drive(kernel, zd, specs, steps, dt, w, ck, chunk_steps, etas, loss_ids, opt_ids, out_w, out_loss,
                  out_logloss, stopped, consts)


def _drive(kernel, zd, specs, steps, dt, w, ck, chunk_steps, etas, loss_ids, opt_ids, out_w, out_loss, out_logloss,
           stopped, consts, ends=()) -> Iterator[Trace]:
    """The JIT loop in chunks of at most ``chunk_steps`` that also end at the step counts ``ends`` (ascending), a
    trace after each; the last one complete. Stops early once every run has stopped."""
    t = k = j = 0
    while t < steps:
        while j < len(ends) and ends[j] <= t:
            j += 1
        t1 = min(steps, t + chunk_steps, ends[j] if j < len(ends) else steps)
        kernel(zd, w, etas, loss_ids, opt_ids, t, t1, ck, k, out_w, out_loss, out_logloss, stopped, consts)
        k = int(np.searchsorted(ck, t1))  # checkpoints with step < t1 are written
        t = t1
        if t < steps:
            if np.all(stopped >= 0):
                break
            yield _trace(specs, ck, k, t, steps, w, out_w, out_loss, out_logloss, stopped, dt)
    _record_final(zd, w, specs, len(ck) - 1, out_w, out_loss, out_logloss, stopped)
    yield _trace(specs, ck, len(ck), steps, steps, w, out_w, out_loss, out_logloss, stopped, dt)


def run_all(z, specs, steps: int, **kw) -> Trace:
    """``run`` to the end; its last trace."""
    last = None
    for last in run(z, specs, steps, **kw):  # noqa: B007
        pass
    return last


def reference_run(z, specs, steps: int, *, w0=None, dtype=np.float64,
                  per_decade: int = CHECKPOINTS_PER_DECADE) -> Trace:
    """The same runs as a plain numpy loop, one step at a time in Python (the check of the JIT loop and the
    benchmark's baseline; about 8 us a step here, against 0.13 us for the JIT loop)."""
    zd, specs, steps, dt, w = _prepare(z, specs, steps, w0, dtype)
    ck = checkpoint_steps(steps, per_decade)
    d = zd.shape[1]
    etas, loss_ids, opt_ids, out_w, out_loss, out_logloss, stopped = _run_arrays(specs, len(ck), d, dt)
    for r in range(len(specs)):
        wr = w[r].copy()
        k = 0
        lid, oid, eta = int(loss_ids[r]), int(opt_ids[r]), etas[r]
        with np.errstate(all="ignore"):
            for t in range(steps):
                if k < len(ck) and ck[k] == t:
                    out_w[r, k] = wr
                    ls, s = _loss_shifted_raw(zd @ wr, lid)
                    out_logloss[r, k] = np.log(ls) - s if ls > 0 else -np.inf
                    out_loss[r, k] = ls if s == 0 else ls * np.exp(-s)
                    k += 1
                new = _step_np(zd, wr, lid, oid, eta)
                if not np.all(np.isfinite(new)):
                    stopped[r] = t + 1
                    break
                wr = new
        w[r] = wr
    _record_final(zd, w, specs, len(ck) - 1, out_w, out_loss, out_logloss, stopped)
    return _trace(specs, ck, len(ck), steps, steps, w, out_w, out_loss, out_logloss, stopped, dt)


def bench_figures(repeats: int = 3) -> dict:
    """The benchmark figures of issue 14: a million GD steps of the 2D logistic model on the 20-point clean set
    (float64, eta half its stability limit) through ``run`` (the JIT compile excluded by a warm-up call), and the
    plain numpy loop of the same math measured on 10^5 steps and scaled by 10; medians of ``repeats``."""
    z = make_preset("clean").z
    spec = RunSpec("logistic", "gd", 0.5 * stability_limit(z, "logistic"))
    run_all(z, spec, 1000)  # compile (or load the cache)
    jit, ref = [], []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        run_all(z, spec, 10**6)
        jit.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reference_run(z, spec, 10**5)
        ref.append(10 * (time.perf_counter() - t0))
    return {"implicit_bias_1e6_steps_ms": round(1000 * float(np.median(jit)), 1),
            "implicit_bias_1e6_steps_numpy_ms": round(1000 * float(np.median(ref)), 1)}


# ---------------------------------------------------------------------------------------------------------------
# the lab's entry point (plain data in, a child process's generator out)


def lab_run(points, labels, bias: float = 0.0, runs=(("logistic", "gd", 0.1),), steps: int = 10**6,
            per_decade: int = 10, dtype: str = "float64") -> Iterator[Trace]:
    """``run`` from plain, picklable data (what the lab's child process is called with): ``points`` a list of
    [x, y] (or [x, y, z]), ``labels`` their classes (+1 or -1), ``bias`` the constant feature (0: none),
    ``runs`` a list of (loss, optimizer, eta). Unlike ``run`` the chunks also end at ``per_decade`` log-spaced
    step counts (1, then 10^(j / per_decade)), so the stream advances evenly on a log-time axis (each trace is
    one step of a recording's clock); a chunk is still never more than about CHUNK_WORK point-steps, so closing
    the generator takes effect at once. ValueError (or LimitError) on a bad argument, before any work."""
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"points are a list of [x, y] pairs, not shape {x.shape}")
    bias = float(bias)
    if not math.isfinite(bias):
        raise ValueError("the bias feature must be finite")
    z = signed_rows(with_bias(x, bias) if bias else x, labels)
    specs = [RunSpec(str(r[0]), str(r[1]), float(r[2])) for r in runs]
    per_decade = int(per_decade)
    if not 1 <= per_decade <= 1000:
        raise ValueError(f"stream points per decade are 1 to 1000, not {per_decade}")
    zd, specs, steps, dt, w = _prepare(z, specs, steps, None, dtype)
    ck = checkpoint_steps(steps, max(CHECKPOINTS_PER_DECADE, per_decade))
    n, d = zd.shape
    chunk = max(MIN_CHUNK, CHUNK_WORK // (n * len(specs)))
    ends = np.unique(np.round(10.0 ** (np.arange(0, per_decade * math.log10(max(steps, 1)) + 1) / per_decade)))
    ends = [int(e) for e in ends if 0 < e < steps]
    consts = np.array([0.0, 0.5, 1.0], dtype=dt)
    return _drive(_kernel(), zd, specs, steps, dt, w, ck, chunk, *_run_arrays(specs, len(ck), d, dt), consts,
                  ends=ends)

