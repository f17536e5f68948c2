"""An example of a user's own model for `losslab surface --model assets/examples/user_model.py:build`.

The factory takes no arguments and returns (module, loss_fn, (x, y)): the loss function is called as
loss_fn(module(x), y) and must return a scalar tensor (one value per leading index, if batched).
"""

import torch
from torch import nn


def build():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=g)
    y = (x[:, 0] * x[:, 1] > 0).float()
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))

    def loss_fn(out, target):
        return nn.functional.binary_cross_entropy_with_logits(out.squeeze(-1), target)

    return model, loss_fn, (x, y)
