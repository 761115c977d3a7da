"""The expert search's trial on the demo's synthetic scenes: build a small Eagle of the given experts, train it for a
fixed budget with the package's training code, and score exact-match accuracy on held-out questions.

Every trial of a search starts from the same init: expert k's weights come from a one-expert model of kind k built
from the search's seed, the LLM's from one such model (`LLM_SOURCE_KIND`), whatever the mixture; only the projector,
whose input width depends on the mixture, is new. Trials then see the same batches in the same order, so scores
differ by the experts alone (and by the noise of short training on small data: compare with a margin).
"""

import dataclasses
import os
import shutil
from dataclasses import dataclass

import torch

from ..configuration_eagle import EagleConfig
from ..synthetic.build import BASELINE, EXPERTS, build_model, build_processor, demo_config, tokenizer_texts, train_tokenizer
from ..synthetic.evaluate import accuracy_by_type, predict
from ..synthetic.scenes import ConversationRecords, SceneSplit, evaluation_items, tokenizer_corpus
from ..modeling_eagle import MODULE_PREFIXES, EagleForConditionalGeneration
from ..training import recipe_from_dict, run_plan
from ..training.models import build_model_from_sources

# The demo's experts, and the other kinds at the same scale (64-pixel scene, 2x2 grid). Like the demo's CLIP, the
# SigLIP sees the scene at a quarter size and cannot read its small word; DINOv2 sees it at half size, EVA-02 and
# Pix2Struct at full size.
OTHER_EXPERTS = {
    "siglip": dict(kind="siglip", image_size=16,
                   backbone_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, patch_size=4)),
    "dinov2": dict(kind="dinov2", image_size=32,
                   backbone_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
                                        patch_size=8)),
    "eva02": dict(kind="eva02", image_size=64,
                  backbone_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                       num_attention_heads=4, global_attn_indexes=[1], window_size=4, patch_size=8,
                                       pretrain_image_size=64)),
    "pix2struct": dict(kind="pix2struct", image_size=64, max_patches=16,
                       backbone_config=dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, d_ff=96,
                                            d_kv=12, patch_size=16, seq_len=16, patch_embed_hidden_size=768)),
}
SEARCH_EXPERTS = {**EXPERTS, **OTHER_EXPERTS}
LLM_SOURCE_KIND = "clip"
STAGE = "train"
CHECKPOINT_MIN_STEPS = 50
EXPERT_PREFIX = MODULE_PREFIXES["expert"]
DERIVED_CONFIG_FIELDS = ("mm_hidden_size", "image_seq_length", "auto_map", "architectures", "transformers_version")


@dataclass(frozen=True)
class SceneBudget:
    """What every trial of a search shares: optimizer steps, batch, learning rate, data sizes and seed."""

    steps: int = 1500
    train_scenes: int = 2000
    val_scenes: int = 100
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "train_scenes", "val_scenes", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}.")

    @classmethod
    def quick(cls, **overrides):
        """The CI budget: a few steps on a few scenes (seconds a trial; the scores are noise)."""
        return cls(**{**dict(steps=8, train_scenes=64, val_scenes=8), **overrides})


def check_kinds(kinds):
    unknown = [kind for kind in kinds if kind not in SEARCH_EXPERTS]
    if unknown:
        raise ValueError(f"Unknown expert(s) {unknown}; the scene search knows {sorted(SEARCH_EXPERTS)}.")


def trial_config(tokenizer, kinds):
    """The demo's `EagleConfig` (LLM, grid, projector) with the experts `kinds`, in that order."""
    check_kinds(kinds)
    values = demo_config(tokenizer, BASELINE).to_dict()
    for derived in DERIVED_CONFIG_FIELDS:
        values.pop(derived, None)
    values["vision_experts"] = [SEARCH_EXPERTS[kind] for kind in kinds]
    return EagleConfig(**values)


class SceneTask:
    """`train_and_evaluate(experts, trial_dir) -> {"score", <question type>...}` for `greedy_search`: accuracy on
    every held-out question ("score") and per question type."""

    def __init__(self, budget=None):
        self.budget = budget or SceneBudget()
        self.train_split = SceneSplit("search-train", self.budget.seed, self.budget.train_scenes)
        self.val_split = SceneSplit("search-val", self.budget.seed, self.budget.val_scenes)
        self.tokenizer = train_tokenizer(tokenizer_texts(tokenizer_corpus(self.train_split)))
        self._sources = {}

    @property
    def settings(self):
        """The search's settings: trials trained under other ones are not comparable."""
        return dict(task="demo_scenes", **dataclasses.asdict(self.budget))

    def _source(self, kind):
        """The seeded one-expert model of `kind` every trial takes expert `kind` (and maybe the LLM) from."""
        if kind not in self._sources:
            self._sources[kind] = build_model(trial_config(self.tokenizer, (kind,)), self.budget.seed).state_dict()
        return self._sources[kind]

    def initial_model(self, kinds):
        """The untrained model of `kinds`: each expert from its kind's source, the LLM from `LLM_SOURCE_KIND`'s, a new
        projector (seeded)."""
        config = trial_config(self.tokenizer, kinds)
        llm = self._source(LLM_SOURCE_KIND)
        own = EXPERT_PREFIX.format(0)

        def lookup(name):
            for index, kind in enumerate(kinds):
                if name.startswith(EXPERT_PREFIX.format(index)):
                    return self._source(kind).get(own + name[len(EXPERT_PREFIX.format(index)):])
            return llm.get(name)

        model = build_model_from_sources(config, lookup, seed=self.budget.seed)
        template = build_model(config, self.budget.seed)  # the demo's generation defaults
        model.generation_config = template.generation_config
        return model

    def recipe(self):
        """One SFT stage training everything (experts, projector, LLM) from the shared init."""
        budget = self.budget
        stage = dict(train=["experts", "projector", "llm"], learning_rate=budget.learning_rate, template="vicuna_v1",
                     data="sft", global_batch_size=budget.batch_size, max_steps=budget.steps, warmup_ratio=0.03)
        # A checkpoint every quarter of a long trial lets a killed search resume inside it; short trials just rerun.
        trainer = dict(disable_tqdm=True, bf16=False, logging_steps=max(1, budget.steps // 10),
                       save_steps=max(CHECKPOINT_MIN_STEPS, budget.steps // 4), save_total_limit=1)
        return recipe_from_dict(dict(name="expert-search", plan=[STAGE], stages={STAGE: stage},
                                     data=dict(sft=dict(records=ConversationRecords(self.train_split))),
                                     per_device_batch_size=budget.batch_size, seed=budget.seed, trainer=trainer))

    def train(self, kinds, output_dir):
        """(trained model, processor, stage result); an interrupted training resumes from its last checkpoint."""
        model = self.initial_model(kinds)
        processor = build_processor(model.config, self.tokenizer)
        result = run_plan(self.recipe(), output_dir, model=model, processor=processor)[-1]
        if result.skipped:  # trained by an earlier run that stopped before its evaluation
            model = EagleForConditionalGeneration.from_pretrained(result.model_dir)
        for name in os.listdir(result.output_dir):
            if name.startswith("checkpoint-"):  # only needed to resume the training, which has finished
                shutil.rmtree(os.path.join(result.output_dir, name))
        return model, processor, result

    @torch.no_grad()
    def evaluate(self, model, processor):
        """{"score": accuracy on every held-out question, <question type>: accuracy on that type}."""
        items = evaluation_items(self.val_split)
        model.to("cpu")  # the demo's `answer` builds its inputs on the CPU; the trainer may have moved the model
        accuracy = accuracy_by_type(items, predict(model, processor, self.val_split, items))
        return {"score": accuracy.pop("all"), **accuracy}

    def __call__(self, experts, trial_dir):
        model, processor, result = self.train(tuple(experts), trial_dir)
        losses = [loss for _, loss in result.losses]
        return {**self.evaluate(model, processor), "final_loss": losses[-1] if losses else float("nan")}


__all__ = ["LLM_SOURCE_KIND", "OTHER_EXPERTS", "SEARCH_EXPERTS", "SceneBudget", "SceneTask", "check_kinds",
           "trial_config"]
