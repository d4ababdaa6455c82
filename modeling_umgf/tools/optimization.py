"""The optimizer and learning-rate schedule of a UMGF training run: parameter groups with their own learning rates
(pretrained text encoder, vision backbone, new layers), Adam or AdamW, and transformers' schedules or the authors'
step decay."""

from __future__ import annotations

from typing import Any

import torch
from transformers import get_scheduler

#: The "step" schedule (the authors'): the lr is multiplied by STEP_GAMMA every STEP_EPOCHS epochs.
STEP_EPOCHS, STEP_GAMMA = 2, 0.8
#: transformers' schedules offered by train_umgf.py, and the authors' "step".
SCHEDULES: tuple[str, ...] = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "step",
)
OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


def parameter_groups(
    model: torch.nn.Module,
    learning_rate: float,
    text_encoder_learning_rate: float | None = None,
    vision_learning_rate: float | None = None,
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Pretrained text encoder / vision backbone / new layers, each with its lr (the text encoder's defaults to
    ``learning_rate``, the vision backbone's to the text encoder's); no weight decay on biases and LayerNorm weights
    (frozen parameters are left out)."""
    text_lr = text_encoder_learning_rate or learning_rate
    lr = {"text": text_lr, "vision": vision_learning_rate or text_lr, "new": learning_rate}
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = (
            "text"
            if name.startswith("umgf.text_encoder.")
            else "vision"
            if name.startswith("umgf.vision_backbone.")
            else "new"
        )
        no_decay = parameter.ndim < 2 or "LayerNorm" in name or "norm" in name.rsplit(".", 2)[-2]
        groups.setdefault((part, no_decay), []).append(parameter)
    return [
        {
            "params": params,
            "lr": lr[part],
            "weight_decay": 0.0 if no_decay else weight_decay,
            "name": f"{part}{'_no_decay' * no_decay}",
        }
        for (part, no_decay), params in groups.items()
    ]


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    updates_per_epoch: int,
    max_train_steps: int,
    warmup_steps: int,
) -> torch.optim.lr_scheduler.LRScheduler:
    """transformers' schedule ``name`` over ``max_train_steps`` optimizer steps, or "step": the authors' decay of
    the lr by STEP_GAMMA every STEP_EPOCHS epochs of ``updates_per_epoch`` steps (no warmup)."""
    if name == "step":
        step_updates = STEP_EPOCHS * updates_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda update: STEP_GAMMA ** (update // step_updates))
    return get_scheduler(name, optimizer=optimizer, num_warmup_steps=warmup_steps, num_training_steps=max_train_steps)
