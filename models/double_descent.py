"""The double-descent lab's engine: random-features regression solved exactly, swept over the number of features
(THEORY.md section 4). numpy/scipy float64; no Qt, no torch.

Features of inputs x (d coordinates), with V (p x d) of N(0, 1) entries:
  relu     phi(x) = relu(V x / sqrt(d)) / sqrt(p)
  fourier  phi(x) = sqrt(2 / p) cos(V x / (s sqrt(d)) + b), b ~ U[0, 2 pi)
For d = 1 the ReLU features see (x, 1) (d_eff = 2): relu(v x) of a scalar x spans only two functions.

Solutions (sum objective): minimum norm a = Phi^+ y, or ridge a = argmin ||Phi a - y||^2 + lambda ||a||^2.
Never gradient descent (a fixed budget is early stopping and hides the peak), never the normal equations.

How a sweep shares work (per seed, one draw of the widest V; p features are its first p columns):
  p <= n   one Householder QR Z = Q R of the first q columns (q the largest such p); the leading p x p block of R
           and of Q^T y solve every nested least-squares problem (a triangular solve each): backward stable,
           accurate to eps cond(Phi) (the conditioning of the problem itself, not its square).
  p > n    the R factor of Z_p^T (n x n, Phi Phi^T = R^T R) updated by a QR of [R; new columns^T]; the
           min-norm a = Z_p^T R^-1 R^-T y with one step of refinement (corrected semi-normal equations).
  cond > COND_FALLBACK (about p = n) or any rank deficiency: the thin SVD of Phi_p with the cutoff RCOND
           (singular values below RCOND sigma_max are dropped), which is what numpy's lstsq computes.
  ridge    from the same R: the (p x p or n x n) system R^T R + lambda I by Cholesky (well conditioned).
sigma_min(Phi_p) is that of R (singular values of the small triangular factor, exact).

The infinite-width end: (1/p) sum_k phi_k(x) phi_k(x') -> E, for ReLU features the degree-1 arc-cosine kernel
kappa_1 with Sigma(x, x') = x . x' / d (THEORY.md section 3); for Fourier features the Gaussian kernel
exp(-||x - x'||^2 / (2 s^2 d)). Min-norm random features then converge to ridgeless kernel regression with it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import lapack

from .limits import LimitError, check_memory

#: singular values below RCOND * sigma_max are treated as zero (the stated cutoff of the exact solve)
RCOND = 1e-10
#: above this condition number of Phi_p the sweep re-solves that p by the SVD (near p = n)
COND_FALLBACK = 1e4
MIN_N, MAX_N = 2, 2000
MAX_D = 1000
MAX_P = 20000
MAX_SEEDS = 64
N_TEST = 2000
DOMAIN_1D = (-1.0, 1.0)
FEATURES = ("relu", "fourier")
KINDS = ("teacher", "function", "drawn")
FUNCTIONS_1D = {
    "sin": ("sin(πx) + 0.3 cos(3πx)", lambda x: np.sin(np.pi * x) + 0.3 * np.cos(3 * np.pi * x)),
    "abs": ("|x| − 0.5", lambda x: np.abs(x) - 0.5),
    "step": ("tanh(8x)", lambda x: np.tanh(8 * x)),
}


# ---------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Data:
    """Training inputs x (n, d), noisy targets y (n,), noiseless test inputs/targets; ``grid``: for d = 1, the
    1D coordinate of the test points (sorted), else None."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    kind: str = "teacher"
    noise: float = 0.0

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def d(self) -> int:
        return self.x.shape[1]


def _check_int(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
    return int(v)


def _check_float(name: str, v, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}], got {v:g}")
    return float(v)


def teacher(x: np.ndarray, data_seed: int = 0) -> np.ndarray:
    """The fixed target of d > 1 data: linear plus nonlinear in two random projections, variance about 1."""
    d = x.shape[1]
    rng = np.random.default_rng(10_000 + data_seed)
    w1, w2 = rng.standard_normal(d), rng.standard_normal(d)
    u, v = x @ w1 / math.sqrt(d), x @ w2 / math.sqrt(d)
    return 0.6 * u + np.tanh(1.5 * v) + 0.3 * (u * v)


def make_data(n: int = 100, d: int = 10, noise: float = 0.5, kind: str = "teacher", data_seed: int = 0,
              function: str = "sin", xs: Sequence[float] | None = None, ys: Sequence[float] | None = None,
              n_test: int = N_TEST) -> Data:
    """n training points with Gaussian label noise (std ``noise``) and ``n_test`` noiseless test points.

    kind "teacher": x ~ N(0, I_d), targets ``teacher``; "function": d = 1, x uniform on DOMAIN_1D, targets
    FUNCTIONS_1D[function]; "drawn": hand-drawn points (xs, ys) in DOMAIN_1D (no noise added), the test target
    the piecewise-linear curve through them."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    noise = _check_float("noise", noise, 0.0, 10.0)
    n_test = _check_int("n_test", n_test, 10, 100_000)
    rng = np.random.default_rng(data_seed)
    if kind == "drawn":
        if xs is None or ys is None or len(xs) != len(ys):
            raise ValueError("drawn data needs xs and ys of the same length")
        if not MIN_N <= len(xs) <= MAX_N:
            raise ValueError(f"drawn data needs {MIN_N} to {MAX_N} points, got {len(xs)}")
        x = np.asarray(xs, dtype=float)
        y = np.asarray(ys, dtype=float)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError("drawn points must be finite numbers")
        lo, hi = DOMAIN_1D
        if x.min() < lo or x.max() > hi:
            raise ValueError(f"drawn x must lie in [{lo:g}, {hi:g}]")
        if len(np.unique(x)) != len(x):
            raise ValueError("drawn points need distinct x (two targets at one x cannot both be fitted)")
        grid = np.linspace(lo, hi, n_test)
        order = np.argsort(x)
        return Data(x[:, None], y, grid[:, None], np.interp(grid, x[order], y[order]), "drawn", 0.0)
    n = _check_int("n", n, MIN_N, MAX_N)
    if kind == "function":
        if function not in FUNCTIONS_1D:
            raise ValueError(f"function must be one of {', '.join(FUNCTIONS_1D)}, got {function!r}")
        f = FUNCTIONS_1D[function][1]
        lo, hi = DOMAIN_1D  # stratified: one point in the middle half of each of n equal cells (no near-duplicate
        x = lo + (hi - lo) * (np.arange(n) + rng.uniform(0.25, 0.75, n)) / n  # x, whose noise needs huge slopes)
        grid = np.linspace(*DOMAIN_1D, n_test)
        y = f(x) + noise * rng.standard_normal(n)
        return Data(x[:, None], y, grid[:, None], f(grid), "function", noise)
    d = _check_int("d", d, 1, MAX_D)
    check_memory(8.0 * (n + n_test) * d * 2, f"data of {n} + {n_test} points in {d} dimensions")
    x = rng.standard_normal((n, d))
    x_test = rng.standard_normal((n_test, d))
    y = teacher(x, data_seed) + noise * rng.standard_normal(n)
    return Data(x, y, x_test, teacher(x_test, data_seed), "teacher", noise)


# ---------------------------------------------------------------------------------------------------- features
def _inputs(x: np.ndarray, feature: str) -> np.ndarray:
    if feature == "relu" and x.shape[1] == 1:
        return np.hstack([x, np.ones_like(x)])
    return x


def draw_weights(d: int, p: int, seed: int, feature: str = "relu"):
    """V (p x d_eff) with N(0, 1) entries and, for Fourier features, b (p,) uniform on [0, 2 pi)."""
    rng = np.random.default_rng(seed)
    d_eff = 2 if (feature == "relu" and d == 1) else d
    v = rng.standard_normal((p, d_eff))
    # b from its own stream, so that the first p of a wider draw are the features of a draw of p
    b = np.random.default_rng([seed, 1]).uniform(0.0, 2 * np.pi, size=p) if feature == "fourier" else None
    return v, b


def raw_features(x: np.ndarray, v: np.ndarray, b, feature: str = "relu", scale: float = 1.0) -> np.ndarray:
    """Z (len(x), p) with Phi_p = Z[:, :p] / sqrt(p): relu(V x / sqrt(d)) or sqrt(2) cos(V x / (s sqrt d) + b)."""
    xin = _inputs(x, feature)
    d = xin.shape[1]
    if feature == "relu":
        return np.maximum(xin @ (v.T / math.sqrt(d)), 0.0)
    return math.sqrt(2.0) * np.cos(xin @ (v.T / (scale * math.sqrt(d))) + b)


def features(x: np.ndarray, p: int, seed: int, feature: str = "relu", scale: float = 1.0) -> np.ndarray:
    """Phi (len(x), p) of ``seed``'s features: a draw of exactly p (the rows of V are drawn in order, so these
    are also the first p columns of any wider draw with the same seed)."""
    v, b = draw_weights(x.shape[1], p, seed, feature)
    return raw_features(x, v, b, feature, scale) / math.sqrt(p)


# ---------------------------------------------------------------------------------------------------- solvers
def _sigma_min_tri(R: np.ndarray) -> tuple[float, float]:
    """(sigma_min, ||R||_F) of a square triangular factor: sigma_min^2 = lambda_min(R^T R) by LAPACK dsyevr (the
    smallest eigenvalue only). Relative error about eps (||R||_F / sigma_min)^2 <= 1e-8 where the sweep uses it
    (||R||_F / sigma_min <= COND_FALLBACK); beyond that the SVD gives every singular value."""
    w = lapack.dsyevr(R.T @ R, compute_v=0, range="I", il=1, iu=1)[0]
    return math.sqrt(max(float(w[0]), 0.0)), float(np.linalg.norm(R))


def _blas_one_thread():
    """Small matrices on one BLAS thread: on two busy cores a second OpenBLAS thread made the sweep 40x slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def min_norm_svd(phi: np.ndarray, y: np.ndarray, rcond: float = RCOND) -> tuple[np.ndarray, np.ndarray]:
    """a = Phi^+ y by the thin SVD, singular values below rcond * sigma_max dropped; returns (a, singular values)."""
    u, s, vt = np.linalg.svd(phi, full_matrices=False)
    keep = s > rcond * (s[0] if len(s) else 0.0)
    a = vt[keep].T @ ((u[:, keep].T @ y) / s[keep])
    return a, s


def ridge_solve(phi: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """argmin ||Phi a - y||^2 + ridge ||a||^2 (ridge > 0) via the SVD (the reference; ``sweep`` is faster)."""
    u, s, vt = np.linalg.svd(phi, full_matrices=False)
    return vt.T @ ((s / (s * s + ridge)) * (u.T @ y))


def solve(phi: np.ndarray, y: np.ndarray, ridge: float = 0.0, rcond: float = RCOND) -> np.ndarray:
    """The coefficients a of one (Phi, y): minimum norm (ridge 0) or ridge; the same solver the sweep uses
    (QR / R-update, SVD where ill-conditioned)."""
    phi = np.asarray(phi, dtype=float)
    n, p = phi.shape
    res = _NestedSolver(phi, np.asarray(y, dtype=float), n).solve(p, ridge, rcond)
    return res[0]


class _NestedSolver:
    """Solves the least-squares problems of the nested column sets Z[:, :p] of one matrix, p increasing."""

    def __init__(self, z: np.ndarray, y: np.ndarray, q_max: int) -> None:
        self.z, self.y = z, y
        n, pmax = z.shape
        self.n = n
        q = min(q_max, n, pmax)
        self.q = q
        # the QR of the first q columns (p <= q): Householder, economic
        self.Q, self.R = np.linalg.qr(z[:, :q])
        self.qty = self.Q.T @ y
        self.Rt = None  # the R factor of Z_p^T (n x n) for p > n, and the p it belongs to
        self.pt = 0

    def _r_wide(self, p: int) -> np.ndarray:
        z, n = self.z, self.n
        if self.Rt is None or p < self.pt:
            self.Rt = np.linalg.qr(z[:, :p].T, mode="r")
        elif p > self.pt:
            self.Rt = np.linalg.qr(np.vstack([self.Rt, z[:, self.pt:p].T]), mode="r")
        self.pt = p
        return self.Rt[:n]

    def solve(self, p: int, ridge: float = 0.0, rcond: float = RCOND):
        """(a in Z's scale for lambda_Z = ridge, sigma_min(Z_p), method)."""
        z, y, n = self.z, self.y, self.n
        if p <= self.q:
            R = self.R[:p, :p]
            smin, fro = _sigma_min_tri(R)
            if ridge > 0:
                A = R.T @ R + ridge * np.eye(p)
                return _chol_solve(A, R.T @ self.qty[:p]), smin, "qr-ridge"
            if smin * COND_FALLBACK > fro:
                return _tri(R, self.qty[:p]), smin, "qr"
        else:
            R = self._r_wide(p)
            smin, fro = _sigma_min_tri(R)
            zp = z[:, :p]
            if ridge > 0:
                alpha = _chol_solve(R.T @ R + ridge * np.eye(n), y)
                return zp.T @ alpha, smin, "rt-ridge"
            if smin * COND_FALLBACK > fro:
                a = zp.T @ _tri(R, _tri(R, y, 1))
                r = y - zp @ a  # one step of refinement (corrected semi-normal equations)
                a += zp.T @ _tri(R, _tri(R, r, 1))
                return a, smin, "rt"
        a, s_full = min_norm_svd(z[:, :p], y, rcond)
        return a, float(s_full[min(n, p) - 1]) if len(s_full) >= min(n, p) else 0.0, "svd"


def _tri(R: np.ndarray, b: np.ndarray, trans: int = 0, lower: int = 0) -> np.ndarray:
    """R^-1 b (trans 0) or R^-T b (trans 1) for triangular R: LAPACK dtrtrs without scipy's checks."""
    x, info = lapack.dtrtrs(R, b, lower=lower, trans=trans)
    if info != 0:
        raise np.linalg.LinAlgError("singular triangular factor")
    return x


def _chol_solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    c, low = _cho_factor(A)
    return _cho_solve(c, b)


def _cho_factor(A):
    L = np.linalg.cholesky(A)
    return L, True


def _cho_solve(L, b):
    return _tri(L, _tri(L, b, 0, 1), 1, 1)


# ---------------------------------------------------------------------------------------------------- sweep
def p_values(n: int, p_max: int | None = None, count: int = 60, p_min: int = 1) -> list[int]:
    """Log-spaced p from p_min to p_max (default 4n), denser around the threshold: every p within 10% of n, and
    p = n itself."""
    p_max = p_max or 4 * n
    base = np.geomspace(max(1, p_min), p_max, count)
    near = np.arange(max(p_min, int(0.9 * n)), min(p_max, int(math.ceil(1.1 * n))) + 1)
    near = near[:: max(1, len(near) // 20)]
    ps = np.unique(np.concatenate([np.round(base).astype(int), near, [n] if p_min <= n <= p_max else []]))
    return [int(p) for p in ps if p_min <= p <= p_max]


@dataclass
class Sweep:
    """Errors per (seed, p): rows are seeds, columns the ``ps``. ``kernel_test`` the infinite-width asymptote."""

    ps: np.ndarray
    seeds: list[int]
    train: np.ndarray
    test: np.ndarray
    norm: np.ndarray
    sigma_min: np.ndarray
    n: int
    ridge: float = 0.0
    feature: str = "relu"
    kernel_test: float = float("nan")
    methods: dict = field(default_factory=dict)
    elapsed_ms: float = 0.0
    complete: bool = True

    def quartiles(self, what: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(25%, median, 75%) over seeds of ``what`` at each p."""
        v = getattr(self, what)
        q = np.quantile(v, [0.25, 0.5, 0.75], axis=0)
        return q[0], q[1], q[2]

    def median(self, what: str = "test") -> np.ndarray:
        return np.median(getattr(self, what), axis=0)


def _check_sweep_args(data: Data, ps, seeds, ridge: float, feature: str, scale: float):
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {', '.join(FEATURES)}, got {feature!r}")
    _check_float("ridge", ridge, 0.0, 1e6)
    _check_float("scale", scale, 1e-3, 1e3)
    ps = [int(p) for p in ps]
    if not ps:
        raise ValueError("ps must name at least one number of features")
    if any(p < 1 or p > MAX_P for p in ps):
        raise ValueError(f"every p must be in [1, {MAX_P}]")
    if sorted(set(ps)) != ps:
        raise ValueError("ps must be increasing without repeats")
    if isinstance(seeds, int):
        seeds = list(range(_check_int("seeds", seeds, 1, MAX_SEEDS)))
    seeds = [int(s) for s in seeds]
    if not 1 <= len(seeds) <= MAX_SEEDS:
        raise ValueError(f"between 1 and {MAX_SEEDS} seeds, got {len(seeds)}")
    m, n, pmax = len(data.y_test), data.n, ps[-1]
    check_memory(8.0 * (m + 2 * n) * pmax + 8.0 * n * n * 4,
                 f"a sweep to p = {pmax} with {m} test points",
                 f"at most p = {int(2 * 1024**3 / (8 * (m + 2 * n)))}")
    return ps, seeds


def nested_solutions(data: Data, ps: Sequence[int], seed: int = 0, ridge: float = 0.0, feature: str = "relu",
                     scale: float = 1.0) -> list[np.ndarray]:
    """The sweep's coefficients a (in Phi's scale) at each p for one seed: what ``sweep`` evaluates."""
    ps, _ = _check_sweep_args(data, ps, [seed], ridge, feature, scale)
    with _blas_one_thread():
        coef, _, _, z, _ = _seed_coefs(data, ps, seed, ridge, feature, scale, {}, test=False)
    return [coef[:p, j] * math.sqrt(p) for j, p in enumerate(ps)]


def _seed_coefs(data: Data, ps: list[int], seed: int, ridge: float, feature: str, scale: float, methods: dict,
                test: bool = True):
    n, pmax = data.n, ps[-1]
    v, b = draw_weights(data.d, pmax, seed, feature)
    z = raw_features(data.x, v, b, feature, scale)
    zt = raw_features(data.x_test, v, b, feature, scale) if test else None
    q_max = max([p for p in ps if p <= n], default=1)
    solver = _NestedSolver(z, data.y, q_max)
    k = len(ps)
    coef = np.zeros((pmax, k))
    norm, smin = np.empty(k), np.empty(k)
    for j, p in enumerate(ps):
        a, s, how = solver.solve(p, ridge * p)
        methods[how] = methods.get(how, 0) + 1
        coef[:p, j] = a
        rootp = math.sqrt(p)
        norm[j] = rootp * math.sqrt(float(a @ a))  # a_Phi = sqrt(p) a_Z
        smin[j] = s / rootp
    return coef, norm, smin, z, zt


def _seed_row(data: Data, ps: list[int], seed: int, ridge: float, feature: str, scale: float, methods: dict):
    coef, norm, smin, z, zt = _seed_coefs(data, ps, seed, ridge, feature, scale, methods)
    train = np.mean((z @ coef - data.y[:, None]) ** 2, axis=0)
    test = np.mean((zt @ coef - data.y_test[:, None]) ** 2, axis=0)
    return train, test, norm, smin


def iter_sweep(data: Data, ps: Sequence[int], seeds: int | Sequence[int] = 10, ridge: float = 0.0,
               feature: str = "relu", scale: float = 1.0, first: int = 2, kernel: bool = True) -> Iterator[Sweep]:
    """Progressive ``sweep``: yields a ``Sweep`` after ``first`` seeds, then after twice as many, ..., the last
    with every seed (``complete`` True). The kernel asymptote is computed once, before the first yield."""
    ps, seeds = _check_sweep_args(data, ps, seeds, ridge, feature, scale)
    t0 = time.perf_counter()
    kt = kernel_test_error(data, ridge, feature, scale) if kernel else float("nan")
    rows: list = []
    methods: dict = {}
    target = min(max(1, first), len(seeds))
    for seed in seeds:
        with _blas_one_thread():
            rows.append(_seed_row(data, ps, seed, ridge, feature, scale, methods))
        if len(rows) == target or len(rows) == len(seeds):
            arr = [np.array([r[i] for r in rows]) for i in range(4)]
            yield Sweep(np.array(ps), seeds[: len(rows)], *arr, n=data.n, ridge=ridge, feature=feature,
                        kernel_test=kt, methods=dict(methods), elapsed_ms=(time.perf_counter() - t0) * 1e3,
                        complete=len(rows) == len(seeds))
            target = min(2 * target, len(seeds))


def sweep(data: Data, ps: Sequence[int], seeds: int | Sequence[int] = 10, ridge: float = 0.0,
          feature: str = "relu", scale: float = 1.0, kernel: bool = True) -> Sweep:
    """Train and test error, ||a|| and sigma_min(Phi) for every (seed, p): the features of each seed are the
    first p columns of one draw of the widest V."""
    result = None
    for part in iter_sweep(data, ps, seeds, ridge, feature, scale, first=10**9, kernel=kernel):
        result = part
    return result


def naive_sweep(data: Data, ps: Sequence[int], seeds: int | Sequence[int] = 10, feature: str = "relu",
                scale: float = 1.0) -> np.ndarray:
    """The reference: one numpy.linalg.lstsq per (p, seed) on the same nested features; returns test errors."""
    ps, seeds = _check_sweep_args(data, ps, seeds, 0.0, feature, scale)
    out = np.empty((len(seeds), len(ps)))
    with _blas_one_thread():
        for i, seed in enumerate(seeds):
            v, b = draw_weights(data.d, ps[-1], seed, feature)
            z = raw_features(data.x, v, b, feature, scale)
            zt = raw_features(data.x_test, v, b, feature, scale)
            for j, p in enumerate(ps):
                phi = z[:, :p] / math.sqrt(p)
                a, *_ = np.linalg.lstsq(phi, data.y, rcond=RCOND)
                out[i, j] = np.mean((zt[:, :p] / math.sqrt(p) @ a - data.y_test) ** 2)
    return out


# ---------------------------------------------------------------------------------------------------- kernel
def limit_kernel(x1: np.ndarray, x2: np.ndarray, feature: str = "relu", scale: float = 1.0) -> np.ndarray:
    """E over features of phi(x) . phi(x') * p: relu -> kappa_1(Sigma) with Sigma(x, x') = x . x' / d (d_eff for
    d = 1), kappa_1 = sqrt(S(x,x) S(x',x')) (sin t + (pi - t) cos t) / (2 pi); fourier -> the Gaussian kernel
    exp(-||x - x'||^2 / (2 s^2 d))."""
    a, b = _inputs(x1, feature), _inputs(x2, feature)
    d = a.shape[1]
    if feature == "relu":
        na = np.sqrt(np.sum(a * a, axis=1) / d)
        nb = np.sqrt(np.sum(b * b, axis=1) / d)
        norms = np.outer(na, nb)
        cos = np.clip((a @ b.T / d) / np.where(norms > 0, norms, 1.0), -1.0, 1.0)
        t = np.arccos(cos)
        return norms * (np.sin(t) + (np.pi - t) * cos) / (2 * np.pi)
    sq = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2 * a @ b.T
    return np.exp(-np.maximum(sq, 0.0) / (2 * scale * scale * d))


def kernel_predict(data: Data, x_eval: np.ndarray, ridge: float = 0.0, feature: str = "relu",
                   scale: float = 1.0) -> np.ndarray:
    """Kernel regression with the limiting kernel: ridgeless (the pseudo-inverse with cutoff RCOND, by eigh) or
    with ``ridge`` (the same sum objective: alpha = (K + ridge I)^-1 y)."""
    K = limit_kernel(data.x, data.x, feature, scale)
    w, U = np.linalg.eigh(K + ridge * np.eye(data.n))
    keep = w > RCOND * w[-1]
    alpha = U[:, keep] @ ((U[:, keep].T @ data.y) / w[keep])
    return limit_kernel(x_eval, data.x, feature, scale) @ alpha


def kernel_test_error(data: Data, ridge: float = 0.0, feature: str = "relu", scale: float = 1.0) -> float:
    """The infinite-width asymptote: the limiting kernel's regression test error (MSE)."""
    pred = kernel_predict(data, data.x_test, ridge, feature, scale)
    return float(np.mean((pred - data.y_test) ** 2))


def kernel_error_vs_p(x: np.ndarray, ps: Sequence[int], seed: int = 0, feature: str = "relu",
                      scale: float = 1.0) -> np.ndarray:
    """||Phi_p Phi_p^T - K_inf||_F / ||K_inf||_F at each p (nested columns of one draw)."""
    ps = [int(p) for p in ps]
    v, b = draw_weights(x.shape[1], ps[-1], seed, feature)
    z = raw_features(x, v, b, feature, scale)
    K = limit_kernel(x, x, feature, scale)
    out, acc, prev = [], np.zeros_like(K), 0
    for p in ps:
        acc += z[:, prev:p] @ z[:, prev:p].T
        prev = p
        out.append(np.linalg.norm(acc / p - K) / np.linalg.norm(K))
    return np.array(out)


# ---------------------------------------------------------------------------------------------------- one model
@dataclass(frozen=True)
class Model:
    """One fitted model: ``x_eval`` (d = 1: a grid over the domain; else the test inputs' index) and its
    predictions ``pred`` with the targets ``target`` there; train predictions too."""

    p: int
    seed: int
    a: np.ndarray
    x_eval: np.ndarray
    pred: np.ndarray
    target: np.ndarray
    train_pred: np.ndarray
    train_error: float
    test_error: float
    norm: float


def fit_model(data: Data, p: int, seed: int = 0, ridge: float = 0.0, feature: str = "relu", scale: float = 1.0,
              grid: int = 400, max_shown: int = 500) -> Model:
    """The model at (p, seed) with the sweep's features (the first p columns of the same draw): for d = 1 its
    function on a ``grid``-point grid over the domain, for d > 1 its predictions at (up to max_shown) test points."""
    p = _check_int("p", p, 1, MAX_P)
    _check_float("ridge", ridge, 0.0, 1e6)
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {', '.join(FEATURES)}, got {feature!r}")
    v, b = draw_weights(data.d, p, seed, feature)
    z = raw_features(data.x, v, b, feature, scale)
    with _blas_one_thread():
        a, _, _ = _NestedSolver(z, data.y, p).solve(p, ridge * p)
    zt = raw_features(data.x_test, v, b, feature, scale)
    test_error = float(np.mean((zt @ a - data.y_test) ** 2))
    if data.d == 1:
        xe = np.linspace(*DOMAIN_1D, grid)[:, None]
        pred = raw_features(xe, v, b, feature, scale) @ a
        target = np.interp(xe[:, 0], data.x_test[:, 0], data.y_test)
        x_eval = xe[:, 0]
    else:
        k = min(max_shown, len(data.y_test))
        pred, target, x_eval = zt[:k] @ a, data.y_test[:k], np.arange(k, dtype=float)
    train_pred = z @ a
    return Model(p, seed, a * math.sqrt(p), x_eval, pred, target, train_pred,
                 float(np.mean((train_pred - data.y) ** 2)), test_error, float(math.sqrt(p) * np.linalg.norm(a)))


# ---------------------------------------------------------------------------------------------------- surface
def ridge_surface(data: Data, ps: Sequence[int], ridges: Sequence[float], seeds: int | Sequence[int] = 3,
                  feature: str = "relu", scale: float = 1.0, max_test: int = 500) -> np.ndarray:
    """Median over seeds of the test error on a (ridge, p) grid: shape (len(ridges), len(ps)). One thin SVD of
    Phi_p per (seed, p) serves every ridge (ridge 0: the min-norm solution with cutoff RCOND)."""
    ps, seeds = _check_sweep_args(data, ps, seeds, 0.0, feature, scale)
    ridges = np.asarray([_check_float("ridge", r, 0.0, 1e6) for r in ridges])
    if not 1 <= len(ridges) <= 200:
        raise ValueError("between 1 and 200 ridge values")
    k = min(max_test, len(data.y_test))
    xt, yt = data.x_test[:k], data.y_test[:k]
    out = np.empty((len(seeds), len(ridges), len(ps)))
    with _blas_one_thread():
        _surface_rows(data, ps, ridges, seeds, feature, scale, xt, yt, out)
    return np.median(out, axis=0)


def _surface_rows(data, ps, ridges, seeds, feature, scale, xt, yt, out) -> None:
    for i, seed in enumerate(seeds):
        v, b = draw_weights(data.d, ps[-1], seed, feature)
        z = raw_features(data.x, v, b, feature, scale)
        zt = raw_features(xt, v, b, feature, scale)
        for j, p in enumerate(ps):
            rp = math.sqrt(p)
            u, s, vt = np.linalg.svd(z[:, :p] / rp, full_matrices=False)
            uty = u.T @ data.y
            m = (zt[:, :p] / rp) @ vt.T  # (k, r)
            keep = s > RCOND * s[0]
            filt = np.where(ridges[:, None] > 0, s[None, :] / (s[None, :] ** 2 + ridges[:, None]),
                            np.where(keep[None, :], 1.0 / np.where(keep, s, 1.0)[None, :], 0.0))
            pred = m @ (filt * uty[None, :]).T  # (k, len(ridges))
            out[i, :, j] = np.mean((pred - yt[:, None]) ** 2, axis=0)


# ---------------------------------------------------------------------------------------------------- bench
def bench_figures(repeats: int = 3) -> dict:
    """``double_descent_sweep_ms`` (n = 100, d = 10, p = 10..400 step 5, 10 seeds, min-norm, with ||a|| and
    sigma_min, no kernel) and ``double_descent_sweep_naive_ms`` (one lstsq per (p, seed)): medians of ``repeats``."""
    data = make_data(100, 10, 0.5)
    ps = list(range(10, 401, 5))
    fast, naive = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        sweep(data, ps, 10, kernel=False)
        fast.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        naive_sweep(data, ps, 10)
        naive.append((time.perf_counter() - t) * 1e3)
    return {"double_descent_sweep_ms": float(np.median(fast)), "double_descent_sweep_naive_ms": float(np.median(naive))}


__all__ = ["COND_FALLBACK", "RCOND", "Data", "LimitError", "Model", "Sweep", "bench_figures", "features",
           "fit_model", "iter_sweep", "kernel_error_vs_p", "kernel_predict", "kernel_test_error", "limit_kernel",
           "make_data", "min_norm_svd", "naive_sweep", "nested_solutions", "p_values", "ridge_solve", "ridge_surface", "solve", "sweep"]
