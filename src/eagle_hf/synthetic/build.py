"""The demo's small Eagle, built from the package's real classes: its tokenizer (trained on the spot), config, model
and processor. Nothing is downloaded and no pretrained weight exists here: every weight starts random."""

import torch
from transformers import LlamaConfig, PreTrainedTokenizerFast

from ..chat_templates import load_chat_template
from ..configuration_eagle import EagleConfig
from ..modeling_eagle import EagleForConditionalGeneration
from ..processing_eagle import EagleProcessor
from .scenes import CANVAS

# Eagle's Yi-34B chat format (ChatML): a short default system prompt, no BOS added by the tokenizer, turns closed by
# <|im_end|> (the EOS). The pad, BOS and unknown tokens come first, `<image>` last.
TEMPLATE = "chatml"
SPECIAL_TOKENS = ["<pad>", "<|startoftext|>", "<|im_end|>", "<unk>", "<|im_start|>"]
IMAGE_TOKEN = "<image>"
VOCAB_SIZE = 384  # BPE merges learned until every question, answer and caption word is one token or two
GRID_SIZE = 2  # 2 x 2 = 4 image tokens per image: one per quadrant

# The experts, in channel order. Each sees the shared 64-pixel image at its own resolution: the ViT at a quarter, 16
# pixels, like LLaVA-1.5's CLIP at 336 beside Eagle's 1024-pixel experts (layout, colour and rough shape, but the small
# text is a smear), the ConvNeXt and the SAM encoder at full size.
EXPERTS = {
    "clip": dict(kind="clip", image_size=CANVAS // 4, feature_layer=-1, prefix_tokens="drop_before_encoder",
                 grid_resample="pixel_unshuffle", unshuffle_factor=2,
                 backbone_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, patch_size=4, hidden_act="quick_gelu")),
    "convnext": dict(kind="convnext", image_size=CANVAS, feature_layer=-1, grid_resample="pixel_unshuffle",
                     unshuffle_factor=2,
                     backbone_config=dict(depths=[1, 1, 1], hidden_sizes=[32, 48, 64], num_stages=3, patch_size=4,
                                          layer_norm_eps=1e-5, layer_scale_init_value=1.0)),
    "sam": dict(kind="sam", image_size=CANVAS, grid_resample="pixel_unshuffle", unshuffle_factor=4,
                backbone_config=dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, mlp_dim=96,
                                     global_attn_indexes=[1], patch_size=8, window_size=4, output_channels=16,
                                     num_pos_feats=8)),
    # Not in the demo's mixture; `eagle-hf smoke-kit` builds Eagle-X4/X5's kinds with them.
    "eva02": dict(kind="eva02", image_size=CANVAS,
                  backbone_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                       num_attention_heads=2, global_attn_indexes=[1], window_size=4,
                                       pretrain_image_size=CANVAS)),
    "pix2struct": dict(kind="pix2struct", image_size=CANVAS, max_patches=36,
                       backbone_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, d_ff=48,
                                            d_kv=16, patch_size=8, seq_len=64, patch_embed_hidden_size=192)),
}
MIXTURE = ("clip", "convnext", "sam")
BASELINE = ("clip",)  # LLaVA-1.5's setup: the low-resolution ViT alone
LLM = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
           max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.08)


def train_tokenizer(texts, vocab_size=VOCAB_SIZE):
    """A fast BPE tokenizer trained on `texts` (words split at spaces, "\n" a token of its own, so that an answer is
    tokenised the same after the prompt as inside a training conversation), with `<image>` as its last id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never"),
    ])
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|startoftext|>", eos_token="<|im_end|>",
                                        unk_token="<unk>", pad_token="<pad>", model_max_length=512,
                                        additional_special_tokens=["<|im_start|>"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", IMAGE_TOKEN]})
    return tokenizer


def tokenizer_texts(records):
    """Training texts for the tokenizer: `records` (conversations and captions) rendered with the demo's templates,
    special tokens cut out (the trainer must not learn merges across them)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    texts = []
    for template, conversations in ((TEMPLATE, records["chat"]), ("plain", records["captions"])):
        rendered, _ = render_jinja_template(conversations=conversations, add_generation_prompt=False,
                                            chat_template=load_chat_template(template), bos_token="")
        for text in rendered:
            for token in (*SPECIAL_TOKENS, IMAGE_TOKEN):
                text = text.replace(token, "\n")
            texts.append(text)
    return texts


def demo_config(tokenizer, kinds=MIXTURE):
    """An `EagleConfig` of the demo's experts `kinds` (channel concatenation, `mlp2x_gelu`) and its Llama."""
    text_config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **LLM)
    return EagleConfig(
        text_config=text_config, vision_experts=[EXPERTS[kind] for kind in kinds], image_size=CANVAS,
        grid_size=GRID_SIZE, fusion="channel_concat", projector_type="mlp2x_gelu",
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), model_max_length=tokenizer.model_max_length,
    )


def build_model(config, seed):
    """A randomly initialised `EagleForConditionalGeneration` (seeded)."""
    torch.manual_seed(seed)
    return set_generation_defaults(EagleForConditionalGeneration(config))


def set_generation_defaults(model):
    """Greedy decoding of a few tokens (the answers are short), saved with the checkpoint."""
    text_config = model.config.text_config
    model.generation_config.update(do_sample=False, max_new_tokens=6, pad_token_id=text_config.pad_token_id,
                                   eos_token_id=text_config.eos_token_id, bos_token_id=text_config.bos_token_id)
    return model


def build_processor(config, tokenizer):
    """An `EagleProcessor` for `config`: the shared image as it is, the ChatML template."""
    return EagleProcessor.for_config(config, tokenizer, chat_template=load_chat_template(TEMPLATE))
