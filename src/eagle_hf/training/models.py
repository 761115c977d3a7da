"""Building each stage's model from the previous stage's output, LoRA / QLoRA wrapping, and merging adapters.

* `continue`: the previous output, loaded with `from_pretrained`.
* `prealign`: for expert i, an `EagleConfig` holding only that expert (same text config, grid and image size), the
  expert's and the LLM's weights copied from the source, and a new projector (its input is that expert's width).
* `align`: the full mixture; expert i's weights from pre-aligned model i, the LLM from the original, a new fused
  projector (its input width, the sum of the experts', differs from every pre-aligned one).

Weights are copied by name with a strict check: every tensor of the new model except the new projector (and a
fusion's parameters, if it has any) must come from a source, with the same shape.
"""

import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText
from transformers.utils import logging

from ..configuration_eagle import EagleConfig
from ..modeling_eagle import MODULE_PREFIXES, EagleForConditionalGeneration
from .cards import write_stage_card
from .groups import llm_linear_regex

logger = logging.get_logger(__name__)

# New in every assembled model: the projector's input width changes, and a fusion's parameters depend on the experts.
NEW_PREFIXES = (MODULE_PREFIXES["projector"], MODULE_PREFIXES["fusion"])
EXPERT_PREFIX = MODULE_PREFIXES["expert"]
# transformers 5 anchors skip patterns at the start of the module name: bare "vision_tower" would match nothing and the
# experts would be quantized silently.
QLORA_SKIP_MODULES = [MODULE_PREFIXES[part].rstrip(".") for part in ("vision_tower", "projector", "lm_head")]
LEGACY_NON_LORA_TRAINABLES = "non_lora_trainables.safetensors"


class CheckpointTensors:
    """Read-only tensors by name from a saved checkpoint folder (safetensors, sharded or not) or a live model."""

    def __init__(self, source):
        self.source = source
        if isinstance(source, torch.nn.Module):
            self.files, self.tensors = None, source.state_dict()
            return
        index_path = os.path.join(source, "model.safetensors.index.json")
        if os.path.exists(index_path):
            with open(index_path, encoding="utf-8") as handle:
                weight_map = json.load(handle)["weight_map"]
            self.files = {key: os.path.join(source, name) for key, name in weight_map.items()}
        else:
            path = os.path.join(source, "model.safetensors")
            if not os.path.exists(path):
                raise FileNotFoundError(f"{source} holds no model.safetensors(.index.json).")
            with safe_open(path, "pt") as handle:
                self.files = {key: path for key in handle.keys()}
        self.handles = {}

    def __contains__(self, key):
        return key in (self.tensors if self.files is None else self.files)

    def __getitem__(self, key):
        if self.files is None:
            return self.tensors[key]
        path = self.files[key]
        if path not in self.handles:
            self.handles[path] = safe_open(path, "pt")
        return self.handles[path].get_tensor(key)


def load_config(source):
    return source.config if isinstance(source, torch.nn.Module) else EagleConfig.from_pretrained(source)


def single_expert_config(config, index):
    """The config of a model holding only expert `index` of `config` (its own projector width follows)."""
    values = config.to_dict()
    for derived in ("mm_hidden_size", "image_seq_length", "auto_map", "architectures", "transformers_version"):
        values.pop(derived, None)
    values["vision_experts"] = [values["vision_experts"][index]]
    values["fusion"] = "channel_concat"  # one expert: nothing to fuse (the other strategies need two or more)
    return EagleConfig(**values)


def build_model_from_sources(config, lookup, dtype=None, seed=0, origin=None):
    """A new model whose tensors come from `lookup(name) -> tensor`, except the projector and any fusion parameters,
    which are freshly initialised (from `seed`). A tensor `lookup` cannot give raises, naming it. `origin` (the
    checkpoint the weights come from) becomes the model's `name_or_path`, so its card can name their sources."""
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=dtype or torch.float32)  # public path
    tied = set((getattr(model, "_tied_weights_keys", None) or {})) if config.tie_word_embeddings else set()
    missing, shapes = [], []
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.startswith(NEW_PREFIXES) or name in tied:
                continue
            source = lookup(name)
            if source is None:
                missing.append(name)
            elif source.shape != tensor.shape:
                shapes.append(f"{name}: {tuple(source.shape)} -> {tuple(tensor.shape)}")
            else:
                tensor.copy_(source)
    if missing or shapes:
        raise ValueError(f"Cannot build the stage model: {len(missing)} tensor(s) missing from the sources "
                         f"(e.g. {missing[:3]}), {len(shapes)} of another shape (e.g. {shapes[:3]}).")
    if isinstance(origin, (str, os.PathLike)):
        model.name_or_path = model.config._name_or_path = str(origin)
    return model


def build_prealign_model(source, index, dtype=None, seed=0):
    """A model of expert `index` of `source` alone, the source's LLM, and a new projector."""
    config = single_expert_config(load_config(source), index)
    tensors = CheckpointTensors(source)
    own = EXPERT_PREFIX.format(0)

    def lookup(name):
        key = EXPERT_PREFIX.format(index) + name[len(own):] if name.startswith(own) else name
        return tensors[key] if key in tensors else None

    return build_model_from_sources(config, lookup, dtype, seed, origin=source)


def build_align_model(base, prealigned, dtype=None, seed=0):
    """The full mixture of `base`'s config: expert i from `prealigned[i]` (a one-expert model), the LLM from `base`,
    and a new fused projector."""
    config = load_config(base)
    if len(prealigned) != len(config.vision_experts):
        raise ValueError(f"The mixture has {len(config.vision_experts)} experts but {len(prealigned)} pre-aligned "
                         "models were given.")
    for index, source in enumerate(prealigned):
        expert = load_config(source).vision_experts
        if len(expert) != 1 or expert[0].to_dict() != config.vision_experts[index].to_dict():
            raise ValueError(f"Pre-aligned model {index} does not hold exactly expert {index} of the mixture "
                             f"({config.vision_experts[index].kind}).")
    base_tensors = CheckpointTensors(base)
    expert_tensors = [CheckpointTensors(source) for source in prealigned]
    own = EXPERT_PREFIX.format(0)

    def lookup(name):
        for index, tensors in enumerate(expert_tensors):
            prefix = EXPERT_PREFIX.format(index)
            if name.startswith(prefix):
                key = own + name[len(prefix):]
                return tensors[key] if key in tensors else None
        return base_tensors[name] if name in base_tensors else None

    return build_model_from_sources(config, lookup, dtype, seed, origin=base)


def load_model(path, dtype=None, qlora=False, device_map=None, attn_implementation=None):
    """`from_pretrained` of a stage input; with `qlora`, the LLM in 4-bit NF4 (double quantisation, bf16 compute)
    while the experts, the projector and `lm_head` stay in bf16.

    PEFT's `prepare_model_for_kbit_training` is not applied: it casts every non-quantized parameter to fp32, which
    would double the experts' memory (2.3B parameters in Eagle-X5); freezing, input gradients for checkpointing and
    bf16 adapters are done by the stage and TRL."""
    kwargs = dict(dtype=dtype or torch.float32)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if qlora:
        from transformers import BitsAndBytesConfig

        kwargs["dtype"] = torch.bfloat16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True, llm_int8_skip_modules=QLORA_SKIP_MODULES,
        )
        kwargs["device_map"] = device_map or {"": _local_device()}
    model = EagleForConditionalGeneration.from_pretrained(path, **kwargs)
    _keep_only_used_conversions(model)
    if qlora:
        _keep_4bit_trainable_on_cpu(model)
    return model


def _keep_only_used_conversions(model):
    # transformers 5.x remembers the key conversions a load applied, and reverts them on save. Its DeepSpeed ZeRO-3 load
    # remembers every candidate conversion, used or not, so the saved stage would hold the language model's keys as
    # `model.language_model.model.*`; keep only the used ones, as its ordinary load does (none, for eagle-hf files).
    conversions = getattr(model, "_weight_conversions", None)
    if conversions:
        model._weight_conversions = [c for c in conversions if not hasattr(c, "was_used") or c.was_used()]


def _local_device():
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _keep_4bit_trainable_on_cpu(model):
    # On AVX512-BF16 CPUs an eval forward repacks 4-bit weights one way into an inference layout that has no backward;
    # training afterwards would get wrong LoRA gradients. Keep the trainable layout (no effect on GPUs).
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def saved_modules(model, train_groups):
    """The modules that train in full beside LoRA (PEFT's `modules_to_save`): the projector (and a fusion with
    parameters) when the projector group trains, each expert when the experts train."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = []
    if "projector" in train_groups:
        names.append(MODULE_PREFIXES["projector"].rstrip("."))
        fusion = MODULE_PREFIXES["fusion"].rstrip(".")
        if any(True for _ in base.get_submodule(fusion).parameters()):
            names.append(fusion)
    if "experts" in train_groups:
        names += [EXPERT_PREFIX.format(index).rstrip(".") for index in range(len(base.config.vision_experts))]
    return names


def add_lora(model, settings, train_groups=("projector", "llm")):
    """Wrap `model` with LoRA adapters on the LLM's linear layers only (never the experts, the projector or lm_head);
    the other trained groups train in full as PEFT's `modules_to_save`, so the adapter folder holds everything the
    stage changed and `PeftModel.from_pretrained` / `AutoPeftModelForCausalLM` rebuild the trained model."""
    from peft import LoraConfig, get_peft_model

    settings = {key: value for key, value in settings.items() if key != "learning_rate"}  # the optimizer's, not PEFT's
    for forbidden in ("target_modules", "modules_to_save", "task_type"):
        if forbidden in settings:
            raise ValueError(f"`lora.{forbidden}` is fixed by the stage (LoRA targets the LLM's linear layers; the "
                             "other trained groups train in full as `modules_to_save`).")
    config = LoraConfig(target_modules=llm_linear_regex(model), modules_to_save=saved_modules(model, train_groups),
                        task_type="CAUSAL_LM", **settings)
    return get_peft_model(model, config)


def _load_legacy_trainables(model, directory):
    """Adapters of earlier eagle-hf versions kept the fully trained modules in `non_lora_trainables.safetensors`,
    which PEFT does not read: load them into the base model (by plain name, strictly)."""
    path = os.path.join(directory, LEGACY_NON_LORA_TRAINABLES)
    if not os.path.exists(path):
        return
    tensors = load_file(path)
    parameters = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(parameters))
    if unknown:
        raise ValueError(f"{path} holds tensors the model lacks, e.g. {unknown[:3]}.")
    with torch.no_grad():
        for name, tensor in tensors.items():
            parameters[name].copy_(tensor)
    logger.warning(f"{path}: loaded the fully trained modules from the pre-`modules_to_save` file.")


def merge_lora(adapter_dir, output_dir, base=None, dtype="auto"):
    """Write a standalone checkpoint from a LoRA stage output: the base model with the LoRA deltas merged in and the
    trained copies of the `modules_to_save`, the processor (files and code), and a model card. It loads with the Auto
    classes like any other checkpoint.

    Args:
        adapter_dir: the stage folder (adapter_model.safetensors, adapter_config.json, processor files).
        output_dir: the new checkpoint's folder.
        base: the base checkpoint (default: the one adapter_config.json names).
        dtype: the weights' dtype: "auto" (the base checkpoint's), or a torch dtype or its name.
    """
    from peft import PeftModel

    from .plan import load_processor

    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as handle:
        adapter_config = json.load(handle)
    base = base or adapter_config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir}/adapter_config.json names no base model; pass `base`.")
    dtype = parse_dtype(dtype)
    model = EagleForConditionalGeneration.from_pretrained(base, dtype=dtype)
    _load_legacy_trainables(model, adapter_dir)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model.save_pretrained(output_dir)
    load_processor(adapter_dir).save_pretrained(output_dir)
    write_stage_card(output_dir, model.config, base, merged_adapter=adapter_dir)
    logger.info(f"merged {adapter_dir} into {base} as {model.dtype}: {output_dir}")
    return output_dir


DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def parse_dtype(dtype):
    """"auto", a torch dtype, or one of their names -> what `from_pretrained(dtype=...)` takes; anything else raises."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype in DTYPE_NAMES:
        return getattr(torch, dtype)
    raise ValueError(f"dtype must be one of {list(DTYPE_NAMES)} or a torch dtype, got {dtype!r}.")


__all__ = [
    "CheckpointTensors", "QLORA_SKIP_MODULES", "add_lora", "build_align_model", "build_prealign_model",
    "load_model", "merge_lora", "parse_dtype", "saved_modules", "single_expert_config",
]
