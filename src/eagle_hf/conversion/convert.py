"""`convert_checkpoint`: an original Eagle / LLaVA checkpoint in, an eagle-hf checkpoint out.

Order of work: read the source config and build the `EagleConfig`; settle the vocabulary (`<image>`); plan where every
source key goes and check every shape against the model built on the meta device, so that every problem is reported
before anything is written; then stream the tensors shard by shard into the new shards, write config, generation
config, processor and model card, and reload the result strictly.
"""

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, GenerationConfig
from transformers.utils import logging

from ..modeling_eagle import AUTO_MAP, MODULE_PREFIXES, EagleForConditionalGeneration
from .configs import llava_hf_spec, llava_spec, nveagle_spec
from .model_card import write_model_card
from .processor import build_processor, infer_chat_template
from .rename import clip_tower_table, eva02_rope_schedule, llava_hf_table, llava_table, nveagle_table, plan_renames
from .source import ConversionError, SourceWeights, read_json, resolve_source
from .vocab import plan_vocabulary
from .writer import ShardWriter, parse_size, staged_output

logger = logging.get_logger(__name__)

FAMILIES = ("nveagle", "llava", "llava-hf")
EMBEDDING = MODULE_PREFIXES["language_model"] + "embed_tokens.weight"
LM_HEAD = MODULE_PREFIXES["lm_head"] + "weight"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ConversionReport:
    """What a conversion did: the output folder, the config, the vocabulary plan, and the source keys left out."""

    output: Path
    config: object
    vocabulary: object
    chat_template: str
    dropped: dict = field(default_factory=dict)  # reason -> number of source tensors


@dataclass
class _Part:
    """One source of tensors (the checkpoint, or LLaVA's separate CLIP tower) and where its keys go."""

    weights: SourceWeights
    plan: object
    label: str = "weights"


def _llava_tower(raw, weights, vision_tower):
    """(CLIP config dict, folder of the CLIP weights or None when the checkpoint holds them)."""
    has_tower = any(key.startswith(MODULE_PREFIXES["vision_tower"]) for key in weights.infos())
    name = vision_tower or raw.get("mm_vision_tower")
    if not name:
        raise ConversionError("config.json names no `mm_vision_tower`; pass the CLIP checkpoint as vision_tower.")
    folder = resolve_source(name, weights=not has_tower)
    return read_json(folder, "config.json"), None if has_tower else folder


def _describe(family, folder, raw, weights, options):
    """(SourceSpec, rename-table factory, extra part folder or None) for one family."""
    overrides = {name: options.get(name) for name in ("expert_overrides", "config_overrides")}
    if family == "nveagle":
        return nveagle_spec(raw, **overrides), nveagle_table, None
    if family == "llava":
        clip_config, tower_folder = _llava_tower(raw, weights, options.get("vision_tower"))
        return llava_spec(raw, clip_config, **overrides), llava_table, tower_folder
    if family == "llava-hf":
        return llava_hf_spec(folder, **overrides), llava_hf_table, None
    raise ConversionError(f"Unknown source family {family!r}; expected one of {list(FAMILIES)}.")


def _embedding_rows(parts):
    """(source key, rows) of the input embedding."""
    for part in parts:
        for key, target in part.plan.targets.items():
            if target == EMBEDDING:
                return key, part.weights.infos()[key].shape[0]
    raise ConversionError(f"The source holds no input embedding (nothing maps to {EMBEDDING}).")


def check_shapes(parts, expected, vocabulary, generated=(), needed_by="config", failure="Cannot convert"):
    """Every model tensor comes from exactly one source tensor of the right shape (rows of the vocabulary aside),
    except the `generated` ones the writer makes itself; one `ConversionError` lists every problem, naming each part,
    key and both shapes."""
    found, wrong = set(), []
    for part in parts:
        infos = part.weights.infos()
        for key, target in part.plan.targets.items():
            shape = tuple(infos[key].shape)
            want = expected[target]
            if target in (EMBEDDING, LM_HEAD):
                want = (vocabulary.source_rows,) + want[1:]
            if shape != want:
                wrong.append((-len(shape), f"{part.label}: {key} has shape {list(shape)} but the {needed_by} needs "
                                           f"{list(want)} (for {target})"))
            found.add(target)
    missing = sorted(key for key in set(expected) - found if key not in generated)
    problems = []
    if wrong:
        examples = [text for _, text in sorted(wrong, key=lambda item: item[0])[:3]]  # matrices first: both sides
        problems.append(f"{len(wrong)} tensor(s) of another shape than the {needed_by} needs, e.g. "
                        + "; ".join(examples))
    if missing:
        problems.append(f"{len(missing)} model tensor(s) the source does not provide, e.g. {missing[:3]}")
    if problems:
        depths = _depth_differences(expected, found, needed_by)
        hint = (f" The source's sizes differ from the {needed_by}'s: {'; '.join(depths[:5])}." if depths else "")
        example = '{"clip": {"backbone_config": {"num_hidden_layers": 2}}}'
        raise ConversionError(f"{failure}: " + " | ".join(problems) + "." + hint + " Give the source's sizes with "
                              f"--expert-overrides (e.g. '{example}') or --config-overrides (the language model's).")


def check_eva02_schedules(parts, config):
    """EVA-02 sources carry per-block RoPE tables (dropped: they are recomputed) whose sizes record which blocks
    attend in windows and which globally; a config with another schedule would load strictly and give wrong features,
    so it is refused, naming the blocks and the override that fixes it."""
    for part in parts:
        infos, tables = part.weights.infos(), {}
        for key in part.plan.dropped:
            match = re.fullmatch(r"(.*)blocks\.(\d+)\.attn\.rope\.freqs_cos", key)
            if match:
                tables.setdefault(match.group(1), {})[int(match.group(2))] = tuple(infos[key].shape)
        for prefix, rows in tables.items():
            owner = re.search(r"experts\.(\d+)\.", part.plan.targets.get(prefix + "pos_embed", ""))
            if owner is None:
                continue
            expert = config.vision_experts[int(owner.group(1))]
            backbone = expert.backbone_config
            schedule = eva02_rope_schedule(rows, backbone.hidden_size)
            if schedule is None or "window_size" not in schedule:
                continue
            ours = dict(window_size=backbone.window_size, global_attn_indexes=list(backbone.global_attn_indexes))
            if {key: schedule[key] for key in ours} != ours:
                found = {key: schedule[key] for key in ours}
                raise ConversionError(
                    f"{part.label}: the RoPE tables under {prefix}blocks.* record EVA-02 attention {found}, but the "
                    f"config of expert {owner.group(1)} ({expert.kind}) says {ours}; give the source's with "
                    f"--expert-overrides '{{\"eva02\": {{\"backbone_config\": {json.dumps(found)}}}}}'.")


def _depth_differences(expected, found, needed_by):
    """"<list>: the source has 2, the config 24" for every numbered module list whose length differs."""
    def lengths(keys):
        table = {}
        for key in keys:
            for match in re.finditer(r"\.(\d+)\.", key):
                table.setdefault(key[:match.start()], set()).add(int(match.group(1)))
        return table

    want, have = lengths(expected), lengths(found)
    return [f"{prefix} has {len(have[prefix])} in the source, {len(indices)} in the {needed_by}"
            for prefix, indices in sorted(want.items()) if prefix in have and len(have[prefix]) != len(indices)]


def _expected_tensors(config):
    """(the model on the meta device, {key: shape} of every tensor a checkpoint of it holds)."""
    if config.tie_word_embeddings:
        raise ConversionError("Sources with tied input and output embeddings are not supported.")
    with torch.device("meta"):
        model = EagleForConditionalGeneration(config)
    return model, {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


def _stream(parts, writer, vocabulary, dtype):
    """Copy every planned tensor, shard after shard: one source tensor and at most one output shard in memory."""
    from tqdm.auto import tqdm

    for part in parts:
        shards = part.weights.iter_shards()
        for shard in tqdm(shards, total=len(part.weights.shards), desc=part.label, unit="shard"):
            for key, load in shard:
                target = part.plan.targets.get(key)
                if target is None:
                    continue
                tensor = load()
                if target in (EMBEDDING, LM_HEAD):
                    tensor = vocabulary.resize(tensor)
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                writer.add(target, tensor)


def _generation_config(folder, text_config, vocabulary):
    if (Path(folder) / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(folder)
    else:
        generation = GenerationConfig.from_model_config(text_config)
    if vocabulary.suppressed:
        generation.suppress_tokens = sorted(set(generation.suppress_tokens or []) | set(vocabulary.suppressed))
    if generation.pad_token_id is None:
        generation.pad_token_id = vocabulary.pad_token_id
    return generation


def _verify(folder):
    model, info = EagleForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    problems = {name: info[name] for name in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(name)}
    if problems:
        raise ConversionError(f"The written checkpoint does not load strictly: {problems}.")
    del model


def convert_checkpoint(source, output, family, *, vision_tower=None, tokenizer=None, chat_template=None, dtype=None,
                       expert_overrides=None, config_overrides=None, max_shard_size="5GB", pad_vocab_to_multiple_of=64,
                       overwrite=False, verify=True):
    """Convert an original checkpoint into an eagle-hf checkpoint folder.

    Args:
        source: a local folder or a Hub id.
        output: the folder to create (it must not exist or be empty unless `overwrite`).
        family: "nveagle", "llava" or "llava-hf".
        vision_tower: LLaVA only: the CLIP checkpoint (folder or Hub id) when it is not the config's `mm_vision_tower`.
        tokenizer: a folder or Hub id to take the tokenizer from when the source has none (e.g. its base LLM's).
        chat_template: a template name (vicuna_v1, llama3, chatml, plain); inferred from the tokenizer by default.
        dtype: "float32", "float16" or "bfloat16" to cast to; by default every tensor keeps its source dtype.
        expert_overrides / config_overrides: changes to the experts (by kind) / to `EagleConfig` fields, for sources
            whose backbones differ from the released ones (the originals do not record their backbone sizes).
        max_shard_size: largest output shard, e.g. "5GB".
        pad_vocab_to_multiple_of: round the vocabulary up to this many rows after adding `<image>`.
        overwrite: replace a non-empty `output`.
        verify: reload the result with `from_pretrained` and require no missing, unexpected or mismatched key.

    Returns:
        `ConversionReport`.
    """
    if family not in FAMILIES:
        raise ConversionError(f"Unknown source family {family!r}; expected one of {list(FAMILIES)}.")
    if dtype is not None and dtype not in DTYPES:
        raise ConversionError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    max_shard_bytes = parse_size(max_shard_size)
    options = dict(vision_tower=vision_tower, expert_overrides=expert_overrides, config_overrides=config_overrides)
    folder, spec, parts = _plan_sources(source, family, options)
    tokenizer = _source_tokenizer(resolve_source(tokenizer, weights=False) if tokenizer else folder, spec.text_config)
    vocabulary, config = _converted_config(spec, tokenizer, parts, dtype, pad_vocab_to_multiple_of)
    meta_model, expected = _expected_tensors(config)
    check_shapes(parts, expected, vocabulary)
    check_eva02_schedules(parts, config)
    template = chat_template or infer_chat_template(tokenizer)
    processor = build_processor(tokenizer, config, spec.aspect_ratio, template)  # before writing: it checks <image>
    dropped = _dropped_by_reason(parts)

    with staged_output(output, overwrite=overwrite) as staging:
        writer = ShardWriter(staging, max_shard_bytes)
        _stream(parts, writer, vocabulary, DTYPES.get(dtype))
        save_checkpoint_files(writer, expected, meta_model, folder, vocabulary, processor, staging)
        write_model_card(staging, source=source, family=family, config=config, vocabulary=vocabulary,
                         chat_template=template, dropped=dropped)
        if verify:
            _verify(staging)
    logger.info(f"Converted {source} ({family}) into {output}.")
    return ConversionReport(Path(output), config, vocabulary, template, dropped)


def _source_tokenizer(folder, text_config):
    try:  # `config=`: the source's own config.json is no AutoConfig (eagle_llama, or LLaVA's flat "llava")
        return AutoTokenizer.from_pretrained(folder, config=text_config)
    except Exception as error:  # a missing or unreadable tokenizer: say where, keep the cause
        raise ConversionError(f"Cannot load the source tokenizer from {folder} (pass the tokenizer of its base LLM "
                              f"as `tokenizer` / --tokenizer if the source has none): {error}") from error


def _converted_config(spec, tokenizer, parts, dtype, pad_to_multiple_of):
    """(VocabularyPlan, EagleConfig of the converted model); `<image>` (and a pad token) added to `tokenizer`."""
    embedding_key, rows = _embedding_rows(parts)
    vocabulary = plan_vocabulary(tokenizer, rows, spec.text_config.vocab_size, embedding_key,
                                 pad_to_multiple_of=pad_to_multiple_of, image_token_id=spec.image_token_id)
    text_config = copy.deepcopy(spec.text_config)
    text_config.vocab_size = vocabulary.rows
    text_config.pad_token_id = vocabulary.pad_token_id
    config = spec.build_config(text_config, vocabulary.image_token_id, model_max_length=spec.model_max_length)
    config.architectures = ["EagleForConditionalGeneration"]
    config.auto_map = dict(AUTO_MAP)
    config.dtype = dtype or spec.dtype or "float32"
    if spec.model_max_length:  # the original truncated prompts there (Eagle: 2048 tokens, images included)
        tokenizer.model_max_length = spec.model_max_length
    return vocabulary, config


def _plan_sources(source, family, options):
    """(source folder, SourceSpec, [_Part]): every source key planned, before the vocabulary is known."""
    folder = resolve_source(source)
    raw = read_json(folder, "config.json")
    weights = SourceWeights(folder)
    spec, table_for, tower_folder = _describe(family, folder, raw, weights, options)
    # The rename tables depend on the experts only: a config with the source's own vocabulary serves for planning.
    draft = spec.build_config(copy.deepcopy(spec.text_config), 0)
    model_keys = set(_expected_tensors(draft)[1])
    parts = [_Part(weights, plan_renames(table_for(draft), weights.infos(), model_keys, f"{source} ({family})"))]
    if tower_folder is not None:
        tower = SourceWeights(tower_folder)
        plan = plan_renames(clip_tower_table(draft), tower.infos(), model_keys, f"the vision tower {tower_folder}")
        parts.append(_Part(tower, plan))
    return folder, spec, parts


def save_checkpoint_files(writer, expected, meta_model, source_folder, vocabulary, processor, staging):
    """Close the shards (checking they hold exactly `expected`), then write config, code, generation config and the
    processor into `staging`."""
    written = writer.close()
    if written != set(expected):
        raise ConversionError(f"Internal error: wrote {sorted(written ^ set(expected))[:10]} unexpectedly.")
    _save_model_files(meta_model, meta_model.config, staging)
    _generation_config(source_folder, meta_model.config.text_config, vocabulary).save_pretrained(staging)
    processor.save_pretrained(staging)


def _save_model_files(meta_model, config, folder):
    """config.json (with the cross-version auto_map) and the flat model files the checkpoint loads with."""
    from transformers.dynamic_module_utils import custom_object_save

    custom_object_save(meta_model, folder)
    config.save_pretrained(folder)


def _dropped_by_reason(parts):
    counts = {}
    for part in parts:
        for reason in part.plan.dropped.values():
            counts[reason] = counts.get(reason, 0) + 1
    return counts


__all__ = ["FAMILIES", "ConversionReport", "convert_checkpoint"]
