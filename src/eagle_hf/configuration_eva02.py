# Copyright 2026 The eagle-hf developers. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance
# with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software distributed under the License is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.
"""Configuration of the EVA-02 "det" vision backbone used as one of Eagle's vision experts.

The defaults describe EVA-02-L as Eagle builds it (ViTDet-style plain ViT with interleaved
window / global attention blocks, 2D RoPE and SwiGLU MLPs), taking 1024x1024 images and
producing a (1024, 64, 64) feature map.
"""

from transformers import PretrainedConfig

# Every third block (2, 5, ..., 23) attends globally; the others use 16x16 windows.
_DEFAULT_GLOBAL_ATTN_INDEXES = (2, 5, 8, 11, 14, 17, 20, 23)


def _require_positive_int(name, value):
    """Raise ValueError unless `value` is an int > 0 (bools are rejected too)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def _require_positive_number(name, value):
    """Raise ValueError unless `value` is a real number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive number, got {value!r}.")


class Eva02VisionConfig(PretrainedConfig):
    """Hyper-parameters of `Eva02VisionModel`.

    Args:
        image_size: nominal input side in pixels (the model accepts any multiple of `patch_size`).
        patch_size: side of the square, non-overlapping patches of the patch embedding.
        num_channels: channels of the input images.
        hidden_size: token width C; also the channel count of the output map.
        num_hidden_layers: number of transformer blocks.
        num_attention_heads: attention heads; `hidden_size / num_attention_heads` must be a
            multiple of 4 because the 2D RoPE rotates pairs on each of the two spatial axes.
        intermediate_size: hidden width of the SwiGLU MLP (int(1024 * 8 / 3) = 2730 for EVA-02-L).
        qkv_bias: learn a bias for queries and values (keys never get one).
        window_size: side, in tokens, of the square windows of the non-global blocks.
        global_attn_indexes: indexes of the blocks that attend over the whole map.
        pretrain_image_size: image side the absolute position embedding was trained at; the
            embedding grid is `pretrain_image_size // patch_size` squared, plus one CLS slot.
        rope_theta: RoPE frequency base.
        rope_pt_seq_len: number of positions (per axis) the RoPE frequencies were trained for;
            actual positions are rescaled onto `[0, rope_pt_seq_len)`.
        layer_norm_eps: epsilon of every LayerNorm.
        initializer_range: std of the truncated normal used to initialise weights.
        drop_path_rate: maximal stochastic-depth rate (linearly increased over the blocks);
            only active in training mode.
    """

    model_type = "eagle_hf_eva02"

    def __init__(
        self,
        image_size=1024,
        patch_size=16,
        num_channels=3,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=2730,
        qkv_bias=True,
        window_size=16,
        global_attn_indexes=_DEFAULT_GLOBAL_ATTN_INDEXES,
        pretrain_image_size=224,
        rope_theta=10000.0,
        rope_pt_seq_len=16,
        layer_norm_eps=1e-6,
        initializer_range=0.02,
        drop_path_rate=0.0,
        **kwargs,
    ):
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.qkv_bias = qkv_bias
        self.window_size = window_size
        # A list (not a tuple) so that the JSON round trip gives back an equal value.
        self.global_attn_indexes = list(global_attn_indexes)
        self.pretrain_image_size = pretrain_image_size
        self.rope_theta = rope_theta
        self.rope_pt_seq_len = rope_pt_seq_len
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.drop_path_rate = drop_path_rate
        self._validate_eva02()
        super().__init__(**kwargs)

    def _validate_eva02(self):
        """Check the sizes are mutually consistent; raise ValueError naming what was expected."""
        for name in (
            "image_size",
            "patch_size",
            "num_channels",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "window_size",
            "pretrain_image_size",
            "rope_pt_seq_len",
        ):
            _require_positive_int(name, getattr(self, name))
        for name in ("rope_theta", "layer_norm_eps", "initializer_range"):
            _require_positive_number(name, getattr(self, name))
        if not isinstance(self.qkv_bias, bool):
            raise ValueError(f"`qkv_bias` must be True or False, got {self.qkv_bias!r}.")
        if isinstance(self.drop_path_rate, bool) or not isinstance(self.drop_path_rate, (int, float)):
            raise ValueError(f"`drop_path_rate` must be a number in [0, 1), got {self.drop_path_rate!r}.")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"`drop_path_rate` must be in [0, 1), got {self.drop_path_rate!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` must be divisible by `num_attention_heads`, got hidden_size="
                f"{self.hidden_size} and num_attention_heads={self.num_attention_heads}."
            )
        head_dim = self.hidden_size // self.num_attention_heads
        if head_dim % 4 != 0:
            # Half of each head is rotated by the row position, half by the column position,
            # and each half is rotated as (even, odd) pairs: head_dim must split into 2 x 2.
            raise ValueError(
                f"head dim (`hidden_size / num_attention_heads`) must be a multiple of 4 for the 2D "
                f"rotary embedding, got {head_dim} (hidden_size={self.hidden_size}, "
                f"num_attention_heads={self.num_attention_heads})."
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"`image_size` must be a multiple of `patch_size`, got image_size={self.image_size} "
                f"and patch_size={self.patch_size}."
            )
        if self.pretrain_image_size < self.patch_size:
            raise ValueError(
                f"`pretrain_image_size` must be at least `patch_size`, got pretrain_image_size="
                f"{self.pretrain_image_size} and patch_size={self.patch_size}."
            )
        self._validate_global_attn_indexes()

    def _validate_global_attn_indexes(self):
        """Global block indexes must be distinct ints in [0, num_hidden_layers)."""
        allowed = f"integers in [0, {self.num_hidden_layers - 1}]"
        for index in self.global_attn_indexes:
            if isinstance(index, bool) or not isinstance(index, int):
                raise ValueError(f"`global_attn_indexes` must hold {allowed}, got {index!r}.")
            if not 0 <= index < self.num_hidden_layers:
                raise ValueError(
                    f"`global_attn_indexes` must hold {allowed} (num_hidden_layers="
                    f"{self.num_hidden_layers}), got {index}."
                )
        if len(set(self.global_attn_indexes)) != len(self.global_attn_indexes):
            raise ValueError(f"`global_attn_indexes` must not repeat an index, got {self.global_attn_indexes}.")
