"""Inference precision: float32, bfloat16 autocast, or int8 dynamic quantisation of the linear layers.

``"bf16"`` autocasts the encoder (backbone, text encoder, fusion layers; the pipeline's detector when named) and
keeps the weights, the emission scores and the CRF in float32; it pays only where the hardware has bfloat16
arithmetic (elsewhere it is emulated), which is where ``"auto"`` picks it. ``"int8"`` (CPU only, opt-in) quantises
the encoder's linear layers in place (`quantize_linear_int8`).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Literal

import torch
from torch import nn

Precision = Literal["auto", "fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic units (AVX512-BF16 or AMX tiles), by torch's own detection."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether a CUDA device computes in bfloat16 natively (compute capability 8.0 or more)."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """The precision ``"fp32"``, ``"bf16"`` or ``"int8"`` that ``precision`` means on ``device`` ("auto": bf16 where
    the device has native bfloat16 arithmetic, else fp32). A ValueError names an unknown precision, or int8 on a
    device other than the CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    device = torch.device(device)
    if precision == "auto":
        native = (
            cuda_has_native_bf16(device) if device.type == "cuda" else device.type == "cpu" and cpu_has_native_bf16()
        )
        return "bf16" if native else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision 'int8' (dynamic quantisation) runs on the CPU only, not on {device}")
    return precision


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager[None]:
    """`torch.autocast` to bfloat16 for ``"bf16"`` on ``device_type``; no change for the other precisions."""
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def quantize_linear_int8(module: nn.Module) -> int:
    """Replace every `nn.Linear` under ``module`` in place, for good, by its int8 dynamic quantised version (int8
    weights; activations quantised with one scale per batch, so a sentence's scores depend slightly on its batch);
    returns how many were replaced. Nothing else changes (other layers, buffers, the module tree)."""
    count = sum(type(child) is nn.Linear for child in module.modules())
    if count:
        # deprecated in favour of torchao's quantize_, but it needs no extra package and has the CPU int8 kernels
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
            warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated.*")
            torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return count


def inference_copy(model: nn.Module, precision: str) -> nn.Module:
    """``model`` itself where ``precision`` resolves to fp32 on its device, else a copy of it in eval mode at that
    precision (`UMGFPreTrainedModel.set_inference_precision`): the original stays trainable and savable."""
    device = next(model.parameters()).device
    if resolve_precision(precision, device) == "fp32":
        return model
    return copy.deepcopy(model).eval().set_inference_precision(precision)  # type: ignore[operator]


__all__ = [
    "PRECISIONS",
    "Precision",
    "autocast",
    "cpu_has_native_bf16",
    "cuda_has_native_bf16",
    "inference_copy",
    "quantize_linear_int8",
    "resolve_precision",
]
