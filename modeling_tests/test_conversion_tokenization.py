"""A converted checkpoint's processor tokenises prompts with images exactly as the original did with the source
tokenizer: the original's conversation string tokenised piece-wise around `<image>` (`tokenizer_image_token`), each
-200 sentinel standing for one image's span of `<image>` tokens.

Checked for the two conversation modes of the released models, `vicuna_v1` (Vicuna sources: Eagle-X4/X5-7B/13B,
LLaVA-1.5) and `llama3` (Eagle-X4-8B-Plus; its system string starts with a literal `<|begin_of_text|>`, so the
original ids start with two BOS), on the original prompt strings and through the converted chat template.
"""

import pytest
from PIL import Image

from conversion_fixtures import X4, nveagle_overrides, source_tokenizer, write_llava, write_nveagle
from eagle_hf.conversion import convert_checkpoint
from eagle_hf.processing_eagle import EagleProcessor
from tiny import expand_image_index, tokenizer_image_token

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
QUESTION, ANSWER, FOLLOW_UP = "What is in the image?", "A red square and a blue circle.", "Where is the star?"


def original_prompt(mode, turns):
    """The original's `Conversation.get_prompt()` for `turns` [(user, assistant or None)], the last one open."""
    if mode == "vicuna_v1":  # SeparatorStyle.TWO, seps " " and "</s>"
        text = SYSTEM + " "
        for user, assistant in turns:
            text += f"USER: {user} " + (f"ASSISTANT: {assistant}</s>" if assistant else "ASSISTANT:")
        return text
    header = "<|start_header_id|>{}<|end_header_id|>\n\n"  # llama3: SeparatorStyle.MPT, sep <|eot_id|>
    text = "<|begin_of_text|>" + header.format("system") + SYSTEM + "<|eot_id|>"
    for user, assistant in turns:
        text += header.format("user") + user + "<|eot_id|>" + header.format("assistant")
        text += f"{assistant}<|eot_id|>" if assistant else ""
    return text


def messages(turns, images):
    """The chat form of `turns`, the images as content blocks of the first user turn."""
    conversation = []
    for index, (user, assistant) in enumerate(turns):
        content = [{"type": "text", "text": user.replace("<image>\n", "")}]
        if index == 0:
            content = [{"type": "image", "image": image} for image in images] + content
        conversation.append({"role": "user", "content": content})
        if assistant:
            conversation.append({"role": "assistant", "content": [{"type": "text", "text": assistant}]})
    return conversation


CASES = {
    "one image": ([("<image>\n" + QUESTION, None)], 1),
    "two images, two turns": ([("<image>\n<image>\n" + QUESTION, ANSWER), (FOLLOW_UP, None)], 2),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{mode: (source tokenizer, converted processor)}: a Vicuna LLaVA-1.5 and a Llama-3 NVEagle, converted."""
    root = tmp_path_factory.mktemp("tokenization")
    write_llava(root / "vicuna", tower="inside")
    convert_checkpoint(str(root / "vicuna"), str(root / "vicuna-out"), "llava", verify=False)
    write_nveagle(root / "llama3", X4, llama3=True)
    convert_checkpoint(str(root / "llama3"), str(root / "llama3-out"), "nveagle", verify=False,
                       **nveagle_overrides(X4))
    return {"vicuna_v1": (source_tokenizer(), EagleProcessor.from_pretrained(root / "vicuna-out")),
            "llama3": (source_tokenizer(llama3=True), EagleProcessor.from_pretrained(root / "llama3-out"))}


def original_ids(mode, turns, tokenizer, processor):
    ids = tokenizer_image_token(original_prompt(mode, turns), tokenizer)
    return expand_image_index(ids, processor.num_image_tokens, image_token_id=processor.image_token_id)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", ["vicuna_v1", "llama3"])
def test_the_original_prompt_string_gives_the_original_ids_in_parity_mode(converted, mode, case):
    tokenizer, processor = converted[mode]
    turns, num_images = CASES[case]
    images = [Image.new("RGB", (20, 12), (200, 30, 30))] * num_images
    ids = processor(text=original_prompt(mode, turns), images=images, tokenize_chunks=True)["input_ids"][0]
    assert ids == original_ids(mode, turns, tokenizer, processor)
    assert ids.count(processor.image_token_id) == num_images * processor.num_image_tokens
    whole = processor(text=original_prompt(mode, turns), images=images, tokenize_chunks=False)["input_ids"][0]
    assert whole != ids  # whole-text tokenisation starts the piece after each image without the original's "▁"
    # A converted checkpoint stores the original's tokenisation as its default, so a plain call gives its ids.
    assert processor.tokenize_chunks is True
    assert processor(text=original_prompt(mode, turns), images=images)["input_ids"][0] == ids


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", ["vicuna_v1", "llama3"])
def test_the_converted_chat_template_gives_the_original_ids_in_parity_mode(converted, mode, case):
    tokenizer, processor = converted[mode]
    turns, num_images = CASES[case]
    images = [Image.new("RGB", (20, 12), (30, 200, 30))] * num_images
    inputs = processor.apply_chat_template(messages(turns, images), add_generation_prompt=True, tokenize=True,
                                           return_dict=True, processor_kwargs=dict(tokenize_chunks=True))
    side = processor.image_processor.image_size
    assert tuple(inputs["pixel_values"].shape) == (num_images, 3, side, side)
    assert inputs["input_ids"][0] == original_ids(mode, turns, tokenizer, processor)


def test_llama3_keeps_the_originals_double_bos_and_vicuna_a_single_one(converted):
    for mode, count in (("llama3", 2), ("vicuna_v1", 1)):
        tokenizer, processor = converted[mode]
        turns, _ = CASES["one image"]
        ids = original_ids(mode, turns, tokenizer, processor)
        assert ids[:count] == [tokenizer.bos_token_id] * count and ids[count] != tokenizer.bos_token_id


def test_text_without_images_tokenises_as_the_source_tokenizer_did(converted):
    for mode, (tokenizer, processor) in converted.items():
        text = original_prompt(mode, [(QUESTION, None)])
        assert processor.tokenizer(text).input_ids == tokenizer(text).input_ids, mode
        assert processor(text=text, tokenize_chunks=True)["input_ids"][0] == tokenizer(text).input_ids, mode
