"""Publishing to the Hugging Face Hub: `push_checkpoint` uploads a model, its processor and a model card rendered
from the `model_cards/` templates (package data), in one commit. Not shipped next to checkpoints."""

from .model_card import build_card_data, detect_variant, load_card_facts, render_model_card, weights_sources
from .push import push_checkpoint

__all__ = ["build_card_data", "detect_variant", "load_card_facts", "push_checkpoint", "render_model_card",
           "weights_sources"]
