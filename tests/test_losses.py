"""Tests of nucseg.losses: the paper's eqs. 1-3, worked out by hand on tiny images."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nucseg.losses import CombinedLoss, soft_dice, weighted_cross_entropy


def two_class_example():
    """One 1x3 image, 2 classes. Pixel logits (background, nucleus) chosen so that
    p_nucleus = 1/2, 3/4, 1/5; true classes 1, 1, 0; weights 2, 1, 0.5."""
    logits = torch.tensor([[0.0, 0.0, math.log(4.0)], [0.0, math.log(3.0), 0.0]])
    logits = logits.reshape(1, 2, 1, 3)
    target = torch.tensor([1, 1, 0]).reshape(1, 1, 3)
    weights = torch.tensor([2.0, 1.0, 0.5]).reshape(1, 1, 3)
    return logits, target, weights


def test_weighted_cross_entropy_by_hand():
    logits, target, weights = two_class_example()
    # -log p_true: pixel 1: -log(1/2) = log 2; pixel 2: -log(3/4) = log(4/3);
    # pixel 3 (background, p = 4/5): -log(4/5) = log(5/4). Weighted, then mean over 3 pixels.
    expected = (2 * math.log(2) + 1 * math.log(4 / 3) + 0.5 * math.log(5 / 4)) / 3
    assert weighted_cross_entropy(logits, target, weights).item() == pytest.approx(expected)


def test_soft_dice_by_hand():
    logits, target, _ = two_class_example()
    probs = logits.softmax(1)
    onehot = F.one_hot(target, 2).permute(0, 3, 1, 2)
    # nucleus class: p = (1/2, 3/4, 1/5), gt = (1, 1, 0)
    # sum p gt = 1/2 + 3/4 = 1.25; sum p^2 = 0.25 + 0.5625 + 0.04 = 0.8525; sum gt^2 = 2
    assert soft_dice(probs, onehot, eps=0.0).item() == pytest.approx(2 * 1.25 / (0.8525 + 2))
    assert soft_dice(probs, onehot, eps=1.0).item() == pytest.approx((2.5 + 1) / (2.8525 + 1))


def test_combined_loss_by_hand_two_classes():
    logits, target, weights = two_class_example()
    wce = (2 * math.log(2) + math.log(4 / 3) + 0.5 * math.log(5 / 4)) / 3
    dice = 3.5 / 3.8525  # eps = 1, from test_soft_dice_by_hand
    loss, parts = CombinedLoss(num_classes=2)(logits, target, weights)
    assert loss.item() == pytest.approx(wce + 1 - dice)
    assert parts == pytest.approx({"wce": wce, "dice": dice})


def test_combined_loss_by_hand_three_classes():
    # 1x2 image; logits = log p so the softmax returns p exactly.
    # pixel 1: p = (0.2, 0.5, 0.3), true class 1 (interior), weight 1
    # pixel 2: p = (0.1, 0.2, 0.7), true class 2 (boundary), weight 3
    probs = torch.tensor([[0.2, 0.1], [0.5, 0.2], [0.3, 0.7]]).reshape(1, 3, 1, 2)
    target = torch.tensor([1, 2]).reshape(1, 1, 2)
    weights = torch.tensor([1.0, 3.0]).reshape(1, 1, 2)
    wce = (1 * -math.log(0.5) + 3 * -math.log(0.7)) / 2
    # interior: p = (.5, .2), gt = (1, 0): 2 * .5 / (.25 + .04 + 1) = 1 / 1.29
    # boundary: p = (.3, .7), gt = (0, 1): 2 * .7 / (.09 + .49 + 1) = 1.4 / 1.58
    dice = (1 / 1.29 + 1.4 / 1.58) / 2
    loss, parts = CombinedLoss(num_classes=3, dice_eps=0.0)(probs.log(), target, weights)
    assert parts["wce"] == pytest.approx(wce)
    assert parts["dice"] == pytest.approx(dice)
    assert loss.item() == pytest.approx(wce + 1 - dice)


def test_no_weight_map_is_plain_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    expected = F.cross_entropy(logits, target)
    assert weighted_cross_entropy(logits, target).item() == pytest.approx(expected.item())
    ones = torch.ones(2, 4, 5)
    assert weighted_cross_entropy(logits, target, ones).item() == pytest.approx(expected.item())


def test_false_positives_on_an_empty_tile_are_punished():
    # All-background 1x4 tile; the network is sure of "nucleus" on 2 pixels (p = 1).
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    onehot = F.one_hot(target, 2).permute(0, 3, 1, 2)
    probs = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).reshape(1, 1, 1, 4)
    probs = torch.cat([1 - probs, probs], 1)
    # nucleus: sum p gt = 0, sum p^2 = 2, sum gt^2 = 0 -> Dice = (0 + 1) / (2 + 1) = 1/3
    assert soft_dice(probs, onehot).item() == pytest.approx(1 / 3)
    # nothing predicted on the empty tile: a perfect score, no loss
    assert soft_dice(onehot.float(), onehot).item() == pytest.approx(1.0)

    # The Dice term alone has a gradient that lowers the nucleus logit on the false positives.
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 1, 0, :2] = 3.0
    logits.requires_grad_(True)
    dice_loss = 1 - soft_dice(logits.softmax(1), onehot)
    assert dice_loss.item() > 0.5
    dice_loss.backward()
    assert (logits.grad[0, 1, 0, :2] > 0).all()  # gradient descent lowers them
    loss_fn = CombinedLoss(num_classes=2)

    # Pooled over a batch, false positives on an empty tile lower the batch's Dice.
    nuclei = torch.zeros(1, 1, 4, dtype=torch.long)
    nuclei[..., :2] = 1
    perfect = torch.where(nuclei == 1, 5.0, -5.0).unsqueeze(1)
    good = torch.cat([-perfect, perfect], 1)
    clean_empty = torch.cat([torch.full((1, 1, 1, 4), 5.0), torch.full((1, 1, 1, 4), -5.0)], 1)
    batch_target = torch.cat([nuclei, target])
    _, clean = loss_fn(torch.cat([good, clean_empty]), batch_target)
    _, noisy = loss_fn(torch.cat([good, logits.detach()]), batch_target)
    assert noisy["dice"] < clean["dice"] - 0.1


def test_per_image_dice_is_the_mean_of_single_images():
    g = torch.Generator().manual_seed(1)
    probs = torch.randn(2, 3, 6, 6, generator=g).softmax(1)
    onehot = F.one_hot(torch.randint(0, 3, (2, 6, 6), generator=g), 3).permute(0, 3, 1, 2)
    single = [soft_dice(probs[i : i + 1], onehot[i : i + 1]) for i in range(2)]
    per_image = soft_dice(probs, onehot, per_image=True)
    assert per_image.item() == pytest.approx(((single[0] + single[1]) / 2).item())


def test_distance_channels_add_weighted_mse():
    logits = torch.zeros(1, 3, 1, 2)  # 2 classes + 1 distance channel
    logits[0, 2] = torch.tensor([0.5, 1.0])
    distance = torch.tensor([0.0, 2.0]).reshape(1, 1, 1, 2)
    target = torch.tensor([0, 1]).reshape(1, 1, 2)
    base, _ = CombinedLoss(num_classes=2)(logits[:, :2], target)
    loss, parts = CombinedLoss(num_classes=2, distance_weight=0.5)(logits, target, None, distance)
    mse = (0.5**2 + 1.0**2) / 2
    assert parts["mse"] == pytest.approx(mse)
    assert loss.item() == pytest.approx(base.item() + 0.5 * mse)
    with pytest.raises(ValueError, match="distance_target"):
        CombinedLoss(num_classes=2)(logits, target)
    with pytest.raises(ValueError, match="no distance channels"):
        CombinedLoss(num_classes=3)(logits, target, None, distance)


def test_gradient_flows_to_every_logit():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    weights = torch.rand(2, 8, 8, generator=g) + 0.5
    loss, _ = CombinedLoss(num_classes=3)(logits, target, weights, torch.zeros(2, 1, 8, 8))
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad.abs().sum((0, 2, 3)) > 0).all()


def test_bfloat16_logits_are_scored_in_float32():
    logits, target, weights = two_class_example()
    full, _ = CombinedLoss(num_classes=2)(logits, target, weights)
    half, _ = CombinedLoss(num_classes=2)(logits.bfloat16(), target, weights)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), abs=1e-2)


@pytest.mark.parametrize(
    ("logits_shape", "target_shape"),
    [((1, 2, 4, 4), (1, 4, 5)), ((2, 4, 4), (2, 4, 4)), ((1, 2, 4, 4), (1, 1, 4, 4))],
)
def test_bad_shapes_are_rejected(logits_shape, target_shape):
    with pytest.raises(ValueError, match="must be"):
        CombinedLoss(num_classes=2)(torch.zeros(logits_shape), torch.zeros(target_shape).long())


def test_float_targets_are_rejected():
    with pytest.raises(ValueError, match="integer class indices"):
        weighted_cross_entropy(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2))
