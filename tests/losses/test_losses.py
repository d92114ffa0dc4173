"""SemPLeS losses against hand-computed numbers, including the similarity clamp at both bounds."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from semples.losses import clamped_cosine, match_loss, multilabel_losses, prompt_loss, refine_loss


def unit(angle: float) -> torch.Tensor:
    return torch.tensor([math.cos(angle), math.sin(angle)])


def test_clamped_cosine_bounds():
    a = torch.stack([unit(0.0), unit(0.0), unit(math.pi / 3), unit(0.0)])
    b = torch.stack([unit(0.0), unit(math.pi), unit(0.0), unit(math.pi / 2)])
    s = clamped_cosine(a, b)
    torch.testing.assert_close(s, torch.tensor([0.9999, 1e-4, 0.5, 1e-4]))
    s2 = clamped_cosine(a, b, sim_min=0.2, sim_max=0.4)
    torch.testing.assert_close(s2, torch.tensor([0.4, 0.2, 0.4, 0.2]))


def test_match_loss_by_hand():
    # pair 1: s_f = cos(60°) = 0.5, s_b = cos(90°) = 0 -> clamped 1e-4
    # pair 2: s_f = 1 -> clamped 0.9999, s_b = cos(0) = 1 -> clamped 0.9999
    u = torch.stack([unit(0.0), unit(0.0)])
    v_fg = torch.stack([unit(math.pi / 3), unit(0.0)])
    v_bg = torch.stack([unit(math.pi / 2), unit(0.0)])
    out = match_loss(v_fg, v_bg, u, lambda_bg=2.4)
    fg = (-math.log(0.5) - math.log(0.9999)) / 2
    bg = (-math.log(1 - 1e-4) - math.log(1 - 0.9999)) / 2
    assert math.isclose(out["match_fg_loss"].item(), fg, rel_tol=1e-5)
    assert math.isclose(out["match_bg_loss"].item(), bg, rel_tol=1e-4)
    assert math.isclose(out["match_loss"].item(), fg + 2.4 * bg, rel_tol=1e-4)


def test_match_loss_negative_similarity_clamps_at_lower_bound():
    out = match_loss(unit(math.pi)[None], unit(math.pi)[None], unit(0.0)[None], lambda_bg=1.0)
    assert math.isclose(out["match_fg_loss"].item(), -math.log(1e-4), rel_tol=1e-5)
    assert math.isclose(out["match_bg_loss"].item(), -math.log(1 - 1e-4), abs_tol=1e-7)  # float32 rounding


def test_prompt_loss_by_hand_and_switches():
    u_bg = torch.stack([unit(0.0), unit(0.0)])
    v_bg = torch.stack([unit(math.pi / 3), unit(math.pi / 4)])  # 0.5, 0.7071
    u_fg = torch.stack([unit(math.pi / 3), unit(math.pi / 2)])  # 0.5, 0 -> 1e-4
    out = prompt_loss(u_bg, v_bg, u_fg, lambda_text=0.02)
    img = (-math.log(0.5) - math.log(math.cos(math.pi / 4))) / 2
    txt = (math.log(0.5) + math.log(1e-4)) / 2
    assert math.isclose(out["prompt_image_loss"].item(), img, rel_tol=1e-5)
    assert math.isclose(out["prompt_text_loss"].item(), txt, rel_tol=1e-5)
    assert math.isclose(out["prompt_loss"].item(), img + 0.02 * txt, rel_tol=1e-5)
    only_text = prompt_loss(u_bg, v_bg, u_fg, lambda_text=0.02, use_image=False)
    assert math.isclose(only_text["prompt_loss"].item(), 0.02 * txt, rel_tol=1e-5)
    only_image = prompt_loss(u_bg, v_bg, u_fg, lambda_text=0.02, use_text=False)
    assert math.isclose(only_image["prompt_loss"].item(), img, rel_tol=1e-5)


def test_refine_loss_by_hand():
    v_fg = torch.stack([unit(math.pi / 3), unit(0.0), unit(math.pi)])  # s = 0.5, 0.9999 (clamp), 1e-4 (clamp)
    u_bg = torch.stack([unit(0.0)] * 3)
    out = refine_loss(v_fg, u_bg)
    expected = (-math.log(0.5) - math.log(1 - 0.9999) - math.log(1 - 1e-4)) / 3
    assert math.isclose(out["refine_loss"].item(), expected, rel_tol=1e-4)


def test_losses_are_scale_invariant_in_features():
    a, b, c = torch.randn(5, 8), torch.randn(5, 8), torch.randn(5, 8)
    x = match_loss(a, b, c, lambda_bg=1.0)["match_loss"]
    y = match_loss(3 * a, 0.5 * b, 7 * c, lambda_bg=1.0)["match_loss"]
    torch.testing.assert_close(x, y)


def test_multilabel_losses_by_hand():
    logits = {"token": torch.tensor([[2.0, -1.0]]), "fine": torch.tensor([[0.0, 0.5]])}
    labels = torch.tensor([[1.0, 0.0]])

    def mlsm(x, y):
        return -(y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x)).mean()

    out = multilabel_losses(logits, labels, {"token": 1.0, "fine": 0.5})
    t, f = mlsm(logits["token"], labels), mlsm(logits["fine"], labels)
    torch.testing.assert_close(out["token_loss"], t)
    torch.testing.assert_close(out["fine_loss"], f)
    torch.testing.assert_close(out["classify_loss"], t + 0.5 * f)
