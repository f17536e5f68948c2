"""A worked example of a real network for `losslab surface`: ResNet-20 on a CIFAR-shaped data set made here.

ResNet-20 is the CIFAR variant of He et al. 2016 (Deep Residual Learning): a 3x3 convolution to 16 channels,
three stages of three basic blocks (two 3x3 convolutions with batch norm each) at 16, 32 and 64 channels, the
second and third stages halving the image at their first block with a 1x1 projection shortcut (option B),
global average pooling and a 10-way linear layer. It is written in torch.nn alone (no torchvision).

The data imitate CIFAR-10's shapes (N x 3 x 32 x 32 images, 10 classes) without a download: each class is a
coloured plane wave of its own colour, frequency and orientation, with a random phase, brightness and noise,
so a network must learn colour and texture, and the task is learnable in a few epochs on a CPU.

Train, then draw the surface around the final weights in the plane of the training path's principal
directions (the reference loss-landscape tool's ``model_folder`` of epoch checkpoints)::

    python assets/examples/resnet20.py --out runs/resnet20 --epochs 10 --n 2048
    LOSSLAB_EXAMPLE_N=512 losslab surface --model assets/examples/resnet20.py:factory \\
        --model-file runs/resnet20/final.pt --model-folder runs/resnet20 --directions pca --dir-type states \\
        --x -1:1:21 --y -1:1:21 --out runs/resnet20/surface.h5

(no ``--batch-size``: the factory's DataLoaders bring their own batches of 128, and ``losslab surface`` refuses
the option for a factory that gives loaders).

PCA directions are unit vectors, so the plane's coordinates are distances in weight space: -1:1 shows the
neighbourhood of the final weights, while the training path of the commands above lies tens of units away
(with ``--dir-type states`` batch norm's running variances dominate the offsets); widen ``--x``/``--y`` to see
it. For random filter-normalized directions instead, replace ``--model-folder ... --directions pca`` with
``--directions filter`` (there one unit is the weights' own scale, filter by filter).

``train`` writes ``model_0.pt`` (the initial weights) and ``model_<epoch>.pt`` after each epoch as the
reference's training script does ({'state_dict', 'epoch', 'acc'}, acc in percent), and ``final.pt`` (the last
weights, a plain state dict).

``factory()`` gives the surface's data: ``LOSSLAB_EXAMPLE_N`` training images (default 512: the first 512 of
the set ``train`` learns with its default seed 0) and ``LOSSLAB_EXAMPLE_TEST_N`` test images (default 256,
seed 1), in DataLoaders of 128, and a ResNet-20 initialized as ``train``'s (``--model-file`` replaces it). A
21 x 21 surface at these sizes evaluates about 340 thousand images forward, a few minutes on a laptop's CPU;
each grid point costs time in proportion to N.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

CLASSES = 10
BATCH = 128


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut: identity, or a 1x1 projection when the block
    changes the channels or the resolution."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for 3 x 32 x 32 images (6n + 2 layers with n = 3)."""

    def __init__(self, classes: int = CLASSES, blocks: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        layers, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for k in range(blocks):
                layers.append(BasicBlock(c_in, c_out, stride if k == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(torch.relu(self.bn(self.conv(x))))
        return self.fc(h.mean(dim=(2, 3)))


def build(seed: int = 0) -> ResNet20:
    """A ResNet-20 initialized from ``seed`` without touching torch's global random state."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ResNet20()


def cifar_like(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` CIFAR-shaped images (float32, n x 3 x 32 x 32, about zero mean and unit variance) and their labels
    (int64, 0..9, balanced). Each class is a plane wave of its own colour, spatial frequency and orientation
    (the same for every seed, so sets drawn with different seeds are train and test sets of one task); each
    image has its own phase, brightness and Gaussian noise (drawn from ``seed``). The images are drawn in
    blocks of ten, one of each class, so the first k images of a set do not depend on its size."""
    if n < 1:
        raise ValueError(f"the data set needs at least one image, not {n}")
    proto = torch.Generator().manual_seed(20_16)
    colours = torch.rand(CLASSES, 3, generator=proto) * 2 - 1
    freq = 1.0 + torch.arange(CLASSES) % 5  # cycles per image
    angle = torch.arange(CLASSES) * (math.pi / CLASSES) + torch.rand(CLASSES, generator=proto) * 0.2
    g = torch.Generator().manual_seed(int(seed))
    blocks = [(torch.randperm(CLASSES, generator=g), torch.rand(CLASSES, generator=g),
               torch.rand(CLASSES, generator=g), torch.randn(CLASSES, 3, 32, 32, generator=g))
              for _ in range(-(-n // CLASSES))]
    y, phase, brightness, noise = (torch.cat(parts)[:n] for parts in zip(*blocks))
    grid = torch.arange(32, dtype=torch.float32) / 32
    u, v = torch.meshgrid(grid, grid, indexing="ij")
    direction = torch.cos(angle)[y, None, None] * u + torch.sin(angle)[y, None, None] * v  # (n, 32, 32)
    wave = torch.cos(2 * math.pi * freq[y, None, None] * direction + 2 * math.pi * phase[:, None, None])
    x = (0.75 + 0.5 * brightness[:, None, None, None]) * colours[y, :, None, None] * wave[:, None] + 0.5 * noise
    return x.float(), y.long()


def _loader(n: int, seed: int, shuffle: bool = False, batch: int = BATCH) -> DataLoader:
    x, y = cifar_like(n, seed)
    g = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=shuffle, generator=g)


def _env_size(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of images, not {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


def factory():
    """(ResNet-20, cross entropy, training DataLoader, test DataLoader) for `losslab surface --model
    assets/examples/resnet20.py:factory`; sizes from LOSSLAB_EXAMPLE_N and LOSSLAB_EXAMPLE_TEST_N."""
    n = _env_size("LOSSLAB_EXAMPLE_N", 512)
    n_test = _env_size("LOSSLAB_EXAMPLE_TEST_N", 256)
    return build(0), nn.CrossEntropyLoss(), _loader(n, 0), _loader(n_test, 1)


def _save(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename, so a checkpoint is whole or absent."""
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(out_dir: str | Path, epochs: int = 10, n: int = 2048, seed: int = 0, lr: float = 0.05) -> list[float]:
    """Train ResNet-20 on ``cifar_like(n, seed)`` with SGD (momentum 0.9, weight decay 5e-4, batches of 128,
    shuffled) for ``epochs`` epochs on the CPU, writing the reference's model folder into ``out_dir``
    (see the module's docstring). Returns the mean training loss of each epoch."""
    if epochs < 1:
        raise ValueError(f"train for at least one epoch, not {epochs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build(seed)
    data = _loader(n, seed, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    _save({"state_dict": model.state_dict(), "epoch": 0, "acc": 0.0}, out / "model_0.pt")
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum = correct = rows = 0
        for x, y in data:
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            rows += len(y)
        history.append(loss_sum / rows)
        _save({"state_dict": model.state_dict(), "epoch": epoch, "acc": 100.0 * correct / rows},
              out / f"model_{epoch}.pt")
    _save(model.state_dict(), out / "final.pt")
    return history


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train the ResNet-20 example and write its checkpoint folder.")
    ap.add_argument("--out", required=True, help="folder for model_<epoch>.pt and final.pt")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n", type=int, default=2048, help="training images")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for epoch, loss in enumerate(train(args.out, args.epochs, args.n, args.seed), start=1):
        print(f"epoch {epoch}: mean training loss {loss:.4f}")


if __name__ == "__main__":
    main()
