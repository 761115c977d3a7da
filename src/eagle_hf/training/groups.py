"""Module groups of an Eagle model (experts, projector, llm): which parameter belongs where, and what a stage trains.

Every parameter of `EagleForConditionalGeneration` belongs to exactly one group; names are read through the wrappers
training adds (PEFT's `base_model.model.`, DDP's `module.`, FSDP's and checkpointing's wrapper modules). A fusion with
parameters (`vision_tower.fusion`, e.g. LLaVA-HR adapters) belongs to the projector group: like the projector it sits
between experts and LLM, is new when experts are combined, and trains whenever the projector does.
"""

import re

from torch import nn
from transformers.utils import logging

from ..modeling_eagle import MODULE_PREFIXES

logger = logging.get_logger(__name__)

MODULE_GROUPS = ("experts", "projector", "llm")
_GROUP_PREFIXES = tuple((MODULE_PREFIXES[part], group) for part, group in (
    ("fusion", "projector"), ("vision_tower", "experts"), ("projector", "projector"), ("language_model", "llm"),
    ("lm_head", "llm"),
))  # first match wins: the fusion sits inside the vision tower but trains with the projector
# PEFT's `modules_to_save` keeps the trained copy under `modules_to_save.<adapter>.` and the frozen original under
# `original_module.`; both read as the module they wrap.
_WRAPPER_PARTS = re.compile(
    r"(^|\.)(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod|original_module|modules_to_save\.[^.]+)\.")
_WRAPPER_PREFIXES = ("base_model.model.", "module.")


def plain_name(name):
    """`base_model.model.model.language_model.x` (PEFT, DDP, FSDP, compile) -> `model.language_model.x`."""
    name = _WRAPPER_PARTS.sub(r"\1", name)
    while name.startswith(_WRAPPER_PREFIXES):  # no model name starts with these, so stripping never eats one
        name = name.split(".", 2)[-1] if name.startswith("base_model.model.") else name[len("module."):]
    return name


def group_of(name):
    """The module group ("experts", "projector" or "llm") a parameter or module name belongs to."""
    plain = plain_name(name)
    for prefix, group in _GROUP_PREFIXES:
        if plain.startswith(prefix):
            return group
    raise ValueError(f"Parameter {name!r} belongs to no module group; expected a name under one of "
                     f"{[prefix for prefix, _ in _GROUP_PREFIXES]}.")


def is_lora_parameter(name):
    return ".lora_" in name


def is_saved_original(name):
    """A parameter of the frozen original PEFT keeps beside a `modules_to_save` copy (the copy is what trains)."""
    return ".original_module." in f".{name}"


def check_groups(groups, what="train"):
    unknown = sorted(set(groups) - set(MODULE_GROUPS))
    if unknown:
        raise ValueError(f"`{what}` names unknown module group(s) {unknown}; the groups are {list(MODULE_GROUPS)}.")
    return tuple(group for group in MODULE_GROUPS if group in groups)


def should_train(name, train_groups, lora):
    """Whether a parameter trains in a stage: its group trains, except the LLM's own weights under LoRA (then only the
    LoRA matrices train there)."""
    if is_lora_parameter(name):
        return lora and "llm" in train_groups
    if is_saved_original(name):
        return False
    group = group_of(name)
    return group in train_groups and not (lora and group == "llm")


def apply_trainability(model, train_groups, lora=False):
    """Set `requires_grad` on every parameter from the stage's groups; call it before the trainer (and its optimizer)
    exists. Returns the number of trainable parameters."""
    train_groups = check_groups(train_groups)
    trainable = 0
    for name, parameter in model.named_parameters():
        flag = should_train(name, train_groups, lora)
        if flag and not parameter.is_floating_point():
            raise ValueError(f"Parameter {name!r} is {parameter.dtype} (quantized) and cannot train; train this "
                             f"group with LoRA instead.")
        parameter.requires_grad_(flag)
        trainable += parameter.numel() if flag else 0
    return trainable


def parameter_table(model, learning_rates=None):
    """Rows (group, tensors, parameters, trainable parameters, learning rate) per module group."""
    rows = {group: [0, 0, 0] for group in MODULE_GROUPS}
    for name, parameter in model.named_parameters():
        if is_saved_original(name):
            continue  # PEFT's frozen copy of a module that trains in full: the model holds it once
        row = rows[group_of(name)]
        # ZeRO-3 keeps the full size in `ds_numel`; bitsandbytes packs two 4-bit values per stored byte
        count = getattr(parameter, "ds_numel", parameter.numel()) * (2 if type(parameter).__name__ == "Params4bit"
                                                                     else 1)
        row[0] += 1
        row[1] += count
        row[2] += count if parameter.requires_grad else 0
    learning_rates = learning_rates or {}
    return [(group, *rows[group], learning_rates.get(group) if rows[group][2] else None) for group in MODULE_GROUPS]


def format_parameter_table(rows, title=""):
    lines = [title] if title else []
    lines.append(f"{'group':<10} {'tensors':>8} {'parameters':>14} {'trainable':>14} {'lr':>10}")
    for group, tensors, total, trainable, lr in rows:
        lr_text = f"{lr:.2e}" if lr is not None else "-"
        lines.append(f"{group:<10} {tensors:>8} {total:>14,} {trainable:>14,} {lr_text:>10}")
    return "\n".join(lines)


def llm_linear_regex(model):
    """A PEFT `target_modules` regex matching exactly the language model's linear layers (never the experts, the
    projector or `lm_head`). 4-bit layers count: bitsandbytes' `Linear4bit` subclasses `nn.Linear`."""
    leaves = sorted({
        plain_name(name).rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and plain_name(name).startswith(MODULE_PREFIXES["language_model"])
    })
    if not leaves:
        raise ValueError("The language model has no nn.Linear layers for LoRA to target.")
    return r".*model\.language_model\..*\.(" + "|".join(re.escape(leaf) for leaf in leaves) + r")"


__all__ = [
    "MODULE_GROUPS", "apply_trainability", "format_parameter_table", "group_of", "is_lora_parameter",
    "is_saved_original", "llm_linear_regex", "parameter_table", "plain_name", "should_train",
]
