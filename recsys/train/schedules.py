"""Per-step learning-rate curves shared by the training loop and the objectives' own passes."""

from __future__ import annotations

import math

import torch


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_frac: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A linear rise over the first `warmup_frac` of `total_steps` optimiser steps, then a cosine to 0.

    Step 0 already trains, at lr / warm-up steps; with no warm-up steps the cosine starts at the peak.
    """
    warmup = round(warmup_frac * total_steps)
    decay_steps = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / decay_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
