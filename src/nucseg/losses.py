"""The paper's training loss: pixel-weighted cross-entropy plus soft Dice (Lagree et al. 2021).

Equations 1-3 of the paper's Methods::

    L_combined = L_WCE + (1 - L_Dice)                                    (1)
    L_WCE      = - sum_{x in X} W(x) log p_{l(x)}(x)                      (2)
    L_Dice     = 2 sum_x p(x) gt(x) / sum_x (p(x)^2 + gt(x)^2)            (3)

with p the softmax output, l(x) the true class of pixel x, gt the one-hot ground truth and W the
U-Net weight map (Ronneberger et al. 2015; :func:`nucseg.targets.unet_weight_map`).

Choices the paper leaves open, made here:

- L_WCE is the *mean* over pixels (the sum of eq. 2 divided by the number of pixels in the batch),
  so its scale, and its balance against the Dice term, do not depend on tile or batch size. It is
  not divided by the sum of the weights.
- L_Dice is computed per non-background class (class 1 for 2 classes; interior and boundary for
  3 classes), summing over all pixels of the whole batch, then averaged over those classes.
  Squared terms in the denominator, as in eq. 3.
- A smoothing term ``eps`` (default 1) is added to numerator and denominator:
  ``(2 sum p gt + eps) / (sum p^2 + sum gt^2 + eps)``. A class absent from the ground truth
  therefore scores ``eps / (sum p^2 + eps)``: 1 when nothing is predicted, and towards 0 as false
  positives grow, so false positives on background-only tiles are punished (unlike smp's
  ``DiceLoss``, which zeroes the loss of classes absent from the ground truth).

Tensors are NCHW: logits ``(N, C, H, W)`` float, targets ``(N, H, W)`` integer class indices,
weight maps ``(N, H, W)`` float.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, C, H, W), got shape {tuple(logits.shape)}")
    if target.ndim != 3 or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target must be (N, H, W) = {(logits.shape[0], *logits.shape[2:])} class indices, "
            f"got shape {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight_map: torch.Tensor | None = None
) -> torch.Tensor:
    """Pixel-weighted cross-entropy, the mean over pixels of ``-w(x) log p_{l(x)}(x)`` (eq. 2).

    Parameters
    ----------
    logits : Tensor
        ``(N, C, H, W)`` class logits (computed in float32 whatever their dtype).
    target : Tensor
        ``(N, H, W)`` integer class indices in ``[0, C)``.
    weight_map : Tensor, optional
        ``(N, H, W)`` non-negative pixel weights; None weights every pixel 1 (plain
        cross-entropy).

    Returns
    -------
    Tensor
        Scalar: the weighted sum over pixels divided by the number of pixels ``N * H * W``.
    """
    _check(logits, target)
    nll = F.cross_entropy(logits.float(), target.long(), reduction="none")
    if weight_map is None:
        return nll.mean()
    if weight_map.shape != target.shape:
        raise ValueError(
            f"weight_map must have the target's shape {tuple(target.shape)}, "
            f"got {tuple(weight_map.shape)}"
        )
    return (weight_map.float() * nll).mean()


def soft_dice(
    probs: torch.Tensor,
    target_onehot: torch.Tensor,
    *,
    include_background: bool = False,
    eps: float = 1.0,
    per_image: bool = False,
) -> torch.Tensor:
    """Soft Dice coefficient with squared denominator terms (eq. 3), mean over classes.

    For each class c: ``(2 sum p_c gt_c + eps) / (sum p_c^2 + sum gt_c^2 + eps)``, sums over the
    pixels of the whole batch (or of each image if ``per_image``, then averaged over images).

    Parameters
    ----------
    probs : Tensor
        ``(N, C, H, W)`` class probabilities (softmax output).
    target_onehot : Tensor
        ``(N, C, H, W)`` one-hot ground truth (or soft targets in [0, 1]).
    include_background : bool, optional
        Include channel 0 (background); by default only classes 1..C-1 are scored.
    eps : float, optional
        Smoothing added to numerator and denominator; with ``eps > 0`` a class absent from the
        ground truth scores 1 only if it is predicted nowhere, so false positives on empty tiles
        lower the coefficient.
    per_image : bool, optional
        Score each image separately and average, instead of pooling the batch's pixels.

    Returns
    -------
    Tensor
        Scalar Dice coefficient in [0, 1] (1 = perfect); the loss term is ``1 - soft_dice``.
    """
    if probs.shape != target_onehot.shape or probs.ndim != 4:
        raise ValueError(
            f"probs and target_onehot must both be (N, C, H, W), got {tuple(probs.shape)} "
            f"and {tuple(target_onehot.shape)}"
        )
    if not include_background:
        if probs.shape[1] < 2:
            raise ValueError("without background there must be at least 2 channels")
        probs, target_onehot = probs[:, 1:], target_onehot[:, 1:]
    probs, target_onehot = probs.float(), target_onehot.float()
    dims = (2, 3) if per_image else (0, 2, 3)
    intersection = (probs * target_onehot).sum(dims)
    denominator = (probs * probs).sum(dims) + (target_onehot * target_onehot).sum(dims)
    return ((2 * intersection + eps) / (denominator + eps)).mean()


class CombinedLoss(nn.Module):
    """``L_WCE + (1 - Dice)`` (eq. 1), plus an optional MSE on distance channels.

    Parameters
    ----------
    num_classes : int, optional
        Class channels at the front of the logits; any further channels are distance or
        regression outputs, scored by mean squared error against ``distance_target``.
    dice_eps : float, optional
        Smoothing of :func:`soft_dice`.
    per_image_dice : bool, optional
        Dice per image, averaged, instead of over the pooled batch.
    distance_weight : float, optional
        Weight of the MSE term: ``L = L_WCE + (1 - Dice) + distance_weight * MSE``.

    Notes
    -----
    Calling the module returns ``(loss, parts)``: the scalar loss to back-propagate and a dict of
    floats for logging, ``wce``, ``dice`` (the coefficient, higher is better) and, with distance
    channels, ``mse``.
    """

    def __init__(
        self,
        *,
        num_classes: int = 3,
        dice_eps: float = 1.0,
        per_image_dice: bool = False,
        distance_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.dice_eps = dice_eps
        self.per_image_dice = per_image_dice
        self.distance_weight = distance_weight

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        weight_map: torch.Tensor | None = None,
        distance_target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of ``(N, num_classes + D, H, W)`` logits against ``(N, H, W)`` class targets.

        ``weight_map`` is ``(N, H, W)`` (None = all ones); ``distance_target`` is
        ``(N, D, H, W)`` and required when the logits carry D > 0 distance channels.
        """
        _check(logits, target)
        extra = logits.shape[1] - self.num_classes
        if extra < 0:
            raise ValueError(
                f"logits have {logits.shape[1]} channels, fewer than num_classes={self.num_classes}"
            )
        class_logits = logits[:, : self.num_classes].float()
        wce = weighted_cross_entropy(class_logits, target, weight_map)
        onehot = F.one_hot(target.long(), self.num_classes).permute(0, 3, 1, 2)
        dice = soft_dice(
            class_logits.softmax(1), onehot, eps=self.dice_eps, per_image=self.per_image_dice
        )
        loss = wce + (1 - dice)
        parts = {"wce": float(wce.detach()), "dice": float(dice.detach())}
        if extra:
            regression = logits[:, self.num_classes :].float()
            if distance_target is None or distance_target.shape != regression.shape:
                raise ValueError(
                    f"logits carry {extra} distance channels: distance_target must have shape "
                    f"{tuple(regression.shape)}, got "
                    f"{None if distance_target is None else tuple(distance_target.shape)}"
                )
            mse = F.mse_loss(regression, distance_target.float())
            loss = loss + self.distance_weight * mse
            parts["mse"] = float(mse.detach())
        elif distance_target is not None:
            raise ValueError("distance_target given, but the logits carry no distance channels")
        return loss, parts
