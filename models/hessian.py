"""Second derivatives by Hessian-vector products (double backward), never the Hessian itself (THEORY.md section 7).

``hvp_fn`` gives v -> H v for the Hessian of a scalar of some parameters; ``power_iteration`` finds the eigenvalue of
largest magnitude (the sharpness, for a loss whose top eigenvalue dominates), warm-started from an earlier vector;
``lanczos_top`` is the same answer by scipy's Lanczos (ARPACK), the cross-check; ``explicit_hessian`` builds the
whole matrix for tests on small networks. Vectors are lists of tensors shaped like the parameters. No Qt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Vec = list[torch.Tensor]


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _norm(a: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(_dot(a, a))


def hvp_fn(scalar_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]) -> Callable[[Vec], Vec]:
    """v -> H v, H the Hessian of ``scalar_fn()`` in ``params``: the gradient with its graph kept once, then one
    backward of (grad . v) per product (reverse over reverse)."""
    params = list(params)
    out = scalar_fn()
    grads = torch.autograd.grad(out, params, create_graph=True, allow_unused=True)

    # a gradient that is constant in the parameters (an output layer's bias) has no graph, and a parameter the
    # scalar does not use has no gradient at all: their rows are zero
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]

    def hvp(v: Vec) -> Vec:
        if not live:
            return [torch.zeros_like(p) for p in params]
        hv = torch.autograd.grad([grads[i] for i in live], params, grad_outputs=[v[i] for i in live],
                                 retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(hv, params)]

    return hvp


def random_vector(params: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> Vec:
    """A unit vector of normal entries shaped like ``params``."""
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    n = _norm(v)
    return [x / n for x in v]


def power_iteration(hvp: Callable[[Vec], Vec], v0: Vec, iters: int = 20, tol: float | None = None
                    ) -> tuple[float, Vec, int]:
    """(eigenvalue of largest magnitude, its unit vector, products used): ``iters`` products at most, fewer when
    the Rayleigh quotient changes by less than ``tol`` relative (None: exactly ``iters``, no early stop)."""
    v = [x.detach().clone() for x in v0]
    n = _norm(v)
    if not torch.isfinite(n) or float(n) == 0:
        # the sum of squares can overflow or underflow for a finite, non-zero vector: scale by its largest entry
        big = max((float(x.abs().max()) for x in v if x.numel()), default=0.0)
        if not math.isfinite(big) or big == 0:
            raise ValueError("the start vector must be finite and non-zero")
        v = [x / big for x in v]
        n = _norm(v)
    v = [x / n for x in v]
    lam, used = math.nan, 0
    for _ in range(int(iters)):
        hv = hvp(v)
        used += 1
        new = float(_dot(v, hv))
        nrm = _norm(hv)
        if not torch.isfinite(nrm) or float(nrm) == 0:
            return new, v, used
        v = [x / nrm for x in hv]
        if tol is not None and math.isfinite(lam) and abs(new - lam) <= tol * max(abs(new), 1e-30):
            lam = new
            break
        lam = new
    return lam, v, used


def lanczos_top(hvp: Callable[[Vec], Vec], params: Sequence[torch.Tensor], v0: Vec | None = None,
                tol: float = 1e-10) -> float:
    """The largest (algebraic) eigenvalue by scipy's Lanczos (ARPACK ``eigsh``) on the same products, in float64."""
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, eigsh

    params = list(params)
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    total = sum(sizes)

    def split(x: np.ndarray) -> Vec:
        out, i = [], 0
        for p, s, sh in zip(params, sizes, shapes):
            out.append(torch.as_tensor(x[i:i + s], dtype=p.dtype, device=p.device).reshape(sh))
            i += s
        return out

    def matvec(x):
        hv = hvp(split(np.asarray(x, dtype=np.float64).ravel()))
        return torch.cat([h.reshape(-1) for h in hv]).double().cpu().numpy()

    op = LinearOperator((total, total), matvec=matvec, dtype=np.float64)
    start = None if v0 is None else torch.cat([x.reshape(-1) for x in v0]).double().cpu().numpy()
    vals = eigsh(op, k=1, which="LA", v0=start, tol=tol, return_eigenvectors=False)
    return float(vals[0])


def explicit_hessian(scalar_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The whole Hessian (p x p), column by column from products: for tests on small networks only."""
    params = list(params)
    hvp = hvp_fn(scalar_fn, params)
    total = sum(p.numel() for p in params)
    cols = []
    for j in range(total):
        e = torch.zeros(total, dtype=params[0].dtype)
        e[j] = 1
        parts, i = [], 0
        for p in params:
            parts.append(e[i:i + p.numel()].reshape(p.shape).to(p.device))
            i += p.numel()
        cols.append(torch.cat([h.reshape(-1) for h in hvp(parts)]))
    return torch.stack(cols, 1)
