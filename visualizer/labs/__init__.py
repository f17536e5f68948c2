"""The lab registry: one module per lab, imported only when the lab is opened.

Adding a lab means adding its module and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class LabInfo:
    key: str
    title: str
    summary: str
    module: str
    cls: str

    def load(self):
        return getattr(importlib.import_module(self.module), self.cls)


LABS: dict[str, LabInfo] = {
    info.key: info
    for info in [
        LabInfo("implicit-bias", "Implicit bias: the max-margin separator",
                "gradient descent on separable data turns to the max-margin direction of its own geometry, "
                "on a log-time axis",
                "visualizer.labs.implicit_bias", "ImplicitBiasLab"),
        LabInfo("manifold2d", "Solution manifolds (2 parameters)",
                "the set of parameters that fit the data exactly, for models f(x; w1, w2)",
                "visualizer.labs.manifold2d", "Manifold2DLab"),
        LabInfo("manifold3d", "Solution manifolds (3 parameters)",
                "surfaces, curves and points of solutions in a parameter cube; lazy training with α",
                "visualizer.labs.manifold3d", "Manifold3DLab"),
        LabInfo("netmanifold", "Inside a network's solution manifold",
                "walks on and slices through the solution set of an MLP 1-h-1",
                "visualizer.labs.netmanifold", "NetManifoldLab"),
        LabInfo("ntk", "Lazy training across widths",
                "the tangent kernel of wide networks, its infinite-width limit and the linearized model, live",
                "visualizer.labs.ntk", "NTKLab"),
        LabInfo("double-descent", "Double descent: test error against model size",
                "random-features regression solved exactly: the test error peaks at p = n, ridge flattens it, "
                "the kernel limit is the right end",
                "visualizer.labs.double_descent", "DoubleDescentLab"),
        LabInfo("random-labels", "Random labels: networks that fit noise",
                "MLPs fit any labelling of their training set, even random labels, while the clean test accuracy "
                "falls to chance: capacity alone cannot explain generalization",
                "visualizer.labs.random_labels", "RandomLabelsLab"),
        LabInfo("surface", "Loss surfaces of a trained network",
                "filter-normalized random and PCA planes around a trained MLP, with its training path",
                "visualizer.labs.surface", "SurfaceLab"),
    ]
}
DEFAULT_LAB = "manifold2d"
