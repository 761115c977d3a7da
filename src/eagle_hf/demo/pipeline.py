"""The demo's training: Eagle's three-stage plan, run through `eagle_hf.training.run_plan` as users run it.

Stages (the presets of `STAGE_PRESETS`, with the batch, step counts and learning rates of a from-scratch CPU run):

1. `eagle_prealign`: each expert alone with its own new projector in front of the frozen LLM, on the questions;
2. `eagle_align`: the experts together, a new fused projector trained alone, on the captions;
3. `eagle_sft`: everything trains, on the questions.

The baseline runs the same plan with one expert and the same number of optimizer steps and samples in all (its one
pre-alignment run gets as many steps as the mixture's pre-alignment runs together).
"""

import contextlib
import os
from dataclasses import asdict, dataclass, replace

from tqdm.auto import tqdm
from transformers import TrainerCallback

from ..training import run_plan
from ..synthetic.scenes import CaptionRecords, ConversationRecords

PLAN = ["eagle_prealign", "eagle_align", "eagle_sft"]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes, steps and learning rates of one demo run. `prealign_steps` is per pre-alignment run of the mixture."""

    seed: int = 0
    train_size: int = 24000
    caption_size: int = 4000
    validation_size: int = 60
    test_size: int = 300
    batch_size: int = 16
    prealign_steps: int = 30
    align_steps: int = 30
    sft_steps: int = 3000
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.05
    samples: int = 5

    def to_dict(self):
        return asdict(self)


FULL = DemoSettings()
QUICK = replace(FULL, train_size=480, caption_size=160, validation_size=8, test_size=20, prealign_steps=4,
                align_steps=4, sft_steps=12, batch_size=8, samples=3)


def demo_recipe(settings, name, splits, num_experts, prealign_runs, template):
    """The recipe (plain data for `run_plan`) of one model: the plan, its stages and the in-memory data sets.

    `prealign_runs` is the number of experts of the mixture: a model with fewer experts gets their steps together, so
    that both models train for the same number of optimizer steps. `template` is the chat template of the question
    stages (alignment keeps `plain`)."""
    rate = settings.learning_rate
    common = dict(global_batch_size=settings.batch_size, warmup_ratio=settings.warmup_ratio,
                  group_by_modality_length=False, max_length=None)
    prealign_steps = settings.prealign_steps * prealign_runs // num_experts
    return dict(
        name=name, plan=list(PLAN), seed=settings.seed, per_device_batch_size=settings.batch_size,
        data=dict(sft=dict(records=ConversationRecords(splits["train"])),
                  pretrain=dict(records=CaptionRecords(splits["captions"]))),
        stages=dict(
            eagle_prealign=dict(max_steps=prealign_steps, learning_rate=rate, group_learning_rates={},
                                template=template, **common),
            eagle_align=dict(max_steps=settings.align_steps, learning_rate=rate, **common),
            eagle_sft=dict(max_steps=settings.sft_steps, learning_rate=rate, template=template, **common),
        ),
        # Progress is shown by `StageProgress`; the trainer's own per-step log lines go to the training log.
        trainer=dict(disable_tqdm=True, save_strategy="no", logging_steps=1, dataloader_num_workers=0,
                     max_grad_norm=1.0),
    )


class StageProgress(TrainerCallback):
    """One progress bar per trainer run ("mixture eagle_prealign/expert_0_clip"), with the latest loss."""

    def __init__(self, label, plan_dir):
        self.label, self.plan_dir, self.bar = label, os.path.abspath(plan_dir), None

    def on_train_begin(self, args, state, control, **kwargs):
        stage = os.path.relpath(os.path.abspath(args.output_dir), self.plan_dir)
        self.bar = tqdm(total=state.max_steps, desc=f"{self.label:>8} {stage:<32}", unit="step", leave=True,
                        dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and self.bar is not None:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


def train_plan(recipe, model, processor, plan_dir, label, log_path):
    """Run the plan of `recipe` from the in-memory `model`; returns the `StageResult`s (one per trainer run).

    The trainer prints a line per logged step: those lines go to `log_path`, the progress bars to the terminal."""
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        return run_plan(recipe, plan_dir, model=model, processor=processor, callbacks=[StageProgress(label, plan_dir)])


def stage_summary(results):
    """[{"stage", "steps", "first_loss", "last_loss", "losses"}] of a plan's trainer runs."""
    rows = []
    for result in results:
        losses = result.losses
        rows.append(dict(stage=result.name, steps=result.global_step, first_loss=losses[0][1] if losses else None,
                         last_loss=losses[-1][1] if losses else None, losses=losses))
    return rows
