"""The command line of `training_scripts/sft.py`: TRL's `TrlParser` over the plan's own arguments (`PlanArguments`)
and every `SFTConfig` field, with `--config recipe.yaml` holding the whole recipe.

Where a value comes from, lowest first: a stage preset; the recipe's top level (an `SFTConfig` field there is every
stage's default); the stage's own entry in `stages:`; `--set key.sub=value`; a flag on the command line (an `SFTConfig`
flag applies to every stage). Mappings merge key by key (`--set lora.r=8` keeps the other LoRA settings).
"""

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from typing import Optional

from transformers.utils import logging
from trl import SFTConfig, TrlParser

from .stages import STAGE_TRAINER_FIELDS, Recipe, apply_overrides, read_yaml, recipe_from_dict

logger = logging.get_logger(__name__)

RECIPE_KEYS = tuple(f.name for f in dataclasses.fields(Recipe))
# A CPU run of a recipe written for GPUs: float32 weights and no mixed precision, nothing pinned.
CPU_TRAINER = dict(use_cpu=True, bf16=False, fp16=False, tf32=None, dataloader_pin_memory=False)


@dataclass
class PlanArguments:
    """What `sft.py` adds to `SFTConfig`'s flags. The recipe itself (`name`, `plan`, `stages`, `data`, `model`,
    `lora`, `processor`, `feature_cache_dir`, `per_device_batch_size`, `seed` and any `SFTConfig` field) comes from
    `--config` and `--set`."""

    stage: Optional[list[str]] = field(default=None, metadata={
        "help": "run only these stages of the plan (repeatable); earlier ones must have finished"})
    init: Optional[str] = field(default=None, metadata={"help": "the starting checkpoint, instead of model.init"})
    lora: bool = field(default=False, metadata={
        "help": "train the LLM through LoRA in the stages that train it (settings: the recipe's `lora:`)"})
    qlora: bool = field(default=False, metadata={"help": "as --lora, on a 4-bit NF4 LLM (bitsandbytes)"})
    cpu: bool = field(default=False, metadata={
        "help": "run on CPU in float32: no bf16/fp16/tf32, whatever the recipe says (a smoke run of a GPU recipe)"})
    eval_fraction: Optional[float] = field(default=None, metadata={
        "help": "evaluate every stage on this held-out fraction of its data (e.g. 0.02)"})
    eval_data: Optional[str] = field(default=None, metadata={
        "help": "evaluate every stage on this data set of the recipe"})
    set: Optional[list[str]] = field(default=None, metadata={
        "help": "override recipe values, KEY=VALUE with VALUE read as YAML (repeatable), e.g. "
                "stages.eagle_sft.group_learning_rates.experts=2e-6 data.sft.json=my.json"})


@dataclass
class TrainerArguments(SFTConfig):
    """Every `SFTConfig` field as a flag. Nothing is checked here: each stage builds its own `SFTConfig` from the
    recipe, where the flags given apply (a tf32 flag parsed on a CPU machine must not fail before `--cpu` applies)."""

    def __post_init__(self):
        pass


DESCRIPTION = """Train Eagle / LLaVA-1.5 through a recipe's plan of stages. Re-running skips finished stages and
resumes an interrupted one from its last checkpoint.

  --config RECIPE.yaml   the recipe: name, plan, stages, data, model, lora, ... and any SFTConfig field (its top level
                         sets every stage's default; `stages.<name>.*` a stage's own values)
  --output_dir DIR       one sub-folder per stage is written here (required, flag or recipe)

Every SFTConfig flag below applies to every stage that runs (e.g. --learning_rate, --max_steps, --save_steps,
--eval_strategy steps --eval_steps 50). `python training_scripts/sft.py merge --help` writes a standalone checkpoint
from a LoRA stage."""


def make_parser():
    parser = TrlParser((PlanArguments, TrainerArguments), description=DESCRIPTION, allow_abbrev=False)
    parser.add_argument("--config", help="the recipe (YAML); see training_scripts/recipes/")
    return parser


def _option_names(parser):
    """{option string: dest} of the parser's flags (argparse keeps them only in its `_actions` list)."""
    return {option: action.dest for action in parser._actions for option in action.option_strings}


def _merged_repeats(argv, options=("--stage", "--set")):
    """`--set a=1 --set b=2` -> `--set a=1 b=2` (the dataclass parser keeps only the last of a repeated list flag)."""
    merged, heads = [], {}
    position = 0
    while position < len(argv):
        token = argv[position]
        name = token.split("=", 1)[0]
        if name in options:
            values = [token.split("=", 1)[1]] if "=" in token else []
            position += 1
            while position < len(argv) and not argv[position].startswith("--"):
                values.append(argv[position])
                position += 1
            if name in heads:
                merged[heads[name]].extend(values)
            else:
                heads[name] = len(merged)
                merged.append([name, *values])
            continue
        merged.append(token)
        position += 1
    return [part for item in merged for part in (item if isinstance(item, list) else [item])]


def _pop_config(argv):
    for flag in ("--config", "--recipe"):
        for position, token in enumerate(argv):
            if token == flag or token.startswith(flag + "="):
                value = token.split("=", 1)[1] if "=" in token else (argv[position + 1] if position + 1 < len(argv)
                                                                     else None)
                if value is None:
                    raise ValueError(f"{flag} needs a path to a recipe YAML.")
                if flag == "--recipe":
                    logger.warning("`--recipe` is now spelled `--config` (as in TRL's scripts); read as --config.")
                rest = argv[:position] + argv[position + (1 if "=" in token else 2):]
                return value, rest
    return None, argv


def _explicit_flags(argv, options, dests):
    """The dests of the flags written on the command line (`--name`, `--name=value`, `--no_name`)."""
    given = set()
    for token in argv:
        if token.startswith("--"):
            dest = options.get(token.split("=", 1)[0])
            if dest in dests:
                given.add(dest)
    return given


def _unknown_flags_error(remaining, options):
    flags = [token for token in remaining if token.startswith("-")]
    hints = []
    for flag in flags:
        match = difflib.get_close_matches(flag.split("=", 1)[0], list(options), n=1)
        hints.append(f"{flag} (did you mean {match[0]}?)" if match else flag)
    what = ", ".join(hints) if flags else " ".join(remaining)
    return ValueError(f"Unknown argument(s): {what}. The flags are those of `--help`: the plan's (--config, "
                      "--output_dir, --stage, --init, --lora, --qlora, --cpu, --eval_fraction, --eval_data, --set) and "
                      "every SFTConfig field; recipe values go in the recipe or --set key.sub=value.")


def _stage_names(values):
    return list(dict.fromkeys([*(values.get("plan") or []), *(values.get("stages") or {})]))


def _apply_to_every_stage(values, key, value):
    """A command-line trainer value for every stage: it replaces what the recipe says for the stage, in either of its
    spellings (the stage's own field, or its `trainer` entry)."""
    stages = values.get("stages") or {}
    values["stages"] = stages
    for name in _stage_names(values):
        fields = dict(stages.get(name) or {})
        trainer = dict(fields.pop("trainer", None) or {})
        trainer.pop(key, None)
        fields.pop(key, None)
        fields[STAGE_TRAINER_FIELDS.get(key, key)] = value
        if trainer:
            fields["trainer"] = trainer
        stages[name] = fields


def parse_sft_args(argv):
    """`sft.py`'s command line -> (recipe `values` for `recipe_from_dict`, `PlanArguments`, output directory)."""
    parser = make_parser()
    config_path, argv = _pop_config(_merged_repeats(list(argv)))
    values = read_yaml(config_path) if config_path else {}
    if not isinstance(values, dict):
        raise ValueError(f"{config_path} must hold a YAML mapping (the recipe), got {type(values).__name__}.")
    for key, value in (values.pop("env", None) or {}).items():  # TRL's `env:` section
        os.environ[key] = str(value)
    plan_fields = {f.name for f in dataclasses.fields(PlanArguments)}
    trainer_fields = {f.name for f in dataclasses.fields(SFTConfig)}
    allowed = set(RECIPE_KEYS) | trainer_fields | plan_fields
    unknown = sorted(set(values) - allowed)
    if unknown:
        hints = {key: difflib.get_close_matches(key, sorted(allowed), n=1) for key in unknown}
        raise ValueError(f"{config_path}: unknown key(s) {unknown}"
                         + "".join(f" (did you mean `{m[0]}`?)" for m in hints.values() if m)
                         + f"; a recipe holds {sorted(RECIPE_KEYS)}, the plan arguments {sorted(plan_fields)} and "
                           "any SFTConfig field (see --help).")
    parser.set_defaults_with_config(**{key: values.pop(key) for key in list(values) if key in plan_fields})
    options = _option_names(parser)
    *parsed, remaining = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    if remaining:
        raise _unknown_flags_error(remaining, options)
    plan_args, flags = parsed[0], parsed[1]
    values = apply_overrides(values, plan_args.set)
    explicit = _explicit_flags(argv, options, trainer_fields)
    in_recipe = values.pop("output_dir", None)
    output_dir = flags.output_dir if "output_dir" in explicit else in_recipe
    if not output_dir:
        raise ValueError("No output directory: pass --output_dir DIR (or set `output_dir` in the recipe).")
    if not values:
        raise ValueError("No recipe: pass --config RECIPE.yaml (see training_scripts/recipes/).")
    cli = {key: getattr(flags, key) for key in sorted(explicit - {"output_dir"})}
    if "seed" in cli:
        values["seed"] = cli.pop("seed")
    if "per_device_train_batch_size" in cli:  # the recipe-wide batch: replaces the recipe's, whichever spelling
        values.pop("per_device_train_batch_size", None)
        (values.get("trainer") or {}).pop("per_device_train_batch_size", None)
        values["per_device_batch_size"] = cli["per_device_train_batch_size"]
    if plan_args.cpu:
        cli = {**CPU_TRAINER, **cli}
        model = values.setdefault("model", {}) or {}
        values["model"] = model
        if model.get("dtype", "float32") != "float32":
            logger.warning(f"--cpu: the model trains in float32 (the recipe says {model['dtype']})")
        model["dtype"] = "float32"
        if model.get("attn_implementation") == "flash_attention_2":
            model["attn_implementation"] = "sdpa"
    for key, value in cli.items():
        _apply_to_every_stage(values, key, value)
    on_command_line = _explicit_flags(argv, options, {"eval_fraction", "eval_data"})
    for key in ("eval_fraction", "eval_data"):  # the command line's replace a stage's own; the recipe's top level not
        if getattr(plan_args, key) is not None:
            stages = values.setdefault("stages", {}) or {}
            values["stages"] = stages
            for name in _stage_names(values):
                fields = dict(stages.get(name) or {})
                if key in on_command_line or ("eval_fraction" not in fields and "eval_data" not in fields):
                    fields.pop("eval_data" if key == "eval_fraction" else "eval_fraction", None)
                    fields[key] = getattr(plan_args, key)
                stages[name] = fields
    if plan_args.init:
        values["model"] = {**(values.get("model") or {}), "init": plan_args.init}
    return values, plan_args, output_dir


def recipe_from_args(values, plan_args):
    """The `Recipe` of parsed arguments, with `--lora` / `--qlora` applied to the stages that train the LLM."""
    recipe = recipe_from_dict(values)
    for stage in recipe.stages.values():
        if (plan_args.lora or plan_args.qlora) and "llm" in stage.train:
            stage.lora, stage.qlora = True, plan_args.qlora
    return recipe


__all__ = ["PlanArguments", "TrainerArguments", "make_parser", "parse_sft_args", "recipe_from_args"]
