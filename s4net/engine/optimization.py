"""SGD's parameter groups, the optimizer step (scaler, clipping) and the learning-rate schedules."""

from __future__ import annotations

from typing import Any, Sequence

import torch


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only (not biases or norm parameters), as the original code."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.dim() > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def optimizer_step(loss: torch.Tensor, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, grad_clip: float | None = None) -> None:
    """Backward through ``loss``, clip the gradient norm to ``grad_clip`` (None: no clipping), step and update
    the scaler."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()


def step_factor(iteration: int, steps: Sequence[int], gamma: float, warmup_iterations: int = 0) -> float:
    """Multiplier of the base lr at an iteration: linear warm-up from 1/100, then one ``gamma`` per passed step."""
    factor = gamma ** sum(iteration >= s for s in steps)
    if iteration < warmup_iterations:
        factor *= 0.01 + 0.99 * iteration / warmup_iterations
    return factor


def poly_factor(iteration: int, iterations: int, power: float) -> float:
    """The poly learning-rate multiplier at ``iteration``: ``(1 - iteration / iterations) ** power``."""
    return (1.0 - iteration / iterations) ** power
