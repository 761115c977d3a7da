"""Running stages and plans: each stage is one trainer run that starts from the previous stage's output.

Layout under a plan's output directory: `<stage>/` (pre-alignment: `<stage>/expert_<i>_<kind>/`) holds the trainer's
`checkpoint-<step>/` folders while it runs, then the final model and `stage_result.json`, written last. Re-running a
plan skips every stage with a `stage_result.json` and resumes an interrupted one from its last complete checkpoint.
"""

import copy
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import Optional

import datasets
import torch
import torch.distributed as dist
from accelerate import PartialState
from transformers import ProcessorMixin, set_seed
from transformers.utils import logging
from trl import SFTConfig

from ..chat_templates import load_chat_template
from ..files import write_json_atomically
from .data import ConversationEncoder, DataReport, EagleDataCollator, SkippedSample, estimate_length, load_records
from .feature_cache import FeatureCache, tower_fingerprint
from .groups import apply_trainability
from .models import add_lora, build_align_model, build_prealign_model, load_config, load_model, merge_lora
from .stages import Recipe, load_recipe, recipe_from_dict
from .trainer import StageCheckCallback, StageTrainer

logger = logging.get_logger(__name__)

RESULT_FILE = "stage_result.json"
_DERIVED_TRAINER_FIELDS = {"output_dir": "the plan's output directory"}


@dataclass
class StageResult:
    """What one trainer run left: where its model is, its log history (loss curve), data and parameter reports.

    `data_report` counts the samples this process group read in the run that finished the stage (after a resume:
    since the resume); `log_history` is the trainer's, checkpoints included."""

    name: str
    output_dir: str
    log_history: list = field(default_factory=list)
    data_report: dict = field(default_factory=dict)
    parameter_table: str = ""
    global_step: int = 0
    lora: bool = False
    skipped: bool = False
    resumed_from: Optional[str] = None

    @property
    def losses(self):
        """[(step, training loss)] as logged by the trainer."""
        return [(entry["step"], entry["loss"]) for entry in self.log_history if "loss" in entry]

    @property
    def eval_losses(self):
        """[(step, evaluation loss)] as logged by the trainer (empty without an eval set)."""
        return [(entry["step"], entry["eval_loss"]) for entry in self.log_history if "eval_loss" in entry]

    @property
    def model_dir(self):
        """The folder the next stage loads (for LoRA stages, the merged model, written on first use)."""
        return os.path.join(self.output_dir, "merged") if self.lora else self.output_dir

    def to_dict(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("skipped", "resumed_from")}

    @classmethod
    def read(cls, output_dir):
        """The finished stage's result, or None: no result file, or one that cannot be read whole (a run killed while
        writing it; the stage then resumes from its last complete checkpoint, with the reason logged)."""
        path = os.path.join(output_dir, RESULT_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
            return cls(**{**values, "output_dir": output_dir, "skipped": True})
        except (OSError, ValueError, TypeError) as error:
            logger.warning(f"{path} is incomplete or unreadable ({error}); the stage is not taken as finished")
            return None

    def write(self):
        write_json_atomically(os.path.join(self.output_dir, RESULT_FILE), self.to_dict())


def _is_main_process():
    return int(os.environ.get("RANK", 0)) == 0


def _barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")


def checkpoint_problem(folder, step):
    """Why `checkpoint-<step>` cannot be resumed from (its state unreadable or from another step, no weights), or
    None. transformers writes `trainer_state.json` in place, so its existence alone proves nothing."""
    try:
        with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError) as error:
        return f"trainer_state.json is missing or incomplete ({error})"
    if not isinstance(state, dict) or state.get("global_step") != step:
        return f"trainer_state.json does not record step {step}"
    deepspeed = os.path.join(folder, f"global_step{step}")  # DeepSpeed's own (sharded) model and optimizer states
    if not any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHT_FILES) and not os.path.isdir(deepspeed):
        return f"no weights (one of {list(WEIGHT_FILES)}, or DeepSpeed's global_step{step}/)"
    return None


def last_complete_checkpoint(stage_dir):
    """The newest `checkpoint-<step>` folder that a run can resume from, or None; newer incomplete ones are passed
    over with the reason logged."""
    if not os.path.isdir(stage_dir):
        return None
    steps = sorted((int(match.group(1)) for match in (re.fullmatch(r"checkpoint-(\d+)", name)
                                                       for name in os.listdir(stage_dir)) if match), reverse=True)
    for step in steps:
        folder = os.path.join(stage_dir, f"checkpoint-{step}")
        problem = checkpoint_problem(folder, step)
        if problem is None:
            return folder
        logger.warning(f"{folder} cannot be resumed from: {problem}; trying the previous checkpoint")
    return None


TRAINING_FLOOR = "5.0"  # `warmup_steps` as a ratio (4.57 takes an int there); pyproject's `train` extra says so


def check_training_transformers(version=None):
    """Raises, naming both versions and the fix, when the installed transformers is older than training needs."""
    import transformers
    from packaging.version import Version

    version = version or transformers.__version__
    if Version(version) < Version(TRAINING_FLOOR):
        raise RuntimeError(f"Training needs transformers>={TRAINING_FLOOR}, found {version} (inference and loading "
                           f"work from 4.57); install it with `pip install 'eagle-hf[train]'`.")


def make_training_args(recipe, stage, stage_dir, has_eval=False):
    """The stage's `SFTConfig`: stage fields, then the recipe's `trainer` settings, then the stage's `trainer`.

    `gradient_accumulation_steps`, when given, replaces the accumulation derived from the global batch. Settings this
    machine cannot run are switched off with a logged reason (tf32 and fp16 without a CUDA GPU). With an eval set and
    no `eval_strategy`, the stage evaluates at the end of each epoch; an `eval_strategy` without one is refused."""
    check_training_transformers()
    for settings in (recipe.trainer, stage.trainer):
        for key, instead in _DERIVED_TRAINER_FIELDS.items():
            if key in settings:
                raise ValueError(f"`trainer.{key}` is derived; set {instead} instead.")
    per_device = stage.per_device_batch_size or recipe.per_device_batch_size
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    given = {**recipe.trainer, **stage.trainer}
    if "gradient_accumulation_steps" in given:
        accumulation = int(given["gradient_accumulation_steps"])
        logger.info(f"stage {stage.name}: gradient_accumulation_steps={accumulation} given: global batch "
                    f"{per_device * world_size * accumulation} (the stage's global_batch_size "
                    f"{stage.global_batch_size} is not used)")
    else:
        accumulation, remainder = divmod(stage.global_batch_size, per_device * world_size)
        if remainder or accumulation == 0:
            raise ValueError(f"Stage {stage.name}: global batch {stage.global_batch_size} is not a multiple of "
                             f"{per_device} per device x {world_size} process(es).")
    on_gpu = torch.cuda.is_available()
    values = dict(
        output_dir=stage_dir, per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation,
        learning_rate=stage.learning_rate, num_train_epochs=stage.num_train_epochs, max_steps=stage.max_steps,
        lr_scheduler_type=stage.lr_scheduler_type, warmup_steps=stage.warmup_ratio, weight_decay=stage.weight_decay,
        seed=recipe.seed, logging_steps=1, save_steps=500, save_total_limit=2, report_to="none",
        bf16=on_gpu and torch.cuda.is_bf16_supported(), use_cpu=not on_gpu, dataloader_pin_memory=on_gpu,
        gradient_checkpointing=False,
        # The collator tokenises, truncates and labels; TRL's own preparation and column pruning must stay out.
        max_length=None, remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True},
        # Text-only batches and frozen experts leave parameters without gradients.
        ddp_find_unused_parameters=True,
    )
    values.update(given)
    values["gradient_accumulation_steps"] = accumulation
    if not on_gpu:
        _fit_to_cpu(values, stage.name)
    strategy = str(getattr(values.get("eval_strategy"), "value", values.get("eval_strategy") or "no"))
    if has_eval and "eval_strategy" not in given:
        values["eval_strategy"] = "epoch"
    elif strategy != "no" and not has_eval:
        raise ValueError(f"Stage {stage.name}: `eval_strategy: {strategy}` needs an eval set; give the stage "
                         "`eval_fraction` (a held-out share of its data) or `eval_data` (a data set of the recipe).")
    if "gradient_checkpointing" in values and "activation_checkpointing" in SFTConfig.__dataclass_fields__:
        values["activation_checkpointing"] = values.pop("gradient_checkpointing")  # the v5 name, without a warning
    return SFTConfig(**values)


def _fit_to_cpu(values, stage_name):
    """Switch off what only a CUDA GPU runs (recipes ask for tf32 and bf16 for the GPUs they were written for)."""
    for key, off in (("tf32", None), ("fp16", False)):
        if values.get(key):
            logger.warning(f"stage {stage_name}: `{key}: true` needs a CUDA GPU and none is available; running without "
                           f"it (pass --cpu to sft.py to run a recipe on CPU in float32).")
            values[key] = off
    if values.get("use_cpu") is False:
        values["use_cpu"] = True
    values["dataloader_pin_memory"] = False


def sharding():
    """"fsdp", "zero3", "zero2" (or another ZeRO stage), or None: how the launcher (accelerate) shards this run."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    if is_deepspeed_zero3_enabled():
        return "zero3"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return f"zero{os.environ.get('ACCELERATE_DEEPSPEED_ZERO_STAGE', '')}"
    return None


def check_stage_sharding(stage, title, mode=None):
    """Refuses, before any model is built, a stage the launcher's sharding cannot run, naming the config to use."""
    mode = sharding() if mode is None else mode
    if stage.build in ("prealign", "align") and mode == "zero3":
        raise ValueError(f"Stage {title} (build: {stage.build}) assembles its model from several checkpoints, which "
                         "DeepSpeed ZeRO-3 cannot do (it shards parameters as they are created); run it with "
                         "training_scripts/accelerate_configs/zero2.yaml or fsdp.yaml, then the later stages with "
                         "zero3.yaml (--stage).")
    if stage.qlora and mode in ("fsdp", "zero3"):
        name = {"fsdp": "FSDP", "zero3": "DeepSpeed ZeRO-3"}[mode]
        raise ValueError(f"Stage {title} is QLoRA, whose 4-bit weights {name} cannot shard here; run it with "
                         "training_scripts/accelerate_configs/single_gpu.yaml or multi_gpu.yaml (DDP).")


def check_wrap_classes(model, title):
    """Under FSDP, the block classes the accelerate config names for wrapping must exist in the model (by default
    they come from the model itself: `_no_split_modules`, the experts and the LLM's decoder layer)."""
    named = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP")
    if sharding() != "fsdp" or not named:
        return
    present = {type(module).__name__ for module in model.modules()}
    missing = [name for name in named.split(",") if name.strip() and name.strip() not in present]
    if missing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        raise ValueError(f"Stage {title}: the FSDP config wraps {missing}, which this model does not contain; remove "
                         "fsdp_transformer_layer_cls_to_wrap to wrap the model's own blocks "
                         f"{sorted(getattr(base, '_no_split_modules', None) or [])}.")


def _tokenize_chunks(stage, processor) -> bool:
    """The stage's tokenisation: its own `tokenize_chunks` where set, else the processor's stored choice."""
    return stage.tokenize_chunks if stage.tokenize_chunks is not None else getattr(processor, "tokenize_chunks", False)


def stage_processor(processor, stage):
    """The processor a stage trains and saves with: a copy holding the stage's `tokenize_chunks` where that differs
    from the processor's, so the saved checkpoint tells inference and `eagle-hf eval` how it was trained."""
    if stage.tokenize_chunks is None or getattr(processor, "tokenize_chunks", None) in (None, stage.tokenize_chunks):
        return processor
    processor = copy.copy(processor)
    processor.tokenize_chunks = stage.tokenize_chunks
    return processor


def stage_data(recipe, stage, processor, config, records=None, data=None):
    """(index dataset, collator, records) of a stage's data set (or of the recipe's data set `data`)."""
    data = data or stage.data
    spec = recipe.data[data]
    records = load_records(spec, data) if records is None else records
    num_image_tokens = config.image_seq_length
    if getattr(processor, "num_image_tokens", num_image_tokens) != num_image_tokens:
        raise ValueError(f"The processor expands <image> into {processor.num_image_tokens} tokens but the model "
                         f"has {num_image_tokens} image tokens per image.")
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.convert_tokens_to_ids("<image>") != config.image_token_id:
        raise ValueError(f"The tokenizer's <image> id ({tokenizer.convert_tokens_to_ids('<image>')}) differs from "
                         f"the model's image_token_id ({config.image_token_id}).")
    encoder = ConversationEncoder(tokenizer, load_chat_template(stage.template), num_image_tokens,
                                  max_length=stage.max_length, tokenize_chunks=_tokenize_chunks(stage, processor))
    lengths = [1] * len(records)
    if stage.group_by_modality_length:
        lengths = [_safe_length(record, num_image_tokens) for record in records]
    index = datasets.Dataset.from_dict({"index": list(range(len(records))), "length": lengths})
    collator = EagleDataCollator(records, encoder, processor.image_processor, tokenizer.pad_token_id,
                                 image_folder=spec.image_folder)
    return index, collator, records


class _TrainOrEvalCollator:
    """The eval set's own collator for rows marked `eval` (an eval data set with its own records and image folder),
    the stage's for the others."""

    def __init__(self, train, evaluation):
        self.train, self.evaluation = train, evaluation

    def __call__(self, rows):
        return (self.evaluation if rows and rows[0].get("eval") else self.train)(rows)


def eval_split(recipe, stage, processor, config, index, collator, records_by_name):
    """(train index, eval index or None, collator): a held-out `eval_fraction` of the stage's rows (seeded by the
    recipe's seed), or the rows of the data set `eval_data` with a collator that reads them from their own folder."""
    if stage.eval_fraction is not None:
        count = max(1, round(stage.eval_fraction * len(index)))
        if count >= len(index):
            raise ValueError(f"Stage {stage.name}: eval_fraction {stage.eval_fraction} of {len(index)} sample(s) "
                             "leaves nothing to train on.")
        order = torch.randperm(len(index), generator=torch.Generator().manual_seed(recipe.seed)).tolist()
        return index.select(sorted(order[count:])), index.select(sorted(order[:count])), collator
    if stage.eval_data is not None:
        eval_index, eval_collator, _ = stage_data(recipe, stage, processor, config,
                                                  records_by_name.get(stage.eval_data), data=stage.eval_data)
        eval_index = eval_index.add_column("eval", [1] * len(eval_index))
        return index, eval_index, _TrainOrEvalCollator(collator, eval_collator)
    return index, None, collator


def _safe_length(record, num_image_tokens):
    try:
        return estimate_length(record, num_image_tokens)
    except SkippedSample:
        return 1  # the collator drops and counts it


def _fill_feature_cache(cache_dir, model, processor, collator, records, args):
    """Fill the cache (each process its share, then wait for all) and make the collator read features from it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "hf_device_map", None):
        base.model.vision_tower.to(args.device)  # the trainer would move it there anyway; the experts run there now
    cache = FeatureCache(cache_dir, tower_fingerprint(base, processor.image_processor))
    computed = cache.fill(base, records, processor.image_processor, collator.image_folder,
                          process_index=args.process_index, num_processes=args.world_size)
    PartialState().wait_for_everyone()  # set up by the training arguments; every share is on disk after this
    logger.info(f"feature cache {cache.directory}: process {args.process_index} computed {computed} image(s)")
    collator.feature_cache = cache
    return cache


def _gather_reports(report):
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        reports = [None] * dist.get_world_size()
        dist.all_gather_object(reports, report.to_dict())
        total = DataReport()
        for other in reports:
            total.update(other)
        return total
    return report


def run_stage(recipe, stage, stage_dir, model, processor, records=None, callbacks=(), title=None,
              feature_cache_dir=None, records_by_name=None):
    """Train `model` (the stage's model, or a function building it) for one stage; resume from the stage's last
    complete checkpoint.

    Returns the `StageResult`; a stage whose `stage_result.json` exists is not run again. `records_by_name` gives
    in-memory records of the recipe's other data sets (the stage's eval set).
    """
    finished = StageResult.read(stage_dir)
    if finished is not None:
        return finished
    title = title or stage.name
    resume = last_complete_checkpoint(stage_dir)
    # The arguments first: under DeepSpeed ZeRO-3 they make `from_pretrained` load the weights sharded.
    has_eval = stage.eval_fraction is not None or stage.eval_data is not None
    args = make_training_args(recipe, stage, stage_dir, has_eval=has_eval)
    check_stage_sharding(stage, title)
    model = model() if callable(model) and not isinstance(model, torch.nn.Module) else model
    check_wrap_classes(model, title)
    if stage.lora:
        set_seed(recipe.seed)  # LoRA's A matrices start random: the same start on every run of the recipe
        model = add_lora(model, recipe.lora, stage.train)
        if "learning_rate" in recipe.lora and "llm" not in stage.group_learning_rates:
            rates = {**stage.group_learning_rates, "llm": float(recipe.lora["learning_rate"])}
            stage = dataclasses.replace(stage, group_learning_rates=rates)
    apply_trainability(model, stage.train, stage.lora)
    processor = stage_processor(processor, stage)
    index, collator, records = stage_data(recipe, stage, processor, model.config, records)
    if len(index) == 0:
        raise ValueError(f"Stage {title}: data set {stage.data!r} holds no samples.")
    if stage.feature_cache:
        trained = [n for n, p in model.named_parameters() if p.requires_grad and ".vision_tower." in f".{n}"]
        if trained:
            raise ValueError(f"Stage {title}: the feature cache stores the vision tower's fused output, but "
                             f"{len(trained)} of its parameters train (e.g. {trained[0]}, a fusion layer trained "
                             "with the projector); set `feature_cache: false`.")
        cache_dir = feature_cache_dir or os.path.join(os.path.dirname(os.path.abspath(stage_dir)), "feature_cache")
        _fill_feature_cache(cache_dir, model, processor, collator, records, args)  # the collator reads it
    # After the cache: an eval data set's own collator reads images (the cache holds the stage's data set only).
    index, eval_index, collator = eval_split(recipe, stage, processor, model.config, index, collator,
                                             records_by_name or {})
    check = StageCheckCallback(stage, stage.lora, title)
    trainer = StageTrainer(
        model=model, args=args, train_dataset=index, eval_dataset=eval_index, data_collator=collator, stage=stage,
        processing_class=processor if isinstance(processor, ProcessorMixin) else processor.tokenizer,
        callbacks=[check, *callbacks],
    )
    if _is_main_process():
        kind = getattr(trainer.accelerator.distributed_type, "value", trainer.accelerator.distributed_type)
        logger.info(f"stage {title}: {args.world_size} process(es), distributed type {kind}")
    if resume:
        logger.info(f"stage {title}: resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume)
    report, eval_report = _gather_reports(trainer.data_report), _gather_reports(trainer.eval_report)
    if report.read and not report.used:  # every step trained on padding: not a finished stage
        raise ValueError(f"Stage {title}: none of the {report.read} samples read could be used, so nothing trained "
                         f"({report.summary()}); fix the data and run again.")
    trainer.save_model(stage_dir)
    trainer.create_model_card()
    result = StageResult(name=title, output_dir=stage_dir, log_history=trainer.state.log_history,
                         data_report=report.to_dict(), parameter_table=check.table,
                         global_step=trainer.state.global_step, lora=stage.lora, resumed_from=resume)
    if _is_main_process():
        (logger.warning if report.skipped else logger.info)(f"stage {title}: data: {report.summary()}")
        if result.eval_losses:
            logger.info(f"stage {title}: eval loss {result.eval_losses[-1][1]:.4f} at step {result.eval_losses[-1][0]}"
                        f" ({eval_report.summary()})")
        result.write()
    _barrier()
    return result


def load_processor(path):
    from .. import register_auto_classes
    from ..processing_eagle import EagleProcessor

    # Loading reads the folder's config.json and (5.x) resolves the image processor through AutoImageProcessor; with
    # the classes registered neither asks whether to run the folder's remote code (a prompt that stalls a launched job).
    register_auto_classes()
    return EagleProcessor.from_pretrained(path)


def _as_recipe(recipe):
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return recipe_from_dict(recipe)
    return load_recipe(recipe)


def _model_dtype(recipe):
    name = recipe.model.get("dtype", "float32")
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"`model.dtype` must name a torch dtype (float32, bfloat16, float16), got {name!r}.")
    return dtype


def check_plan_inputs(recipe, stages=None, model=None, records=None):
    """Before any model is built: the starting checkpoint and the data files of the stages to run exist, and the
    stages named are in the plan. Raises `ValueError` / `FileNotFoundError` naming what is missing."""
    from ..hub.model_card import is_hub_id

    requested = list(stages or recipe.plan)
    unknown = [name for name in requested if name not in recipe.plan]
    if unknown:
        raise ValueError(f"Stage(s) {unknown} are not in the plan {recipe.plan}.")
    source = model if model is not None else recipe.model.get("init")
    if source is None:
        raise ValueError("No starting model: pass `model=` (sft.py: --init) or set `model.init` in the recipe.")
    if isinstance(source, (str, os.PathLike)) and not os.path.isdir(source) and not is_hub_id(source):
        raise FileNotFoundError(f"The starting checkpoint {source} does not exist (relative paths are read from "
                                f"{os.getcwd()}); build one with `eagle-hf init` or pass --init / model.init.")
    names = {recipe.stage(name).data for name in requested} | {
        recipe.stage(name).eval_data for name in requested if recipe.stage(name).eval_data}
    for name in sorted(names - set(records or {})):
        spec = recipe.data[name]
        for what, path, exists in (("json", spec.json, os.path.isfile), ("image_folder", spec.image_folder,
                                                                         os.path.isdir)):
            if path is not None and not exists(path):
                raise FileNotFoundError(f"Data set {name!r}: its {what} {path} does not exist (relative paths are "
                                        f"read from {os.getcwd()}).")


class _PlanRunner:
    """Walks a recipe's plan, building each stage's model from the previous output (see `run_plan`)."""

    def __init__(self, recipe, output_dir, model, processor, stages, callbacks, records):
        self.recipe, self.output_dir = recipe, output_dir
        check_plan_inputs(recipe, stages, model, records)
        self.source = model if model is not None else recipe.model.get("init")
        if processor is None:
            processor = load_processor(recipe.processor or self.source)
        self.processor = processor
        self.requested = set(stages or recipe.plan)
        self.callbacks, self.records = list(callbacks), dict(records or {})
        self.dtype = _model_dtype(recipe)
        self.prealigned = None
        self.results = []

    def run(self):
        for position, name in enumerate(self.recipe.plan):
            if name not in self.requested and not any(n in self.requested for n in self.recipe.plan[position:]):
                break
            stage = self.recipe.stage(name)
            runner = {"prealign": self.prealign, "align": self.align}.get(stage.build, self.continue_)
            runner(stage, os.path.join(self.output_dir, name), run=name in self.requested)
        return self.results

    def _result(self, stage, stage_dir, run, build, title=None):
        result = StageResult.read(stage_dir)
        if result is None:
            if not run:
                raise ValueError(f"Stage {title or stage.name} has not finished in {stage_dir}; run it first.")
            result = run_stage(self.recipe, stage, stage_dir, build, self.processor, self.records.get(stage.data),
                               self.callbacks, title, self.recipe.feature_cache_dir, self.records)
        self.results.append(result)
        return result

    def _input_dir(self):
        """The current source as a folder (a LoRA output is merged first; an in-memory model is saved)."""
        source = self.source
        if isinstance(source, StageResult):
            if source.lora and not os.path.exists(os.path.join(source.model_dir, "config.json")):
                if _is_main_process():
                    merge_lora(source.output_dir, source.model_dir, dtype=self.dtype)
                _barrier()
            return source.model_dir
        return source

    def continue_(self, stage, stage_dir, run):
        def build():
            source = self._input_dir()
            if isinstance(source, torch.nn.Module):
                if not stage.lora:
                    return source
                source = self._save_in_memory_model(source, os.path.join(stage_dir, "base_model"))
            return load_model(source, self.dtype, qlora=stage.qlora,
                              attn_implementation=self.recipe.model.get("attn_implementation"))

        self.source = self._result(stage, stage_dir, run, build)

    def _save_in_memory_model(self, model, directory):
        if _is_main_process() and not os.path.exists(os.path.join(directory, "config.json")):
            model.save_pretrained(directory)
        _barrier()
        return directory

    def prealign(self, stage, stage_dir, run):
        if stage.qlora:
            raise ValueError(f"Stage {stage.name}: pre-alignment keeps the LLM frozen; QLoRA does not apply.")
        base = self._input_dir()
        experts = []
        for index, expert in enumerate(load_config(base).vision_experts):
            title = f"{stage.name}/expert_{index}_{expert.kind}"
            result = self._result(stage, os.path.join(stage_dir, f"expert_{index}_{expert.kind}"), run,
                                  lambda: build_prealign_model(base, index, self.dtype, self.recipe.seed + index),
                                  title)
            experts.append(result.model_dir)
        self.prealigned = (base, experts)

    def align(self, stage, stage_dir, run):
        if self.prealigned is None:
            raise ValueError(f"Stage {stage.name} (build: align) needs a pre-alignment stage before it in the plan.")
        base, experts = self.prealigned
        self.source = self._result(stage, stage_dir, run,
                                   lambda: build_align_model(base, experts, self.dtype, self.recipe.seed))


def run_plan(recipe, output_dir, model=None, processor=None, stages=None, callbacks=(), records=None):
    """Run a recipe's plan (or only `stages` of it) under `output_dir`; returns one `StageResult` per trainer run.

    Args:
        recipe: a `Recipe`, its dict form, or a YAML path.
        model: the starting model (a folder or an in-memory `EagleForConditionalGeneration`); defaults to the
            recipe's `model.init`. An in-memory model is trained in place by a first `continue` stage.
        processor: the `EagleProcessor` (defaults to the one saved with the recipe's `processor` or starting folder).
        stages: names of the stages to run; earlier stages must have finished (their results are reused).
        callbacks: extra `TrainerCallback`s for every stage (e.g. progress reporting).
        records: {data set name: records} to use instead of reading the recipe's files (in-memory data).

    Finished stages are skipped; an interrupted stage resumes from its last complete checkpoint.
    """
    recipe = _as_recipe(recipe)
    return _PlanRunner(recipe, output_dir, model, processor, stages, callbacks, records).run()


__all__ = ["StageResult", "check_plan_inputs", "checkpoint_problem", "last_complete_checkpoint", "make_training_args",
           "run_plan", "run_stage"]
