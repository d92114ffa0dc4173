"""FMA-WSSS losses against hand computations."""

from __future__ import annotations

import math

import torch

from semples.losses import cam_activation_loss, multilabel_contrastive_loss


def test_contrastive_loss_by_hand():
    logits = torch.tensor([[2.0, 0.5, -1.0, 1.0],
                           [0.0, 3.0, 1.0, -2.0]])
    pos = torch.tensor([[True, True, False, False], [False, False, True, False]])
    neg = ~pos
    # image 0: negatives {2, 3}; positives 0 and 1 each compete only with them
    n0 = math.exp(-1.0) + math.exp(1.0)
    l00 = -math.log(math.exp(2.0) / (math.exp(2.0) + n0))
    l01 = -math.log(math.exp(0.5) / (math.exp(0.5) + n0))
    # image 1: negatives {0, 1, 3}
    n1 = math.exp(0.0) + math.exp(3.0) + math.exp(-2.0)
    l12 = -math.log(math.exp(1.0) / (math.exp(1.0) + n1))
    out = multilabel_contrastive_loss(logits, pos, neg)
    torch.testing.assert_close(out["contrastive_loss"], torch.tensor((l00 + l01 + l12) / 3))


def test_contrastive_loss_restricted_negatives_and_edge_cases():
    logits = torch.tensor([[1.0, 2.0, 5.0]], requires_grad=True)
    pos = torch.tensor([[True, False, False]])
    only_1 = torch.tensor([[False, True, False]])  # class 2 (e.g. a background class) is not a negative
    want = -math.log(math.exp(1.0) / (math.exp(1.0) + math.exp(2.0)))
    torch.testing.assert_close(multilabel_contrastive_loss(logits, pos, only_1)["contrastive_loss"],
                               torch.tensor(want))
    none = torch.zeros_like(pos)
    assert multilabel_contrastive_loss(logits, pos, none)["contrastive_loss"].item() == 0.0  # no negatives: 0
    empty = multilabel_contrastive_loss(logits, none, ~pos)["contrastive_loss"]
    assert empty.item() == 0.0 and empty.requires_grad
    # large logits stay finite
    big = multilabel_contrastive_loss(logits * 100, pos, ~pos)["contrastive_loss"]
    assert torch.isfinite(big) and abs(big.item() - 400.0) < 1e-3


def test_cam_activation_loss_by_hand():
    # one image, seeds: 1 = class 0, 2 = class 1, 0 background, 255 ignore
    seeds = torch.tensor([[[1, 1, 0],
                           [2, 255, 0]]])
    cam0 = torch.tensor([[0.2, 0.8, 0.5],
                         [-0.3, 9.0, -0.1]])
    cam1 = torch.tensor([[0.4, -0.2, 0.0],
                         [0.6, 5.0, 0.3]])
    cams = torch.stack([cam0, cam1]).requires_grad_(True)
    n, c = torch.tensor([0, 0]), torch.tensor([0, 1])
    # pair (0, class 0): F = {(0,0), (0,1)}, max_F = 0.8 -> |0.8-0.2| + |0.8-0.8| = 0.6;
    #                     B = {(0,2), (1,0), (1,2)} -> max(0.5,0) + max(-0.3,0) + max(-0.1,0) = 0.5
    # pair (0, class 1): F = {(1,0)}, max_F = 0.6 -> 0;  B = {(0,0), (0,1), (0,2), (1,2)} -> 0.4 + 0 + 0 + 0.3
    # |F| + |B| = (2 + 3) + (1 + 4) = 10; the ignored pixel (9.0 / 5.0) never counts
    out = cam_activation_loss(cams, seeds, n, c)
    torch.testing.assert_close(out["cam_fg_loss"], torch.tensor(0.6 / 10))
    torch.testing.assert_close(out["cam_bg_loss"], torch.tensor((0.5 + 0.7) / 10))
    torch.testing.assert_close(out["cam_activation_loss"], torch.tensor(1.8 / 10))
    out["cam_activation_loss"].backward()
    # gradients: fg pixels below the (detached) peak are pulled up, positive bg pixels pushed down
    g = cams.grad
    assert g[0, 0, 0] < 0 and g[0, 0, 1] == 0 and g[0, 0, 2] > 0 and g[0, 1, 0] == 0 and g[0, 1, 1] == 0
    assert g[1, 0, 0] > 0 and g[1, 1, 2] > 0 and g[1, 1, 1] == 0


def test_cam_activation_loss_without_seed_pixels_of_the_class():
    seeds = torch.zeros(1, 2, 2, dtype=torch.long)  # all background: F is empty for class 0
    cams = torch.tensor([[[1.0, -1.0], [0.5, 0.0]]])
    out = cam_activation_loss(cams, seeds, torch.tensor([0]), torch.tensor([0]))
    torch.testing.assert_close(out["cam_fg_loss"], torch.tensor(0.0))
    torch.testing.assert_close(out["cam_activation_loss"], torch.tensor(1.5 / 4))
    ignored = torch.full((1, 2, 2), 255)
    assert cam_activation_loss(cams, ignored, torch.tensor([0]), torch.tensor([0]))["cam_activation_loss"] == 0
