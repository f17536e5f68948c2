"""Safe parsing of user-typed model expressions such as ``w2*tanh(w1*x)``.

The text goes through Python's ``ast`` parser, every node is checked against a whitelist, and the tree
is compiled into a closure over torch operations. Nothing is ever passed to ``eval``/``exec``/sympify.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MAX_LENGTH = 400
MAX_NODES = 200


class ExpressionError(ValueError):
    """A user expression that cannot be used, with a message that says what is wrong and where."""


def _torch_function(name: str) -> Callable:
    """torch.<name> (relu: clamp at 0), looked up when called: checking an expression never imports torch
    (the app checks stored expressions before its first frame; torch takes a second to import)."""

    def fn(t):
        import torch

        return torch.clamp(t, min=0) if name == "relu" else getattr(torch, name)(t)

    return fn


FUNCTIONS: dict[str, Callable] = {name: _torch_function(name)
                                  for name in ("tanh", "sin", "cos", "exp", "log", "relu", "sigmoid")}
CONSTANTS = {"pi": math.pi, "e": math.e}

def _div(a, b):
    """a / b; two constants divide as tensors do (1/0 = inf, 0/0 = nan), never raising ZeroDivisionError."""
    if isinstance(a, float) and isinstance(b, float) and b == 0.0:
        return math.nan if a == 0.0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: _div,
    ast.Pow: lambda a, b: _pow(a, b),
}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}


def _pow(a, b):
    if isinstance(a, float) and isinstance(b, float):
        try:
            return math.pow(a, b)
        except (OverflowError, ValueError) as exc:
            raise ExpressionError(f"constant power {a}**{b} cannot be computed ({exc})") from None
    return a**b


@dataclass(frozen=True)
class CompiledExpression:
    """A checked expression: call it with tensors for each variable (they broadcast together)."""

    text: str
    variables: tuple[str, ...]
    used: frozenset[str]
    _fn: Callable[[dict[str, torch.Tensor]], torch.Tensor]

    def __call__(self, **values: torch.Tensor) -> torch.Tensor:
        import torch

        out = self._fn(values)
        if not isinstance(out, torch.Tensor):  # a constant expression
            ref = next(iter(values.values()))
            shape = torch.broadcast_shapes(*(v.shape for v in values.values()))
            out = torch.full(shape, float(out), dtype=ref.dtype, device=ref.device)
        return out


def _where(node: ast.AST) -> str:
    col = getattr(node, "col_offset", None)
    return f" at column {col + 1}" if col is not None else ""


def parse_expression(text: str, variables: Sequence[str] = ("w1", "w2", "x")) -> CompiledExpression:
    """Parse ``text`` into a torch-computable expression of ``variables``.

    Allowed: numbers, the variables, pi, e, + - * / ** (and unary -), and the functions
    tanh, sin, cos, exp, log, relu, sigmoid of one argument. Raises ExpressionError otherwise.
    """
    if not isinstance(text, str):
        raise ExpressionError("the expression must be text")
    src = text.strip()
    if not src:
        raise ExpressionError("the expression is empty")
    if len(src) > MAX_LENGTH:
        raise ExpressionError(f"the expression is too long ({len(src)} characters, at most {MAX_LENGTH})")
    src = src.replace("^", "**")
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError as exc:
        col = f" at column {exc.offset}" if exc.offset else ""
        raise ExpressionError(f"cannot parse the expression{col}: {exc.msg}") from None
    n_nodes = sum(1 for _ in ast.walk(tree))
    if n_nodes > MAX_NODES:
        raise ExpressionError(f"the expression is too complex ({n_nodes} nodes, at most {MAX_NODES})")
    allowed_vars = tuple(variables)
    used: set[str] = set()

    def build(node: ast.AST):
        if isinstance(node, ast.Expression):
            return build(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ExpressionError(f"only numbers are allowed as constants, not {node.value!r}{_where(node)}")
            try:
                value = float(node.value)
            except OverflowError:
                raise ExpressionError(f"the number{_where(node)} is too large for a float (at most about "
                                      "1.8e308)") from None
            return lambda env: value
        if isinstance(node, ast.Name):
            if node.id in allowed_vars:
                used.add(node.id)
                name = node.id
                return lambda env: env[name]
            if node.id in CONSTANTS:
                value = CONSTANTS[node.id]
                return lambda env: value
            if node.id in FUNCTIONS:
                raise ExpressionError(f"'{node.id}' is a function: write {node.id}(...){_where(node)}")
            raise ExpressionError(
                f"unknown name '{node.id}'{_where(node)}; use the variables {', '.join(allowed_vars)}"
                f" and the functions {', '.join(FUNCTIONS)}"
            )
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise ExpressionError(
                    f"operator '{type(node.op).__name__}' is not allowed{_where(node)}; use + - * / **"
                )
            left, right = build(node.left), build(node.right)
            return lambda env: op(left(env), right(env))
        if isinstance(node, ast.UnaryOp):
            operand = build(node.operand)
            if isinstance(node.op, ast.USub):
                return lambda env: -operand(env)
            if isinstance(node.op, ast.UAdd):
                return operand
            raise ExpressionError(f"unary operator '{type(node.op).__name__}' is not allowed{_where(node)}")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise ExpressionError(
                    f"unknown function '{name}'{_where(node)}; allowed: {', '.join(FUNCTIONS)}"
                )
            if node.keywords or len(node.args) != 1:
                raise ExpressionError(f"{node.func.id}() takes exactly one argument{_where(node)}")
            fn = FUNCTIONS[node.func.id]
            arg = build(node.args[0])

            def call(env, fn=fn, arg=arg):
                import torch

                a = arg(env)
                if not isinstance(a, torch.Tensor):
                    a = torch.tensor(a, dtype=torch.float64)
                    return float(fn(a))
                return fn(a)

            return call
        raise ExpressionError(f"'{ast.unparse(node)}' is not allowed{_where(node)}")

    fn = build(tree)
    return CompiledExpression(text=src, variables=allowed_vars, used=frozenset(used), _fn=fn)
