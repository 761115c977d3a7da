"""The model card (README.md) written next to a converted checkpoint.

The body is eagle-hf's own card (`eagle_hf.hub.render_model_card`: variant, experts and their sources and licences,
training recipe, citation) with the source as `base_model`; a section on what the conversion changed follows it.
"""

from pathlib import Path

FAMILY_NAMES = {
    "nveagle": "an NVEagle (Eagle-1, `EagleLlamaForCausalLM`)",
    "llava": "a LLaVA-1.5 (`LlavaLlamaForCausalLM`)",
    "llava-hf": "a transformers `LlavaForConditionalGeneration`",
}
# The language models of the released checkpoints, told apart by (hidden size, layers, Llama-3-sized vocabulary).
KNOWN_LANGUAGE_MODELS = {
    (4096, 32, False): "lmsys/vicuna-7b-v1.5",
    (5120, 40, False): "lmsys/vicuna-13b-v1.5",
    (4096, 32, True): "meta-llama/Meta-Llama-3-8B-Instruct",
    (7168, 60, False): "NousResearch/Nous-Hermes-2-Yi-34B",
}


def known_language_model(text_config):
    key = (text_config.hidden_size, text_config.num_hidden_layers, text_config.vocab_size >= 128256)
    return KNOWN_LANGUAGE_MODELS.get(key)


def conversion_section(source, family, config, vocabulary, chat_template, dropped):
    """Markdown: where the weights come from and what the conversion changed."""
    dropped_lines = "\n".join(f"  - {count} tensor(s): {reason}" for reason, count in sorted(dropped.items()))
    added = ", ".join(f"`{token}`" for token in vocabulary.added_tokens)
    added = f"added {added} to the tokenizer" if added else "kept the source's `<image>` token"
    return f"""## Conversion

These are the weights of `{source}`, {FAMILY_NAMES[family]} checkpoint, converted by
`eagle-hf convert --from {family}`; the source's licence and terms of use apply unchanged. The conversion:

- {added}; `<image>` is id {config.image_token_id}, and each image takes {config.image_seq_length} positions. The
  embedding and `lm_head` went from {vocabulary.source_rows} to {vocabulary.rows} rows; source ids and rows are
  unchanged, every new row is the mean of the source rows, and `generation_config.suppress_tokens` keeps `generate`
  from producing a new row;
- set the chat template to `{chat_template}`, the source's conversation mode, and the image processor to
  {config.image_size}x{config.image_size};
- left out the source tensors that have no place in the converted model:
{dropped_lines or "  - none"}

The processor tokenises prompts piece by piece around each image, as the original did (its config stores
`tokenize_chunks: true`), so `processor(text=prompt, images=images, add_special_tokens=False)` on a prompt rendered
by `processor.apply_chat_template` gives the token ids the original models were trained on; pass
`tokenize_chunks=False` to tokenise whole texts instead.
"""


def model_card_text(source, family, config, vocabulary, chat_template, dropped):
    from ..files import is_hub_id
    from ..hub.model_card import render_model_card, weights_sources

    card = render_model_card(config, base_models=[source] if is_hub_id(source) else weights_sources(source),
                             language_model=known_language_model(config.text_config))
    section = conversion_section(source, family, config, vocabulary, chat_template, dropped)
    return str(card).rstrip() + "\n\n" + section


def write_model_card(folder, **fields):
    (Path(folder) / "README.md").write_text(model_card_text(**fields))


__all__ = ["conversion_section", "model_card_text", "write_model_card"]
