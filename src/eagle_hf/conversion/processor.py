"""The processor of a converted checkpoint: the source's tokenizer (plus `<image>`), an image processor at the source
resolution in the source's aspect-ratio mode, and the chat template of the source's conversation mode."""

from ..chat_templates import TEMPLATE_NAMES, load_chat_template
from ..processing_eagle import EagleProcessor
from .source import ConversionError

# Tokens that give a source's conversation mode away (checked in this order); anything else is Vicuna's v1 mode, the
# mode of every Vicuna-based Eagle and of LLaVA-1.5. The Yi-34B models' `yi_34b_chatml_direct` is our `chatml`.
TEMPLATE_MARKERS = (("<|eot_id|>", "llama3"), ("<|im_start|>", "chatml"))


def infer_chat_template(tokenizer):
    """The template name matching the source's conversation mode: llama3, chatml (Yi-34B) or vicuna_v1."""
    vocab = tokenizer.get_vocab()
    for marker, name in TEMPLATE_MARKERS:
        if marker in vocab:
            return name
    return "vicuna_v1"


def build_processor(tokenizer, config, aspect_ratio, template):
    """An `EagleProcessor` for `config`: `<image>` expanded to `config.image_seq_length` tokens, images padded to a
    square (or resized and cropped, `aspect_ratio="square"`) at `config.image_size`, tokenising as the original did
    (`tokenize_chunks`) unless a call says otherwise."""
    if template not in TEMPLATE_NAMES:
        raise ConversionError(f"Unknown chat template {template!r}; expected one of {list(TEMPLATE_NAMES)}.")
    try:
        # The released models were trained on the original's piece-wise ids, so that is the stored default.
        return EagleProcessor.for_config(config, tokenizer, chat_template=load_chat_template(template),
                                         tokenize_chunks=True, aspect_ratio_mode=aspect_ratio)
    except ValueError as error:
        raise ConversionError(f"Cannot build the processor: {error}") from error


__all__ = ["build_processor", "infer_chat_template"]
