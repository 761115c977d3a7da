"""Training stages and recipes as data.

A `Stage` says how its model is built from the previous stage's output, which module groups train and at which
learning rates, which chat template and data it reads, and its batch and schedule. A `Recipe` (a YAML file) names the
starting model, the data sets, the trainer settings shared by every stage, and the plan: the ordered stage names.
"""

import copy
import dataclasses
import os
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
    lora: dict = field(default_factory=lambda: dict(r=128, lora_alpha=256, lora_dropout=0.05, learning_rate=2e-4))
    per_device_batch_size: int = 4
    seed: int = 42
    feature_cache_dir: Optional[str] = None

    def __post_init__(self):
        missing = [name for name in self.plan if name not in self.stages]
        if missing:
            raise ValueError(f"The plan names stage(s) {missing} that `stages` does not define "
                             f"(defined: {sorted(self.stages)}).")
        for stage in self.stages.values():
            if stage.data not in self.data:
                raise ValueError(f"Stage {stage.name!r} reads data set {stage.data!r}, which `data` does not define "
                                 f"(defined: {sorted(self.data)}).")

    def stage(self, name):
        if name not in self.stages:
            raise ValueError(f"Unknown stage {name!r}; this recipe defines {sorted(self.stages)}.")
        return self.stages[name]


def recipe_from_dict(values, base_dir=None):
    """A `Recipe` from plain data (the parsed YAML). Relative paths are read from `base_dir`."""
    values = copy.deepcopy(values)
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown recipe field(s) {unknown}; the fields are {sorted(known)}.")
    for required in ("name", "plan", "data"):
        if required not in values:
            raise ValueError(f"The recipe has no `{required}`.")
    stages = values.pop("stages", None) or {}
    plan = list(values.pop("plan"))
    for name in plan:  # a plan may name a preset it does not redefine
        stages.setdefault(name, {})
    values["stages"] = {name: make_stage(name, **(fields or {})) for name, fields in stages.items()}
    values["data"] = {name: _data_spec(spec, base_dir) for name, spec in values["data"].items()}
    return Recipe(plan=plan, **values)


def _data_spec(spec, base_dir):
    if isinstance(spec, DataSpec):
        return spec
    spec = dict(spec)
    for key in ("json", "image_folder"):
        if isinstance(spec.get(key), str) and base_dir is not None:
            spec[key] = os.path.join(base_dir, os.path.expanduser(spec[key]))
    return DataSpec(**spec)


def apply_overrides(values, overrides):
    """Apply `key.sub=value` strings (values parsed as YAML) to nested recipe data, in order."""
    values = copy.deepcopy(values)
    for override in overrides or ():
        if "=" not in override:
            raise ValueError(f"Override {override!r} must look like `key.sub=value`.")
        path, text = override.split("=", 1)
        keys = path.strip().split(".")
        node = values
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"Override {override!r}: `{key}` is not a mapping.")
        node[keys[-1]] = yaml.safe_load(text)
    return values


def load_recipe(path, overrides=()):
    """Read a YAML recipe, apply `overrides`, and build the `Recipe`. Relative data paths are taken from the current
    directory (where `accelerate launch` runs), as the recipes in the repository expect."""
    with open(path, encoding="utf-8") as handle:
        values = yaml.safe_load(handle)
    return recipe_from_dict(apply_overrides(values, overrides))


__all__ = ["DataSpec", "Recipe", "STAGE_PRESETS", "Stage", "apply_overrides", "load_recipe", "make_stage",
           "recipe_from_dict"]
