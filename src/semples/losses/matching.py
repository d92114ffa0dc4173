"""The SemPLeS losses (METHOD.md §1.1–1.3; paper Eq. 1–3).

All are means over the positive pairs (n, k) of a batch: each row of the inputs is one pair. Similarities are
cosine similarities clamped to [sim_min, sim_max] (reference: [1e-4, 0.9999]), so the logs stay finite; the
clamp also cuts the gradient outside that range, as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clamped_cosine(a: torch.Tensor, b: torch.Tensor, sim_min: float = 1e-4, sim_max: float = 0.9999) -> torch.Tensor:
    """Row-wise cosine similarity, clamped.

    Shape: a (P, E), b (P, E) -> (P,). Computed in float32 whatever the input dtype.
    """
    return F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8).clamp(sim_min, sim_max)


def match_loss(v_fg: torch.Tensor, v_bg: torch.Tensor, u_fg: torch.Tensor, *, lambda_bg: float,
               sim_min: float = 1e-4, sim_max: float = 0.9999) -> dict[str, torch.Tensor]:
    """Segment-label matching: L = −log s(v^f, u^f) − λ_b · log(1 − s(v^b, u^f)).

    Shape: v_fg, v_bg (P, E) image features of masked fg/bg images; u_fg (P, E) class text features.
    Returns: ``match_loss`` (total), ``match_fg_loss``, ``match_bg_loss`` (unweighted terms).
    """
    fg = -torch.log(clamped_cosine(v_fg, u_fg, sim_min, sim_max)).mean()
    bg = -torch.log(1.0 - clamped_cosine(v_bg, u_fg, sim_min, sim_max)).mean()
    return {"match_loss": fg + lambda_bg * bg, "match_fg_loss": fg, "match_bg_loss": bg}


def prompt_loss(u_bg: torch.Tensor, v_bg: torch.Tensor, u_fg: torch.Tensor, *, lambda_text: float,
                use_image: bool = True, use_text: bool = True, sim_min: float = 1e-4,
                sim_max: float = 0.9999) -> dict[str, torch.Tensor]:
    """Contrastive prompt learning: L = −log s(u^b, v^b) + λ_T · log s(u^b, u^f).

    Shape: u_bg (P, E) prompt features of each pair's class; v_bg (P, E) background image features;
    u_fg (P, E) class text features.
    Returns: ``prompt_loss`` (total), ``prompt_image_loss`` (−log s(u^b, v^b)), ``prompt_text_loss``
    (log s(u^b, u^f), before λ_T). `use_image` / `use_text` switch the terms off (paper Table 4).
    """
    image_term = -torch.log(clamped_cosine(u_bg, v_bg, sim_min, sim_max)).mean()
    text_term = torch.log(clamped_cosine(u_bg, u_fg, sim_min, sim_max)).mean()
    total = image_term * float(use_image) + lambda_text * text_term * float(use_text)
    return {"prompt_loss": total, "prompt_image_loss": image_term, "prompt_text_loss": text_term}


def refine_loss(v_fg: torch.Tensor, u_bg: torch.Tensor, sim_min: float = 1e-4,
                sim_max: float = 0.9999) -> dict[str, torch.Tensor]:
    """Prompt-guided refinement: L_refine = −log(1 − s(v^f, u^b)).

    Shape: v_fg (P, E) features of masked foreground images; u_bg (P, E) learned prompt features.
    """
    return {"refine_loss": -torch.log(1.0 - clamped_cosine(v_fg, u_bg, sim_min, sim_max)).mean()}
