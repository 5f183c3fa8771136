"""Per-step lr schedules: warm-up + cosine and one-cycle follow their curves over the fit's steps."""

from __future__ import annotations

import math

import pytest
import torch

from recsys.train.experiment import TrainConfig
from recsys.train.module import step_schedule


def lr_curve(cfg: TrainConfig, total_steps: int) -> list[float]:
    """The lr each of `total_steps` optimiser steps runs with."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=cfg.lr)
    scheduler = step_schedule(optimizer, cfg, total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_cosine_rises_linearly_then_follows_a_cosine_to_zero() -> None:
    lrs = lr_curve(TrainConfig(lr=0.01, lr_schedule="warmup_cosine", warmup_frac=0.2), 50)
    # 10 warm-up steps: lr * (s + 1) / 10, the last of them at the peak
    assert lrs[:10] == pytest.approx([0.01 * (s + 1) / 10 for s in range(10)])
    # then a half cosine over the 40 remaining steps
    assert lrs[10:] == pytest.approx([0.005 * (1 + math.cos(math.pi * s / 40)) for s in range(40)])
    assert max(lrs) == pytest.approx(0.01)
    assert lrs[-1] < 0.01 * 0.01


def test_warmup_cosine_without_warmup_starts_at_the_peak() -> None:
    lrs = lr_curve(TrainConfig(lr=0.01, lr_schedule="warmup_cosine", warmup_frac=0.0), 8)
    assert lrs[0] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


def test_onecycle_peaks_at_the_lr_after_the_warmup_share() -> None:
    lrs = lr_curve(TrainConfig(lr=0.01, lr_schedule="onecycle", warmup_frac=0.25), 40)
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert peak == 9  # OneCycleLR's rise ends at step pct_start * total - 1
    assert lrs[peak] == pytest.approx(0.01)
    assert lrs[0] == pytest.approx(0.01 / 25)  # torch's default div_factor
    assert lrs[-1] == pytest.approx(0.01 / 25 / 1e4)  # and final_div_factor
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :], strict=False))


def test_betas_stay_fixed_under_onecycle() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.01, betas=(0.9, 0.98))
    scheduler = step_schedule(optimizer, TrainConfig(lr=0.01, lr_schedule="onecycle"), 20)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.98)


def test_schedule_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="cannot be combined with lr_schedule='warmup_cosine'"):
        TrainConfig(lr_schedule="warmup_cosine", lr_decay=0.5, lr_decay_patience=1)
    with pytest.raises(ValueError, match="warmup_frac must be in \\[0, 1\\), got 1.0"):
        TrainConfig(lr_schedule="warmup_cosine", warmup_frac=1.0)
    with pytest.raises(ValueError, match="warmup_frac must be > 0 with lr_schedule 'onecycle'"):
        TrainConfig(lr_schedule="onecycle", warmup_frac=0.0)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.01)
    with pytest.raises(ValueError, match="total_steps=0"):
        step_schedule(optimizer, TrainConfig(lr_schedule="warmup_cosine"), 0)
    with pytest.raises(ValueError, match="warmup_frac=0.1 over 10 steps rises for fewer than 2 steps"):
        step_schedule(optimizer, TrainConfig(lr_schedule="onecycle", warmup_frac=0.1), 10)
