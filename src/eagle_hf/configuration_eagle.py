# Copyright 2026 The eagle-hf developers. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance
# with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software distributed under the License is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.
"""Configuration of Eagle (a mixture of vision experts in front of a causal LM) and of LLaVA-1.5, its one-expert case.

`EagleConfig` is a composite config in the classic `PretrainedConfig` style (explicit `__init__`, `sub_configs`) so that
the same file loads as remote code on transformers 4.57 and 5.x. The vision side is an *ordered* list of
`EagleVisionExpertConfig`; the order is the channel order of the fused features.
"""

import functools

from transformers import AutoConfig, LlamaConfig, PretrainedConfig
from transformers.activations import ACT2FN
from transformers.utils import logging

from .configuration_experts import EXPERT_FACTS, FUSION_FACTS, GRID_RESAMPLES, PREFIX_POLICIES

# transformers 4.57 copies, for a local checkpoint folder, only the sibling files the loaded file imports *directly*:
# every file this one needs through configuration_experts is therefore named here too. No modeling file is imported:
# loading a config needs no torch.
from .configuration_eva02 import Eva02VisionConfig  # noqa: F401, E402
from .pix2struct_patches import patch_grid  # noqa: F401, E402


logger = logging.get_logger(__name__)

# OpenAI CLIP statistics: the one normalisation Eagle applies to the shared 1024x1024 input.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PROJECTOR_TYPES = ("linear", "mlp2x_gelu")


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {sorted(allowed)}, got {value!r}.")
    return value


def _as_config(value, default_factory, what):
    """dict / config / None -> a `PretrainedConfig` built through `default_factory` for None and dicts."""
    if value is None:
        return default_factory()
    if isinstance(value, dict):
        return default_factory(**value)
    if isinstance(value, PretrainedConfig):
        return value
    raise ValueError(f"`{what}` must be a dict, a PretrainedConfig or None, got {type(value).__name__}.")


def _positive(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int{' or None' if allow_none else ''}, got {value!r}.")
    return value


def _integer(name, value, minimum=None):
    """An int (a float only when it is a whole number, as JSON may write one); never truncated, never a bool."""
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or (minimum is not None and value < minimum):
        what = "must be positive (an int >= 1)" if minimum == 1 else (
            f"must be an int >= {minimum}" if minimum is not None else "must be an int")
        raise ValueError(f"`{name}` {what}, got {value!r}.")
    return int(value)


@functools.lru_cache(maxsize=1)
def _base_config_keys():
    """Every key a bare PretrainedConfig holds (built once: configs are made for every expert of every load)."""
    base = PretrainedConfig()
    return frozenset(base.to_dict()) | frozenset(base.__dict__)


def _refuse_misspelt(config, kwargs, where, derived=(), nested=None):
    """PretrainedConfig keeps unknown keys as attributes (metadata of other tools); a key that is nearly one of this
    config's own `__init__` arguments is a typo that would be ignored, and one that is a field of the `nested`
    (backbone) config sits at the wrong level: both are refused."""
    import difflib
    import inspect

    def arguments(cls):
        return {name for name in inspect.signature(cls.__init__).parameters if name not in ("self", "args", "kwargs")}

    fields = sorted(arguments(type(config)))
    base = _base_config_keys() | set(derived)
    nested_fields = arguments(type(nested)) - base if nested is not None else set()
    for key in kwargs:
        if key in base or key.startswith("_"):
            continue
        if key in nested_fields:
            raise ValueError(f"{where}: `{key}` is a field of its backbone config, not of the expert; put it under "
                             f"backbone_config, e.g. {{'backbone_config': {{'{key}': {kwargs[key]!r}}}}}.")
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.8)
        if close:
            raise ValueError(f"{where}: unknown field `{key}` (did you mean `{close[0]}`?); the fields are "
                             f"{sorted(fields)}.")


def _stats(value, what):
    if value is None:
        return None
    value = [float(v) for v in value]
    if len(value) != 3:
        raise ValueError(f"`{what}` must hold 3 values (one per RGB channel), got {len(value)}.")
    return value


class EagleVisionExpertConfig(PretrainedConfig):
    r"""
    One vision expert: which backbone, at which resolution, which layer, and how its output reaches the shared grid.

    Args:
        kind (`str`): the backbone family, one of `EXPERT_FACTS` (`clip`, `siglip`, `dinov2`, `convnext`, `sam`,
            `eva02`, `pix2struct`).
        backbone_config (`dict` or `PretrainedConfig`, *optional*): the backbone's own config. A dict overrides single
            fields of the full-size backbone Eagle uses for that kind (which is the default).
        image_size (`int`, *optional*): the resolution the expert sees; the shared image is resized to it inside the
            model. Defaults to the backbone config's `image_size` and is written back into it (one value, never two).
        feature_layer (`int`, *optional*, defaults to -1): hidden state to take (ViTs: index into the hidden states,
            0 = embeddings; ConvNeXt: stage index). Layers after it are pruned at construction.
        prefix_tokens (`str`, *optional*): `"drop"` (drop CLS/register tokens after the encoder), `"drop_before_encoder"`
            (Eagle's CLIP: before the pre-layernorm, so they never take part in attention) or `"keep"`.
        grid_resample (`str`, *optional*, defaults to `"bilinear"`): `"bilinear"` or `"pixel_unshuffle"` (space to
            channels by `unshuffle_factor`, then bilinear if the grid still differs).
        unshuffle_factor (`int`, *optional*, defaults to 2): the pixel-unshuffle factor.
        image_mean / image_std (`list[float]`, *optional*): statistics the backbone expects; `None` means "the same as
            the model input". When they differ the model re-normalises the input for this expert.
        max_patches (`int`, *optional*): Pix2Struct only, the flattened-patch budget (2048 in Eagle).
    """

    model_type = "eagle_hf_expert"

    def __init__(
        self,
        kind="clip",
        backbone_config=None,
        image_size=None,
        feature_layer=-1,
        prefix_tokens=None,
        grid_resample="bilinear",
        unshuffle_factor=2,
        image_mean=None,
        image_std=None,
        max_patches=None,
        **kwargs,
    ):
        spec = EXPERT_FACTS.get(kind)
        if spec is None:
            raise ValueError(f"Unknown vision expert kind {kind!r}; expected one of {sorted(EXPERT_FACTS)}.")
        self.kind = kind
        if isinstance(backbone_config, dict):
            backbone_config = {k: v for k, v in backbone_config.items() if k != "model_type"}
        self.backbone_config = _as_config(backbone_config, spec.default_config, "backbone_config")
        if not isinstance(self.backbone_config, spec.config_class):
            raise ValueError(
                f"Expert kind {kind!r} needs a {spec.config_class.__name__}, got {type(self.backbone_config).__name__}."
            )
        _refuse_misspelt(self, kwargs, f"Vision expert {kind!r}", derived=("hidden_size", "feature_map_size"),
                         nested=self.backbone_config)
        self.image_size = self._resolve_image_size(spec, image_size)
        self.feature_layer = _integer("feature_layer", feature_layer)
        self.prefix_tokens = _choice("prefix_tokens", prefix_tokens or spec.default_prefix_policy, PREFIX_POLICIES)
        self.grid_resample = _choice("grid_resample", grid_resample, GRID_RESAMPLES)
        self.unshuffle_factor = _integer("unshuffle_factor", unshuffle_factor, minimum=1)
        self.image_mean = _stats(image_mean, "image_mean")
        self.image_std = _stats(image_std, "image_std")
        self.max_patches = _integer("max_patches", max_patches) if max_patches is not None else spec.default_max_patches
        kwargs.pop("hidden_size", None)  # derived; written to JSON for readers, never read back
        kwargs.pop("feature_map_size", None)
        super().__init__(**kwargs)
        spec.validate(self)
        if self.grid_resample == "pixel_unshuffle" and self.unshuffle_factor < 2:
            raise ValueError(f"`unshuffle_factor` must be >= 2 with pixel_unshuffle, got {self.unshuffle_factor}.")

    def _resolve_image_size(self, spec, image_size):
        backbone_size = getattr(self.backbone_config, "image_size", None) if spec.has_image_size else None
        if image_size is None:
            image_size = backbone_size if backbone_size is not None else spec.default_image_size
        image_size = _integer(f"vision expert {self.kind!r} image_size", image_size, minimum=1)
        if spec.has_image_size:
            self.backbone_config.image_size = image_size
        return image_size

    @property
    def feature_map_size(self):
        """Side of the expert's native output map, before pixel-unshuffle and grid resampling."""
        return EXPERT_FACTS[self.kind].map_size(self)

    @property
    def feature_map_channels(self):
        """Channels of the expert's native output map, before pixel-unshuffle (what the high-res fusions read)."""
        return EXPERT_FACTS[self.kind].channels(self)

    @property
    def encoder_layers(self):
        """Encoder layers a ViT expert that runs in stages keeps (those after `feature_layer` are pruned); else None."""
        if not EXPERT_FACTS[self.kind].runs_in_stages:
            return None
        # feature_layer counts hidden states (0 = embeddings): -1 keeps every layer, k > 0 keeps k.
        return self.feature_layer % (self.backbone_config.num_hidden_layers + 1)

    @property
    def hidden_size(self):
        """Channels this expert contributes to the fused features (derived, never typed)."""
        channels = EXPERT_FACTS[self.kind].channels(self)
        if self.grid_resample == "pixel_unshuffle":
            channels *= self.unshuffle_factor**2
        return channels

    def to_dict(self):
        output = super().to_dict()
        output["backbone_config"] = self.backbone_config.to_dict()
        output["backbone_config"].pop("transformers_version", None)
        output["hidden_size"] = self.hidden_size
        return output


class EagleConfig(PretrainedConfig):
    r"""
    Configuration of [`EagleForConditionalGeneration`].

    Args:
        text_config (`dict` or `PretrainedConfig`, *optional*): any causal LM config transformers knows (Llama/Vicuna,
            Llama-3, Qwen2, Mistral...). Defaults to Vicuna-7B v1.5's architecture.
        vision_experts (`list`, *optional*): ordered `EagleVisionExpertConfig`s (or dicts). Defaults to one CLIP-L/336.
        image_size (`int`, *optional*, defaults to 1024): side of the shared square input every expert is resized from.
        grid_size (`int`, *optional*, defaults to 32): side of the shared grid; `grid_size**2` image tokens per image.
        fusion (`str`, *optional*, defaults to `"channel_concat"`): how the experts are fused, one of `FUSION_FACTS`:
            `channel_concat` (Eagle), `sequence_append`, `llava_hr`, `mini_gemini`, `deformable`. Each entry of
            `FUSION_FACTS` says which role each expert plays (the later three: expert 0 is the low-resolution stream);
            `mm_hidden_size` and `image_seq_length` follow from it.
        fusion_hidden_size (`int`, *optional*): `sequence_append` only, the common width every expert's tokens are
            projected to; defaults to the language model's hidden size.
        fusion_num_adapters (`int`, *optional*, defaults to 3): `llava_hr` only, how many mixture-of-resolution
            adapters sit between the first expert's encoder layers (LLaVA-HR: 3, after each quarter).
        fusion_num_heads (`int`, *optional*, defaults to 8): `deformable` only, attention heads (Deformable-DETR's 8);
            must divide the first expert's grid channels.
        fusion_num_points (`int`, *optional*, defaults to 4): `deformable` only, sampling points per head and source
            (Deformable-DETR's 4).
        projector_type (`str`, *optional*, defaults to `"mlp2x_gelu"`): `"linear"` or `"mlp2x_gelu"`.
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`): activation inside `mlp2x_gelu`.
        multimodal_projector_bias (`bool`, *optional*, defaults to `True`): biases in the projector.
        image_token_id (`int`, *optional*, defaults to 32000): id of the `<image>` placeholder token (llava-hf's
            convention: the first id after Llama-2's 32000); it must be a row of the LM's embedding.
        image_mean / image_std (`list[float]`, *optional*): statistics the processor normalises the input with.
        model_max_length (`int`, *optional*): a prompt longer than this after image expansion is refused.
    """

    model_type = "eagle_hf"
    sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        text_config=None,
        vision_experts=None,
        image_size=1024,
        grid_size=32,
        fusion="channel_concat",
        fusion_hidden_size=None,
        fusion_num_adapters=3,
        fusion_num_heads=8,
        fusion_num_points=4,
        projector_type="mlp2x_gelu",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        image_token_id=32000,
        image_mean=None,
        image_std=None,
        model_max_length=None,
        tie_word_embeddings=False,
        **kwargs,
    ):
        _refuse_misspelt(self, kwargs, "EagleConfig", derived=("mm_hidden_size", "image_seq_length"))
        self.text_config = self._build_text_config(text_config)
        if vision_experts is None:
            vision_experts = [{"kind": "clip"}]
        if isinstance(vision_experts, (str, dict)) or not hasattr(vision_experts, "__len__") or not vision_experts:
            raise ValueError("`vision_experts` must be a non-empty list of experts (dicts or EagleVisionExpertConfig; "
                             f"None for one CLIP-L/336), got {vision_experts!r}.")
        self.vision_experts = [self._build_expert(expert) for expert in vision_experts]
        self.image_size = _integer("image_size", image_size, minimum=1)
        self.grid_size = _integer("grid_size", grid_size, minimum=1)
        self.fusion = _choice("fusion", fusion, FUSION_FACTS)
        self.fusion_hidden_size = _positive("fusion_hidden_size", fusion_hidden_size, allow_none=True)
        self.fusion_num_adapters = _positive("fusion_num_adapters", fusion_num_adapters)
        self.fusion_num_heads = _positive("fusion_num_heads", fusion_num_heads)
        self.fusion_num_points = _positive("fusion_num_points", fusion_num_points)
        self.projector_type = _choice("projector_type", projector_type, PROJECTOR_TYPES)
        self.projector_hidden_act = _choice("projector_hidden_act", projector_hidden_act, set(ACT2FN))
        if not isinstance(multimodal_projector_bias, bool):
            raise ValueError(f"`multimodal_projector_bias` must be true or false, got {multimodal_projector_bias!r}.")
        self.multimodal_projector_bias = multimodal_projector_bias
        self.image_token_id = _integer("image_token_id", image_token_id)
        if not 0 <= self.image_token_id < self.text_config.vocab_size:
            raise ValueError(
                f"`image_token_id` must be a row of the language model's embedding, i.e. in [0, "
                f"{self.text_config.vocab_size}), got {self.image_token_id}; resize the vocabulary first."
            )
        self.image_mean = _stats(image_mean, "image_mean") or list(CLIP_MEAN)
        self.image_std = _stats(image_std, "image_std") or list(CLIP_STD)
        self.model_max_length = model_max_length
        self._check_experts_reach_grid()
        self._check_fusion()
        self._check_mm_hidden_size(kwargs.pop("mm_hidden_size", None))
        # v4 ties on text_config's flag, v5 on the top-level one: keep them equal so both versions agree.
        if not isinstance(tie_word_embeddings, bool):
            raise ValueError(f"`tie_word_embeddings` must be true or false, got {tie_word_embeddings!r}.")
        self.text_config.tie_word_embeddings = tie_word_embeddings
        kwargs.pop("image_seq_length", None)  # derived
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @staticmethod
    def _build_text_config(text_config):
        if text_config is None:
            return vicuna_7b_config()
        if isinstance(text_config, dict):
            text_config = dict(text_config)
            model_type = text_config.pop("model_type", "llama")
            return AutoConfig.for_model(model_type, **text_config)
        if isinstance(text_config, PretrainedConfig):
            return text_config
        raise ValueError(f"`text_config` must be a dict, a PretrainedConfig or None, got {type(text_config).__name__}.")

    @staticmethod
    def _build_expert(expert):
        if isinstance(expert, dict):
            expert = {k: v for k, v in expert.items() if k != "model_type"}
            return EagleVisionExpertConfig(**expert)
        if isinstance(expert, PretrainedConfig) and hasattr(expert, "kind") and hasattr(expert, "backbone_config"):
            return expert  # no isinstance on our own class: v5 loads remote configs from separate module copies
        raise ValueError(f"Each vision expert must be a dict or an EagleVisionExpertConfig, got {type(expert).__name__}.")

    def _check_mm_hidden_size(self, given):
        if given is None or int(given) == self.mm_hidden_size:
            return
        if self.fusion == "channel_concat":
            parts = " + ".join(f"{e.kind} {e.hidden_size}" for e in self.vision_experts)
            raise ValueError(
                f"`mm_hidden_size` was given as {given} but the experts produce {parts} = {self.mm_hidden_size} channels."
            )
        raise ValueError(
            f"`mm_hidden_size` was given as {given} but the {self.fusion} fusion gives {self.mm_hidden_size} channels."
        )

    def _check_fusion(self):
        """The chosen fusion's needs: how many experts, which kind comes first, then its own checks (see `FUSION_FACTS`)."""
        fusion, kinds = FUSION_FACTS[self.fusion], [expert.kind for expert in self.vision_experts]
        if len(kinds) < fusion.min_experts:
            raise ValueError(
                f"The {self.fusion} fusion needs at least {fusion.min_experts} experts ({fusion.roles}); got {kinds}."
            )
        staged = sorted(kind for kind, spec in EXPERT_FACTS.items() if spec.runs_in_stages)
        if fusion.staged_first_expert and kinds[0] not in staged:
            raise ValueError(
                f"The {self.fusion} fusion needs a first expert whose encoder layers run in stages, one of {staged} "
                f"({fusion.roles}); got {kinds[0]!r}."
            )
        fusion.validate(self)

    def _check_experts_reach_grid(self):
        for index, expert in enumerate(self.vision_experts):
            side = expert.feature_map_size
            if expert.grid_resample == "pixel_unshuffle":
                if side % expert.unshuffle_factor:
                    raise ValueError(
                        f"Expert {index} ({expert.kind}) gives a {side}x{side} map that pixel_unshuffle by "
                        f"{expert.unshuffle_factor} cannot divide; expected a side divisible by {expert.unshuffle_factor}."
                    )
                side //= expert.unshuffle_factor
            if side <= 0:
                raise ValueError(f"Expert {index} ({expert.kind}) produces an empty map at image_size {expert.image_size}.")

    @property
    def mm_hidden_size(self):
        """Width of the fused features the projector reads (the original's name): the sum of the experts' channels."""
        return FUSION_FACTS[self.fusion].input_width(self)

    @property
    def image_seq_length(self):
        """Number of `<image>` tokens one image expands to."""
        return FUSION_FACTS[self.fusion].num_image_tokens(self)

    @property
    def _attn_implementation(self):
        return PretrainedConfig._attn_implementation.fget(self)

    @_attn_implementation.setter
    def _attn_implementation(self, value):
        """Also reaches every expert's backbone config (the generic setter only walks `sub_configs`); a dict reaches
        them only where it names "vision_experts", as it reaches a sub-config only where it names it."""
        PretrainedConfig._attn_implementation.fset(self, value)
        expert_value = value.get("vision_experts") if isinstance(value, dict) else value
        if expert_value is None:
            return
        for expert in getattr(self, "vision_experts", None) or ():
            expert.backbone_config._attn_implementation = expert_value

    def to_dict(self):
        output = super().to_dict()
        output["vision_experts"] = [expert.to_dict() for expert in self.vision_experts]
        for expert in output["vision_experts"]:
            expert.pop("transformers_version", None)
        output["mm_hidden_size"] = self.mm_hidden_size
        output["image_seq_length"] = self.image_seq_length
        return output

    # ----- presets: the released models, quirks included -----

    # `expert_overrides` maps an expert kind to fields changed on that expert (e.g. a smaller backbone_config).

    @classmethod
    def llava_1_5(cls, text_config=None, expert_overrides=None, **overrides):
        """LLaVA-1.5: one CLIP-L/336, layer -2, CLS dropped, 24x24 = 576 tokens (no resampling), mlp2x_gelu."""
        experts = [dict(kind="clip", image_size=336, feature_layer=-2, prefix_tokens="drop")]
        defaults = dict(vision_experts=_override(experts, expert_overrides), image_size=336, grid_size=24)
        return cls(text_config=text_config, **{**defaults, **overrides})

    @classmethod
    def eagle_x4(cls, text_config=None, expert_overrides=None, **overrides):
        """Eagle-X4: CLIP, ConvNeXt, EVA-02, Pix2Struct in the original's channel order (6656 channels)."""
        experts = [e for e in _eagle_experts() if e["kind"] != "sam"]
        return cls(text_config=text_config, **{"vision_experts": _override(experts, expert_overrides), **overrides})

    @classmethod
    def eagle_x5(cls, text_config=None, expert_overrides=None, **overrides):
        """Eagle-X5: CLIP, ConvNeXt, SAM, EVA-02, Pix2Struct in the original's channel order (7680 channels)."""
        experts = _eagle_experts()
        return cls(text_config=text_config, **{"vision_experts": _override(experts, expert_overrides), **overrides})


def _override(experts, expert_overrides):
    expert_overrides = dict(expert_overrides or {})
    unknown = set(expert_overrides) - {e["kind"] for e in experts}
    if unknown:
        raise ValueError(f"`expert_overrides` names {sorted(unknown)}, but this preset's experts are "
                         f"{[e['kind'] for e in experts]}.")
    return [{**expert, **expert_overrides.get(expert["kind"], {})} for expert in experts]


def _eagle_experts():
    return [
        # The tower is named "clip-448" but runs at 336 (original issue #22); CLS dropped before the pre-layernorm,
        # last layer, no post-layernorm; 24x24 -> 32x32 bilinear.
        dict(kind="clip", image_size=336, feature_layer=-1, prefix_tokens="drop_before_encoder"),
        # ConvNeXt-XXL last stage at 1024: stride 32 -> 32x32x3072, no resampling.
        dict(kind="convnext", image_size=1024),
        # SAM ViT-L with the neck cut to conv1 + layernorm: 64x64x256 -> pixel_unshuffle(2) -> 32x32x1024. It gets the
        # CLIP-normalised input as is: the original never applies SAM's own statistics.
        dict(kind="sam", image_size=1024, grid_resample="pixel_unshuffle", unshuffle_factor=2),
        # EVA-02-L det, also fed the CLIP-normalised input: 64x64 -> 32x32 bilinear.
        dict(kind="eva02", image_size=1024),
        # Pix2Struct-large: de-normalised and re-patchified on the device, 2048 patches -> 45x45 -> 32x32.
        dict(kind="pix2struct", image_size=1024, max_patches=2048),
    ]


def vicuna_7b_config(**overrides):
    """Vicuna-7B v1.5's architecture (a Llama-2-7B), built from numbers: nothing is downloaded.

    The vocabulary is padded from 32000 to 32064 rows, as llava-hf does, to hold `<image>` (32000) and `<pad>` (32001).
    """
    numbers = dict(
        vocab_size=32064,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    return LlamaConfig(**{**numbers, **overrides})


EagleConfig.register_for_auto_class()  # save_pretrained then writes its auto_map entry and code


__all__ = ["EagleConfig", "EagleVisionExpertConfig", "vicuna_7b_config"]
