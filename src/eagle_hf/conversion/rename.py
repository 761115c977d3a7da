"""Anchored rename tables from the original checkpoint layouts to ours; every source key must meet one rule.

A table is an ordered tuple of rules, first match wins:
- `Rename(pattern, template)`: the key becomes `re.sub(pattern, template, key)`;
- `Drop(pattern, reason)`: the tensor has no place in ours, for the stated reason;
- `Nest(pattern, prefix, table)`: the named group `rest` is renamed by `table` and `prefix` (a template on the other
  groups) is put in front; this is how one expert table serves every position of an expert in the tower.
A key no rule matches is an error, and so is a key renamed to something the model does not hold.

Original layouts (per expert, under NVEagle's `model.vision_tower.vision_towers.{i}.vision_tower.` or LLaVA's
`model.vision_tower.vision_tower.`):
- CLIP: transformers' `CLIPVisionModel` with (<= 4.57) or without (5.x) the `vision_model.` level;
- ConvNeXt: timm's layout, layer-scale stored as `weight` in Eagle's timm copy (`gamma` in older timm files);
- SAM: transformers' `SamVisionEncoder`, neck cut to `conv1` + `layer_norm1` (as ours);
- EVA-02: the original names (as ours) plus RoPE tables under `rope_win.*`, `rope_glb.*` and `blocks.{l}.attn.rope.*`;
- Pix2Struct: transformers' `Pix2StructVisionModel` (as ours).
"""

import re
from dataclasses import dataclass
from typing import Tuple

from ..modeling_eagle import MODULE_PREFIXES
from .source import ConversionError


@dataclass(frozen=True)
class Rename:
    pattern: str
    template: str


@dataclass(frozen=True)
class Drop:
    pattern: str
    reason: str


@dataclass(frozen=True)
class Nest:
    pattern: str
    prefix: str
    table: Tuple


def apply_table(table, key):
    """`key` renamed by `table`: the new key, or a `Drop` when the tensor is unused; None when no rule matches."""
    for rule in table:
        match = re.fullmatch(rule.pattern, key)
        if match is None:
            continue
        if isinstance(rule, Drop):
            return rule
        if isinstance(rule, Rename):
            return match.expand(rule.template)
        inner = apply_table(rule.table, match.group("rest"))
        if inner is None or isinstance(inner, Drop):
            return inner
        return match.expand(rule.prefix) + inner
    return None


def _indices(indices):
    """A regex alternation matching exactly these layer indices (never matches when empty)."""
    return "(?:" + "|".join(str(i) for i in indices) + ")" if indices else "(?!)"


# ----- one table per expert kind: original inner key -> key under our `backbone.` -----


def clip_table(expert):
    """CLIP, with or without `vision_model.`; layers after the feature layer and post_layernorm are unused."""
    total = expert.backbone_config.num_hidden_layers
    kept = expert.feature_layer + 1 + total if expert.feature_layer < 0 else expert.feature_layer
    v = r"(?:vision_model\.)?"
    return (
        # transformers < 4.31 saved this buffer; it is rebuilt from the config
        Drop(v + r"embeddings\.position_ids", "a non-persistent buffer rebuilt from the config"),
        Rename(v + r"(embeddings\.(?:class_embedding|patch_embedding\.weight|position_embedding\.weight))", r"\1"),
        Rename(v + r"(pre_layrnorm\.(?:weight|bias))", r"\1"),
        Rename(v + rf"(encoder\.layers\.{_indices(range(kept))}\..+)", r"\1"),
        Drop(v + rf"encoder\.layers\.{_indices(range(kept, total))}\..+", "a layer after the selected feature layer"),
        Drop(v + r"post_layernorm\.(?:weight|bias)", "the features are read before CLIP's post-layernorm"),
    )


def clip_model_extras():
    """The text half of a full `CLIPModel` (LLaVA's separate tower checkpoint): unused by a vision expert."""
    return (
        Drop(r"text_model\..+", "CLIP's text encoder"),
        Drop(r"(?:visual|text)_projection\.weight", "CLIP's contrastive projections"),
        Drop(r"logit_scale", "CLIP's contrastive temperature"),
    )


def convnext_table(expert):
    """timm ConvNeXt -> transformers' ConvNeXt blocks; stages after the feature stage and the head are unused."""
    stages = len(expert.backbone_config.hidden_sizes)
    kept = expert.feature_layer % stages + 1
    s = rf"stages\.({_indices(range(kept))})"
    block = s + r"\.blocks\.(\d+)"
    return (
        Rename(r"stem\.0\.(weight|bias)", r"embeddings.patch_embeddings.\1"),
        Rename(r"stem\.1\.(weight|bias)", r"embeddings.layernorm.\1"),
        Rename(s + r"\.downsample\.([01])\.(weight|bias)", r"encoder.stages.\1.downsampling_layer.\2.\3"),
        Rename(block + r"\.conv_dw\.(weight|bias)", r"encoder.stages.\1.layers.\2.dwconv.\3"),
        Rename(block + r"\.norm\.(weight|bias)", r"encoder.stages.\1.layers.\2.layernorm.\3"),
        Rename(block + r"\.mlp\.fc1\.(weight|bias)", r"encoder.stages.\1.layers.\2.pwconv1.\3"),
        Rename(block + r"\.mlp\.fc2\.(weight|bias)", r"encoder.stages.\1.layers.\2.pwconv2.\3"),
        # Layer-scale: `weight` in Eagle's copy of timm, `gamma` in timm files older than the rename.
        Rename(block + r"\.(?:weight|gamma)", r"encoder.stages.\1.layers.\2.layer_scale_parameter"),
        Drop(rf"stages\.{_indices(range(kept, stages))}\..+", "a stage after the selected feature stage"),
        Drop(r"head\.(?:norm|fc)\.(?:weight|bias)", "timm's classifier head (the features are taken before it)"),
    )


def sam_table(expert):
    """SAM's vision encoder: already in transformers' layout, and the neck is already cut to conv1 + layer_norm1."""
    return (
        Rename(r"(pos_embed|patch_embed\.projection\.(?:weight|bias))", r"\1"),
        Rename(r"(layers\.\d+\.(?:layer_norm[12]|attn\.qkv|attn\.proj|mlp\.lin[12])\.(?:weight|bias))", r"\1"),
        Rename(r"(layers\.\d+\.attn\.rel_pos_[hw])", r"\1"),
        Rename(r"(neck\.conv1\.weight|neck\.layer_norm1\.(?:weight|bias))", r"\1"),
    )


def eva02_rope_schedule(rows, hidden_size):
    """{block: (positions, head dim)} of EVA-02's per-block RoPE tables -> the attention schedule they record:
    {num_attention_heads, window_size, global_attn_indexes}. A windowed block's table covers one window, a global
    block's the whole map. None unless every block has its table; only the heads when all tables are alike (a map
    no larger than a window: the schedule cannot be read, and does not change the features)."""
    if not rows or sorted(rows) != list(range(len(rows))):
        return None
    heads = dict(num_attention_heads=hidden_size // rows[0][1])
    sizes = {shape[0] for shape in rows.values()}
    if len(sizes) == 1:
        return heads
    window = min(sizes)
    return dict(heads, window_size=round(window**0.5),
                global_attn_indexes=[block for block, shape in sorted(rows.items()) if shape[0] != window])


def eva02_table(expert):
    """EVA-02 det: the original names are ours; the RoPE tables (three aliases of two buffers) are recomputed."""
    return (
        Drop(r"(?:rope_win|rope_glb|blocks\.\d+\.attn\.rope)\.freqs_(?:cos|sin)", "RoPE tables are recomputed"),
        Rename(r"(pos_embed|patch_embed\.proj\.(?:weight|bias))", r"\1"),
        Rename(r"(blocks\.\d+\.(?:norm[12]|attn\.[qkv]_proj|attn\.proj|mlp\.w[123]|mlp\.ffn_ln)\.(?:weight|bias))",
               r"\1"),
        Rename(r"(blocks\.\d+\.attn\.[qv]_bias)", r"\1"),
    )


def pix2struct_table(expert):
    """Pix2Struct's encoder: transformers' `Pix2StructVisionModel` layout, as ours."""
    return (
        Rename(r"(embeddings\.(?:patch_projection\.(?:weight|bias)|row_embedder\.weight|column_embedder\.weight))",
               r"\1"),
        Rename(r"(encoder\.layer\.\d+\.(?:pre_attention_layer_norm|pre_mlp_layer_norm)\.weight)", r"\1"),
        Rename(r"(encoder\.layer\.\d+\.(?:attention\.(?:query|key|value|output)|mlp\.(?:wi_0|wi_1|wo))\.weight)",
               r"\1"),
        Rename(r"(layernorm\.weight)", r"\1"),
    )


def siglip_table(expert):
    """SigLIP's vision tower (`SiglipVisionModel`, with or without `vision_model.`): layers after the feature layer,
    the post-layernorm and the attention-pooling head are unused."""
    total = expert.backbone_config.num_hidden_layers
    kept = expert.feature_layer + 1 + total if expert.feature_layer < 0 else expert.feature_layer
    v = r"(?:vision_model\.)?"
    return (
        Rename(v + r"(embeddings\.(?:patch_embedding\.(?:weight|bias)|position_embedding\.weight))", r"\1"),
        Rename(v + rf"(encoder\.layers\.{_indices(range(kept))}\..+)", r"\1"),
        Drop(v + rf"encoder\.layers\.{_indices(range(kept, total))}\..+", "a layer after the selected feature layer"),
        Drop(v + r"post_layernorm\.(?:weight|bias)", "the features are read before the post-layernorm"),
        Drop(v + r"head\..+", "SigLIP's attention-pooling head"),
        Drop(r"text_model\..+", "SigLIP's text encoder"),
        Drop(r"logit_(?:scale|bias)", "SigLIP's contrastive temperature and bias"),
    )


EXPERT_TABLES = {
    "clip": clip_table,
    "siglip": siglip_table,
    "convnext": convnext_table,
    "sam": sam_table,
    "eva02": eva02_table,
    "pix2struct": pix2struct_table,
}


def expert_table(expert):
    if expert.kind not in EXPERT_TABLES:
        raise ConversionError(f"No original checkpoint layout is known for a {expert.kind!r} expert.")
    return EXPERT_TABLES[expert.kind](expert)


# ----- whole checkpoints -----

LLAMA_TABLE = (
    # transformers < 4.31 saved RoPE's inverse frequencies; they are rebuilt from the config
    Drop(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", "a non-persistent buffer rebuilt from the config"),
    Rename(r"model\.((?:embed_tokens|norm)\.weight|layers\.\d+\..+)", MODULE_PREFIXES["language_model"] + r"\1"),
    Rename(r"lm_head\.weight", r"lm_head.weight"),
)


def projector_table(config):
    """LLaVA's projector: `nn.Sequential(Linear, GELU, Linear)` saves as `0` / `2`; `linear` is one bare Linear."""
    if config.projector_type == "mlp2x_gelu":
        return (
            Rename(r"model\.mm_projector\.0\.(weight|bias)", MODULE_PREFIXES["projector"] + r"linear_1.\1"),
            Rename(r"model\.mm_projector\.2\.(weight|bias)", MODULE_PREFIXES["projector"] + r"linear_2.\1"),
        )
    return (Rename(r"model\.mm_projector\.(weight|bias)", MODULE_PREFIXES["projector"] + r"linear_1.\1"),)


def expert_prefix(index):
    return MODULE_PREFIXES["expert"].format(index) + "backbone."


def nveagle_table(config):
    """NVEagle (`EagleLlamaForCausalLM`): experts under `vision_towers.{i}.vision_tower.` in tower-string order."""
    experts = tuple(
        Nest(rf"model\.vision_tower\.vision_towers\.{index}\.vision_tower\.(?P<rest>.+)", expert_prefix(index),
             expert_table(expert))
        for index, expert in enumerate(config.vision_experts)
    )
    return experts + projector_table(config) + LLAMA_TABLE


def llava_table(config):
    """LLaVA-1.5 original (`LlavaLlamaForCausalLM`); the CLIP is present only in checkpoints that kept the tower."""
    clip = Nest(r"model\.vision_tower\.vision_tower\.(?P<rest>.+)", expert_prefix(0),
                expert_table(config.vision_experts[0]))
    return (clip,) + projector_table(config) + LLAMA_TABLE


def clip_tower_table(config):
    """A separate CLIP checkpoint (`CLIPModel` or `CLIPVisionModel`, any transformers layout) for LLaVA's expert 0."""
    return (Nest(r"(?P<rest>.+)", expert_prefix(0), expert_table(config.vision_experts[0]) + clip_model_extras()),)


def llava_hf_table(config):
    """transformers' LLaVA, saved before 4.52, by 4.52-4.57, or by 5.x (the three layouts of its state dict)."""
    clip = expert_table(config.vision_experts[0])
    return (
        Nest(r"(?:model\.)?vision_tower\.(?P<rest>.+)", expert_prefix(0), clip),
        Rename(r"(?:model\.)?multi_modal_projector\.(linear_[12]\.(?:weight|bias))",
               MODULE_PREFIXES["projector"] + r"\1"),
        Rename(r"(?:model\.language_model\.|language_model\.model\.)(.+)", MODULE_PREFIXES["language_model"] + r"\1"),
        Rename(r"(?:language_model\.)?lm_head\.weight", r"lm_head.weight"),
    )


@dataclass
class RenamePlan:
    """Where every source key goes: `targets` {source: ours}, `dropped` {source: reason}."""

    targets: dict
    dropped: dict


def plan_renames(table, source_keys, model_keys, what):
    """Apply `table` to every key; raise one `ConversionError` listing every unmapped, stray or duplicate key."""
    targets, dropped, unmapped, stray, owners = {}, {}, [], [], {}
    for key in sorted(source_keys):
        result = apply_table(table, key)
        if result is None:
            unmapped.append(key)
        elif isinstance(result, Drop):
            dropped[key] = result.reason
        elif result not in model_keys:
            stray.append(f"{key} -> {result}")
        elif result in owners:
            stray.append(f"{key} -> {result} (also the target of {owners[result]})")
        else:
            targets[key] = owners[result] = result
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} key(s) that no rename rule maps: {unmapped}")
    if stray:
        problems.append(f"{len(stray)} key(s) renamed to a tensor the model does not hold or holds twice: {stray}")
    if problems:
        raise ConversionError(f"Cannot convert {what}: " + "; ".join(problems) + ".")
    return RenamePlan(targets, dropped)


__all__ = ["Drop", "Nest", "Rename", "RenamePlan", "apply_table", "clip_model_extras", "clip_tower_table",
           "expert_prefix", "expert_table", "llava_hf_table", "llava_table", "nveagle_table", "plan_renames"]
