"""Push a checkpoint to the Hugging Face Hub: weights, model code, processor and model card in one commit."""

import tempfile
from pathlib import Path

from huggingface_hub import HfApi

from .model_card import render_model_card, weights_sources


def push_checkpoint(model, processor, repo_id, card_data=None, eval_results=None, *, variant=None,
                    training_stages=None, language_model=None, base_models=None, base_model_relation=None,
                    private=None, token=None, revision=None, commit_message=None, endpoint=None, cards_dir=None,
                    **card_fields):
    """Saves `model` and `processor` the way `save_pretrained` does (flat model files and the cross-version `auto_map`
    included), renders the model card, and uploads the folder to `repo_id` as a single commit.

    Args:
        model: an `EagleForConditionalGeneration`.
        processor: its `EagleProcessor` (or any object with `save_pretrained`), or None to push the model alone.
        repo_id: "namespace/name"; the repo is created when missing.
        card_data: model-card metadata overrides (dict or `ModelCardData`), e.g. `{"license": "apache-2.0"}`.
        eval_results: benchmark results for the card's table and model-index (see `render_model_card`).
        base_models: the Hub models the weights came from; default: what the folder or repo the model was loaded from
            records (`weights_sources(model.name_or_path)`), so a model trained from random weights claims none.
        variant / training_stages / language_model / base_model_relation / cards_dir / **card_fields: passed to
            `render_model_card`.
        private / token / revision / commit_message: as in `huggingface_hub.HfApi`; `revision` must be an existing
            branch. `endpoint` defaults to `HF_ENDPOINT` (the Hub).

    Returns:
        The `huggingface_hub.CommitInfo` of the commit (`.oid`, `.commit_url`).
    """
    if base_models is None:
        base_models = weights_sources(getattr(model, "name_or_path", None))
    card = render_model_card(model.config, repo_id, variant=variant, card_data=card_data, eval_results=eval_results,
                             training_stages=training_stages, language_model=language_model, base_models=base_models,
                             base_model_relation=base_model_relation, cards_dir=cards_dir, **card_fields)
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="eagle-hf-push-") as folder:
        model.save_pretrained(folder)
        if processor is not None:
            processor.save_pretrained(folder)
        card.save(Path(folder) / "README.md")
        return api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", revision=revision,
                                 commit_message=commit_message or f"Upload {repo_id} with eagle-hf")


__all__ = ["push_checkpoint"]
