"""Training losses: regression on normalised targets, graph-text InfoNCE, distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """L1 (default) or MSE between normalised predictions and targets, mean over the batch."""
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "huber":
        return F.smooth_l1_loss(pred, target, beta=0.1)
    raise ValueError(f"unknown regression loss {kind!r}")


def info_nce(z_graph: torch.Tensor, z_text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) between L2-normalised graph and text embeddings [B, D].

    Pair i (graph i, text i) is the positive; every other text/graph in the batch is a negative.
    ``logit_scale`` is log(1/temperature), learned; clamped at log(100).
    """
    zg = F.normalize(z_graph, dim=-1)
    zt = F.normalize(z_text, dim=-1)
    logits = zg @ zt.t() * logit_scale.clamp(max=4.6052).exp()
    labels = torch.arange(len(zg), device=zg.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """The text-only prediction (student) pulled towards the detached fused prediction (teacher)."""
    return regression_loss(student, teacher.detach(), kind)
