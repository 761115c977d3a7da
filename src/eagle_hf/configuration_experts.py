# Copyright 2026 The eagle-hf developers. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance
# with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software distributed under the License is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.
"""What a config needs to know of each vision expert kind and each fusion strategy: no torch, no modeling code.

`EXPERT_FACTS` (per backbone kind) and `FUSION_FACTS` (per fusion strategy) hold the facts the configuration reads:
defaults, channels, strides, map sizes, token counts, roles and validation. The modeling side (`vision_experts.py`,
`fusion.py`) extends each row, under the same name, with how to build and run it. Loading a config (`AutoConfig`) so
imports no modeling module, ours or transformers'.
"""

from dataclasses import dataclass, fields
from typing import Callable, Optional

from transformers import (
    CLIPVisionConfig,
    ConvNextConfig,
    Dinov2Config,
    Pix2StructVisionConfig,
    SamVisionConfig,
    SiglipVisionConfig,
)

from .configuration_eva02 import Eva02VisionConfig
from .pix2struct_patches import patch_grid  # pure Python on ints (the module needs torch, which transformers loads)

PREFIX_POLICIES = ("drop", "drop_before_encoder", "keep")
GRID_RESAMPLES = ("bilinear", "pixel_unshuffle")


# ----- full-size backbones, as Eagle uses them -----


def clip_large_336(**overrides):
    """openai/clip-vit-large-patch14-336."""
    numbers = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    return CLIPVisionConfig(**{**numbers, **overrides})


def siglip_so400m_384(**overrides):
    """google/siglip-so400m-patch14-384 (a general expert; Eagle-1 itself has none)."""
    numbers = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                   image_size=384, patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    return SiglipVisionConfig(**{**numbers, **overrides})


def dinov2_large(**overrides):
    """facebook/dinov2-large (the design space names DINOv2; Eagle-1's code has none)."""
    numbers = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, image_size=518,
                   patch_size=14, layerscale_value=1.0, layer_norm_eps=1e-6)
    return Dinov2Config(**{**numbers, **overrides})


def convnext_xxlarge(**overrides):
    """timm convnext_xxlarge; eps 1e-5 in every LayerNorm (timm's value; HF's blocks hard-code 1e-6)."""
    numbers = dict(depths=[3, 4, 30, 3], hidden_sizes=[384, 768, 1536, 3072], patch_size=4, num_stages=4,
                   layer_norm_eps=1e-5, image_size=1024)
    return ConvNextConfig(**{**numbers, **overrides})


def sam_vit_large(**overrides):
    """facebook/sam-vit-large's image encoder."""
    numbers = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, global_attn_indexes=[5, 11, 17, 23],
                   image_size=1024, patch_size=16, window_size=14, output_channels=256, mlp_dim=4096,
                   # SAM's config says 1e-10, which leaves attention uniform (and rel-pos untrainable) from scratch.
                   initializer_range=0.02)
    return SamVisionConfig(**{**numbers, **overrides})


def pix2struct_large(**overrides):
    """google/pix2struct-large's encoder."""
    numbers = dict(hidden_size=1536, num_hidden_layers=18, num_attention_heads=24, d_ff=3968, d_kv=64,
                   patch_embed_hidden_size=768, dense_act_fn="gelu_new", layer_norm_eps=1e-6, patch_size=16,
                   dropout_rate=0.0, attention_dropout=0.0,
                   # The config's own 1e-10 makes a from-scratch encoder untrainable (as SAM's): use ViT's usual 0.02.
                   initializer_range=0.02)
    return Pix2StructVisionConfig(**{**numbers, **overrides})


# ----- validation helpers -----


def _check_vit(expert):
    config = expert.backbone_config
    layers = config.num_hidden_layers
    if not (1 <= expert.feature_layer <= layers or -layers <= expert.feature_layer <= -1):
        raise ValueError(
            f"Expert {expert.kind!r}: `feature_layer` must be in [1, {layers}] or [-{layers}, -1], "
            f"got {expert.feature_layer}."
        )
    if expert.image_size % config.patch_size:
        raise ValueError(
            f"Expert {expert.kind!r}: `image_size` {expert.image_size} is not a multiple of the patch size "
            f"{config.patch_size}."
        )
    if expert.prefix_tokens != "keep" and EXPERT_FACTS[expert.kind].num_prefix_tokens(config) == 0:
        raise ValueError(
            f"Expert {expert.kind!r} has no prefix tokens; `prefix_tokens` must be 'keep', got {expert.prefix_tokens!r}."
        )
    if expert.prefix_tokens == "keep" and EXPERT_FACTS[expert.kind].num_prefix_tokens(config):
        raise ValueError(
            f"Expert {expert.kind!r} keeps its prefix tokens, so its tokens do not form a square map; expected "
            f"prefix_tokens 'drop' or 'drop_before_encoder'."
        )


def _check_last_layer_only(expert):
    if expert.feature_layer != -1:
        raise ValueError(f"Expert {expert.kind!r} supports only `feature_layer=-1`, got {expert.feature_layer}.")
    _check_map_kind(expert)


def _check_map_kind(expert):
    if expert.prefix_tokens != "keep":
        raise ValueError(
            f"Expert {expert.kind!r} outputs a map without prefix tokens; `prefix_tokens` must be 'keep', "
            f"got {expert.prefix_tokens!r}."
        )
    stride = EXPERT_FACTS[expert.kind].stride(expert)
    if expert.image_size % stride:
        raise ValueError(f"Expert {expert.kind!r}: `image_size` {expert.image_size} is not a multiple of {stride}.")
    if expert.max_patches is not None and expert.kind != "pix2struct":
        raise ValueError(f"`max_patches` applies to pix2struct only, got {expert.max_patches} for {expert.kind!r}.")


def _check_convnext(expert):
    stages = len(expert.backbone_config.hidden_sizes)
    if not -stages <= expert.feature_layer < stages:
        raise ValueError(
            f"Expert 'convnext': `feature_layer` is a stage index in [-{stages}, {stages - 1}], got {expert.feature_layer}."
        )
    _check_map_kind(expert)


def _check_pix2struct(expert):
    if expert.max_patches is None or expert.max_patches <= 0:
        raise ValueError(f"Expert 'pix2struct' needs a positive `max_patches`, got {expert.max_patches}.")
    if expert.feature_layer != -1:
        raise ValueError(f"Expert 'pix2struct' supports only `feature_layer=-1`, got {expert.feature_layer}.")
    if expert.prefix_tokens != "keep":
        raise ValueError("Expert 'pix2struct' has no prefix tokens; `prefix_tokens` must be 'keep'.")
    config = expert.backbone_config
    patch_width = 3 * config.patch_size**2
    if config.patch_embed_hidden_size != patch_width:
        raise ValueError(
            f"Expert 'pix2struct': `patch_embed_hidden_size` must equal 3 * patch_size**2 = {patch_width} "
            f"(one flattened patch), got {config.patch_embed_hidden_size}."
        )


@dataclass(frozen=True)
class ExpertFacts:
    """What the config knows of a backbone kind. `channels`, `stride`, `map_size_fn` and `validate` take an expert
    config; `default_config(**overrides)` gives the full-size backbone Eagle uses."""

    config_class: type
    default_config: Callable
    validate: Callable
    channels: Callable
    stride: Callable
    has_image_size: bool = True
    default_image_size: int = 1024
    default_prefix_policy: str = "keep"
    default_max_patches: Optional[int] = None
    num_prefix_tokens: Callable = lambda config: 0
    map_size_fn: Optional[Callable] = None
    runs_in_stages: bool = False  # a ViT of transformers' layers: the llava_hr fusion can act between its layers
    # transformers' SAM picks its attention classes when built (not through the attention interface), so a new kernel
    # takes effect only in a model built (or loaded) with it.
    attention_fixed_at_build: bool = False

    def map_size(self, expert):
        if self.map_size_fn is not None:
            return self.map_size_fn(expert)
        return expert.image_size // self.stride(expert)

    def facts(self):
        """This row's facts as keywords (the modeling side extends a row with them)."""
        return {field.name: getattr(self, field.name) for field in fields(ExpertFacts)}


def _patch_stride(expert):
    return expert.backbone_config.patch_size


def _hidden(expert):
    return expert.backbone_config.hidden_size


EXPERT_FACTS = {
    "clip": ExpertFacts(
        config_class=CLIPVisionConfig, default_config=clip_large_336, validate=_check_vit, channels=_hidden,
        stride=_patch_stride, default_image_size=336, default_prefix_policy="drop",
        num_prefix_tokens=lambda config: 1, runs_in_stages=True,
    ),
    "siglip": ExpertFacts(
        config_class=SiglipVisionConfig, default_config=siglip_so400m_384, validate=_check_vit, channels=_hidden,
        stride=_patch_stride, default_image_size=384, runs_in_stages=True,
    ),
    "dinov2": ExpertFacts(
        config_class=Dinov2Config, default_config=dinov2_large, validate=_check_vit, channels=_hidden,
        stride=_patch_stride, default_image_size=518, default_prefix_policy="drop",
        num_prefix_tokens=lambda config: 1, runs_in_stages=True,
    ),
    "convnext": ExpertFacts(
        config_class=ConvNextConfig, default_config=convnext_xxlarge, validate=_check_convnext,
        channels=lambda e: e.backbone_config.hidden_sizes[e.feature_layer],
        stride=lambda e: e.backbone_config.patch_size * 2 ** (e.feature_layer % len(e.backbone_config.hidden_sizes)),
    ),
    "sam": ExpertFacts(
        config_class=SamVisionConfig, default_config=sam_vit_large, validate=_check_last_layer_only,
        channels=lambda e: e.backbone_config.output_channels, stride=_patch_stride, attention_fixed_at_build=True,
    ),
    "eva02": ExpertFacts(
        config_class=Eva02VisionConfig, default_config=Eva02VisionConfig, validate=_check_last_layer_only,
        channels=_hidden, stride=_patch_stride,
    ),
    "pix2struct": ExpertFacts(
        config_class=Pix2StructVisionConfig, default_config=pix2struct_large, validate=_check_pix2struct,
        channels=_hidden, stride=_patch_stride, has_image_size=False, default_max_patches=2048,
        map_size_fn=lambda e: patch_grid(e.image_size, e.image_size, e.backbone_config.patch_size, e.max_patches)[0],
    ),
}


# ----- fusion strategies -----


def adapter_layers(num_layers, num_adapters):
    """After which ViT layers the adapters act: evenly spaced, as LLaVA-HR's 3 adapters after each quarter of 24."""
    return [round(index * num_layers / (num_adapters + 1)) for index in range(1, num_adapters + 1)]


def sequence_width(config):
    """The common width of `sequence_append`'s tokens: `fusion_hidden_size`, or the language model's width."""
    return config.fusion_hidden_size or config.text_config.hidden_size


# ----- what each strategy needs of the config (the expert count and expert 0's kind are checked from the table) -----


def _check_adapters(config):
    layers = config.vision_experts[0].encoder_layers
    if not 1 <= config.fusion_num_adapters <= layers - 1:
        raise ValueError(
            f"`fusion_num_adapters` must be in [1, {layers - 1}] with the llava_hr fusion: the adapters sit between "
            f"the first expert's {layers} encoder layers; got {config.fusion_num_adapters}."
        )
    return adapter_layers(layers, config.fusion_num_adapters)


def _check_windows(config):
    grid = config.grid_size
    offenders = [
        f"expert {index} ({expert.kind}) gives {expert.feature_map_size}x{expert.feature_map_size}"
        for index, expert in enumerate(config.vision_experts[1:], start=1)
        if expert.feature_map_size % grid
    ]
    if offenders:
        raise ValueError(
            f"The mini_gemini fusion gives each of the {grid}x{grid} grid cells one window of every high-resolution "
            f"source, so each source's native map side must be a multiple of grid_size {grid}; "
            f"{'; '.join(offenders)}. Change those experts' image_size (pix2struct: max_patches) or the grid_size."
        )


def _check_heads(config):
    width = config.vision_experts[0].hidden_size
    if width % config.fusion_num_heads:
        raise ValueError(
            f"`fusion_num_heads` must divide the query width, the first expert's {width} grid channels, with the "
            f"deformable fusion; got {config.fusion_num_heads}."
        )


@dataclass(frozen=True)
class FusionFacts:
    """What the config knows of a fusion strategy.

    `roles`: which expert plays which part (quoted in errors). `input_width(config)`: the projector's input width.
    `num_image_tokens(config)`: tokens per image. `min_experts`; `staged_first_expert`: expert 0 must be a ViT whose
    layers run in stages. `validate(config)`: the remaining checks, raising ValueError with what is expected.
    """

    roles: str
    input_width: Callable
    num_image_tokens: Callable
    min_experts: int = 1
    staged_first_expert: bool = False
    validate: Callable = lambda config: None

    def facts(self):
        """This row's facts as keywords (the modeling side extends a row with them)."""
        return {field.name: getattr(self, field.name) for field in fields(FusionFacts)}


def _grid_tokens(config):
    return config.grid_size**2


def _first_expert_width(config):
    return config.vision_experts[0].hidden_size


HIGH_RES_ROLES = "expert 0 gives the low-resolution grid tokens (the queries), experts 1.. are high-resolution sources"

FUSION_FACTS = {
    "channel_concat": FusionFacts(
        roles="every expert's grid is one block of channels, in expert order",
        input_width=lambda config: sum(expert.hidden_size for expert in config.vision_experts),
        num_image_tokens=_grid_tokens,
    ),
    "sequence_append": FusionFacts(
        roles="every expert's grid is one block of tokens, in expert order",
        input_width=sequence_width,
        num_image_tokens=lambda config: len(config.vision_experts) * config.grid_size**2,
    ),
    "llava_hr": FusionFacts(
        roles="expert 0 is the low-resolution ViT the adapters act in, experts 1.. are high-resolution sources",
        input_width=_first_expert_width,
        num_image_tokens=_grid_tokens,
        min_experts=2,
        staged_first_expert=True,
        validate=_check_adapters,
    ),
    "mini_gemini": FusionFacts(
        roles=HIGH_RES_ROLES,
        input_width=_first_expert_width,
        num_image_tokens=_grid_tokens,
        min_experts=2,
        validate=_check_windows,
    ),
    "deformable": FusionFacts(
        roles=HIGH_RES_ROLES,
        input_width=_first_expert_width,
        num_image_tokens=_grid_tokens,
        min_experts=2,
        validate=_check_heads,
    ),
}


__all__ = ["EXPERT_FACTS", "ExpertFacts", "FUSION_FACTS", "FusionFacts", "GRID_RESAMPLES", "PREFIX_POLICIES",
           "adapter_layers", "sequence_width"]
