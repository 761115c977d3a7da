# Copyright 2026 The eagle-hf developers. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance
# with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software distributed under the License is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.
"""EVA-02 "det" vision backbone (EVA-02-L as used by Eagle), written for HuggingFace transformers.

A plain ViT in the ViTDet style: a stride-16 patch embedding plus an interpolated absolute
position embedding, then blocks that alternate 16x16 window attention with global attention.
Each block uses 2D rotary position embeddings (interleaved pairs) on queries and keys and a
SwiGLU MLP with a LayerNorm on its hidden layer. The output is the last block's token map in
channels-first layout (B, C, H / 16, W / 16), without a final norm.

Parameter names follow the original checkpoint (`patch_embed.proj`, `pos_embed`,
`blocks.{i}.attn.q_proj` ...), so converted weights load without renaming. The rotary tables are
recomputed on every forward and are never part of the state dict.

This file is copied next to checkpoint weights and loaded as remote code: it may only import
torch, transformers and its configuration module.
"""

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel

from .configuration_eva02 import Eva02VisionConfig


def _axis_frequencies(length, pt_seq_len, dim, theta, device):
    """Rotation angles for one spatial axis, shape (length, dim), each angle repeated twice.

    Positions are rescaled onto [0, pt_seq_len) whatever `length` is, so that a 64-token axis and a
    16-token window both span the range the frequencies were pre-trained on.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim))
    positions = torch.arange(length, device=device) / length * pt_seq_len
    angles = positions[:, None] * inv_freq[None, :]
    # Each frequency drives one (even, odd) channel pair, hence the interleaved duplication.
    return angles.repeat_interleave(2, dim=-1)


def build_rope_tables(height, width, head_dim, pt_seq_len, theta, device=None):
    """Cos / sin tables of the 2D rotary embedding for a (height, width) token grid.

    Returns two float32 tensors of shape (height * width, head_dim), rows in row-major grid order.
    Channels [0, head_dim / 2) rotate with the row index and [head_dim / 2, head_dim) with the
    column index; each half uses `head_dim / 4` frequencies.
    """
    half = head_dim // 2
    rows = _axis_frequencies(height, pt_seq_len, half, theta, device)
    cols = _axis_frequencies(width, pt_seq_len, half, theta, device)
    angles = torch.cat(
        (rows[:, None, :].expand(height, width, half), cols[None, :, :].expand(height, width, half)),
        dim=-1,
    ).reshape(height * width, head_dim)
    return angles.cos(), angles.sin()


def rotate_pairs(x):
    """Map every channel pair (a, b) of the last dimension to (-b, a): a 90 degree rotation."""
    pairs = x.unflatten(-1, (-1, 2))
    first, second = pairs.unbind(dim=-1)
    return torch.stack((-second, first), dim=-1).flatten(-2)


def apply_rotary(x, cos, sin):
    """Rotate `x` (..., N, head_dim) by the tables `cos`, `sin` (N, head_dim); same shape out.

    Pair (x[2i], x[2i + 1]) is multiplied, as a complex number, by exp(j * angle[2i]).
    """
    # The tables are cast to the activation dtype as the original (buffers cast with the model) did.
    return x * cos.to(x.dtype) + rotate_pairs(x) * sin.to(x.dtype)


def window_partition(x, window_size):
    """Cut (B, H, W, C) into windows (B * nH * nW, window_size, window_size, C).

    The map is zero-padded on the bottom / right to a multiple of the window first; the padded
    tokens take part in the attention unmasked, as in ViTDet and the original EVA-02 det code.
    Returns the windows and the padded size (Hp, Wp).
    """
    batch, height, width, channels = x.shape
    pad_h = (window_size - height % window_size) % window_size
    pad_w = (window_size - width % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    padded_h, padded_w = height + pad_h, width + pad_w
    x = x.view(batch, padded_h // window_size, window_size, padded_w // window_size, window_size, channels)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, channels)
    return windows, (padded_h, padded_w)


def window_unpartition(windows, window_size, padded_hw, hw):
    """Inverse of `window_partition`: windows back to (B, H, W, C) with the padding removed."""
    padded_h, padded_w = padded_hw
    height, width = hw
    n_h, n_w = padded_h // window_size, padded_w // window_size
    batch = windows.shape[0] // (n_h * n_w)
    x = windows.view(batch, n_h, n_w, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, padded_h, padded_w, -1)
    if padded_h != height or padded_w != width:
        x = x[:, :height, :width, :].contiguous()
    return x


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    """Plain softmax attention on (B, heads, N, head_dim) inputs.

    Returns the output as (B, N, heads, head_dim), the layout every transformers attention
    backend returns, and the attention probabilities (B, heads, N, N).
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    # Softmax in float32 so that half-precision runs do not saturate.
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


def _attention_interface(implementation) -> Callable:
    """The attention function registered for `implementation` (eager falls back to ours)."""
    if implementation is None or implementation == "eager":
        return eager_attention_forward
    # transformers >= 5 validates the name (and resolves hub kernels) in `get_interface`.
    if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
    return ALL_ATTENTION_FUNCTIONS[implementation]


class Eva02PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> channels-last (B, H / p, W / p, C)."""

    def __init__(self, config: Eva02VisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values):
        return self.proj(pixel_values).permute(0, 2, 3, 1)


class Eva02Attention(nn.Module):
    """Multi-head self-attention with 2D RoPE on queries and keys.

    Queries and values get a learned bias, keys none (the EVA-02 parameterisation), which is why
    the bias lives in `q_bias` / `v_bias` rather than in the projections.
    """

    def __init__(self, config: Eva02VisionConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        dim = config.hidden_size
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        if config.qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = None
            self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, hidden_states, rope_cos, rope_sin):
        """(B, N, C) tokens and (N, head_dim) rope tables -> ((B, N, C), attention probabilities (B, heads, N, N) or
        None), as transformers' attention modules return them (fused kernels give no probabilities)."""
        batch, seq_len, _ = hidden_states.shape
        query = self.q_proj(hidden_states)
        key = self.k_proj(hidden_states)
        value = self.v_proj(hidden_states)
        if self.q_bias is not None:
            query = query + self.q_bias
            value = value + self.v_bias
        split = (batch, seq_len, self.num_heads, self.head_dim)
        query = query.view(split).transpose(1, 2)
        key = key.view(split).transpose(1, 2)
        value = value.view(split).transpose(1, 2)
        query = apply_rotary(query, rope_cos, rope_sin).type_as(value)
        key = apply_rotary(key, rope_cos, rope_sin).type_as(value)

        attention = _attention_interface(self.config._attn_implementation)
        output, weights = attention(
            self, query, key, value, None, scaling=self.scaling, dropout=0.0, is_causal=self.is_causal
        )
        return self.proj(output.reshape(batch, seq_len, -1)), weights


class Eva02SwiGLU(nn.Module):
    """SwiGLU MLP with a LayerNorm on the gated hidden layer: (..., C) -> (..., C)."""

    def __init__(self, config: Eva02VisionConfig):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.w2 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = nn.SiLU()
        self.ffn_ln = nn.LayerNorm(config.intermediate_size, eps=config.layer_norm_eps)
        self.w3 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states):
        gated = self.act(self.w1(hidden_states)) * self.w2(hidden_states)
        return self.w3(self.ffn_ln(gated))


class Eva02DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample, in training mode only."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        return x * mask / keep_prob


class Eva02Block(GradientCheckpointingLayer):
    """Pre-norm transformer block on a channels-last map (B, H, W, C) -> (B, H, W, C).

    Window blocks attend inside `window_size` x `window_size` tiles (folded into the batch);
    global blocks attend over the whole map.
    """

    def __init__(self, config: Eva02VisionConfig, layer_idx: int, drop_path: float = 0.0):
        super().__init__()
        self.layer_idx = layer_idx
        self.is_global = layer_idx in config.global_attn_indexes
        self.window_size = 0 if self.is_global else config.window_size
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = Eva02Attention(config, layer_idx)
        self.drop_path = Eva02DropPath(drop_path)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = Eva02SwiGLU(config)

    def forward(self, hidden_states, rope_cos, rope_sin):
        """`rope_cos` / `rope_sin` must match this block's attention extent: window_size**2
        rows for a window block, H * W rows for a global block."""
        _, height, width, channels = hidden_states.shape
        x = self.norm1(hidden_states)
        if self.window_size > 0:
            x, padded_hw = window_partition(x, self.window_size)
        tile_shape = x.shape
        # Attention sees a flat token sequence per tile (a window, or the whole map).
        x = self.attn(x.reshape(tile_shape[0], -1, channels), rope_cos, rope_sin)[0].view(tile_shape)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, padded_hw, (height, width))
        hidden_states = hidden_states + self.drop_path(x)
        return hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states)))


class Eva02VisionModel(PreTrainedModel):
    """EVA-02 det backbone: (B, 3, H, W) images -> (B, hidden_size, H / p, W / p) feature map."""

    config_class = Eva02VisionConfig
    base_model_prefix = "eva02"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Eva02Block"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = False

    def __init__(self, config: Eva02VisionConfig):
        super().__init__(config)
        self.patch_embed = Eva02PatchEmbed(config)
        grid = config.pretrain_image_size // config.patch_size
        # Pre-training grid plus the CLS slot of the checkpoint; the CLS entry is never used.
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, config.hidden_size))
        # Plain Python, not torch.linspace(...).tolist(): construction must also work on the meta device.
        steps = max(config.num_hidden_layers - 1, 1)
        rates = [config.drop_path_rate * index / steps for index in range(config.num_hidden_layers)]
        self.blocks = nn.ModuleList(
            Eva02Block(config, index, drop_path=rates[index]) for index in range(config.num_hidden_layers)
        )
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """Truncated-normal projections and position embedding, unit / zero norms and biases."""
        std = self.config.initializer_range
        # `nn.init.*` is looked up at call time so transformers 5 can guard it against
        # re-initialising weights that were just loaded.
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, Eva02Attention) and module.q_bias is not None:
            nn.init.zeros_(module.q_bias)
            nn.init.zeros_(module.v_bias)
        elif isinstance(module, Eva02VisionModel):
            nn.init.trunc_normal_(module.pos_embed, std=std)

    def get_input_embeddings(self):
        return self.patch_embed.proj

    def _position_embedding(self, height, width, dtype):
        """Absolute position embedding resized to the token grid: (1, height, width, C)."""
        grid = self.config.pretrain_image_size // self.config.patch_size
        pos = self.pos_embed[:, 1:].reshape(1, grid, grid, -1)
        if (grid, grid) == (height, width):
            return pos.to(dtype)
        # Bicubic resize in float32 (not implemented for bf16 on every backend).
        resized = F.interpolate(
            pos.permute(0, 3, 1, 2).float(), size=(height, width), mode="bicubic", align_corners=False
        )
        return resized.to(dtype).permute(0, 2, 3, 1)

    def _check_pixel_values(self, pixel_values):
        """Raise ValueError unless pixel_values is (B, num_channels, H, W) with H, W multiples of p."""
        patch = self.config.patch_size
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}."
            )
        if pixel_values.shape[2] % patch or pixel_values.shape[3] % patch:
            raise ValueError(
                f"pixel_values height and width must be multiples of patch_size={patch}, "
                f"got {tuple(pixel_values.shape[2:])}."
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ):
        """Encode images.

        Args:
            pixel_values: (B, num_channels, H, W), H and W multiples of `patch_size`.
            output_hidden_states: also return the map after the embedding and after each block,
                every one as (B, C, H / p, W / p).
            return_dict: return a tuple instead of `BaseModelOutput` when False.
            kwargs: accepted for compatibility with generic callers and ignored.

        Returns:
            `BaseModelOutput` whose `last_hidden_state` is the (B, C, H / p, W / p) map of the last
            block (channels-first, no final norm).
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = self.config.return_dict
        self._check_pixel_values(pixel_values)
        x = self.patch_embed(pixel_values.to(self.patch_embed.proj.weight.dtype))
        height, width = x.shape[1], x.shape[2]
        x = x + self._position_embedding(height, width, x.dtype)

        # The tables are rebuilt per call (cheap) rather than stored, so they follow the input size
        # and device and stay out of the state dict. Window blocks always use the full window grid,
        # also when the map is smaller than a window (it is padded up to one).
        config = self.config
        head_dim = config.hidden_size // config.num_attention_heads
        window_rope = build_rope_tables(
            config.window_size, config.window_size, head_dim, config.rope_pt_seq_len, config.rope_theta, x.device
        )
        global_rope = build_rope_tables(height, width, head_dim, config.rope_pt_seq_len, config.rope_theta, x.device)
        states = [x] if output_hidden_states else None
        for block in self.blocks:
            x = block(x, *(global_rope if block.is_global else window_rope))
            if states is not None:
                states.append(x)

        last = x.permute(0, 3, 1, 2)
        hidden_states = tuple(s.permute(0, 3, 1, 2) for s in states) if states is not None else None
        if not return_dict:
            return tuple(v for v in (last, hidden_states) if v is not None)
        return BaseModelOutput(last_hidden_state=last, hidden_states=hidden_states)


__all__ = ["Eva02VisionModel"]
