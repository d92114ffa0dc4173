"""Loss functions: pure, documented shapes, no state. Each returns a dict of named scalar tensors."""

from semples.losses.classification import multilabel_losses
from semples.losses.fma import cam_activation_loss, multilabel_contrastive_loss
from semples.losses.matching import clamped_cosine, match_loss, prompt_loss, refine_loss

__all__ = ["cam_activation_loss", "clamped_cosine", "match_loss", "multilabel_contrastive_loss", "multilabel_losses",
           "prompt_loss", "refine_loss"]
