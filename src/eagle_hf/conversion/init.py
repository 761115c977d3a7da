"""`init_checkpoint` / `eagle-hf init`: the starting checkpoint of a training run, from pretrained vision experts and a
causal LM, with a new projector and the processor files.

Each source is read in its released layout and streamed through an anchored rename table (the conversion's), every
key renamed or dropped for a stated reason; sizes come from the source (its config.json, or its tensors' shapes for
timm ConvNeXt and the EVA-02 detector pickle), the input contract (image size, feature layer, grid) from the preset.
Everything is planned and shape-checked before a byte is written; the output folder appears only when complete.
"""

import copy
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, SiglipVisionConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
from transformers.models.pix2struct.configuration_pix2struct import Pix2StructVisionConfig
from transformers.models.sam.configuration_sam import SamVisionConfig
from transformers.utils import logging

from ..configuration_eagle import EagleConfig
from ..modeling_eagle import AUTO_MAP, MODULE_PREFIXES, EagleForConditionalGeneration
from ..processing_eagle import EagleProcessor
from ..chat_templates import TEMPLATE_NAMES, load_chat_template
from ..files import is_hub_id
from .convert import DTYPES, EMBEDDING, LM_HEAD, _Part, _stream, _verify
from .convert import check_shapes, save_checkpoint_files
from .processor import infer_chat_template
from .rename import (Drop, Nest, Rename, clip_model_extras, eva02_rope_schedule, expert_prefix, expert_table,
                     plan_renames)
from .source import ConversionError, PickleWeights, SourceWeights, read_json, resolve_file, resolve_source
from .vocab import plan_vocabulary
from .writer import ShardWriter, check_output, parse_size, staged_output

logger = logging.get_logger(__name__)

PRESETS = {"llava_1_5": EagleConfig.llava_1_5, "eagle_x4": EagleConfig.eagle_x4, "eagle_x5": EagleConfig.eagle_x5}
# The checkpoints the original LLaVA-1.5 / Eagle code loads its experts from (EVA-02: the detector the original names).
DEFAULT_SOURCES = {
    "clip": "openai/clip-vit-large-patch14-336",
    "convnext": "timm/convnext_xxlarge.clip_laion2b_soup_ft_in1k",
    "sam": "facebook/sam-vit-large",
    "eva02": "Yuxin-CV/EVA-02:eva02/det/eva02_L_coco_det_sys_o365.pth",
    "pix2struct": "google/pix2struct-large",
    "siglip": "google/siglip-so400m-patch14-384",
}
NEW_PREFIXES = (MODULE_PREFIXES["projector"], MODULE_PREFIXES["fusion"])


# ----- one reader per expert kind: (backbone config or None, weights, table of its released layout) -----


def _hf_vision_config(folder, config_class, model_types, what):
    """The vision config of an HF checkpoint, full model (`vision_config` inside) or vision model alone."""
    raw = read_json(folder, "config.json")
    vision = raw.get("vision_config") if isinstance(raw.get("vision_config"), dict) else raw
    found = raw.get("model_type")
    if found not in model_types:
        raise ConversionError(f"{what}: {folder}/config.json says model_type {found!r}; expected one of "
                              f"{sorted(model_types)}.")
    fields = {key: value for key, value in vision.items() if key not in ("model_type", "architectures")}
    return config_class(**fields)


def _read_clip(folder, what):
    config = _hf_vision_config(folder, CLIPVisionConfig, {"clip", "clip_vision_model"}, what)
    return config, SourceWeights(folder), lambda e, prefix: (Nest(r"(?P<rest>.+)", prefix,
                                                                 expert_table(e) + clip_model_extras()),)


def _read_siglip(folder, what):
    config = _hf_vision_config(folder, SiglipVisionConfig, {"siglip", "siglip_vision_model"}, what)
    return config, SourceWeights(folder), lambda e, prefix: (Nest(r"(?P<rest>.+)", prefix, expert_table(e)),)


def _read_sam(folder, what):
    config = _hf_vision_config(folder, SamVisionConfig, {"sam", "sam_vision_model"}, what)

    def table(expert, prefix):
        neck = Drop(r"neck\.(?:conv2\.weight|layer_norm2\.(?:weight|bias))", "the half of SAM's neck Eagle cuts")
        return (Nest(r"vision_encoder\.(?P<rest>.+)", prefix, expert_table(expert) + (neck,)),
                Drop(r"(?:prompt_encoder|mask_decoder|shared_image_embedding)\..+", "SAM's prompt encoder and "
                     "mask decoder"))

    return config, SourceWeights(folder), table


def _read_pix2struct(folder, what):
    config = _hf_vision_config(folder, Pix2StructVisionConfig, {"pix2struct", "pix2struct_vision_model"}, what)
    return config, SourceWeights(folder), lambda e, prefix: (
        Nest(r"encoder\.(?P<rest>.+)", prefix, expert_table(e)), Drop(r"decoder\..+", "Pix2Struct's text decoder"))


def _read_convnext(folder, what):
    """timm's layout; the sizes are read from the tensors (timm's config.json names only the architecture)."""
    raw = read_json(folder, "config.json", required=False) or {}
    if raw.get("architecture") and not str(raw["architecture"]).startswith("convnext"):
        raise ConversionError(f"{what}: {folder}/config.json names the timm architecture {raw['architecture']!r}, "
                              "not a ConvNeXt.")
    weights = SourceWeights(folder)
    infos = weights.infos()
    if "stem.0.weight" not in infos:
        raise ConversionError(f"{what}: {folder} has no `stem.0.weight`, so it is not a timm ConvNeXt.")
    widths, depths = [], []
    while f"stages.{len(widths)}.blocks.0.conv_dw.weight" in infos:
        stage = len(widths)
        widths.append(infos[f"stages.{stage}.blocks.0.conv_dw.weight"].shape[0])
        depths.append(len({key.split(".")[3] for key in infos if key.startswith(f"stages.{stage}.blocks.")}))
    sizes = dict(hidden_sizes=widths, depths=depths, num_stages=len(widths),
                 patch_size=infos["stem.0.weight"].shape[-1])
    return sizes, weights, lambda e, prefix: (Nest(r"(?P<rest>.+)", prefix, expert_table(e)),)


def _read_eva02(path, what):
    """The EVA-02 detector's pickle (`backbone.net.*`, the detector's other parts dropped) or a bare backbone file;
    sizes from the tensors, heads and the window / global schedule from the per-block RoPE tables when saved."""
    path = Path(path)
    weights = PickleWeights(path) if path.suffix in (".pth", ".pt", ".bin") else SourceWeights(path)
    infos = weights.infos()
    prefixed = any(key.startswith("backbone.net.") for key in infos)
    net = {key[len("backbone.net."):] if prefixed else key: info for key, info in infos.items()
           if key.startswith("backbone.net.") or not prefixed}
    if "pos_embed" not in net or "patch_embed.proj.weight" not in net:
        raise ConversionError(f"{what}: {path} holds no EVA-02 backbone (no `pos_embed` / `patch_embed.proj.weight`"
                              f"{' under backbone.net.' if prefixed else ''}).")
    layers = 1 + max(int(key.split(".")[1]) for key in net if key.startswith("blocks."))
    hidden, patch = net["pos_embed"].shape[-1], net["patch_embed.proj.weight"].shape[-1]
    sizes = dict(hidden_size=hidden, num_hidden_layers=layers, patch_size=patch,
                 intermediate_size=net["blocks.0.mlp.w1.weight"].shape[0],
                 pretrain_image_size=round((net["pos_embed"].shape[1] - 1) ** 0.5) * patch,
                 qkv_bias="blocks.0.attn.q_bias" in net)
    rows = {block: tuple(net[f"blocks.{block}.attn.rope.freqs_cos"].shape) for block in range(layers)
            if f"blocks.{block}.attn.rope.freqs_cos" in net}
    if len(rows) == layers:
        sizes.update(eva02_rope_schedule(rows, hidden))

    def table(expert, prefix):
        if not prefixed:
            return (Nest(r"(?P<rest>.+)", prefix, expert_table(expert)),)
        return (Nest(r"backbone\.net\.(?P<rest>.+)", prefix, expert_table(expert)),
                Drop(r".+", "the detector's other parts (feature pyramid, proposal and box heads)"))

    return sizes, weights, table


READERS = {"clip": _read_clip, "siglip": _read_siglip, "sam": _read_sam, "pix2struct": _read_pix2struct,
           "convnext": _read_convnext, "eva02": _read_eva02}
FILE_SOURCES = ("eva02",)  # a single pickle, named as a local file or `owner/name:path/in/repo`


def _expert_backbone(preset_expert, found):
    """The preset's backbone config with the source's sizes: a whole config (HF sources) or size fields."""
    if not isinstance(found, dict):
        return found
    backbone = copy.deepcopy(preset_expert.backbone_config)
    for key, value in found.items():
        setattr(backbone, key, value)
    return backbone


# ----- the LLM -----


def _read_llm(source):
    folder = resolve_source(source)
    try:
        text_config = AutoConfig.from_pretrained(folder)
    except Exception as error:
        raise ConversionError(f"Cannot read the LLM's config from {folder}: {error}") from error
    if type(text_config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ConversionError(f"The LLM {source} is a {text_config.model_type!r} model, which transformers has no "
                              "causal LM class for.")
    base = MODEL_FOR_CAUSAL_LM_MAPPING[type(text_config)].base_model_prefix
    table = (
        Drop(rf"{base}\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",
             "a non-persistent buffer rebuilt from the config"),
        Rename(rf"{base}\.(.+)", MODULE_PREFIXES["language_model"] + r"\1"),
        Rename(r"lm_head\.weight", LM_HEAD),
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:
        raise ConversionError(f"Cannot load the LLM's tokenizer from {folder}: {error}") from error
    return folder, text_config, tokenizer, SourceWeights(folder), table


# ----- the whole run -----


def _describe_sources(preset, experts):
    config = PRESETS[preset]()
    kinds = [expert.kind for expert in config.vision_experts]
    unknown = sorted(set(experts) - set(kinds))
    if unknown:
        raise ConversionError(f"--expert names {unknown}, but the {preset} preset's experts are {kinds}.")
    return config, {kind: experts.get(kind) or DEFAULT_SOURCES[kind] for kind in kinds}


def _read_experts(preset_config, sources):
    """[(kind, source, backbone config, weights, table factory)] in the preset's order."""
    found = []
    for index, expert in enumerate(preset_config.vision_experts):
        what = f"expert {index} ({expert.kind}, from {sources[expert.kind]})"
        source = sources[expert.kind]
        place = resolve_file(source) if expert.kind in FILE_SOURCES else resolve_source(source)
        sizes, weights, table = READERS[expert.kind](place, what)
        found.append((what, _expert_backbone(expert, sizes), weights, table))
    return found


def _build_config(preset, preset_config, text_config, experts_read, image_token_id, expert_overrides,
                  config_overrides):
    overrides = {}
    for expert, (_, backbone, _, _) in zip(preset_config.vision_experts, experts_read):
        extra = dict((expert_overrides or {}).get(expert.kind, {}))
        if "backbone_config" in extra:
            raise ConversionError(f"expert_overrides for {expert.kind!r} set backbone_config, but init reads the "
                                  "backbone's sizes from its source.")
        overrides[expert.kind] = {**extra, "backbone_config": backbone}
    try:
        return PRESETS[preset](text_config=text_config, expert_overrides=overrides, image_token_id=image_token_id,
                               tie_word_embeddings=False, **(config_overrides or {}))
    except ValueError as error:
        raise ConversionError(f"The sources do not fit the {preset} preset: {error}") from error


def _new_tensors(meta_model, seed):
    """The new projector (and any fusion parameters), drawn by the model's own `_init_weights` from `seed`."""
    torch.manual_seed(seed)
    tensors = {}
    for prefix in NEW_PREFIXES:
        try:
            module = meta_model.get_submodule(prefix.rstrip("."))
        except AttributeError:  # a fusion without a module
            continue
        module.to_empty(device="cpu")
        module.apply(meta_model._init_weights)
        tensors.update({prefix + key: value for key, value in module.state_dict().items()})
    return tensors


def init_checkpoint(output, preset, llm, experts=None, chat_template=None, dtype=None, expert_overrides=None,
                    config_overrides=None, max_shard_size="5GB", pad_vocab_to_multiple_of=64, seed=0,
                    overwrite=False, verify=True):
    """Write the starting checkpoint of a training run.

    Args:
        output: the folder to create (it must not exist or be empty unless `overwrite`).
        preset: "llava_1_5", "eagle_x4" or "eagle_x5".
        llm: a causal LM (folder or Hub id) with its tokenizer.
        experts: {kind: folder, Hub id, or for eva02 a `.pth` file / `owner/name:path`}; other kinds take
            `DEFAULT_SOURCES`, the checkpoints the original code loads.
        chat_template: vicuna_v1, llama3, chatml or plain; by default inferred from the LLM's tokenizer.
        dtype: "float32", "float16" or "bfloat16"; by default every tensor keeps its source dtype.
        expert_overrides / config_overrides: preset fields to change (never a backbone's sizes, read from its source).
        seed: the new projector's initialisation.

    Returns:
        The `EagleConfig` written.
    """
    if preset not in PRESETS:
        raise ConversionError(f"Unknown preset {preset!r}; expected one of {list(PRESETS)}.")
    if dtype is not None and dtype not in DTYPES:
        raise ConversionError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    if chat_template is not None and chat_template not in TEMPLATE_NAMES:
        raise ConversionError(f"Unknown chat template {chat_template!r}; expected one of {list(TEMPLATE_NAMES)}.")
    check_output(output, overwrite)
    preset_config, sources = _describe_sources(preset, dict(experts or {}))
    folder, text_config, tokenizer, llm_weights, llm_table = _read_llm(llm)
    experts_read = _read_experts(preset_config, sources)

    draft = _build_config(preset, preset_config, copy.deepcopy(text_config), experts_read, 0, expert_overrides,
                          config_overrides)
    with torch.device("meta"):
        draft_keys = set(EagleForConditionalGeneration(draft).state_dict())
    parts = [_Part(llm_weights, plan_renames(llm_table, llm_weights.infos(), draft_keys, f"the LLM {llm}"),
                   f"LLM {llm}")]
    for index, (what, _, weights, table) in enumerate(experts_read):
        expert = draft.vision_experts[index]
        parts.append(_Part(weights, plan_renames(table(expert, expert_prefix(index)), weights.infos(), draft_keys,
                                                 what), what))

    embedding_key = next(key for key, target in parts[0].plan.targets.items() if target == EMBEDDING)
    rows = llm_weights.infos()[embedding_key].shape[0]
    vocabulary = plan_vocabulary(tokenizer, rows, text_config.vocab_size, embedding_key,
                                 pad_to_multiple_of=pad_vocab_to_multiple_of)
    text_config.vocab_size, text_config.pad_token_id = vocabulary.rows, vocabulary.pad_token_id
    tied = bool(getattr(text_config, "tie_word_embeddings", False))
    text_config.tie_word_embeddings = False  # lm_head gets its own copy of the embedding (trained apart from it)
    config = _build_config(preset, preset_config, text_config, experts_read, vocabulary.image_token_id,
                           expert_overrides, config_overrides)
    config.architectures, config.auto_map = ["EagleForConditionalGeneration"], dict(AUTO_MAP)
    config.dtype = dtype or str(getattr(text_config, "dtype", None) or "float32").replace("torch.", "")
    with torch.device("meta"):
        meta_model = EagleForConditionalGeneration(config)
    expected = {key: tuple(tensor.shape) for key, tensor in meta_model.state_dict().items()}
    generated = {key for key in expected if key.startswith(NEW_PREFIXES)} | ({LM_HEAD} if tied else set())
    check_shapes(parts, expected, vocabulary, generated, needed_by="preset", failure="The sources do not fit")
    template = chat_template or infer_chat_template(tokenizer)
    processor = EagleProcessor.for_config(config, tokenizer, chat_template=load_chat_template(template),
                                          aspect_ratio_mode="pad")

    with staged_output(output, overwrite=overwrite) as staging:
        writer = ShardWriter(staging, parse_size(max_shard_size))
        cast = DTYPES.get(dtype)
        _stream(parts, _TiedHead(writer, tied), vocabulary, cast)
        for key, tensor in _new_tensors(meta_model, seed).items():
            writer.add(key, tensor.to(cast) if cast is not None else tensor)
        save_checkpoint_files(writer, expected, meta_model, folder, vocabulary, processor, staging)
        _write_card(staging, preset, llm, sources, template, seed)
        if verify:
            _verify(staging)
    logger.info(f"Wrote the {preset} starting checkpoint to {output}.")
    return config


class _TiedHead:
    """A writer that also writes the embedding as lm_head for an LLM that ties the two (its source has no lm_head)."""

    def __init__(self, writer, tied):
        self.writer, self.tied = writer, tied

    def add(self, key, tensor):
        self.writer.add(key, tensor)
        if self.tied and key == EMBEDDING:
            self.writer.add(LM_HEAD, tensor.clone())


def _license(source):
    """The licence a Hub source's model card declares, or None."""
    if not is_hub_id(source):
        return None
    try:
        from huggingface_hub import ModelCard

        return ModelCard.load(source.partition(":")[0]).data.get("license")
    except Exception:  # a local folder, no card, no network: the card says "see the source"
        return None


def _write_card(folder, preset, llm, sources, template, seed):
    rows = [f"| LLM | `{llm}` | {_license(llm) or 'see the source'} |"]
    rows += [f"| {kind} | `{source}` | {_license(source) or 'see the source'} |" for kind, source in sources.items()]
    hub_ids = [source.partition(":")[0] for source in [llm, *sources.values()] if is_hub_id(source)]
    header = "---\nlibrary_name: transformers\npipeline_tag: image-text-to-text\ntags:\n- eagle-hf\n"
    if hub_ids:
        header += "base_model:\n" + "".join(f"- {repo}\n" for repo in dict.fromkeys(hub_ids))
    text = (f"{header}---\n\n# {preset} starting checkpoint (eagle-hf init)\n\nNot trained as a whole: the pretrained "
            f"vision experts and LLM below with a new, randomly initialised projector (seed {seed}), `<image>` added "
            f"to the vocabulary, and the `{template}` chat template. Train it with the recipes in "
            "`training_scripts/recipes/`.\n\n| part | source | licence |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    (Path(folder) / "README.md").write_text(text)


__all__ = ["DEFAULT_SOURCES", "PRESETS", "init_checkpoint"]
