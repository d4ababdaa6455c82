"""Counting the host-device synchronisations a piece of code would cause on a GPU, while it runs on the CPU.

A `TorchFunctionMode` follows every tensor as either on the *device* (the model's parameters and inputs, and what is
computed from them) or on the *host* (tensors made from Python data or without a device, and copies made with
``.to("cpu")`` / ``.cpu()``, and what is computed from those alone). A synchronisation is what makes the host wait for
the device on a GPU: reading a device tensor's values (``item``, ``tolist``, ``bool(...)``, ``numpy``), copying it to
the host, and the operations whose output size depends on device values (``nonzero``, ``unique``,
``masked_select``, indexing with a boolean mask).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy"}
DATA_DEPENDENT = {"nonzero", "unique", "unique_consecutive", "masked_select", "argwhere"}
FACTORIES = {"tensor", "as_tensor", "arange", "zeros", "ones", "full", "empty", "rand", "randn", "randint", "linspace"}


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _to_cpu(name: str, args: tuple, kwargs: dict) -> bool | None:
    """For ``to`` / ``cpu``: True when the target is the host, False the device, None no device given.

    On the CPU the host and the device are the same, so the code's own words tell them apart: ``.cpu()`` and
    ``.to("cpu")`` (a string) mean the host; a `torch.device` (taken from a tensor or a model) means the device."""
    if name == "cpu":
        return True
    for target in [*args[1:], kwargs.get("device")]:
        if isinstance(target, str):
            return torch.device(target).type == "cpu"
        if isinstance(target, torch.device):
            return False
    return None


class SyncCounter(TorchFunctionMode):
    """``with SyncCounter(model_params_and_inputs) as counter: ...``; then ``counter.syncs`` lists what synced."""

    def __init__(self, device_tensors: Iterable[torch.Tensor]) -> None:
        super().__init__()
        self.device: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()
        for tensor in device_tensors:
            self._mark(tensor)
        self.syncs: list[str] = []

    def _mark(self, tensor: torch.Tensor) -> None:
        self.device[id(tensor)] = tensor

    def _is_device(self, tensor: torch.Tensor) -> bool:
        return self.device.get(id(tensor)) is tensor

    def _on_device(self, value: Any) -> bool:
        return any(self._is_device(t) for t in _tensors(value))

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        inputs_on_device = self._on_device(args) or self._on_device(kwargs)
        if (name in READS and inputs_on_device) or (name in DATA_DEPENDENT and inputs_on_device):
            self.syncs.append(name)
        elif name in ("__getitem__", "__setitem__") and len(args) > 1:
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool and self._is_device(i) for i in index):
                self.syncs.append(f"{name} with a boolean mask")
        result = func(*args, **kwargs)
        if name in ("to", "cpu"):
            to_host = _to_cpu(name, args, kwargs)
            if to_host and inputs_on_device:
                self.syncs.append("copy to the host")
                if result is args[0]:  # on the CPU no copy is made: make one, to tell host from device
                    result = result.clone()
            on_device = inputs_on_device if to_host is None else not to_host
        elif name in FACTORIES or name.endswith("_like"):
            on_device = kwargs.get("device") is not None or (name.endswith("_like") and inputs_on_device)
        elif name == "pin_memory":
            on_device = False
        else:
            on_device = inputs_on_device
        if on_device:
            for tensor in _tensors(result):
                self._mark(tensor)
        return result
