"""Fuzzing the model-expression parser (issue 11, section 5) with hypothesis: random strings and random
expression trees, allowed and not.

The property, for any text:

* ``parse_expression`` raises ExpressionError, or returns a compiled expression; nothing else escapes, and
  the text never reaches eval/exec (nor compile, except ast.parse's parse-only compile).
* A compiled expression, called with small float64 tensors of broadcastable shapes, returns a float64
  tensor whose shape broadcasts to the inputs' broadcast shape (the shape of the variables it uses; a
  constant gets the full shape). NaN and infinity are values, not errors (log(-1), exp(1000)). The only
  exception allowed from a call is ExpressionError, for a constant part that cannot be computed at all
  (``10.0**10**10``: a number past float's range; ``0**-1``).
"""

from __future__ import annotations

import builtins
import contextlib
import math
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.expr import FUNCTIONS, MAX_LENGTH, ExpressionError, parse_expression

VARS = ("w1", "w2", "x")
SHAPES = {"w1": (3, 1), "w2": (1, 4), "x": (4,)}  # broadcast: (3, 4)
FULL = torch.Size((3, 4))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- random expression trees, as text --------------------------------------------------------------------
numbers = st.one_of(
    st.integers(-5, 5).map(str),
    st.sampled_from(["0", "0.0", "1e308", "1e-308", "5e-324", "2.5", "1e3", "0x1f", "1_000", ".5", "1j", "10"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
allowed_leaves = st.one_of(numbers, st.sampled_from(VARS + ("pi", "e")))
odd_leaves = st.sampled_from(["w3", "y", "abs", "__import__", "os", "tanh", "True", "None", "'s'", "b'x'", "[1]",
                              "{}", "...", "__builtins__", "x.real", "x[0]", "(x, x)", "x if x else x", "lambda: 1",
                              "x < 1", "x and x", "not x", "~x", "x @ x", "x % 2", "x // 2", "x & x", "*x",
                              "(y := 1)", "f'{x}'", "[i for i in x]", "print(x)", "exec('1')", "eval('1')"])
binops = st.sampled_from(["+", "-", "*", "/", "**", "^"])
odd_binops = st.sampled_from(["%", "//", "@", "&", "|", "<<", "==", "<", " and ", " or ", ""])


def _tree(leaves, ops, calls):
    def extend(inner):
        return st.one_of(
            st.tuples(inner, ops, inner).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
            st.tuples(st.sampled_from(["-", "+"]), inner).map(lambda t: f"{t[0]}{t[1]}"),
            st.tuples(calls, inner).map(lambda t: f"{t[0]}({t[1]})"),
        )
    return st.recursive(leaves, extend, max_leaves=25)


allowed_trees = _tree(allowed_leaves, binops, st.sampled_from(tuple(FUNCTIONS)))
any_trees = _tree(st.one_of(allowed_leaves, odd_leaves), st.one_of(binops, odd_binops),
                  st.sampled_from((*FUNCTIONS, "abs", "getattr")).flatmap(
                      lambda f: st.sampled_from([f, f"{f}(x)", f"{f}.__class__", f"x.{f}"])))
texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="w12x+-*/^().e pi tanhsincoexplgrud0123456789_,'\"[]{}:;=!<>%&|~@#\\\n\t", max_size=80),
    st.text(min_size=MAX_LENGTH - 2, max_size=MAX_LENGTH + 2, alphabet="w1+"),
    # deep nesting, up to the length limit and past it
    st.tuples(st.sampled_from(["(", "-", "tanh(", "-(", "+", "x**(", "x*("]), st.integers(1, 250)).map(
        lambda t: t[0] * t[1] + "x" + ")" * (t[0].count("(") * t[1])),
)


@contextlib.contextmanager
def no_eval():
    """eval and exec fail the test if anything calls them; compile only as ast.parse does (parse-only)."""
    import ast

    real_compile = builtins.compile

    def guarded_compile(source, filename, mode, flags=0, *args, **kw):
        if not flags & ast.PyCF_ONLY_AST:
            raise AssertionError(f"compile() of {source!r}")
        return real_compile(source, filename, mode, flags, *args, **kw)

    def forbidden(*a, **k):
        raise AssertionError(f"eval/exec called with {a!r}")

    with mock.patch.object(builtins, "eval", forbidden), mock.patch.object(builtins, "exec", forbidden), \
            mock.patch.object(builtins, "compile", guarded_compile):
        yield


def inputs():
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(*s, generator=g, dtype=torch.float64) * 2 for k, s in SHAPES.items()}


def check(text: str) -> str:
    """The property; returns what happened ('refused', 'refused when evaluated', 'ok')."""
    with no_eval():
        try:
            expr = parse_expression(text, VARS)
        except ExpressionError as exc:
            assert str(exc)  # a reason
            return "refused"
    assert set(expr.used) <= set(VARS)
    try:
        out = expr(**inputs())
    except ExpressionError:
        return "refused when evaluated"
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert torch.broadcast_shapes(out.shape, FULL) == FULL, (text, out.shape)
    return "ok"


# --- once known bugs of models/expr.py, fixed: a constant 1/0 parsed, then raised ZeroDivisionError when evaluated
# (a lab's custom model then failed with "Cannot evaluate the loss"); an integer literal of 309+ digits raised
# OverflowError from parse_expression


def test_a_constant_division_by_zero_divides_as_tensors_do():
    assert check("w1*x + 1/0") == "ok"
    f = parse_expression("1/0 + 0*w1", VARS)
    assert math.isinf(float(f(**inputs()).flatten()[0]))
    assert torch.isnan(parse_expression("0/0 + w1", VARS)(**inputs())).all()


def test_an_integer_literal_past_float_range_is_refused_by_name():
    with pytest.raises(ExpressionError, match="too large for a float"):
        parse_expression("w1*x + " + "9" * 320, VARS)


# --- the properties ----------------------------------------------------------------------------------------
def _fuzz(text: str) -> None:
    from hypothesis import event

    event(check(text))  # any exception but a named refusal fails


@FUZZ
@given(allowed_trees)
def test_fuzz_allowed_expression_trees(text):
    _fuzz(text)


@FUZZ
@given(any_trees)
def test_fuzz_any_expression_trees(text):
    _fuzz(text)


@FUZZ
@given(texts)
def test_fuzz_random_text(text):
    _fuzz(text)


def test_the_grammar_reaches_both_outcomes():
    """The trees are not all refused (or all accepted): the properties see both paths."""
    seen = {check(t) for t in ["w2*tanh(w1*x)", "(w1^2 - pi) / (1 + exp(-x))", "log(-1 + x*0)", "2", "-(e)",
                               "w1 % 2", "__import__('os')", "10.0**10**10"]}
    assert seen == {"ok", "refused", "refused when evaluated"}
    assert math.isnan(float(parse_expression("log(-1)")(w1=torch.zeros(1), w2=torch.zeros(1), x=torch.zeros(1))))
