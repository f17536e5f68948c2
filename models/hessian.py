"""Second derivatives by Hessian-vector products (double backward), never the Hessian itself (THEORY.md section 7).

``hvp_fn`` gives v -> H v for the Hessian of a scalar of some parameters; ``power_iteration`` finds the eigenvalue of
largest magnitude (the sharpness, for a loss whose top eigenvalue dominates), warm-started from an earlier vector;
``lanczos_top`` is the same answer by scipy's Lanczos (ARPACK), the cross-check; ``explicit_hessian`` builds the
whole matrix for tests on small networks. Vectors are lists of tensors shaped like the parameters. No Qt.

``mlp_hvp_fn`` is the same exact product for a multilayer perceptron with a square loss, done by hand
(Pearlmutter's R-operator with matrix products, the forward pass at the weights cached): no autograd graph, and
fewer matrix products than double backward needs. ``mlp_layers`` / ``mlp_hvp_for`` read an nn.Sequential of
nn.Linear and tanh / relu / gelu modules or a models.ntk.NTKNet into it, and give None for any other model, where
hvp_fn is the product to use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


# ------------------------------------------------------------------------------------------------
# Exact products for multilayer perceptrons with a square loss: Pearlmutter's R-operator by hand
#
# The network: a_0 = x (n x d); z_l = s_l a_{l-1} W_l^T + b_l, a_l = phi_l(z_l) (phi_l the identity where a layer
# has no activation); f = a_L (n x k). The loss: L = w * sum 1/2 (f - y)^2. Its gradient, by backprop, with
# g_L = w (f - y), delta_l = g_l * phi_l'(z_l), g_{l-1} = s_l delta_l W_l:
#     dL/dW_l = s_l delta_l^T a_{l-1},   dL/db_l = sum over the points of delta_l.
# The R-operator R{.} = d/dt (.)(theta + t v) at t = 0, for a direction v = (V_l, c_l), applied to those formulas:
#     forward:  R z_l = s_l (R a_{l-1} W_l^T + a_{l-1} V_l^T) + c_l,  R a_l = phi_l'(z_l) R z_l,  R a_0 = 0
#     backward: R g_L = w R a_L,  R delta_l = R g_l * phi_l'(z_l) + g_l * phi_l''(z_l) * R z_l,
#               R g_{l-1} = s_l (R delta_l W_l + delta_l V_l)
#     H v:      (s_l (R delta_l^T a_{l-1} + delta_l^T R a_{l-1}),  sum over the points of R delta_l)
# The forward and backward passes at the weights (a_l, phi', g phi'', delta) are computed once; a product is then
# matrix products and elementwise ones, no autograd graph: the exact Hessian, not the Gauss-Newton part alone.

#: the elementwise activations the fast product knows (gelu: the exact erf form z Phi(z))
MLP_ACTIVATIONS = ("tanh", "relu", "gelu", "erf")

#: the first-layer shortcut (see mlp_hvp_fn) when the data has at most this many columns (with the bias's)
_LOWRANK_MAX_COLS = 32

_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


@dataclass(frozen=True, eq=False)
class MLPLayer:
    """One affine layer z = scale * (a W^T) + bias, then ``activation`` (one of MLP_ACTIVATIONS, or None: none).
    ``weight`` is (fan_out, fan_in) as in nn.Linear; ``bias`` (fan_out,) or None (no bias)."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    scale: float = 1.0
    activation: str | None = None


def _act_derivs(name: str | None, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(phi(z), phi'(z), phi''(z)); None for a derivative that is identically 1 (phi') or 0 (phi''). ``z`` is the
    caller's scratch: it may be overwritten."""
    if name is None:
        return z, None, None
    if name == "tanh":  # phi' = 1 - t^2, phi'' = -2 t phi' (z's storage reused for phi'': fewer fresh pages)
        t = torch.tanh(z)
        d1 = torch.mul(t, t).neg_().add_(1)
        return t, d1, torch.mul(t, -2, out=z).mul_(d1)
    if name == "relu":  # autograd's convention at 0: derivative 0 (the mask z > 0)
        return torch.relu(z), (z > 0).to(z.dtype), None
    if name == "gelu":  # phi = z Phi(z), phi' = Phi(z) + z pdf(z), phi'' = pdf(z) (2 - z^2)
        cdf = 0.5 * (1 + torch.erf(z * (1 / math.sqrt(2))))
        pdf = torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
        return z * cdf, cdf + z * pdf, pdf * (2 - z * z)
    if name == "erf":  # phi' = 2/sqrt(pi) exp(-z^2), phi'' = -2 z phi'
        d1 = torch.exp(-z * z) * _TWO_OVER_SQRT_PI
        return torch.erf(z), d1, -2 * z * d1
    raise ValueError(f"unknown activation {name!r}; the fast product knows {', '.join(MLP_ACTIVATIONS)} or None")


def mlp_hvp_fn(layers: Sequence[MLPLayer], x: torch.Tensor, y: torch.Tensor, loss_weight: float = 1.0,
               params: Sequence[torch.Tensor] | None = None) -> Callable[[Vec], Vec]:
    """v -> H v, H the exact Hessian of L = loss_weight * sum_i 1/2 ||f(x_i) - y_i||^2 for the perceptron
    ``layers``, by Pearlmutter's R-operator with matrix products (no autograd): the forward and backward passes at
    the current weights are computed here, once; each product is one forward and one backward R-pass.

    Vectors are lists of tensors in the order of ``params``, each of which must be one of the layers' weights or
    biases (by identity); None: [W_1, b_1, W_2, b_2, ...] (biases that are None left out). A subset gives that
    block of the Hessian. Loss weights: 1 for 1/2 sum (f - y)^2, 1/N for 1/2 mean (f - y)^2, 2/N for nn.MSELoss()
    (the mean of (f - y)^2), 2 for nn.MSELoss(reduction='sum'), N = n * k the number of outputs. ``y`` is (n, k)
    or has n * k entries, k the output width. The weights must not change in place while the product is used (that
    raises RuntimeError, as autograd does for a graph); build a new one at new weights. The product keeps its
    workspace between calls: one call at a time (the returned tensors are the caller's own).

    Where the data has few columns (d + 1 <= 32 and 8 (d + 1) <= n, d + 1 counting the first layer's bias) and
    there are two layers or more, the products of the second layer's backward R-pass that meet the first layer's
    direction come from d + 1 constant matrices made here, instead of two n-row matrix products per call."""
    layers = list(layers)
    if not layers:
        raise ValueError("an MLP needs at least one layer")
    if x.ndim != 2:
        raise ValueError(f"x must be (n, fan_in), got {tuple(x.shape)}")
    own = []  # the tensors that the vectors' entries can refer to, in layer order
    for i, layer in enumerate(layers):
        W, b = layer.weight, layer.bias
        fan_in = x.shape[1] if i == 0 else layers[i - 1].weight.shape[0]
        if W.ndim != 2 or W.shape[1] != fan_in:
            raise ValueError(f"layer {i}: weight {tuple(W.shape)} does not take {fan_in} inputs")
        if b is not None and tuple(b.shape) != (W.shape[0],):
            raise ValueError(f"layer {i}: bias {tuple(b.shape)} does not match {W.shape[0]} outputs")
        if layer.activation not in (None, *MLP_ACTIVATIONS):
            raise ValueError(f"layer {i}: unknown activation {layer.activation!r}; the fast product knows "
                             f"{', '.join(MLP_ACTIVATIONS)} or None")
        own.append((i, "W", W))
        if b is not None:
            own.append((i, "b", b))
    if len({id(t) for _, _, t in own}) != len(own):
        raise ValueError("a tensor is shared by two layers (tied weights): not an MLP for the fast product")
    if params is None:
        slots = [(i, kind) for i, kind, _ in own]
    else:
        where = {id(t): (i, kind) for i, kind, t in own}
        slots = []
        for j, p in enumerate(params):
            if id(p) not in where:
                raise ValueError(f"params[{j}] {tuple(p.shape)} is none of the layers' weights or biases")
            slots.append(where[id(p)])
        if len(set(slots)) != len(slots):
            raise ValueError("a parameter is listed twice")
    n, k = x.shape[0], layers[-1].weight.shape[0]
    if y.numel() != n * k:
        raise ValueError(f"y has {y.numel()} entries, the outputs {n} x {k}")
    versions = [(t, t._version) for _, _, t in own]
    L = len(layers)
    scales = [float(layer.scale) for layer in layers]
    Ws = [layer.weight.detach() for layer in layers]
    has_bias = [layer.bias is not None for layer in layers]
    w = float(loss_weight)

    with torch.no_grad():
        inputs, d1s, d2s = [], [], []  # a_{l-1}, phi_l'(z_l) and phi_l''(z_l) (None: identically 1 and 0)
        a = x.detach().to(Ws[0].dtype, copy=True)  # the points' own copy: an in-place change to x leaves it
        for layer, W, s in zip(layers, Ws, scales):
            inputs.append(a)
            if layer.bias is None:
                z = torch.mm(a, W.T) if s == 1 else torch.mm(a, W.T).mul_(s)
            else:
                z = torch.addmm(layer.bias.detach(), a, W.T, alpha=s)
            a, d1, d2 = _act_derivs(layer.activation, z)
            d1s.append(d1)
            d2s.append(d2)
        g = (a - y.detach().reshape(n, k).to(a.dtype)).mul_(w)  # dL/df, then dL/da_l going down
        deltas, gd2s = [None] * L, [None] * L  # dL/dz_l, and dL/da_l * phi_l''(z_l)
        for i in range(L - 1, -1, -1):
            gd2s[i] = None if d2s[i] is None else d2s[i].mul_(g)
            deltas[i] = g if d1s[i] is None else g.mul_(d1s[i])
            if i:
                g = torch.mm(deltas[i], Ws[i])
                if scales[i] != 1:
                    g.mul_(scales[i])
        del d2s, g
        # The first layer's input is the data, of few columns u_j (x's d columns, and 1 for the bias): then
        # R z_1 = sum_j u_j q_j^T with q_j = s_1 V_1[:, j] (and c_1), and the two products of the second layer's
        # backward R-pass that meet the first layer's direction, delta_2^T R a_1 and (delta_2 V_2) * phi_1' summed
        # against each u_j, are contractions of V_1 / V_2 with the constant matrices M_j = (u_j * delta_2)^T phi_1'
        # (fan_out_2 x fan_out_1): (d + 1) small elementwise products instead of two n-row matrix products.
        cols = x.shape[1] + (1 if has_bias[0] else 0)
        lowrank = L >= 2 and cols <= _LOWRANK_MAX_COLS and 8 * cols <= n
        # the products' workspace, allocated once (fresh n-row tensors at every product cost page faults that
        # rival the arithmetic): R z_l, R a_l (R z_l itself where phi_l is the identity), R g_l / R delta_l
        widths = [W.shape[0] for W in Ws]
        r_zb = [torch.empty(n, m, dtype=W.dtype, device=W.device) for m, W in zip(widths, Ws)]
        r_ab = [rz if d1 is None else torch.empty_like(rz) for rz, d1 in zip(r_zb, d1s)]
        r_gb = [torch.empty_like(rz) for rz in r_zb]
        M = None
        if lowrank:
            d1 = d1s[0] if d1s[0] is not None else torch.ones_like(deltas[0])
            M = torch.empty(cols, widths[1], widths[0], dtype=Ws[0].dtype, device=Ws[0].device)
            for j in range(x.shape[1]):  # u_j * delta_2 in the workspace, (n, fan_out_2)
                du = torch.mul(inputs[0][:, j:j + 1], deltas[1], out=r_gb[1])
                torch.mm(du.T, d1, out=M[j])
            if has_bias[0]:
                torch.mm(deltas[1].T, d1, out=M[-1])
            del d1

    index = {slot: j for j, slot in enumerate(slots)}

    def direction(v: Vec) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        Vs, cs = [], []  # a part that params leaves out: a zero direction
        for i, W in enumerate(Ws):
            j = index.get((i, "W"))
            Vs.append(torch.zeros_like(W) if j is None else v[j].detach().to(W.dtype).reshape(W.shape))
            if not has_bias[i]:
                cs.append(None)
            else:
                j = index.get((i, "b"))
                cs.append(torch.zeros_like(W[:, 0]) if j is None else v[j].detach().to(W.dtype).reshape(-1))
        return Vs, cs

    def hvp(v: Vec) -> Vec:
        if len(v) != len(slots):
            raise ValueError(f"the vector has {len(v)} parts, the parameters {len(slots)}")
        for t, ver in versions:
            if t._version != ver:
                raise RuntimeError("a weight of the network changed in place since the product was built: "
                                   "build a new one (mlp_hvp_fn) at the new weights")
        with torch.no_grad():
            Vs, cs = direction(v)
            # forward R-pass: R z_l = s_l (a_{l-1} V_l^T + R a_{l-1} W_l^T) + c_l, R a_l = phi_l' R z_l
            for i in range(L):
                s, Rz = scales[i], r_zb[i]
                Ra = r_ab[i - 1] if i else None  # R a_0 = 0: the data
                if cs[i] is None:
                    torch.mm(inputs[i], Vs[i].T, out=Rz)
                    if Ra is not None:
                        Rz.addmm_(Ra, Ws[i].T)
                    if s != 1:
                        Rz.mul_(s)
                else:
                    torch.addmm(cs[i], inputs[i], Vs[i].T, alpha=s, out=Rz)
                    if Ra is not None:
                        Rz.addmm_(Ra, Ws[i].T, alpha=s)
                if d1s[i] is not None:
                    torch.mul(Rz, d1s[i], out=r_ab[i])
            # backward R-pass: R g_L = w R a_L, R delta_l = R g_l phi_l' + g_l phi_l'' R z_l,
            # R g_{l-1} = s_l (R delta_l W_l + delta_l V_l); H v = s_l (R delta_l^T a_{l-1} + delta_l^T R a_{l-1})
            # and the row sums of R delta_l
            out_W, out_b = [None] * L, [None] * L
            extra = None  # the first layer's share of its products from M (lowrank): (cols, fan_out_1)
            torch.mul(r_ab[L - 1], w, out=r_gb[L - 1])
            for i in range(L - 1, -1, -1):
                s, Rd, A = scales[i], r_gb[i], inputs[i]
                if d1s[i] is not None:
                    Rd.mul_(d1s[i])
                if gd2s[i] is not None:
                    Rd.addcmul_(gd2s[i], r_zb[i])
                # (fan_out x n) @ (n x fan_in): a few input columns are far faster as the transpose of A^T R delta
                dW = torch.mm(A.T, Rd).T.contiguous() if A.shape[1] < Rd.shape[1] else torch.mm(Rd.T, A)
                if i == 1 and lowrank:  # delta_2^T R a_1 = sum_j M_j * q_j (q_j along the columns)
                    q = scales[0] * Vs[0].T
                    if cs[0] is not None:
                        q = torch.cat([q, cs[0][None]], 0)
                    dW.add_((M * q[:, None, :]).sum(0))
                elif i:
                    dW.addmm_(deltas[i].T, r_ab[i - 1])
                if s != 1:
                    dW.mul_(s)
                out_W[i] = dW
                if has_bias[i]:
                    out_b[i] = Rd.sum(0)
                if i:
                    Rg = torch.mm(Rd, Ws[i], out=r_gb[i - 1])
                    if i == 1 and lowrank:  # (delta_2 V_2) * phi_1' against each u_j: sum over rows of M_j * V_2
                        extra = (M * Vs[1][None]).sum(1).mul_(s)
                    else:
                        Rg.addmm_(deltas[i], Vs[i])
                    if s != 1:
                        Rg.mul_(s)
            if extra is not None:
                d = x.shape[1]
                out_W[0].add_(extra[:d].T, alpha=scales[0])
                if has_bias[0]:
                    out_b[0].add_(extra[d])
        return [(out_W[i] if kind == "W" else out_b[i]).reshape(v[j].shape) for j, (i, kind) in enumerate(slots)]

    return hvp


_SEQUENTIAL_ACTIVATIONS = {torch.nn.Tanh: "tanh", torch.nn.ReLU: "relu"}


def _sequential_activation(m: torch.nn.Module) -> str | None:
    if type(m) in _SEQUENTIAL_ACTIVATIONS:
        return _SEQUENTIAL_ACTIVATIONS[type(m)]
    if type(m) is torch.nn.GELU and m.approximate == "none":  # the tanh approximation is another function
        return "gelu"
    return None


def mlp_layers(model: torch.nn.Module) -> list[MLPLayer] | None:
    """The layers of ``model`` for ``mlp_hvp_fn``, or None when it is not a perceptron the fast product knows:
    an nn.Sequential of nn.Linear each followed by at most one nn.Tanh / nn.ReLU / nn.GELU() (the exact form; an
    activation after the last nn.Linear too), nn.Identity anywhere; or a models.ntk.NTKNet (its scale per layer, its
    activation on the hidden layers). Only these exact classes (a subclass, or a parametrized nn.Linear, may compute
    something else), and no module with hooks."""
    from .ntk import NTKNet

    if type(model) is NTKNet:
        if model._forward_hooks or model._forward_pre_hooks:
            return None
        act, last = model.spec.activation, len(model.weights) - 1
        if act not in MLP_ACTIVATIONS:
            return None
        return [MLPLayer(model.weights[i], model.biases[i], model.scale(i), act if i < last else None)
                for i in range(last + 1)]
    if type(model) is not torch.nn.Sequential:
        return None
    layers: list[MLPLayer] = []
    for m in model:
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks:
            return None
        if type(m) is torch.nn.Linear:
            layers.append(MLPLayer(m.weight, m.bias))
            continue
        if type(m) is torch.nn.Identity:
            continue
        act = _sequential_activation(m)
        if act is None or not layers or layers[-1].activation is not None:
            return None  # another module, an activation first, or two in a row
        layers[-1] = MLPLayer(layers[-1].weight, layers[-1].bias, layers[-1].scale, act)
    if not layers or model._forward_hooks or model._forward_pre_hooks:
        return None
    tensors = [t for layer in layers for t in (layer.weight, layer.bias) if t is not None]
    if len({id(t) for t in tensors}) != len(tensors):
        return None  # one nn.Linear used twice: tied weights
    return layers


def mlp_hvp_for(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_weight: float = 1.0,
                params: Sequence[torch.Tensor] | None = None) -> Callable[[Vec], Vec] | None:
    """``mlp_hvp_fn`` for a model that ``mlp_layers`` knows, vectors in the order of ``params`` (None:
    ``model.parameters()``, as hvp_fn takes them); None for any other model (then use hvp_fn). ``y`` must have
    the model's output shape, (n, k) for an nn.Sequential, (n,) for an NTKNet (ValueError otherwise: a y that the
    loss would broadcast against the output is another loss, not reshaped here)."""
    from .ntk import NTKNet

    layers = mlp_layers(model)
    if layers is None:
        return None
    n, k = x.shape[0], layers[-1].weight.shape[0]
    shape = (n,) if isinstance(model, NTKNet) else (n, k)
    if tuple(y.shape) != shape:
        raise ValueError(f"y is {tuple(y.shape)}, the model's output {shape}")
    return mlp_hvp_fn(layers, x, y, loss_weight, list(model.parameters()) if params is None else params)
