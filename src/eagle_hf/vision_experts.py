# Copyright 2026 The eagle-hf developers. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance
# with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software distributed under the License is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.
"""The vision experts: one table of per-backbone facts, and one module class that serves every backbone.

Each row of `EXPERT_KINDS` says which transformers config describes the backbone, how to build it (from transformers'
own building blocks; EVA-02 is ours), how many prefix tokens it has, what map it produces and with how many channels,
and how to run it up to the selected layer. `EagleVisionExpert` resizes the shared image to the expert's resolution,
runs the backbone and brings its map to the shared grid.
"""

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import logging
from transformers import (
    CLIPVisionConfig,
    ConvNextConfig,
    Dinov2Config,
    Pix2StructVisionConfig,
    SamVisionConfig,
    SiglipVisionConfig,
)
from transformers.models.clip import modeling_clip
from transformers.models.convnext import modeling_convnext
from transformers.models.dinov2 import modeling_dinov2
from transformers.models.pix2struct import modeling_pix2struct
from transformers.models.sam import modeling_sam
from transformers.models.siglip import modeling_siglip

from .configuration_eva02 import Eva02VisionConfig
from .fusion import resample_to_grid
from .modeling_eva02 import Eva02VisionModel
from .pix2struct_patches import denormalize, extract_flattened_patches, patch_grid


logger = logging.get_logger(__name__)

PREFIX_POLICIES = ("drop", "drop_before_encoder", "keep")
# Blocks holding a non-persistent `position_ids` buffer that weight initialisation must refill.
EMBEDDINGS_WITH_POSITION_IDS = (modeling_clip.CLIPVisionEmbeddings, modeling_siglip.SiglipVisionEmbeddings)
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


# ----- backbones built from transformers' blocks (not its *Model classes, whose v5 key conversions would apply) -----


class EagleViTBackbone(nn.Module):
    """Patch embeddings (+ CLIP's pre-layernorm) and the encoder layers a ViT expert needs, nothing after them."""

    def __init__(self, config, embeddings_class, encoder_class, num_layers, pre_layernorm=False):
        super().__init__()
        self.config = config
        self.embeddings = embeddings_class(config)
        if pre_layernorm:
            self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = encoder_class(config)
        layers_name = "layers" if hasattr(self.encoder, "layers") else "layer"
        # Layers after the selected one never reach the output: prune them so every parameter trains.
        setattr(self.encoder, layers_name, getattr(self.encoder, layers_name)[:num_layers])


class EagleConvNextBackbone(nn.Module):
    """ConvNeXt stem and stages up to the selected one (HF's pooled head is not built)."""

    def __init__(self, config, num_stages):
        super().__init__()
        self.config = config
        self.embeddings = modeling_convnext.ConvNextEmbeddings(config)
        self.encoder = modeling_convnext.ConvNextEncoder(config)
        self.encoder.stages = self.encoder.stages[:num_stages]
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = config.layer_norm_eps


class EagleSamShortNeck(nn.Module):
    """Eagle's SAM neck: the 1x1 conv and its layernorm only (SAM's 3x3 conv and second norm are cut)."""

    def __init__(self, config):
        super().__init__()
        self.conv1 = nn.Conv2d(config.hidden_size, config.output_channels, kernel_size=1, bias=False)
        self.layer_norm1 = modeling_sam.SamLayerNorm(config.output_channels, data_format="channels_first")

    def forward(self, hidden_states):
        """(B, H, W, C) -> (B, output_channels, H, W)."""
        return self.layer_norm1(self.conv1(hidden_states.permute(0, 3, 1, 2)))


def _vit_num_layers(expert):
    total = expert.backbone_config.num_hidden_layers
    return expert.feature_layer + 1 + total if expert.feature_layer < 0 else expert.feature_layer


def _build_clip(expert):
    return EagleViTBackbone(expert.backbone_config, modeling_clip.CLIPVisionEmbeddings, modeling_clip.CLIPEncoder,
                            _vit_num_layers(expert), pre_layernorm=True)


def _build_siglip(expert):
    return EagleViTBackbone(expert.backbone_config, modeling_siglip.SiglipVisionEmbeddings,
                            modeling_siglip.SiglipEncoder, _vit_num_layers(expert))


def _build_dinov2(expert):
    # The mask token serves masked pre-training only; without it every parameter of the expert trains.
    expert.backbone_config.use_mask_token = False
    return EagleViTBackbone(expert.backbone_config, modeling_dinov2.Dinov2Embeddings,
                            modeling_dinov2.Dinov2Encoder, _vit_num_layers(expert))


def _build_convnext(expert):
    num_stages = len(expert.backbone_config.hidden_sizes)
    return EagleConvNextBackbone(expert.backbone_config, expert.feature_layer % num_stages + 1)


def _build_sam(expert):
    backbone = modeling_sam.SamVisionEncoder(expert.backbone_config)
    backbone.neck = EagleSamShortNeck(expert.backbone_config)
    return backbone


# ----- running a backbone up to its feature map: (B, 3, S, S) -> (B, C, h, w) -----


def _tokens_to_map(tokens):
    """(B, N, C) with N a square -> (B, C, sqrt(N), sqrt(N))."""
    batch, length, channels = tokens.shape
    side = int(round(length**0.5))
    return tokens.transpose(1, 2).reshape(batch, channels, side, side)


def _encode_vit(module, pixel_values, between_layers=None):
    """`between_layers` ({k: f}, optional) applies f, (B, N, C) -> (B, N, C), to the patch tokens after layer k."""
    backbone, expert = module.backbone, module.expert_config
    num_prefix = module.kind.num_prefix_tokens(expert.backbone_config)
    hidden = backbone.embeddings(pixel_values)
    if expert.prefix_tokens == "drop_before_encoder":
        hidden = hidden[:, num_prefix:]  # Eagle's CLIP: the CLS token never takes part in attention
    if hasattr(backbone, "pre_layrnorm"):
        hidden = backbone.pre_layrnorm(hidden)
    if between_layers:
        in_stream = num_prefix if expert.prefix_tokens == "drop" else 0
        hidden = _run_layers_between(backbone.encoder, hidden, in_stream, between_layers)
    else:
        hidden = backbone.encoder(hidden).last_hidden_state  # (B, N, C); layers past the selected one are pruned
    if expert.prefix_tokens == "drop":
        hidden = hidden[:, num_prefix:]
    return _tokens_to_map(hidden)


def _run_layers_between(encoder, hidden, num_prefix, between_layers):
    """The encoder's layers one by one, (B, P + N, C) -> (B, P + N, C), with `between_layers[k]` on the N patch tokens
    after layer k. The layers are called as they are (no forward is patched); each checkpoints itself when enabled."""
    layers = encoder.layers if hasattr(encoder, "layers") else encoder.layer
    masks = _layer_masks(layers[0]) if len(layers) else ()
    for index, layer in enumerate(layers, start=1):
        output = layer(hidden, *masks)
        hidden = output[0] if isinstance(output, tuple) else output  # 4.57's CLIP layer returns a tuple, 5.x a tensor
        if index in between_layers:
            hidden = torch.cat([hidden[:, :num_prefix], between_layers[index](hidden[:, num_prefix:])], dim=1)
    return hidden


def _layer_masks(layer):
    """The mask arguments (all None) a ViT layer needs: 4.57's CLIP layer also takes a causal mask, 5.x's do not."""
    forward = type(layer).forward
    while hasattr(forward, "__wrapped__"):  # 5.x wraps the forwards in output-capturing decorators
        forward = forward.__wrapped__
    return (None, None) if "causal_attention_mask" in forward.__code__.co_varnames else (None,)


def _encode_convnext(module, pixel_values):
    hidden = module.backbone.embeddings(pixel_values)
    for stage in module.backbone.encoder.stages:  # HF's ConvNeXt has no checkpointing of its own
        hidden = module.checkpoint(stage, hidden)
    return hidden


def _encode_last_hidden_state(module, pixel_values):
    return module.backbone(pixel_values).last_hidden_state


def _encode_pix2struct(module, pixel_values):
    # Pix2Struct standardises each image itself: undo the shared normalisation, then patchify on the device.
    expert = module.expert_config
    images = denormalize(pixel_values, module.image_mean, module.image_std)
    patches, mask, rows, cols = extract_flattened_patches(images, expert.backbone_config.patch_size, expert.max_patches)
    hidden = module.backbone(flattened_patches=patches.to(pixel_values.dtype), attention_mask=mask).last_hidden_state
    batch, _, channels = hidden.shape
    return hidden[:, : rows * cols].transpose(1, 2).reshape(batch, channels, rows, cols)


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
    if expert.prefix_tokens != "keep" and EXPERT_KINDS[expert.kind].num_prefix_tokens(config) == 0:
        raise ValueError(
            f"Expert {expert.kind!r} has no prefix tokens; `prefix_tokens` must be 'keep', got {expert.prefix_tokens!r}."
        )
    if expert.prefix_tokens == "keep" and EXPERT_KINDS[expert.kind].num_prefix_tokens(config):
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
    stride = EXPERT_KINDS[expert.kind].stride(expert)
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
class ExpertKind:
    """Everything that differs between backbones. `stride`, `channels` and `map_size` take an expert config."""

    config_class: type
    default_config: Callable  # the full-size backbone Eagle uses; keyword overrides change single fields
    build: Callable
    encode: Callable
    validate: Callable
    channels: Callable
    stride: Callable
    attention_class: Optional[type] = None  # the PreTrainedModel whose `_supports_*` flags apply
    # The PreTrainedModel whose `_init_weights` draws this backbone's weights, for backbones assembled from blocks
    # (backbones that are PreTrainedModels themselves are initialised by transformers with their own).
    init_class: Optional[type] = None
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

    def supports(self, attn_implementation):
        if attn_implementation in (None, "eager"):
            return True
        flag = {"sdpa": "_supports_sdpa", "flex_attention": "_supports_flex_attn"}.get(attn_implementation, "_supports_flash_attn")
        return bool(getattr(self.attention_class, flag, False))


def _patch_stride(expert):
    return expert.backbone_config.patch_size


def _hidden(expert):
    return expert.backbone_config.hidden_size


EXPERT_KINDS = {
    "clip": ExpertKind(
        CLIPVisionConfig, clip_large_336, _build_clip, _encode_vit, _check_vit, _hidden, _patch_stride,
        attention_class=modeling_clip.CLIPPreTrainedModel, init_class=modeling_clip.CLIPPreTrainedModel,
        default_image_size=336, default_prefix_policy="drop",
        num_prefix_tokens=lambda config: 1, runs_in_stages=True,
    ),
    "siglip": ExpertKind(
        SiglipVisionConfig, siglip_so400m_384, _build_siglip, _encode_vit, _check_vit, _hidden, _patch_stride,
        attention_class=modeling_siglip.SiglipPreTrainedModel, init_class=modeling_siglip.SiglipPreTrainedModel,
        default_image_size=384, runs_in_stages=True,
    ),
    "dinov2": ExpertKind(
        Dinov2Config, dinov2_large, _build_dinov2, _encode_vit, _check_vit, _hidden, _patch_stride,
        attention_class=modeling_dinov2.Dinov2PreTrainedModel, init_class=modeling_dinov2.Dinov2PreTrainedModel,
        default_image_size=518, default_prefix_policy="drop",
        num_prefix_tokens=lambda config: 1, runs_in_stages=True,
    ),
    "convnext": ExpertKind(
        ConvNextConfig, convnext_xxlarge, _build_convnext, _encode_convnext, _check_convnext,
        channels=lambda e: e.backbone_config.hidden_sizes[e.feature_layer],
        stride=lambda e: e.backbone_config.patch_size * 2 ** (e.feature_layer % len(e.backbone_config.hidden_sizes)),
        init_class=modeling_convnext.ConvNextPreTrainedModel,
    ),
    "sam": ExpertKind(
        SamVisionConfig, sam_vit_large, _build_sam, _encode_last_hidden_state, _check_last_layer_only,
        channels=lambda e: e.backbone_config.output_channels, stride=_patch_stride,
        attention_class=modeling_sam.SamPreTrainedModel, attention_fixed_at_build=True,
    ),
    "eva02": ExpertKind(
        Eva02VisionConfig, Eva02VisionConfig, lambda e: Eva02VisionModel(e.backbone_config), _encode_last_hidden_state, _check_last_layer_only,
        _hidden, _patch_stride, attention_class=Eva02VisionModel,
    ),
    "pix2struct": ExpertKind(
        Pix2StructVisionConfig, pix2struct_large, lambda e: modeling_pix2struct.Pix2StructVisionModel(e.backbone_config),
        _encode_pix2struct, _check_pix2struct, _hidden, _patch_stride,
        attention_class=modeling_pix2struct.Pix2StructPreTrainedModel, has_image_size=False, default_max_patches=2048,
        map_size_fn=lambda e: patch_grid(e.image_size, e.image_size, e.backbone_config.patch_size, e.max_patches)[0],
    ),
}


def choose_attention(expert_config, requested=None):
    """Set the expert backbone's attention kernel: `requested` (default sdpa) or the best one it supports.

    Falling back from SDPA (the default) is logged at info level; from any other requested kernel, as a warning.
    """
    kind = EXPERT_KINDS[expert_config.kind]
    wanted = requested or "sdpa"
    if kind.attention_class is None:
        chosen = "eager"  # the backbone has no attention; "eager" is what transformers accepts for such blocks
    elif kind.supports(wanted):
        chosen = wanted
    else:
        chosen = "sdpa" if kind.supports("sdpa") else "eager"
        log = logger.info if wanted == "sdpa" else logger.warning_once
        log(
            f"The {expert_config.kind} expert does not support attn_implementation={wanted!r} in this transformers "
            f"version; it uses {chosen!r} while the rest of the model uses {wanted!r}."
        )
    expert_config.backbone_config._attn_implementation = chosen
    return chosen


_INIT_TAG = "_eagle_backbone_init"


def init_backbone_block(module):
    """Draws `module`, a block of an expert's backbone assembled from transformers' blocks, as that backbone's own
    PreTrainedModel does; returns False for any other module."""
    tag = module.__dict__.get(_INIT_TAG)
    if tag is None:
        return False
    init_class, backbone_config = tag
    # `_init_weights` (the documented hook of every PreTrainedModel) reads only `self.config` in CLIP, SigLIP, DINOv2
    # and ConvNeXt on transformers 4.57.6, 5.23.0 and 5.25.0: an instance holding just that stands in for the model.
    # Should a release read more, loading fails loudly, and CI (on the newest release) names it.
    stand_in = init_class.__new__(init_class)
    stand_in.__dict__["config"] = backbone_config
    init_class._init_weights(stand_in, module)
    return True


def expert_blocks(backbone):
    """The backbone's blocks in order: its first ModuleList (ViT encoder layers, ConvNeXt stages, SAM, EVA-02 and
    Pix2Struct layers)."""
    return next((module for module in backbone.modules() if isinstance(module, nn.ModuleList)), nn.ModuleList())


def _block_attention(block):
    """The block's outermost attention module (transformers' attention modules return (output, weights))."""
    return next((module for module in block.modules() if type(module).__name__.endswith("Attention")), None)


@contextlib.contextmanager
def record_expert_outputs(experts, hidden_states=False, attentions=False):
    """While open, records each expert's hidden states (the input of its first block, then every block's output, as
    transformers counts them) and attention probabilities (every block whose attention gives them: eager kernels).
    Yields {"hidden_states": [per expert, a list], "attentions": [...]}; forward hooks, removed on exit."""
    record = {"hidden_states": [[] for _ in experts], "attentions": [[] for _ in experts]}
    handles = []

    def first(output):
        return output[0] if isinstance(output, (tuple, list)) else output

    def keep_input(store):
        return lambda module, args, kwargs: store.append(args[0] if args else kwargs["hidden_states"])

    def keep_weights(store):
        def hook(module, args, output):
            if isinstance(output, (tuple, list)) and len(output) > 1 and isinstance(output[1], torch.Tensor):
                store.append(output[1])
        return hook

    for index, expert in enumerate(experts):
        blocks = expert_blocks(expert.backbone)
        for position, block in enumerate(blocks):
            if hidden_states:
                store = record["hidden_states"][index]
                if position == 0:
                    handles.append(block.register_forward_pre_hook(keep_input(store), with_kwargs=True))
                handles.append(block.register_forward_hook(lambda module, args, output, store=store:
                                                           store.append(first(output))))
            attention = _block_attention(block) if attentions else None
            if attention is not None:
                handles.append(attention.register_forward_hook(keep_weights(record["attentions"][index])))
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


class EagleVisionExpert(nn.Module):
    """One expert: shared image -> expert resolution -> backbone -> map on the shared grid, (B, C_expert, G, G)."""

    def __init__(self, expert_config, input_mean, input_std, grid_size):
        super().__init__()
        self.expert_config = expert_config
        self.kind = EXPERT_KINDS[expert_config.kind]
        if expert_config.backbone_config._attn_implementation is None:
            choose_attention(expert_config)
        self.backbone = self.kind.build(expert_config)
        if self.kind.init_class is not None:
            for block in self.backbone.modules():  # read by `init_backbone_block` (a plain attribute, not a submodule)
                block.__dict__[_INIT_TAG] = (self.kind.init_class, expert_config.backbone_config)
        self.grid_size = grid_size
        self.gradient_checkpointing = False
        self.input_mean, self.input_std = list(input_mean), list(input_std)
        self.image_mean = expert_config.image_mean or self.input_mean
        self.image_std = expert_config.image_std or self.input_std
        scale, shift = self.normalization_map()
        self.renormalize = (self.image_mean, self.image_std) != (self.input_mean, self.input_std)
        self.register_buffer("input_scale", scale, persistent=False)
        self.register_buffer("input_shift", shift, persistent=False)

    def normalization_map(self):
        """Affine map (scale, shift), each (1, 3, 1, 1), from the processor's normalisation to this expert's."""
        scale = [s_in / s_out for s_in, s_out in zip(self.input_std, self.image_std)]
        shift = [(m_in - m_out) / s_out for m_in, m_out, s_out in zip(self.input_mean, self.image_mean, self.image_std)]
        return torch.tensor(scale).view(1, 3, 1, 1), torch.tensor(shift).view(1, 3, 1, 1)

    def checkpoint(self, function, *args):
        if self.gradient_checkpointing and self.training:
            return self._gradient_checkpointing_func(function, *args)
        return function(*args)

    def feature_map(self, pixel_values, between_layers=None):
        """(B, 3, S, S) normalised shared image -> the backbone's native map (B, feature_map_channels, h, w).

        `between_layers` ({k: f}) is for experts that run in stages (ViTs): f acts on the patch tokens after layer k.
        """
        config = self.expert_config
        if self.renormalize:
            pixel_values = pixel_values * self.input_scale.to(pixel_values.dtype) + self.input_shift.to(pixel_values.dtype)
        if pixel_values.shape[-1] != config.image_size:
            # The original resizes in fp32 with align_corners=True and no antialiasing; kept for weight compatibility.
            pixel_values = F.interpolate(
                pixel_values.float(), size=(config.image_size, config.image_size), mode="bilinear", align_corners=True
            ).to(pixel_values.dtype)
        if between_layers:
            if not self.kind.runs_in_stages:
                raise ValueError(f"The {config.kind} expert does not run in stages; `between_layers` needs a ViT.")
            return self.kind.encode(self, pixel_values, between_layers)
        return self.kind.encode(self, pixel_values)

    def to_grid(self, feature_map):
        """Native map (B, C, h, w) -> (B, C_expert, grid, grid), as the expert's config says (bilinear/unshuffle)."""
        config = self.expert_config
        return resample_to_grid(feature_map, self.grid_size, config.grid_resample, config.unshuffle_factor)

    def forward(self, pixel_values):
        """(B, 3, S, S) normalised shared image -> (B, C_expert, grid, grid)."""
        return self.to_grid(self.feature_map(pixel_values))


__all__ = ["EXPERT_KINDS", "EagleVisionExpert", "GRID_RESAMPLES", "PREFIX_POLICIES"]
