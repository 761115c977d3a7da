"""Model cards of eagle-hf checkpoints, rendered offline with `huggingface_hub.ModelCard`.

The facts a config cannot hold (each expert's usual source checkpoint and licence, the language model, the released
variants' training stages, datasets and citation) live in `model_cards/card_data.yaml` at the repository root (shipped
in the wheel as `eagle_hf/model_cards/`); the markdown lives in `model_cards/eagle.md`, a Jinja template whose
`{{ card_data }}` is the YAML front matter. The variant (LLaVA-1.5, Eagle-X4, Eagle-X5, or a custom mixture) is read
from the config's ordered expert kinds. `base_model` names only the Hub models the weights really came from (see
`weights_sources`): a design is not a provenance.
"""

from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..files import is_hub_id

MODEL_CARDS_DIR = Path(__file__).resolve().parents[1] / "model_cards"  # package data (a link to the repository's)
TEMPLATE_NAME = "eagle.md"
CARD_DATA_NAME = "card_data.yaml"
BASE_TAGS = ("eagle-hf", "vision-language", "multimodal")
EVAL_TASK = "image-text-to-text"
PLACEHOLDER_REPO = "path/to/checkpoint"


def model_cards_dir(directory=None):
    """The folder of `eagle.md` and `card_data.yaml`: `directory` if given, else the repository's `model_cards/`."""
    folder = Path(directory) if directory is not None else MODEL_CARDS_DIR
    missing = [name for name in (TEMPLATE_NAME, CARD_DATA_NAME) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {missing}. The model-card templates ship in the eagle_hf package (eagle_hf/model_cards/); "
            "reinstall eagle-hf, or pass cards_dir= pointing at a copy of the repository's model_cards/."
        )
    return folder


def load_card_facts(cards_dir=None):
    """The parsed `card_data.yaml`: {"experts": ..., "language_models": ..., "variants": ...}."""
    return yaml.safe_load((model_cards_dir(cards_dir) / CARD_DATA_NAME).read_text(encoding="utf-8"))


def weights_sources(source):
    """The Hub models whose weights a checkpoint holds, read from where it was loaded: a Hub id is its own source; a
    local folder has the sources its card (README.md) lists as `base_model`; anything else (a model built in memory,
    a folder without a card, randomly initialised weights) has none."""
    if not source:
        return []
    folder = Path(str(source)).expanduser()
    if folder.is_dir():
        card = folder / "README.md"
        base = ModelCard.load(card).data.base_model if card.is_file() else None
        return [base] if isinstance(base, str) else list(base or [])
    return [str(source).partition(":")[0]] if is_hub_id(source) else []


def detect_variant(config, facts=None):
    """`llava_1_5`, `eagle_x4`, `eagle_x5` when the config's expert kinds are exactly that variant's, in order; else
    `custom`."""
    facts = facts if facts is not None else load_card_facts()
    kinds = [expert.kind for expert in config.vision_experts]
    for name, variant in facts["variants"].items():
        if variant["experts"] and list(variant["experts"]) == kinds:
            return name
    return "custom"


def _unique(items):
    return list(dict.fromkeys(item for item in items if item))


def expert_rows(config, facts, sourced=True):
    """One row per expert, in channel order: what the config says, where its weights come from (when `sourced`: the
    weights descend from released checkpoints), their licence."""
    rows = []
    for index, expert in enumerate(config.vision_experts):
        side, grid = expert.feature_map_size, config.grid_size
        known = dict(facts["experts"].get(expert.kind, {}))
        if not sourced:
            known.pop("checkpoint", None), known.pop("checkpoint_file", None)
        rows.append(dict(
            known, index=index, kind=expert.kind,
            name=facts["experts"].get(expert.kind, {}).get("name", expert.kind), image_size=expert.image_size,
            feature_layer=expert.feature_layer, native_map=f"{side}x{side}", channels=expert.hidden_size,
            to_grid=f"{expert.grid_resample} -> {grid}x{grid}",
        ))
    return rows


def stage_rows(stages):
    """Training stages as table rows; each stage is a dict of the row's fields or an `eagle_hf.training.Stage`."""
    rows = []
    for stage in stages or ():
        if isinstance(stage, dict):
            rows.append({key: stage.get(key, "") for key in ("name", "trains", "learning_rate", "data", "notes")})
            continue
        rates = ", ".join(f"{group} {rate}" for group, rate in stage.group_learning_rates.items())
        notes = f"batch {stage.global_batch_size}, {stage.num_train_epochs:g} epoch(s), {stage.lr_scheduler_type}"
        rows.append(dict(
            name=stage.name, trains=", ".join(stage.train), data=f"{stage.data}, `{stage.template}` template",
            learning_rate=f"{stage.learning_rate:g}" + (f" ({rates})" if rates else ""),
            notes=notes + (", LoRA" if stage.lora else "") + (" (QLoRA)" if stage.qlora else ""),
        ))
    return rows


def eval_results_and_rows(eval_results):
    """`EvalResult`s for the model-index metadata and the rows of the card's table.

    Each result is an `huggingface_hub.EvalResult` or a dict with `dataset` (shown name), `metric` and `value`, and
    optionally `dataset_type` (a Hub dataset id; defaults to `dataset`), `split`, `metric_name` and `task` (defaults
    to image-text-to-text).
    """
    results, rows = [], []
    for item in eval_results or ():
        if not isinstance(item, EvalResult):
            missing = [key for key in ("dataset", "metric", "value") if key not in item]
            if missing:
                raise ValueError(f"Evaluation result {item!r} lacks {missing}; give dataset, metric and value.")
            item = EvalResult(
                task_type=item.get("task", EVAL_TASK), dataset_type=item.get("dataset_type", item["dataset"]),
                dataset_name=item["dataset"], dataset_split=item.get("split"), metric_type=item["metric"],
                metric_name=item.get("metric_name"), metric_value=item["value"],
            )
        results.append(item)
        rows.append(dict(dataset=item.dataset_name, split=item.dataset_split or "", value=item.metric_value,
                         metric=item.metric_name or item.metric_type))
    return results, rows


def _language_model(facts, variant, language_model):
    checkpoint = language_model if language_model is not None else variant["language_model"]
    if checkpoint is None:
        return None
    known = facts["language_models"].get(checkpoint, {"name": checkpoint, "license": None})
    return dict(known, checkpoint=checkpoint)


def build_card_data(config, repo_id=None, variant=None, card_data=None, eval_results=None, language_model=None,
                    facts=None, base_models=None, base_model_relation=None, datasets=None):
    """(ModelCardData, template fields) for `config`; `card_data` (dict or ModelCardData) overrides metadata.

    `base_models`: the Hub models the weights came from (`weights_sources`); none, the card names no `base_model` and
    no expert source. `base_model_relation` defaults to "finetune" for several (a model trained from its parts).
    `datasets`: the Hub datasets it was trained on (default: the released variant's)."""
    facts = facts if facts is not None else load_card_facts()
    variant = variant or detect_variant(config, facts)
    if variant not in facts["variants"]:
        raise ValueError(f"Unknown variant {variant!r}; expected one of {sorted(facts['variants'])}.")
    about = facts["variants"][variant]
    base_models = _unique(base_models or [])
    if not base_models:  # the released variant's licence and recipe say nothing about weights of no recorded source
        about = dict(about, license=None, weights_license_note="", training_stages=[])
    experts = expert_rows(config, facts, sourced=bool(base_models))
    language = _language_model(facts, about, language_model) if base_models else None
    results, eval_rows = eval_results_and_rows(eval_results)
    model_name = (repo_id or "").split("/")[-1] or about["title"]
    if base_models and base_model_relation is None and len(base_models) > 1:
        base_model_relation = "finetune"  # several base models read as a merge unless the relation is stated
    metadata = dict(
        license=about["license"], library_name="transformers", pipeline_tag="image-text-to-text", language=["en"],
        base_model=base_models or None, tags=_unique([*BASE_TAGS, *about["tags"]]),
        datasets=(about["datasets"] if datasets is None else datasets) or None,
        model_name=model_name if results else None, eval_results=results or None,
        base_model_relation=base_model_relation if base_models else None,
    )
    overrides = card_data.to_dict() if isinstance(card_data, ModelCardData) else dict(card_data or {})
    if "base_model" in overrides and "base_model_relation" not in overrides:
        metadata["base_model_relation"] = None  # the caller's base model (e.g. the converted source) sets the relation
    metadata.update({key: value for key, value in overrides.items() if value is not None})
    fields = dict(
        about, variant=variant, repo_id=repo_id or PLACEHOLDER_REPO, experts=experts, language_model=language,
        sourced=bool(base_models),
        eval_rows=eval_rows, training_stages=stage_rows(about["training_stages"]), text=_text_fields(config),
        image_size=config.image_size, image_seq_length=config.image_seq_length, image_token_id=config.image_token_id,
        mm_hidden_size=config.mm_hidden_size, fusion=config.fusion, projector_type=config.projector_type,
    )
    return ModelCardData(**metadata), fields


def _text_fields(config):
    text = config.text_config
    names = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
    return {name: getattr(text, name, None) for name in names}


def render_model_card(config, repo_id=None, *, variant=None, card_data=None, eval_results=None, training_stages=None,
                      language_model=None, base_models=None, base_model_relation=None, datasets=None,
                      cards_dir=None, template_path=None, **fields):
    """The model card of a checkpoint with this config, as a `huggingface_hub.ModelCard` (nothing is fetched).

    Args:
        config: the checkpoint's `EagleConfig`.
        repo_id: the Hub repo the card describes (used in the usage snippets and as the model-index name).
        variant: `llava_1_5`, `eagle_x4`, `eagle_x5` or `custom`; detected from the expert kinds when None.
        card_data: metadata overrides (dict or `ModelCardData`), e.g. `{"license": "apache-2.0"}`.
        eval_results: benchmark results (see `eval_results_and_rows`); they fill the model-index metadata and the
            evaluation table. Without them the card says no results were recorded.
        training_stages: stage rows or `eagle_hf.training.Stage`s replacing the variant's released recipe.
        language_model: the LLM's Hub id when it differs from the variant's (e.g. "lmsys/vicuna-13b-v1.5").
        base_models / base_model_relation: the Hub models the weights came from (`weights_sources` of where they were
            loaded) and how this model relates to them. None: the card claims no base model and no expert source
            (e.g. weights trained from random initialisation).
        datasets: the Hub datasets the weights were trained on (default: the released variant's; [] for none).
        cards_dir / template_path: another `model_cards/` folder, or another template file.
        **fields: any other template field (`title`, `summary`, `weights_license_note`, ...).
    """
    from .. import __version__

    facts = load_card_facts(cards_dir)
    data, template_fields = build_card_data(config, repo_id, variant, card_data, eval_results, language_model, facts,
                                            base_models, base_model_relation, datasets)
    if training_stages is not None:
        template_fields["training_stages"] = stage_rows(training_stages)
    template_fields.update(fields, eagle_hf_version=__version__, license=data.license)
    template = Path(template_path) if template_path is not None else model_cards_dir(cards_dir) / TEMPLATE_NAME
    return ModelCard.from_template(data, template_path=str(template), **template_fields)


__all__ = ["build_card_data", "detect_variant", "load_card_facts", "model_cards_dir", "render_model_card",
           "weights_sources"]
