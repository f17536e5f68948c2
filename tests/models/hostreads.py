"""A stand-in for a device's synchronizations, on the CPU: a torch function mode that counts every read of a
tensor's values on the host (what would wait for a GPU), telling apart those inside a module's named bulk
transfers (``_to_host``, ``_to_device``) from any other."""

import torch
from torch.overrides import TorchFunctionMode

#: the tensor operations that read a device's values on the host (a synchronization on CUDA)
HOST_READS = {"__bool__", "item", "cpu", "numpy", "tolist", "__float__", "__int__", "__index__", "__len__"}


def _moves(args, kwargs) -> bool:  # a ``.to(device)``
    return any(isinstance(a, torch.device) or str(a).startswith(("cpu", "cuda"))
               for a in [*args[1:], *(kwargs or {}).values()])


class HostReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.bulk = self.other = 0
        self.inside = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS or (name == "to" and _moves(args, kwargs)):
            if self.inside:
                self.bulk += 1
            else:
                self.other += 1
        return func(*args, **(kwargs or {}))


def count_bulk(monkeypatch, module, mode: HostReads, calls: list, names=("_to_host", "_to_device")) -> None:
    """Wrap ``module``'s bulk transfers so that the host reads inside them count apart; each call is logged."""
    for name in names:
        if not hasattr(module, name):
            continue
        real = getattr(module, name)

        def bulk(*a, real=real, name=name):
            calls.append(name)
            mode.inside = True
            try:
                return real(*a)
            finally:
                mode.inside = False

        monkeypatch.setattr(module, name, bulk)
