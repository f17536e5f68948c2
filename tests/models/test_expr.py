import math

import pytest
import torch

from models.expr import ExpressionError, parse_expression


def test_expression_computes_with_torch():
    e = parse_expression("w2*tanh(w1*x) + relu(w1) - sigmoid(x)**2 / exp(0) + log(e) * pi")
    w1, w2, x = (torch.tensor([v], dtype=torch.float64) for v in (0.5, 2.0, 1.5))
    want = 2.0 * math.tanh(0.75) + 0.5 - (1 / (1 + math.exp(-1.5))) ** 2 + math.pi
    assert float(e(w1=w1, w2=w2, x=x)) == pytest.approx(want, rel=1e-12)
    assert e.used == {"w1", "w2", "x"}


def test_caret_means_power_and_constants_broadcast():
    e = parse_expression("w1^2")
    assert float(e(w1=torch.tensor(3.0), w2=torch.tensor(0.0), x=torch.tensor(0.0))) == 9.0
    c = parse_expression("2")
    out = c(w1=torch.zeros(4, 1), w2=torch.zeros(4, 1), x=torch.zeros(3))
    assert out.shape == (4, 3) and torch.all(out == 2)


@pytest.mark.parametrize("text, fragment", [
    ("w1*/x", "cannot parse"),
    ("", "empty"),
    ("__import__('os').system('true')", "unknown function"),
    ("w1.real", "not allowed"),
    ("foo + w1", "unknown name 'foo'"),
    ("tanh", "is a function"),
    ("tanh(w1, x)", "exactly one argument"),
    ("w1 if x else w2", "not allowed"),
    ("'abc' + w1", "only numbers"),
    ("lambda: 1", "not allowed"),
    ("w1 % 2", "not allowed"),
    ("10.0**10**10", "cannot be computed"),
    ("w1+" * 300 + "w1", "too"),
])
def test_bad_expressions_are_refused_with_a_reason(text, fragment):
    with pytest.raises(ExpressionError) as err:
        e = parse_expression(text)
        e(w1=torch.tensor(1.0), w2=torch.tensor(1.0), x=torch.tensor(1.0))
    assert fragment in str(err.value)


def test_syntax_error_names_the_column():
    with pytest.raises(ExpressionError, match="column"):
        parse_expression("w1 * (x + ")
