"""Training losses: regression on normalised targets, graph-text InfoNCE, distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1",
                    weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 (default) or MSE between normalised predictions and targets, mean over the batch
    (weighted by ``weight`` [B] when given: sum(w * loss) / sum(w))."""
    if kind == "l1":
        per = F.l1_loss(pred, target, reduction="none")
    elif kind == "mse":
        per = F.mse_loss(pred, target, reduction="none")
    elif kind == "huber":
        per = F.smooth_l1_loss(pred, target, beta=0.1, reduction="none")
    else:
        raise ValueError(f"unknown regression loss {kind!r}")
    if weight is None:
        return per.mean()
    weight = weight.to(per.dtype)
    return (per * weight).sum() / weight.sum().clamp_min(1e-12)


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


def pair_loss(pred: torch.Tensor, target: torch.Tensor, groups, kind: str = "l1") -> torch.Tensor:
    """Error of the energy *differences* between placements of the same system in the batch.

    For every pair (i, j) with ``groups[i] == groups[j]`` (not None), the regression loss between
    ``pred_i - pred_j`` and ``target_i - target_j``; what configuration discrimination (the order of
    a system's placements) depends on. Zero (with a gradient path) when the batch has no such pair.

    >>> p = torch.tensor([0.0, 1.0, 5.0]); y = torch.tensor([0.0, 0.5, 9.0])
    >>> float(pair_loss(p, y, ["a", "a", "b"]))
    0.5
    """
    keys = [g if g is not None else f"\0{i}" for i, g in enumerate(groups)]
    ids = {k: n for n, k in enumerate(dict.fromkeys(keys))}
    gid = torch.tensor([ids[k] for k in keys], device=pred.device)
    same = (gid[:, None] == gid[None, :]).triu(diagonal=1)
    if not bool(same.any()):
        return pred.sum() * 0.0
    i, j = same.nonzero(as_tuple=True)
    return regression_loss(pred[i] - pred[j], target[i] - target[j], kind)
