"""Tests of modeling_umgf.tools.optimization: parameter groups by part and decay, and the authors' step schedule
against torch's own StepLR stepped once per epoch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modeling_umgf.tools.optimization import STEP_EPOCHS, STEP_GAMMA, build_scheduler, parameter_groups


class Parts(nn.Module):
    """A model with UMGF's parameter names: a text encoder, a vision backbone and new layers."""

    def __init__(self) -> None:
        super().__init__()
        self.umgf = nn.Module()
        self.umgf.text_encoder = nn.Linear(2, 2)
        self.umgf.vision_backbone = nn.Linear(2, 2)
        self.classifier = nn.Linear(2, 3)
        self.norm = nn.LayerNorm(2)


def by_name(model: nn.Module, groups: list[dict]) -> dict[str, dict]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: group for group in groups for p in group["params"]}


def test_each_part_has_its_lr_and_no_decay_on_biases_and_norms() -> None:
    model = Parts()
    groups = by_name(model, parameter_groups(model, 1e-3, 2e-5, None, weight_decay=0.1))
    expected = {
        "umgf.text_encoder.weight": (2e-5, 0.1),
        "umgf.text_encoder.bias": (2e-5, 0.0),
        "umgf.vision_backbone.weight": (2e-5, 0.1),  # the text encoder's lr when none is given
        "umgf.vision_backbone.bias": (2e-5, 0.0),
        "classifier.weight": (1e-3, 0.1),
        "classifier.bias": (1e-3, 0.0),
        "norm.weight": (1e-3, 0.0),
        "norm.bias": (1e-3, 0.0),
    }
    assert {name: (g["lr"], g["weight_decay"]) for name, g in groups.items()} == expected


def test_frozen_parameters_are_left_out_and_lrs_fall_back_to_the_new_layers() -> None:
    model = Parts()
    model.umgf.vision_backbone.requires_grad_(False)
    groups = by_name(model, parameter_groups(model, 1e-3))
    assert not any(name.startswith("umgf.vision_backbone") for name in groups)
    assert {g["lr"] for g in groups.values()} == {1e-3}


@pytest.mark.parametrize("updates_per_epoch", [1, 3])
def test_the_step_schedule_is_steplr_over_epochs(updates_per_epoch: int) -> None:
    ours = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    theirs = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    schedule = build_scheduler("step", ours, updates_per_epoch, max_train_steps=30, warmup_steps=0)
    reference = torch.optim.lr_scheduler.StepLR(theirs, step_size=STEP_EPOCHS, gamma=STEP_GAMMA)
    for _epoch in range(7):
        for _ in range(updates_per_epoch):
            assert schedule.get_last_lr() == pytest.approx(reference.get_last_lr())
            ours.step()
            schedule.step()
        theirs.step()
        reference.step()
