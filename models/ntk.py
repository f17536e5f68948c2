"""Neural tangent kernels of fully connected networks (THEORY.md sections 2 and 3), for the ntk lab.

The network family: input dim d, 1 to 4 hidden layers of width m, activation relu / tanh / gelu / erf, a scalar
output, hidden and output biases. Two parameterizations:

- 'ntk': every weight and bias N(0, 1); layer l computes z = W a / sqrt(fan_in) + b (biases unscaled), so the
  first hidden pre-activation has covariance Sigma_1(x, x') = x . x' / d + 1 and each later one
  Sigma_{l+1} = E[phi(u) phi(v)] + 1: weight variance 1, bias variance 1, at every layer and at the output.
- 'standard': PyTorch's nn.Linear default, weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), z = W a + b.

Kernels use the sum loss L = 1/2 ||F(w) - y||^2 and K = DF DF^T (n x n). ``empirical_ntk`` never forms the
Jacobian: for layer l with inputs A_l (n x fan_in) and backpropagated vectors D_l = df/dz_l (n x fan_out),
the weight block of J J^T is s_l^2 (A_l A_l^T) * (D_l D_l^T) (elementwise) and the bias block is D_l D_l^T,
with s_l the layer's scale (1/sqrt(fan_in) or 1). ``ntk_torchfunc`` is the torch.func recipe, the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .limits import MEMORY_CAP_BYTES, check_memory

ACTIVATIONS = ("relu", "tanh", "gelu", "erf")
PARAMETERIZATIONS = ("ntk", "standard")
MAX_DEPTH = 4

_SQRT_2PI = math.sqrt(2 * math.pi)


def _act(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return torch.relu(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "gelu":
        return nn.functional.gelu(z)  # the exact (erf) form: z Phi(z)
    return torch.erf(z)


def _act_grad(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "tanh":
        t = torch.tanh(z)
        return 1 - t * t
    if name == "gelu":  # d/dz z Phi(z) = Phi(z) + z phi(z)
        return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-0.5 * z * z) / _SQRT_2PI
    return (2 / math.sqrt(math.pi)) * torch.exp(-z * z)


@dataclass(frozen=True)
class NTKSpec:
    """d -> depth hidden layers of width m -> 1, with an activation and a parameterization ('ntk' or 'standard')."""

    in_dim: int = 2
    width: int = 512
    depth: int = 2
    activation: str = "relu"
    parameterization: str = "ntk"
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{self.activation}'; choose one of {', '.join(ACTIVATIONS)}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError("parameterization must be 'ntk' or 'standard'")
        if not 1 <= int(self.depth) <= MAX_DEPTH:
            raise ValueError(f"depth must be 1 to {MAX_DEPTH} hidden layers")
        if self.width < 1 or self.in_dim < 1:
            raise ValueError("width and input dimension must be positive")
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError("dtype must be torch.float32 or torch.float64")

    @property
    def widths(self) -> list[int]:
        """Layer sizes from input to output."""
        return [self.in_dim, *[self.width] * self.depth, 1]

    @property
    def param_count(self) -> int:
        """Number of parameters p (weights and biases)."""
        w = self.widths
        return sum(w[k] * w[k + 1] + w[k + 1] for k in range(len(w) - 1))


class NTKNet(nn.Module):
    """The lab's MLP: parameters as lists of tensors (weights[l] is fan_out x fan_in), forward x (n, d) -> (n,)."""

    def __init__(self, spec: NTKSpec, seed: int = 0) -> None:
        item = 4 if spec.dtype == torch.float32 else 8
        check_memory(2 * item * spec.param_count, f"a network {'x'.join(map(str, spec.widths))}",
                     f"at most {_largest_width(spec, item)} units a hidden layer")
        super().__init__()
        self.spec = spec
        g = torch.Generator().manual_seed(int(seed))
        w = spec.widths
        ws, bs = [], []
        for k in range(len(w) - 1):
            if spec.parameterization == "ntk":
                W = torch.randn(w[k + 1], w[k], generator=g, dtype=torch.float64)
                b = torch.randn(w[k + 1], generator=g, dtype=torch.float64)
            else:
                bound = 1 / math.sqrt(w[k])
                W = (torch.rand(w[k + 1], w[k], generator=g, dtype=torch.float64) * 2 - 1) * bound
                b = (torch.rand(w[k + 1], generator=g, dtype=torch.float64) * 2 - 1) * bound
            ws.append(nn.Parameter(W.to(spec.dtype)))
            bs.append(nn.Parameter(b.to(spec.dtype)))
        self.weights = nn.ParameterList(ws)
        self.biases = nn.ParameterList(bs)

    def scale(self, k: int) -> float:
        """The factor s_k multiplying layer k's weight product: 1/sqrt(fan_in) (ntk) or 1 (standard)."""
        return 1 / math.sqrt(self.spec.widths[k]) if self.spec.parameterization == "ntk" else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The outputs f(x_i; w), shape (n,)."""
        a = x
        last = len(self.weights) - 1
        for k in range(last + 1):
            z = (a @ self.weights[k].T) * self.scale(k) + self.biases[k]
            a = _act(self.spec.activation, z) if k < last else z
        return a[..., 0]


def _largest_width(spec: NTKSpec, item: int) -> int:
    lo, hi = 1, max(2, spec.width)
    while 2 * item * NTKSpec(spec.in_dim, hi, spec.depth).param_count <= MEMORY_CAP_BYTES:
        hi *= 2
    while lo < hi - 1:
        mid = (lo + hi) // 2
        if 2 * item * NTKSpec(spec.in_dim, mid, spec.depth).param_count <= MEMORY_CAP_BYTES:
            lo = mid
        else:
            hi = mid
    return lo


def _as_input(net: NTKNet, x) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=net.spec.dtype)
    if x.ndim != 2 or x.shape[1] != net.spec.in_dim:
        raise ValueError(f"x must be (n, {net.spec.in_dim}), got {tuple(x.shape)}")
    return x


def empirical_ntk(net: NTKNet, x) -> torch.Tensor:
    """The empirical tangent kernel K = J J^T (n x n) at the net's current weights, layer by layer, no Jacobian."""
    x = _as_input(net, x)
    n, w = x.shape[0], net.spec.widths
    item = x.element_size()
    check_memory(item * (3 * n * n + 3 * n * sum(w)), f"the tangent kernel of {n} points",
                 f"at most {int(math.sqrt(MEMORY_CAP_BYTES / (3 * item)))} points")
    act = net.spec.activation
    L = len(net.weights) - 1
    with torch.no_grad():
        inputs, pre = [], []
        a = x
        for k in range(L + 1):
            inputs.append(a)
            z = torch.addmm(net.biases[k], a, net.weights[k].T, alpha=net.scale(k))
            if k < L:
                pre.append(z)
                a = _act(act, z)
        # output layer: D_L = 1, so its block is s_L^2 A_L A_L^T + 1
        K = inputs[L] @ inputs[L].T
        K.mul_(net.scale(L) ** 2).add_(1.0)
        D = net.weights[L] * net.scale(L)  # (1, m): df/dA_L, the same for every point
        D = D.expand(n, -1) * _act_grad(act, pre[L - 1])
        for k in range(L - 1, -1, -1):
            G = inputs[k] @ inputs[k].T
            G.mul_(net.scale(k) ** 2).add_(1.0)
            K.add_(G.mul_(D @ D.T))
            if k > 0:
                D = (D @ net.weights[k]).mul_(net.scale(k)).mul_(_act_grad(act, pre[k - 1]))
    return K


def ntk_torchfunc(net: NTKNet, x) -> torch.Tensor:
    """The reference: torch.func's vmap of jacrev over a functional_call, then the contraction J J^T."""
    from torch.func import functional_call, jacrev, vmap

    x = _as_input(net, x)
    n = x.shape[0]
    check_memory(2 * x.element_size() * n * net.spec.param_count, f"the Jacobian of {n} points",
                 "fewer points or a narrower network")
    params = {k: v.detach() for k, v in net.named_parameters()}

    def f(p, xi):
        return functional_call(net, p, (xi[None],))[0]

    jac = vmap(jacrev(f), (None, 0))(params, x)
    K = torch.zeros(n, n, dtype=x.dtype)
    for j in jac.values():
        j = j.reshape(n, -1)
        K += j @ j.T
    return K


def jacobian(net: NTKNet, x) -> torch.Tensor:
    """The explicit Jacobian DF (n x p) by one backward pass per point, parameters in net.parameters() order."""
    x = _as_input(net, x)
    params = list(net.parameters())
    rows = []
    for i in range(x.shape[0]):
        out = net(x[i : i + 1])[0]
        grads = torch.autograd.grad(out, params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def arccos_kernels(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(kappa_1, kappa_0): E[relu(u) relu(v)] and E[relu'(u) relu'(v)] for (u, v) ~ N(0, sigma) (Cho and Saul)."""
    diag = torch.diagonal(sigma)
    norm = torch.sqrt(torch.outer(diag, diag))
    cos = torch.clamp(sigma / norm, -1.0, 1.0)
    theta = torch.arccos(cos)
    k1 = norm * (torch.sin(theta) + (math.pi - theta) * cos) / (2 * math.pi)
    k0 = (math.pi - theta) / (2 * math.pi)
    return k1, k0


def analytic_relu_ntk(x, depth: int, x2=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The infinite-width relu NNGP kernel and NTK (Sigma, Theta) in the 'ntk' parameterization, float64.

    Weight and bias variances 1 at every layer, the output bias included (as NTKNet):
    Sigma_1 = x . x' / d + 1, Theta_1 = Sigma_1; Sigma_{l+1} = kappa_1(Sigma_l) + 1,
    Theta_{l+1} = Sigma_{l+1} + kappa_0(Sigma_l) Theta_l for l = 1..depth; returns (Sigma_{depth+1},
    Theta_{depth+1}). With ``x2`` the kernels are computed on the stacked points and the (n1, n2) block returned.
    """
    if not 1 <= int(depth) <= MAX_DEPTH:
        raise ValueError(f"depth must be 1 to {MAX_DEPTH} hidden layers")
    x = torch.as_tensor(x, dtype=torch.float64)
    n1 = x.shape[0]
    if x2 is not None:
        x = torch.cat([x, torch.as_tensor(x2, dtype=torch.float64)])
    sigma = x @ x.T / x.shape[1] + 1.0
    theta = sigma.clone()
    for _ in range(int(depth)):
        k1, k0 = arccos_kernels(sigma)
        new = k1 + 1.0
        theta = new + k0 * theta
        sigma = new
    if x2 is not None:
        return sigma[:n1, n1:], theta[:n1, n1:]
    return sigma, theta


def mc_ntk(spec: NTKSpec, x, seeds: int | Sequence[int] = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo mean of empirical kernels over seeds at the spec's width, and the mean's standard error."""
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if len(seeds) < 2:
        raise ValueError("a standard error needs at least two seeds")
    total = sq = None
    for s in seeds:
        K = empirical_ntk(NTKNet(spec, seed=s), x).to(torch.float64)
        total = K.clone() if total is None else total.add_(K)
        sq = K * K if sq is None else sq.add_(K * K)
    S = len(seeds)
    mean = total / S
    var = torch.clamp((sq - S * mean * mean) / (S - 1), min=0.0)
    return mean, torch.sqrt(var / S)


def _eig_factors(lam: torch.Tensor, eta: float, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # (1 - eta lam)^t and sum_{s<t} eta (1 - eta lam)^s, stable for small eta lam (log1p / expm1 where 0 <= base)
    q = -eta * lam  # base - 1
    tt = t[:, None]
    safe = q > -1
    lg = torch.log1p(torch.where(safe, q, torch.zeros_like(q)))
    pow_safe = torch.exp(tt * lg)
    geo_safe = torch.where(q != 0, -torch.expm1(tt * lg) / torch.where(q != 0, lam, torch.ones_like(lam)),
                           eta * tt.expand(-1, lam.shape[0]))
    base = 1 + q
    pow_raw = torch.pow(base, tt)
    geo_raw = (1 - pow_raw) / torch.where(lam != 0, lam, torch.ones_like(lam))
    return torch.where(safe, pow_safe, pow_raw), torch.where(safe, geo_safe, geo_raw)


def kernel_prediction(K_train, K_test_train, f0_train, f0_test, y, eta: float, t):
    """The linearized model after t GD steps on the sum loss: (train residual (I - eta K)^t (f0 - y), test output).

    The test output is f0_test - eta K_test_train sum_{s<t} (I - eta K)^s (f0 - y), the kernel-regression form
    (f0_test + K_tx K^-1 (I - (I - eta K)^t)(y - f0) when K is invertible); exact for a model linear in its
    parameters. ``t`` an integer gives (n,), (n_test,); a 1-D array of times gives (T, n), (T, n_test). float64.
    """
    K = torch.as_tensor(K_train, dtype=torch.float64)
    Kx = torch.as_tensor(K_test_train, dtype=torch.float64)
    r0 = torch.as_tensor(f0_train, dtype=torch.float64) - torch.as_tensor(y, dtype=torch.float64)
    f0x = torch.as_tensor(f0_test, dtype=torch.float64)
    tt = torch.as_tensor(t, dtype=torch.float64)
    scalar = tt.ndim == 0
    tt = tt.reshape(-1)
    lam, U = torch.linalg.eigh(0.5 * (K + K.T))
    c = U.T @ r0
    pw, geo = _eig_factors(lam, float(eta), tt)
    resid = (pw * c) @ U.T
    test = f0x - ((geo * c) @ U.T) @ Kx.T
    if scalar:
        return resid[0], test[0]
    return resid, test


def relative_change(a, b) -> float:
    """||a - b|| / ||b|| (Frobenius for matrices)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def loglog_slope(xs, ys) -> float:
    """The least-squares slope of log y against log x (for width scalings)."""
    lx, ly = np.log(np.asarray(xs, dtype=float)), np.log(np.asarray(ys, dtype=float))
    return float(np.polyfit(lx, ly, 1)[0])


def lambda_max(K) -> float:
    """The largest eigenvalue of a symmetric kernel matrix."""
    K = torch.as_tensor(K, dtype=torch.float64)
    return float(torch.linalg.eigvalsh(0.5 * (K + K.T))[-1])
