# Copyright 2026 The eagle-hf developers. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance
# with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software distributed under the License is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.
"""Fusing the experts' grids (or native maps) into image tokens.

`FUSIONS` is the table behind `EagleConfig.fusion`. Each entry extends the config-side row of `FUSION_FACTS`
(configuration_experts.py: which role each expert plays, how wide the fused features are, how many image tokens one
image becomes, what else the config must satisfy) with the module that fuses (built as `model.vision_tower.fusion`, so
its parameters sit next to the projector's for training). A fusion module is called as `fusion(experts, pixel_values)` with the ordered experts (each an
`EagleVisionExpert`) and returns (B, num_image_tokens, input_width). The strategies are those the Eagle paper compares
(Shi et al., 2024, section 3.3):

* `channel_concat` (Eagle's, the default) and `sequence_append` treat every expert alike.
* `llava_hr`, `mini_gemini` and `deformable` mix a low-resolution stream with high-resolution sources. Roles follow the
  expert order: expert 0 is the low-resolution stream (its grid gives the image tokens, (B, G*G, C_0)), experts 1.. are
  the sources, read as their backbones' native maps (before any grid resampling or pixel-unshuffle).

Layers that must not start from the generic random init carry `init_fusion_weights(init, copy_)`, which the model's
`_init_weights` calls (so the weights of a loaded checkpoint are never re-set).
"""

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_experts import FUSION_FACTS, FusionFacts, adapter_layers, sequence_width


def grid_tokens(feature_map):
    """(B, C, h, w) -> (B, h*w, C), row-major."""
    return feature_map.flatten(2).transpose(1, 2)


# ----- channel_concat and sequence_append: every expert alike -----


def channel_concat(grids):
    """[(B, C_i, G, G)] in expert order -> (B, G*G, sum(C_i)): one token per grid cell, row-major."""
    return torch.cat([grid_tokens(grid) for grid in grids], dim=-1)


class ChannelConcatFusion(nn.Module):
    """`channel_concat` (Eagle's choice, the default): every expert's grid, stacked along channels.

    Each expert's map is brought to the shared G x G grid (bilinear or pixel-unshuffle, per expert) and the grids are
    concatenated channel-wise in expert order, so one image costs G*G tokens whatever the number of experts, and the
    projector reads sum(C_i) channels. The Eagle paper (Shi et al., 2024, section 3.3) picks it after comparing the
    other strategies of this table: as good as the rest, and it adds neither parameters nor tokens.
    """

    def forward(self, experts, pixel_values):
        """(B, 3, S, S) -> (B, G*G, sum(C_i))."""
        return channel_concat([expert(pixel_values) for expert in experts])


class SequenceAppendFusion(nn.Module):
    """`sequence_append`: every expert's grid tokens, projected to one width, one expert after the other.

    The Eagle paper's "sequence append" baseline: each expert's G*G grid tokens go through their own linear map to a
    common width (`fusion_hidden_size`, by default the language model's), and the experts' token sequences are
    appended in expert order. One image costs (experts x G*G) tokens, so the language model's work grows with the
    number of experts; the processor expands `<image>` to `config.image_seq_length` = experts x G*G.
    """

    def __init__(self, config):
        super().__init__()
        width = sequence_width(config)
        self.projections = nn.ModuleList(nn.Linear(expert.hidden_size, width) for expert in config.vision_experts)

    def forward(self, experts, pixel_values):
        """(B, 3, S, S) -> (B, E*G*G, width), expert 0's G*G tokens first."""
        grids = [expert(pixel_values) for expert in experts]  # [(B, C_i, G, G)]
        return torch.cat([projection(grid_tokens(grid)) for projection, grid in zip(self.projections, grids)], dim=1)


def match_side(feature_map, side):
    """(B, C, h, w) -> (B, C, side, side): average-pooled when larger, bilinear when smaller (LLaVA-HR's alignment)."""
    if tuple(feature_map.shape[-2:]) == (side, side):
        return feature_map
    if feature_map.shape[-1] > side:
        # LLaVA-HR pools a larger high-res map onto the ViT's grid; adaptive pooling also covers non-integer ratios.
        return F.adaptive_avg_pool2d(feature_map, side)
    # Upsampling in fp32, bilinear, align_corners=True: LLaVA-HR's choice and Eagle's own grid resampling.
    return F.interpolate(feature_map.float(), size=(side, side), mode="bilinear", align_corners=True).to(
        feature_map.dtype
    )


class ZeroInitLinear(nn.Linear):
    """A linear layer that starts at zero, so the residual branch it ends starts as the identity."""

    def init_fusion_weights(self, init, copy_):
        init.zeros_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)


# ----- llava_hr, mini_gemini, deformable: expert 0 is the low-resolution stream, experts 1.. the sources -----


# llava_hr


class MixtureOfResolutionAdapter(nn.Module):
    """One MR-adapter: ViT tokens (B, N, C) + high-res maps [(B, C_i, h_i, w_i)] -> ViT tokens (B, N, C).

    The ViT path gets a depthwise 7x7 conv branch, each source a 1x1 -> GELU -> 1x1 branch onto the ViT's grid; a gate
    (a small MLP on the mean of both, through tanh) scales what the sources add. Both branches end in zero-initialised
    projections, so a pretrained ViT starts unchanged.
    """

    def __init__(self, vit_width, source_widths):
        super().__init__()
        # 7x7 depthwise: LLaVA-HR's kernel for the low-resolution path.
        self.vit_conv = nn.Conv2d(vit_width, vit_width, kernel_size=7, padding=3, groups=vit_width)
        self.vit_proj = ZeroInitLinear(vit_width, vit_width)
        self.source_convs = nn.ModuleList(nn.Linear(width, width) for width in source_widths)
        self.source_projs = nn.ModuleList(ZeroInitLinear(width, vit_width) for width in source_widths)
        # Hidden width C/2 and one output: LLaVA-HR's gate, one scalar per image.
        self.gate = nn.Sequential(nn.Linear(2 * vit_width, vit_width // 2), nn.GELU(), nn.Linear(vit_width // 2, 1))

    def forward(self, tokens, source_maps):
        batch, length, width = tokens.shape
        side = int(round(length**0.5))
        vit_map = tokens.transpose(1, 2).reshape(batch, width, side, side)
        tokens = tokens + self.vit_proj(F.gelu(grid_tokens(self.vit_conv(vit_map))))
        added = 0
        for conv, proj, source_map in zip(self.source_convs, self.source_projs, source_maps):
            source = proj(F.gelu(conv(source_map.permute(0, 2, 3, 1))))  # (B, h, w, C) on the source's own grid
            added = added + grid_tokens(match_side(source.permute(0, 3, 1, 2), side))  # (B, N, C)
        gate = torch.tanh(self.gate(torch.cat([tokens, added], dim=-1).mean(1)))  # (B, 1)
        return tokens + added * gate.unsqueeze(1)


class LlavaHRFusion(nn.Module):
    """`llava_hr`: high-res features injected into the low-res ViT (expert 0) between its layers, then combined.

    LLaVA-HR (Luo et al., "Feast Your Eyes: Mixture-of-Resolution Adaptation for Multimodal Large Language Models",
    2024) runs a CLIP ViT at low resolution and a ConvNeXt at high resolution side by side, and after each quarter of
    the ViT's layers an MR-adapter adds the ConvNeXt's final map into the ViT's tokens. At the end the ViT's tokens and
    the (pooled) ConvNeXt map are projected to the ViT's width and summed. Here expert 0 must be a ViT whose layers run
    in stages (clip, siglip, dinov2) and every later expert is a source (LLaVA-HR's is a ConvNeXt; any map works).
    `config.fusion_num_adapters` adapters act after evenly spaced layers. The ViT's layers are called one by one by the
    expert itself (`EagleVisionExpert.feature_map(..., between_layers=...)`) and checkpoint themselves when enabled.

    Tokens: the shared grid, G*G; width: expert 0's grid channels.
    """

    def __init__(self, config):
        super().__init__()
        vit, *sources = config.vision_experts
        vit_width = vit.feature_map_channels
        source_widths = [source.feature_map_channels for source in sources]
        self.after_layers = adapter_layers(vit.encoder_layers, config.fusion_num_adapters)
        self.adapters = nn.ModuleList(
            MixtureOfResolutionAdapter(vit_width, source_widths) for _ in self.after_layers
        )
        self.vit_proj = nn.Linear(vit.hidden_size, vit.hidden_size)
        self.source_projs = nn.ModuleList(nn.Linear(width, vit.hidden_size) for width in source_widths)

    def forward(self, experts, pixel_values):
        """(B, 3, S, S) -> (B, G*G, C_0)."""
        vit, *sources = experts
        source_maps = [source.feature_map(pixel_values) for source in sources]  # [(B, C_i, h_i, w_i)]
        between_layers = {
            layer: (lambda tokens, adapter=adapter: adapter(tokens, source_maps))
            for layer, adapter in zip(self.after_layers, self.adapters)
        }
        vit_grid = vit.to_grid(vit.feature_map(pixel_values, between_layers))  # (B, C_0, G, G)
        fused = self.vit_proj(grid_tokens(vit_grid))
        for proj, source_map in zip(self.source_projs, source_maps):
            fused = fused + proj(grid_tokens(match_side(source_map, vit_grid.shape[-1])))
        return fused


# mini_gemini


def window_tokens(feature_map, grid_size):
    """(B, C, G*w, G*w) -> (B, G*G, w*w, C): the w x w window of each grid cell, cells and windows row-major."""
    batch, channels, side, _ = feature_map.shape
    window = side // grid_size
    windows = feature_map.reshape(batch, channels, grid_size, window, grid_size, window)
    return windows.permute(0, 2, 4, 3, 5, 1).reshape(batch, grid_size * grid_size, window * window, channels)


class WindowAttentionFusion(nn.Module):
    """`mini_gemini`: each low-res grid token attends to the high-res cells inside its own window.

    Mini-Gemini's "patch info mining" (Li et al., "Mini-Gemini: Mining the Potential of Multi-modality Vision Language
    Models", 2024): the low-resolution CLIP tokens are the queries, the high-resolution ConvNeXt map gives keys and
    values, and each query sees only the w x w sub-window of the high-res map that covers its own cell. Queries, keys
    and values go through LayerNorm + Linear into the query width; one head, softmax scaled by 1/sqrt(width); the
    result is added to the query tokens. Here expert 0 gives the queries (its grid) and every later expert is a source
    whose native map side must be a multiple of the grid (window = side / grid); one softmax runs over the windows of
    all sources together.

    Tokens: the shared grid, G*G; width: expert 0's grid channels.
    """

    def __init__(self, config):
        super().__init__()
        query, *sources = config.vision_experts
        width = query.hidden_size
        self.grid_size = config.grid_size
        self.query = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))
        self.keys = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(s.feature_map_channels), nn.Linear(s.feature_map_channels, width))
            for s in sources
        )
        self.values = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(s.feature_map_channels), nn.Linear(s.feature_map_channels, width))
            for s in sources
        )

    def forward(self, experts, pixel_values):
        """(B, 3, S, S) -> (B, G*G, C_0)."""
        query_expert, *sources = experts
        tokens = grid_tokens(query_expert(pixel_values))  # (B, G*G, C)
        windows = [window_tokens(source.feature_map(pixel_values), self.grid_size) for source in sources]
        keys = torch.cat([key(window) for key, window in zip(self.keys, windows)], dim=2)  # (B, G*G, K, C)
        values = torch.cat([value(window) for value, window in zip(self.values, windows)], dim=2)
        queries = self.query(tokens).unsqueeze(2)  # (B, G*G, 1, C)
        scores = queries @ keys.transpose(-1, -2) / math.sqrt(keys.shape[-1])  # (B, G*G, 1, K)
        mined = (scores.softmax(-1) @ values).squeeze(2)  # (B, G*G, C)
        return tokens + mined


# deformable


class SamplingOffsets(nn.Linear):
    """Query (.., C) -> offsets (.., heads * levels * points * 2), in cells of each source; Deformable-DETR's init."""

    def __init__(self, width, num_heads, num_levels, num_points):
        super().__init__(width, num_heads * num_levels * num_points * 2)
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points

    def init_fusion_weights(self, init, copy_):
        # Zero weights, and a bias that puts head h's points on a ray at angle 2*pi*h/heads, point p at distance p+1
        # (on the unit square's border): Deformable-DETR's start, every head looking a different way.
        init.zeros_(self.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (heads, 2) as (x, y)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        distances = torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        bias = directions.view(-1, 1, 1, 2) * distances  # (heads, 1, points, 2)
        copy_(self.bias, bias.expand(-1, self.num_levels, -1, -1).reshape(-1))


class DeformableFusion(nn.Module):
    """`deformable`: each low-res grid token samples every high-res source at a few learned offsets.

    Multi-scale deformable attention (Zhu et al., "Deformable DETR", 2021) in place of Mini-Gemini's fixed window, the
    variant the Eagle paper introduces as a new baseline. From its own (layer-normed) token each query predicts, per
    head and per source ("level"), `fusion_num_points` sampling offsets around its cell's centre (in cells of that
    source) and one weight per sample (softmax over the levels' points together); the sources' values (a linear map
    into the query width) are read bilinearly at those points, so a source map of any size works. The weighted sum goes
    through an output projection and is added to the query tokens. Offsets start on Deformable-DETR's rays and the
    sample weights start uniform (zero-initialised).

    Tokens: the shared grid, G*G; width: expert 0's grid channels.
    """

    def __init__(self, config):
        super().__init__()
        query, *sources = config.vision_experts
        width = query.hidden_size
        self.num_heads, self.num_points = config.fusion_num_heads, config.fusion_num_points
        self.query_norm = nn.LayerNorm(width)
        self.offsets = SamplingOffsets(width, self.num_heads, len(sources), self.num_points)
        self.weights = ZeroInitLinear(width, self.num_heads * len(sources) * self.num_points)
        self.values = nn.ModuleList(nn.Linear(s.feature_map_channels, width) for s in sources)
        self.output = nn.Linear(width, width)

    def forward(self, experts, pixel_values):
        """(B, 3, S, S) -> (B, G*G, C_0)."""
        query_expert, *sources = experts
        grid = query_expert(pixel_values)  # (B, C, G, G)
        tokens = grid_tokens(grid)
        batch, num_queries, _ = tokens.shape
        queries = self.query_norm(tokens)
        offsets = self.offsets(queries).view(batch, num_queries, self.num_heads, len(sources), self.num_points, 2)
        weights = self.weights(queries).view(batch, num_queries, self.num_heads, -1).softmax(-1)
        weights = weights.view(batch, num_queries, self.num_heads, len(sources), self.num_points)
        centres = cell_centres(grid.shape[-1], tokens)  # (G*G, 2) as (x, y) in [0, 1]
        sampled = 0
        for level, (source, value) in enumerate(zip(sources, self.values)):
            source_map = source.feature_map(pixel_values)  # (B, C_i, h, w)
            values = value(source_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, h, w)
            cells = torch.tensor([source_map.shape[-1], source_map.shape[-2]], dtype=tokens.dtype, device=tokens.device)
            points = centres.view(1, -1, 1, 1, 2) + offsets[:, :, :, level] / cells  # (B, Q, heads, points, 2)
            sampled = sampled + self._sample(values, points, weights[:, :, :, level])
        return tokens + self.output(sampled)

    def _sample(self, values, points, weights):
        """values (B, C, h, w), points (B, Q, heads, P, 2) in [0, 1], weights (B, Q, heads, P) -> (B, Q, C)."""
        batch, channels, height, width = values.shape
        num_queries = points.shape[1]
        head_values = values.reshape(batch * self.num_heads, channels // self.num_heads, height, width)
        grid = (2 * points - 1).permute(0, 2, 1, 3, 4).reshape(batch * self.num_heads, num_queries, self.num_points, 2)
        # Bilinear, zeros outside, align_corners=False: Deformable-DETR's sampling (cell centres at (i + 0.5) / h).
        samples = F.grid_sample(head_values, grid.to(values.dtype), mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (B*heads, C/heads, Q, P)
        head_weights = weights.permute(0, 2, 1, 3).reshape(batch * self.num_heads, 1, num_queries, self.num_points)
        out = (samples * head_weights).sum(-1)  # (B*heads, C/heads, Q)
        return out.view(batch, channels, num_queries).transpose(1, 2)


def cell_centres(grid_size, like):
    """(G*G, 2): the (x, y) centre of each grid cell, row-major, in [0, 1], with `like`'s dtype and device."""
    steps = (torch.arange(grid_size, dtype=like.dtype, device=like.device) + 0.5) / grid_size
    y, x = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([x, y], dim=-1).reshape(-1, 2)


@dataclass(frozen=True)
class FusionKind(FusionFacts):
    """A row of `FUSION_FACTS` plus `build(config)`: the module at `vision_tower.fusion`."""

    build: Callable = None


def _fusion(name, *, build):
    return FusionKind(**FUSION_FACTS[name].facts(), build=build)


FUSIONS = {
    "channel_concat": _fusion("channel_concat", build=lambda config: ChannelConcatFusion()),
    "sequence_append": _fusion("sequence_append", build=SequenceAppendFusion),
    "llava_hr": _fusion("llava_hr", build=LlavaHRFusion),
    "mini_gemini": _fusion("mini_gemini", build=WindowAttentionFusion),
    "deformable": _fusion("deformable", build=DeformableFusion),
}


__all__ = [
    "FUSIONS", "ChannelConcatFusion", "DeformableFusion", "FusionKind", "LlavaHRFusion", "MixtureOfResolutionAdapter",
    "SequenceAppendFusion", "WindowAttentionFusion", "adapter_layers", "channel_concat", "match_side",
    "window_tokens",
]
