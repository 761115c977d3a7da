"""Training stages and recipes as data.

A `Stage` says how its model is built from the previous stage's output, which module groups train and at which
learning rates, which chat template and data it reads, and its batch and schedule. A `Recipe` (a YAML file) names the
starting model, the data sets, the trainer settings shared by every stage, and the plan: the ordered stage names.
"""

import copy
import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Optional

import yaml

from .groups import check_groups

BUILDS = ("continue", "prealign", "align")


@dataclass
class Stage:
    """One trainer run (or, for `build="prealign"`, one run per expert).

    Args:
        name: the stage's name; also its folder under the plan's output directory.
        train: the module groups whose weights train (`experts`, `projector`, `llm`); all others are frozen.
        learning_rate: the learning rate of every trained group not named in `group_learning_rates`.
        group_learning_rates: per-group learning rates, e.g. `{"experts": 2e-6}`.
        template: the chat template (`plain`, `vicuna_v1`, `llama3`, `chatml`).
        data: the name of a data set of the recipe.
        build: `continue` (load the previous stage's output), `prealign` (for each expert, a model holding only that
            expert and a new projector in front of the LLM), `align` (the full mixture from the pre-aligned experts,
            the original LLM and a new fused projector).
        global_batch_size: samples per optimizer step over all processes; reached by gradient accumulation.
        per_device_batch_size: samples per forward pass on one device (defaults to the recipe's).
        num_train_epochs / max_steps / lr_scheduler_type / warmup_ratio / weight_decay: the schedule.
        max_length: token budget of one sample, image tokens included (longer samples are truncated in their text, or
            dropped when the cut would split an image).
        tokenize_chunks: tokenise the text between images piece by piece, as the original LLaVA/Eagle code did (the
            ids the released models were trained on). Default: the processor's stored choice (True for converted
            checkpoints); a stage that sets it saves its processor with that choice, so inference follows.
        group_by_modality_length: batch image and text-only samples apart, and samples of similar length together.
        feature_cache: compute the frozen experts' fused features once and reuse them (only when experts are frozen).
        lora / qlora: train the LLM through LoRA adapters (QLoRA: on a 4-bit NF4 LLM).
        eval_data / eval_fraction: evaluation during training, on a data set of the recipe or on a held-out fraction
            of the stage's own data (seeded by the recipe's seed); the eval loss is logged as `eval_loss`. With either
            and no `eval_strategy`, the stage evaluates at the end of each epoch (and of training).
        trainer: further `SFTConfig` fields for this stage only.
    """

    name: str
    train: tuple = ("projector",)
    learning_rate: float = 2e-5
    group_learning_rates: dict = field(default_factory=dict)
    template: str = "vicuna_v1"
    data: str = "sft"
    build: str = "continue"
    global_batch_size: int = 128
    per_device_batch_size: Optional[int] = None
    num_train_epochs: float = 1.0
    max_steps: int = -1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_length: Optional[int] = 2048
    tokenize_chunks: Optional[bool] = None
    group_by_modality_length: bool = False
    feature_cache: bool = False
    lora: bool = False
    qlora: bool = False
    eval_data: Optional[str] = None
    eval_fraction: Optional[float] = None
    trainer: dict = field(default_factory=dict)

    def __post_init__(self):
        self.train = check_groups(self.train, f"stages.{self.name}.train")
        check_groups(self.group_learning_rates, f"stages.{self.name}.group_learning_rates")
        if self.build not in BUILDS:
            raise ValueError(f"Stage {self.name!r}: `build` must be one of {list(BUILDS)}, got {self.build!r}.")
        if not self.train:
            raise ValueError(f"Stage {self.name!r} trains nothing; name at least one module group in `train`.")
        if self.feature_cache and "experts" in self.train:
            raise ValueError(f"Stage {self.name!r} trains the experts, so their features change at every step and "
                             "cannot be cached; set `feature_cache: false` or freeze the experts.")
        if self.tokenize_chunks is not None and not isinstance(self.tokenize_chunks, bool):
            raise ValueError(f"Stage {self.name!r}: `tokenize_chunks` must be true, false or unset (the processor's "
                             f"choice), got {self.tokenize_chunks!r}.")
        if self.qlora:
            self.lora = True
        if self.lora and "llm" not in self.train:
            raise ValueError(f"Stage {self.name!r} uses LoRA but does not train the LLM (`train: {list(self.train)}`); "
                             "LoRA adapts only the LLM.")
        if self.build == "prealign" and "llm" in self.train:
            raise ValueError(f"Stage {self.name!r}: pre-alignment keeps the LLM frozen; remove `llm` from `train`.")
        if self.eval_fraction is not None:
            if isinstance(self.eval_fraction, bool) or not isinstance(self.eval_fraction, (int, float)) or not (
                    0 < self.eval_fraction < 1):
                raise ValueError(f"Stage {self.name!r}: `eval_fraction` must be a number between 0 and 1 (exclusive), "
                                 f"got {self.eval_fraction!r}.")
            if self.eval_data is not None:
                raise ValueError(f"Stage {self.name!r} sets both `eval_data` ({self.eval_data!r}) and `eval_fraction` "
                                 f"({self.eval_fraction}); evaluate on one of them.")
        self.learning_rate = float(self.learning_rate)
        self.group_learning_rates = {group: float(lr) for group, lr in self.group_learning_rates.items()}

    def learning_rates(self):
        """{group: learning rate} for every trained group."""
        return {group: self.group_learning_rates.get(group, self.learning_rate) for group in self.train}


# The five stages of the issue: LLaVA-1.5's two (`scripts/v1_5/pretrain.sh`, `finetune.sh`) and Eagle's three
# (paper: pre-align each expert, align the fused projector, then SFT everything).
STAGE_PRESETS = {
    "llava_pretrain": dict(train=("projector",), learning_rate=1e-3, template="plain", data="pretrain",
                           global_batch_size=256),
    "llava_finetune": dict(train=("projector", "llm"), learning_rate=2e-5, template="vicuna_v1", data="sft",
                           global_batch_size=128, group_by_modality_length=True),
    # The paper gives no hyper-parameters for pre-alignment and its code is unreleased: the experts get the SFT rate,
    # their new projector the projector-pretraining rate. Data: SFT conversations, LLM frozen.
    "eagle_prealign": dict(build="prealign", train=("experts", "projector"), learning_rate=2e-5,
                           group_learning_rates={"projector": 1e-3}, template="vicuna_v1", data="sft",
                           global_batch_size=128, group_by_modality_length=True),
    "eagle_align": dict(build="align", train=("projector",), learning_rate=1e-3, template="plain", data="pretrain",
                        global_batch_size=256),
    "eagle_sft": dict(train=("experts", "projector", "llm"), learning_rate=2e-5, template="vicuna_v1", data="sft",
                      global_batch_size=128, group_by_modality_length=True),
}


def make_stage(name, **fields):
    """A stage from its preset (when `name` or `preset` names one) with `fields` overriding the preset's values."""
    preset = fields.pop("preset", name if name in STAGE_PRESETS else None)
    if preset is not None and preset not in STAGE_PRESETS:
        raise ValueError(f"Stage {name!r}: unknown preset {preset!r}; the presets are {sorted(STAGE_PRESETS)}.")
    known = {f.name for f in dataclasses.fields(Stage)} - {"name"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"Stage {name!r}: unknown field(s) {unknown}; the fields are {sorted(known)}.")
    values = copy.deepcopy(STAGE_PRESETS.get(preset, {}))
    values.update(fields)
    return Stage(name=name, **values)


@dataclass
class DataSpec:
    """A data set: a LLaVA JSON/JSONL file (`json`), a HF dataset (`hf_dataset`, a Hub name or a `save_to_disk`
    folder), or in-memory `records` (each LLaVA-style or `messages`/`images`); image paths are read from
    `image_folder`."""

    json: Optional[str] = None
    hf_dataset: Optional[str] = None
    hf_split: str = "train"
    image_folder: Optional[str] = None
    records: Optional[object] = None
    max_samples: Optional[int] = None

    def __post_init__(self):
        given = [key for key in ("json", "hf_dataset", "records") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("A data set needs exactly one of `json`, `hf_dataset` or `records`, got "
                             f"{given or 'none'}.")


@dataclass
class Recipe:
    """A training plan. `model` holds `init` (the starting checkpoint: pretrained experts + LLM), `dtype` and
    `attn_implementation`; `trainer` holds `SFTConfig` fields shared by every stage; `lora` holds `LoraConfig` fields
    (r, lora_alpha, lora_dropout...) and `learning_rate`, the LoRA matrices' rate unless a stage sets
    `group_learning_rates.llm`; `feature_cache_dir` defaults to `<output_dir>/feature_cache`."""

    name: str
    plan: list
    stages: dict
    data: dict
    model: dict = field(default_factory=dict)
    processor: Optional[str] = None
    trainer: dict = field(default_factory=dict)
    # LLaVA-1.5's finetune_lora.sh: r 128, alpha 256, the LoRA matrices at 2e-4 (the projector keeps the stage's rate).
    lora: dict = field(default_factory=lambda: dict(DEFAULT_LORA))
    per_device_batch_size: int = 4
    seed: int = 42
    feature_cache_dir: Optional[str] = None

    def __post_init__(self):
        missing = [name for name in self.plan if name not in self.stages]
        if missing:
            raise ValueError(f"The plan names stage(s) {missing} that `stages` does not define "
                             f"(defined: {sorted(self.stages)}).")
        for stage in self.stages.values():
            for what, name in (("reads data set", stage.data), ("evaluates on data set", stage.eval_data)):
                if name is not None and name not in self.data:
                    raise ValueError(f"Stage {stage.name!r} {what} {name!r}, which `data` does not define "
                                     f"(defined: {sorted(self.data)}).")

    def stage(self, name):
        if name not in self.stages:
            raise ValueError(f"Unknown stage {name!r}; this recipe defines {sorted(self.stages)}.")
        return self.stages[name]


# SFTConfig fields that are a stage's own settings: at a recipe's top level (or its `trainer`) they are every stage's
# default, in a stage's `trainer` they are that stage's; a stage's own field wins over the recipe-wide value.
STAGE_TRAINER_FIELDS = {
    "learning_rate": "learning_rate", "num_train_epochs": "num_train_epochs", "max_steps": "max_steps",
    "lr_scheduler_type": "lr_scheduler_type", "warmup_ratio": "warmup_ratio", "weight_decay": "weight_decay",
    "max_length": "max_length", "per_device_train_batch_size": "per_device_batch_size",
}
MODEL_KEYS = ("init", "dtype", "attn_implementation")
_SAME_SETTING = {"per_device_batch_size": "per_device_train_batch_size",
                 "per_device_train_batch_size": "per_device_batch_size"}
DEFAULT_LORA = dict(r=128, lora_alpha=256, lora_dropout=0.05, learning_rate=2e-4)


def trainer_field_names():
    """The names of `trl.SFTConfig`'s fields (the trainer settings a recipe may hold)."""
    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(SFTConfig)}


def _check_keys(given, allowed, where):
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        close = {key: difflib.get_close_matches(key, list(allowed), n=1) for key in unknown}
        hints = "".join(f" (did you mean `{match[0]}`?)" for key, match in close.items() if match)
        raise ValueError(f"{where}: unknown key(s) {unknown}{hints}; the allowed keys are {sorted(allowed)}.")


def _split_trainer(settings, where, trainer_fields):
    """(stage fields, plain SFTConfig fields) of a `trainer` mapping (or a recipe's top-level trainer fields)."""
    settings = dict(settings or {})
    _check_keys(settings, trainer_fields, f"{where} (SFTConfig fields)")
    if "output_dir" in settings:
        raise ValueError(f"{where}: `output_dir` is the plan's output directory (`--output_dir` of sft.py, "
                         "`run_plan(recipe, output_dir)`); each stage writes into `<output_dir>/<stage>`.")
    stage_fields = {STAGE_TRAINER_FIELDS[key]: settings.pop(key) for key in list(settings)
                    if key in STAGE_TRAINER_FIELDS}
    return stage_fields, settings


def recipe_from_dict(values, base_dir=None):
    """A `Recipe` from plain data (the parsed YAML). Relative paths are read from `base_dir`.

    Besides the `Recipe` fields, the top level may hold any `SFTConfig` field (shared by every stage; the older
    spelling puts them under `trainer:`). A stage's settings (`learning_rate`, `max_steps`, ...) given there are every
    stage's default, below the stage's own value; `lora` merges into the default LoRA settings."""
    values = copy.deepcopy(values)
    if not isinstance(values, dict):
        raise ValueError(f"A recipe is a mapping of its fields, got {type(values).__name__}.")
    known = {f.name for f in dataclasses.fields(Recipe)}
    trainer_fields = trainer_field_names()
    _check_keys(values, known | trainer_fields, "recipe")
    for required in ("name", "plan", "data"):
        if required not in values:
            raise ValueError(f"The recipe has no `{required}`.")
    top = {key: values.pop(key) for key in list(values) if key not in known}
    trainer = dict(values.pop("trainer", None) or {})
    both = sorted(set(top) & set(trainer))
    if both:
        raise ValueError(f"The recipe sets {both} both at its top level and under `trainer`; keep one.")
    stage_defaults, values["trainer"] = _split_trainer({**trainer, **top}, "recipe trainer settings", trainer_fields)
    if "per_device_batch_size" in stage_defaults:
        if "per_device_batch_size" in values:
            raise ValueError("The recipe sets both `per_device_batch_size` and `per_device_train_batch_size`; keep "
                             "one.")
        values["per_device_batch_size"] = stage_defaults.pop("per_device_batch_size")
    lora = values.get("lora") or {}
    _check_keys(lora, _lora_keys(), "recipe `lora`")
    values["lora"] = {**DEFAULT_LORA, **lora}
    _check_keys(values.get("model") or {}, MODEL_KEYS, "recipe `model`")
    stages = values.pop("stages", None) or {}
    plan = list(values.pop("plan"))
    for name, fields in stages.items():  # a stage the plan cannot run and no preset names is a misspelt one
        if name not in plan and name not in STAGE_PRESETS and "preset" not in (fields or {}):
            close = difflib.get_close_matches(name, plan, n=1)
            raise ValueError(f"`stages.{name}` is not in the plan {plan} and names no preset"
                             + (f" (did you mean `{close[0]}`?)" if close else "")
                             + f"; the presets are {sorted(STAGE_PRESETS)}.")
    for name in plan:  # a plan may name a preset it does not redefine
        stages.setdefault(name, {})
    values["stages"] = {name: _stage_from_fields(name, fields, stage_defaults, trainer_fields)
                        for name, fields in stages.items()}
    values["data"] = {name: _data_spec(spec, base_dir, name) for name, spec in values["data"].items()}
    return Recipe(plan=plan, **values)


def _stage_from_fields(name, fields, defaults, trainer_fields):
    """A stage from its YAML entry: `Stage` fields, and `SFTConfig` fields directly or under `trainer`."""
    fields = dict(fields or {})
    stage_fields = {f.name for f in dataclasses.fields(Stage)} | {"preset"}
    _check_keys(fields, stage_fields | trainer_fields, f"stages.{name} (Stage and SFTConfig fields)")
    direct = {key: fields.pop(key) for key in list(fields) if key not in stage_fields}
    trainer = dict(fields.get("trainer") or {})
    both = sorted(set(direct) & set(trainer))
    if both:
        raise ValueError(f"Stage {name!r} sets {both} both directly and under `trainer`; keep one.")
    own, fields["trainer"] = _split_trainer({**trainer, **direct}, f"stages.{name}", trainer_fields)
    both = sorted(set(own) & set(fields))
    if both:
        raise ValueError(f"Stage {name!r} sets {both} both as its own field and under `trainer`; keep one.")
    return make_stage(name, **{**defaults, **own, **fields})


def _lora_keys():
    from peft import LoraConfig

    return {f.name for f in dataclasses.fields(LoraConfig)} | {"learning_rate"}


def _data_spec(spec, base_dir, name="?"):
    if isinstance(spec, DataSpec):
        return spec
    if not isinstance(spec, dict):
        raise ValueError(f"Data set {name!r} must be a mapping (json / hf_dataset / records, image_folder...), got "
                         f"{spec!r}.")
    _check_keys(spec, [f.name for f in dataclasses.fields(DataSpec)], f"data set {name!r}")
    spec = dict(spec)
    for key in ("json", "image_folder"):
        if isinstance(spec.get(key), str) and base_dir is not None:
            spec[key] = os.path.join(base_dir, os.path.expanduser(spec[key]))
    return DataSpec(**spec)


class RecipeLoader(yaml.SafeLoader):
    """YAML as recipes mean it: only true/false are booleans (YAML 1.1 reads `save_strategy: no` as False) and `1e-3`
    is a number (YAML 1.1 reads it as a string)."""


_REPLACED_TAGS = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")
RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+"
               r"(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def read_yaml(text_or_path, is_path=True):
    """A recipe file (or text) parsed with `RecipeLoader`; a syntax error names the file and line."""
    where = text_or_path if is_path else "value"
    try:
        if is_path:
            with open(text_or_path, encoding="utf-8") as handle:
                return yaml.load(handle, Loader=RecipeLoader)
        return yaml.load(text_or_path, Loader=RecipeLoader)
    except yaml.YAMLError as error:
        raise ValueError(f"{where} is not valid YAML: {error}") from None


def apply_overrides(values, overrides):
    """Apply `key.sub=value` strings (values parsed as YAML) to nested recipe data, in order. A recipe-wide trainer
    setting is one key whether written `save_steps=...` or `trainer.save_steps=...`."""
    values = copy.deepcopy(values)
    for override in overrides or ():
        if "=" not in override:
            raise ValueError(f"Override {override!r} must look like `key.sub=value`.")
        path, text = override.split("=", 1)
        keys = path.strip().split(".")
        if keys[0] == "trainer" and len(keys) == 2:
            keys = keys[1:]  # the older spelling of a recipe-wide trainer setting
        if len(keys) == 1:  # one setting, whichever spelling the recipe used
            spellings = [keys[0], *([_SAME_SETTING[keys[0]]] if keys[0] in _SAME_SETTING else [])]
            for spelling in spellings[1:]:
                values.pop(spelling, None)
            if isinstance(values.get("trainer"), dict):
                for spelling in spellings:
                    values["trainer"].pop(spelling, None)
        node = values
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"Override {override!r}: `{key}` is not a mapping.")
        node[keys[-1]] = read_yaml(text, is_path=False)
    return values


def load_recipe(path, overrides=()):
    """Read a YAML recipe, apply `overrides`, and build the `Recipe`. Relative data paths are taken from the current
    directory (where `accelerate launch` runs), as the recipes in the repository expect."""
    return recipe_from_dict(apply_overrides(read_yaml(path), overrides))


__all__ = ["DataSpec", "Recipe", "RecipeLoader", "STAGE_PRESETS", "STAGE_TRAINER_FIELDS", "Stage", "apply_overrides",
           "load_recipe", "make_stage", "read_yaml", "recipe_from_dict", "trainer_field_names"]
