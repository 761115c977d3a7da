"""`StageTrainer` (TRL's `SFTTrainer` with per-group learning rates, modality grouping, a data report and eagle-hf's
model card) and `StageCheckCallback` (checks and reports what trains; never changes it)."""

import torch
from transformers import TrainerCallback
from transformers.utils import logging
from trl import SFTTrainer

from .data import DataReport, ModalityLengthGroupedSampler
from .groups import format_parameter_table, group_of, parameter_table, should_train
from .cards import write_stage_card

logger = logging.get_logger(__name__)


def _is_peft(model):
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


class StageTrainer(SFTTrainer):
    """An `SFTTrainer` for one stage.

    * one optimizer parameter group per (module group, weight decay), at the stage's learning rate for that group;
    * LLaVA's modality/length grouped sampler when the stage asks for it;
    * the collator's per-batch `data_report` is taken out of the inputs and summed in `self.data_report` (training
      batches) or `self.eval_report` (evaluation batches);
    * the stage folder's card is eagle-hf's (`cards.py`), naming the weights' real sources, not TRL's generic one.

    With LoRA, the modules that train in full are PEFT `modules_to_save`, so TRL's own adapter checkpoints and resume
    hold and restore them.
    """

    def __init__(self, *args, stage, **kwargs):
        self.stage = stage
        self.data_report, self.eval_report = DataReport(), DataReport()
        super().__init__(*args, **kwargs)
        base = self.model.get_base_model() if _is_peft(self.model) else self.model
        self.card_source = getattr(base, "name_or_path", None)  # where the stage's starting weights came from

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        learning_rates = self.stage.learning_rates()
        grouped = {}
        for name, parameter in opt_model.named_parameters():
            if parameter.requires_grad:
                if group_of(name) not in learning_rates:
                    raise RuntimeError(f"{name} is trainable, but stage {self.stage.name} trains only "
                                       f"{list(self.stage.train)}; set trainability before building the trainer.")
                key = (group_of(name), self.args.weight_decay if name in decay else 0.0)
                grouped.setdefault(key, []).append(parameter)
        param_groups = [dict(params=params, lr=learning_rates[group], weight_decay=weight_decay, group=group)
                        for (group, weight_decay), params in grouped.items()]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)  # each group's lr overrides the default
        return self.optimizer

    # Trainer's private sampler hook (transformers has no public one); its signature is the same in 4.57.6, 5.23.0 and
    # 5.25.0, and a project test fails on a release that renames it (an override never called would fail silently).
    def _get_train_sampler(self, train_dataset=None):
        train_dataset = self.train_dataset if train_dataset is None else train_dataset
        if not self.stage.group_by_modality_length:
            return super()._get_train_sampler(train_dataset)
        batches_per_group = self.args.world_size * self.args.gradient_accumulation_steps
        return ModalityLengthGroupedSampler(train_dataset["length"], self.args.per_device_train_batch_size,
                                            batches_per_group, seed=self.args.seed)

    def compute_loss(self, model, inputs, *args, **kwargs):
        report = inputs.pop("data_report", None)
        if report is not None:
            (self.data_report if model.training else self.eval_report).update(report)
            if model.training and not report["used"]:
                # Every sample of this batch was unusable: a zero loss that still reaches every trained parameter,
                # so the backward pass (and DDP's gradient exchange) runs and changes nothing.
                zero = sum((parameter * 0).sum() for parameter in model.parameters() if parameter.requires_grad)
                return (zero, None) if kwargs.get("return_outputs") else zero
        return super().compute_loss(model, inputs, *args, **kwargs)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """eagle-hf's card for the stage folder (TRL calls this at every checkpoint; `run_stage` at the end)."""
        if not self.is_world_process_zero():
            return
        base = self.model.get_base_model() if _is_peft(self.model) else self.model
        write_stage_card(self.args.output_dir, base.config, self.card_source, self.stage, adapter=_is_peft(self.model))


def _optimizer_parameters(optimizer):
    """The model parameters an optimizer updates, as a list of groups (DeepSpeed's ZeRO optimizers keep the model's
    own tensors in `bit16_groups` / `fp16_groups`, their `param_groups` hold flat copies)."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
    for attribute in ("bit16_groups", "fp16_groups"):
        if getattr(optimizer, attribute, None):
            return [list(group) for group in getattr(optimizer, attribute)], None
    return [list(group["params"]) for group in optimizer.param_groups], optimizer.param_groups


class StageCheckCallback(TrainerCallback):
    """At train begin: exactly the stage's parameters are trainable, every one is in the optimizer (and no frozen one
    is), and each optimizer group has its group's learning rate. Logs the per-group table. Raises on any mismatch."""

    def __init__(self, stage, lora=False, title=""):
        self.stage, self.lora, self.title = stage, lora, title or stage.name
        self.table = ""

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        learning_rates = self.stage.learning_rates()
        self.table = format_parameter_table(parameter_table(model, learning_rates),
                                            f"stage {self.title}: trainable parameters by module group")
        if state.is_world_process_zero:
            logger.info(self.table)
        named = list(model.named_parameters())
        wrong = [name for name, p in named if p.requires_grad != should_train(name, self.stage.train, self.lora)]
        if wrong:
            raise RuntimeError(f"Stage {self.title}: {len(wrong)} parameter(s) have the wrong trainable flag, e.g. "
                               f"{wrong[:5]}; the stage trains {list(self.stage.train)} (lora={self.lora}).")
        groups, param_groups = _optimizer_parameters(optimizer)
        in_optimizer = {id(p) for group in groups for p in group}
        missing = [name for name, p in named if p.requires_grad and id(p) not in in_optimizer]
        frozen = [name for name, p in named if not p.requires_grad and id(p) in in_optimizer]
        if missing or frozen:
            raise RuntimeError(f"Stage {self.title}: the optimizer lacks {len(missing)} trainable parameter(s) "
                               f"(e.g. {missing[:3]}) and holds {len(frozen)} frozen one(s) (e.g. {frozen[:3]}).")
        self._check_learning_rates(named, groups, param_groups, learning_rates)

    def _check_learning_rates(self, named, groups, param_groups, learning_rates):
        if param_groups is None:
            return  # DeepSpeed: the per-group rates live in its flat groups, in the same order
        names = {id(p): name for name, p in named}
        for group, settings in zip(groups, param_groups):
            lr = settings.get("initial_lr", settings["lr"])
            for parameter in group:
                expected = learning_rates[group_of(names[id(parameter)])]
                if not torch.isclose(torch.tensor(float(lr)), torch.tensor(expected)):
                    raise RuntimeError(f"Stage {self.title}: {names[id(parameter)]} trains at lr {lr}, expected "
                                       f"{expected}.")


class StopAfterSteps(TrainerCallback):
    """Raise `KeyboardInterrupt` after `steps` optimizer steps: a stand-in for a killed job in resume tests/demos."""

    def __init__(self, steps):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            raise KeyboardInterrupt(f"stopped after step {state.global_step}")


__all__ = ["StageCheckCallback", "StageTrainer", "StopAfterSteps"]
