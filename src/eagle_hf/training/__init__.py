"""Training Eagle and LLaVA-1.5 with TRL: stages as data, plans of stages, LLaVA/HF data, LoRA/QLoRA, feature cache.

    from eagle_hf.training import load_recipe, run_plan
    results = run_plan(load_recipe("training_scripts/recipes/eagle_x5.yaml"), "runs/eagle-x5")
    results[-1].losses   # [(step, loss)] of the last stage

This sub-package imports trl, peft, datasets and pyyaml; the model files shipped next to checkpoints never import it.
"""

from .data import ConversationEncoder, DataReport, EagleDataCollator, ModalityLengthGroupedSampler, conversation_of
from .feature_cache import FeatureCache, tower_fingerprint
from .groups import MODULE_GROUPS, apply_trainability, group_of, llm_linear_regex, parameter_table
from .models import (QLORA_SKIP_MODULES, add_lora, build_align_model, build_prealign_model, load_model, merge_lora,
                     single_expert_config)
from .plan import StageResult, last_complete_checkpoint, make_training_args, run_plan, run_stage
from .stages import STAGE_PRESETS, DataSpec, Recipe, Stage, load_recipe, make_stage, recipe_from_dict
from .trainer import StageCheckCallback, StageTrainer, StopAfterSteps

__all__ = [
    "ConversationEncoder", "DataReport", "DataSpec", "EagleDataCollator", "FeatureCache", "MODULE_GROUPS",
    "ModalityLengthGroupedSampler", "QLORA_SKIP_MODULES", "Recipe", "STAGE_PRESETS", "Stage", "StageCheckCallback",
    "StageResult", "StageTrainer", "StopAfterSteps", "add_lora", "apply_trainability", "build_align_model",
    "build_prealign_model", "conversation_of", "group_of", "last_complete_checkpoint",
    "llm_linear_regex", "load_model", "load_recipe", "make_stage", "make_training_args", "merge_lora",
    "parameter_table", "recipe_from_dict", "run_plan", "run_stage", "single_expert_config", "tower_fingerprint",
]
