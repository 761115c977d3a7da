"""Model cards of training outputs: a stage's folder (full weights or a LoRA adapter) and a merged LoRA checkpoint
get eagle-hf's card (`eagle_hf.hub.render_model_card`) instead of TRL's generic one. `base_model` names only the Hub
models the weights came from (read from where the stage's starting weights were loaded); a model trained from random
weights claims none."""

from pathlib import Path

from ..files import is_hub_id
from ..hub.model_card import render_model_card, weights_sources


def stage_card_text(config, source, stage=None, adapter=False, datasets=(), merged_adapter=None):
    """The card of weights trained from `source` (a folder or Hub id) by `stage` (None: not recorded), or of the LoRA
    adapter `merged_adapter` merged into `source`.

    A LoRA adapter applies to `source` itself, so its card names `source` as base model (relation "adapter") when it
    is a Hub repo; full weights descend from whatever `source` descends from (relation "finetune")."""
    if adapter:
        base_models, relation = ([str(source)], "adapter") if source and is_hub_id(source) else ([], None)
    else:
        base_models, relation = weights_sources(source), "finetune"
    card = render_model_card(config, base_models=base_models, base_model_relation=relation, datasets=list(datasets),
                             training_stages=[stage] if stage is not None else [])
    origin = f"`{source}`" if source else "a model built in memory"
    what = "a LoRA adapter (with the modules that trained in full as PEFT `modules_to_save`)" if adapter else \
        "the full weights"
    if merged_adapter is not None:
        lines = [f"## This folder\n\nThe LoRA adapter `{merged_adapter}` merged into {origin} by eagle-hf "
                 "(`sft.py merge`): a standalone checkpoint."]
    else:
        lines = [f"## This folder\n\nTraining output of eagle-hf: {what}, trained from {origin}"
                 + (f" by stage `{stage.name}`." if stage is not None else ".")]
    if adapter:
        lines.append("Load it with `peft.PeftModel.from_pretrained(base, folder)` or "
                     "`peft.AutoPeftModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`, or write a "
                     "standalone checkpoint with `python training_scripts/sft.py merge --adapter FOLDER --output_dir "
                     "OUT`.")
    return str(card).rstrip() + "\n\n" + "\n\n".join(lines) + "\n"


def write_stage_card(folder, config, source, stage=None, adapter=False, datasets=(), merged_adapter=None):
    path = Path(folder) / "README.md"
    path.write_text(stage_card_text(config, source, stage, adapter, datasets, merged_adapter), encoding="utf-8")
    return path


__all__ = ["stage_card_text", "write_stage_card"]
