"""EagleProcessor: image-token expansion, padding, parity with the original tokenisation, bad input, and a saved
processor loading again, also through the Auto classes without the package and on the other transformers version."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from other_env import other_env  # noqa: F401  (the session fixture, requested by name)
import torch
from PIL import Image

from eagle_hf import EagleForConditionalGeneration
from eagle_hf.chat_templates import load_chat_template
from eagle_hf.image_processing_eagle import EagleImageProcessor
from eagle_hf.processing_eagle import EagleProcessor
from tiny import (IMAGE_TOKEN_ID, PAD_TOKEN_ID, expand_image_index, tiny_chat_tokenizer, tiny_eagle_config,
                  tiny_tokenizer, tokenizer_image_token)

NUM_IMAGE_TOKENS = 4
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
VICUNA_PROMPT = f"{SYSTEM} USER: <image>\nWhat is in the image? ASSISTANT:"
LLAMA3_PROMPT = (f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{SYSTEM}<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat is in the image?<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n")


def make_processor(tokenizer=None, **kwargs):
    return EagleProcessor(EagleImageProcessor(image_size=16), tokenizer or tiny_tokenizer(),
                          num_image_tokens=NUM_IMAGE_TOKENS, **kwargs)


def picture(color=(200, 10, 10), size=(20, 12)):
    return Image.new("RGB", size, color)


# ----- expansion and padding -----


def test_each_image_marker_becomes_num_image_tokens_image_tokens():
    processor = make_processor()
    text = "<image> and <image> compared"
    out = processor(text=text, images=[picture(), picture((0, 0, 255))], return_tensors="pt")
    assert out["input_ids"].shape[0] == 1
    assert int((out["input_ids"] == IMAGE_TOKEN_ID).sum()) == 2 * NUM_IMAGE_TOKENS
    assert out["input_ids"][0].tolist() == expand_image_index(processor.tokenizer(text).input_ids, NUM_IMAGE_TOKENS,
                                                              image_token_index=IMAGE_TOKEN_ID)
    assert out["pixel_values"].shape == (2, 3, 16, 16)


def test_images_map_to_samples_by_per_sample_lists_or_in_order_from_a_flat_list():
    processor = make_processor()
    red, green, blue = picture((255, 0, 0)), picture((0, 255, 0)), picture((0, 0, 255))
    texts = ["<image> one", "none", "<image> and <image> two"]
    nested = processor(text=texts, images=[[red], [], [green, blue]], padding=True, return_tensors="pt")
    flat = processor(text=texts, images=[red, green, blue], padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "pixel_values"):
        assert torch.equal(nested[key], flat[key])
    expected = processor.image_processor([red, green, blue], return_tensors="pt")["pixel_values"]
    assert torch.equal(nested["pixel_values"], expected)
    assert (nested["input_ids"] == IMAGE_TOKEN_ID).sum(dim=1).tolist() == [4, 0, 8]


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_calls_pad_on_the_side_the_caller_asks(side):
    processor = make_processor()
    texts = ["<image> What is in the image?", "<image> Two."]
    out = processor(text=texts, images=[picture(), picture()], padding=True, padding_side=side, return_tensors="pt")
    singles = [processor(text=text, images=picture())["input_ids"][0] for text in texts]
    short, missing = singles[1], len(singles[0]) - len(singles[1])
    assert missing > 0 and out["input_ids"][0].tolist() == singles[0]
    padded = [PAD_TOKEN_ID] * missing + short if side == "left" else short + [PAD_TOKEN_ID] * missing
    mask = [0] * missing + [1] * len(short) if side == "left" else [1] * len(short) + [0] * missing
    assert out["input_ids"][1].tolist() == padded
    assert out["attention_mask"][1].tolist() == mask


def test_padding_defaults_to_the_tokenizers_side_and_supports_max_length_and_multiples():
    processor = make_processor()
    texts, images = ["<image> What is in the image?", "<image> Two."], [picture(), picture()]
    default = processor(text=texts, images=images, padding=True, return_tensors="pt")
    assert processor.tokenizer.padding_side == "right" and default["attention_mask"][1, -1] == 0
    assert processor(text=texts, images=images, padding="max_length", max_length=40)["input_ids"][1].__len__() == 40
    assert processor(text=texts, images=images, padding=True, pad_to_multiple_of=8, return_tensors="pt")[
        "input_ids"].shape[1] % 8 == 0


def test_no_token_type_ids_on_either_version():
    processor = make_processor(chat_template=load_chat_template("vicuna_v1"))
    out = processor(text=["<image> a", "<image> b"], images=[picture(), picture()], padding=True)
    assert set(out) == {"input_ids", "attention_mask", "pixel_values"}
    messages = [{"role": "user", "content": [{"type": "image", "image": picture()}, {"type": "text", "text": "Hi"}]}]
    chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert set(chat) == {"input_ids", "attention_mask", "pixel_values"}
    with pytest.raises(ValueError, match="never returns token_type_ids"):
        processor(text="<image> a", images=picture(), return_token_type_ids=True)


# ----- parity with the original tokenisation -----


@pytest.mark.parametrize("tokenizer,prompt", [(tiny_tokenizer, VICUNA_PROMPT),
                                              (lambda: tiny_chat_tokenizer("llama3"), LLAMA3_PROMPT)],
                         ids=["vicuna_v1", "llama3"])
def test_parity_mode_equals_the_original_tokenizer_image_token(tokenizer, prompt):
    processor = make_processor(tokenizer())
    original = tokenizer_image_token(prompt, processor.tokenizer)
    out = processor(text=prompt, images=picture(), tokenize_chunks=True)
    assert out["input_ids"][0] == expand_image_index(original, NUM_IMAGE_TOKENS)
    two_images = prompt.replace("<image>\n", "<image>\n<image>\n")
    out = processor(text=two_images, images=[picture(), picture()], tokenize_chunks=True)
    assert out["input_ids"][0] == expand_image_index(tokenizer_image_token(two_images, processor.tokenizer),
                                                     NUM_IMAGE_TOKENS)


def test_llama3_prompts_keep_the_originals_double_bos_in_parity_mode():
    processor = make_processor(tiny_chat_tokenizer("llama3"))
    ids = processor(text=LLAMA3_PROMPT, images=picture(), tokenize_chunks=True)["input_ids"][0]
    assert ids[:2] == [processor.tokenizer.bos_token_id] * 2 and ids[2] != processor.tokenizer.bos_token_id


def test_parity_mode_reads_a_chat_templates_leading_bos_as_the_one_the_tokenizer_adds():
    processor = make_processor()
    rendered = processor(text="<s>" + VICUNA_PROMPT, images=picture(), tokenize_chunks=True, add_special_tokens=False)
    assert rendered["input_ids"][0] == expand_image_index(tokenizer_image_token(VICUNA_PROMPT, processor.tokenizer),
                                                          NUM_IMAGE_TOKENS)



def test_the_stored_tokenisation_is_the_default_of_every_call_and_survives_saving(tmp_path):
    processor = make_processor(tokenize_chunks=True)
    pieces = processor(text=VICUNA_PROMPT, images=picture(), tokenize_chunks=True)["input_ids"][0]
    whole = processor(text=VICUNA_PROMPT, images=picture(), tokenize_chunks=False)["input_ids"][0]
    assert pieces != whole and processor(text=VICUNA_PROMPT, images=picture())["input_ids"][0] == pieces
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["tokenize_chunks"] is True
    assert EagleProcessor.from_pretrained(tmp_path)(text=VICUNA_PROMPT, images=picture())["input_ids"][0] == pieces
    assert make_processor()(text=VICUNA_PROMPT, images=picture())["input_ids"][0] == whole  # new processors: whole
    with pytest.raises(ValueError, match="tokenize_chunks must be True or False, got 'yes'"):
        make_processor(tokenize_chunks="yes")

def test_whole_text_tokenisation_differs_from_the_original_by_the_leading_space_of_the_piece_after_an_image():
    processor = make_processor()
    whole = processor(text=VICUNA_PROMPT, images=picture())["input_ids"][0]
    pieces = processor(text=VICUNA_PROMPT, images=picture(), tokenize_chunks=True)["input_ids"][0]
    after_image = max(index for index, token in enumerate(whole) if token == IMAGE_TOKEN_ID) + 1
    # The original tokenises "\nWhat is ..." on its own, and a SentencePiece-style tokenizer starts it with "▁".
    assert pieces == whole[:after_image] + [processor.tokenizer.convert_tokens_to_ids("▁")] + whole[after_image:]


# ----- bad input -----


@pytest.mark.parametrize("texts,images,message", [
    (["<image> a", "<image> <image> b"], [[picture()], [picture()]], "Sample 1 has 2 <image> marker.s. but 1 image"),
    (["<image> a", "<image> <image> b"], [picture(), picture()],
     "Sample 1 has 2 <image> marker.s. but only 1 of the 2"),
    (["<image> a", "<image> b"], [picture()] * 3, "3 images were given but the text has 2 <image> marker"),
    (["<image> a", "b"], None, "Sample 0 has 1 <image> marker.s. but no images were given"),
    (["a", "b"], [picture()], "1 images were given but the text has 0 <image> marker"),
    (["<image> a", "b"], [[picture()]], "holds 1 per-sample lists for 2 text samples"),
    (["<image> a", "<image> b"], [[picture()], picture()], "mixes lists and single images"),
    ("<image> a", [[picture(), picture()]], "Sample 0 has 1 <image> marker.s. but 2 image"),
])
def test_marker_and_image_counts_that_disagree_raise_naming_the_sample(texts, images, message):
    with pytest.raises(ValueError, match=message):
        make_processor()(text=texts, images=images, padding=True)


def test_truncation_cuts_text_but_never_an_image_span():
    processor = make_processor()
    text = "<image> What is in the image? A red square."
    full = processor(text=text, images=picture())["input_ids"][0]
    cut = processor(text=text, images=picture(), truncation=True, max_length=len(full) - 3)["input_ids"][0]
    assert cut == full[: len(full) - 3] and cut.count(IMAGE_TOKEN_ID) == NUM_IMAGE_TOKENS
    with pytest.raises(ValueError, match=r"Sample 1: .* more than max_length=3; .* cut 2 image token"):
        processor(text=["a", text], images=picture(), truncation=True, max_length=3, padding=True)
    processor.tokenizer.truncation_side = "left"
    with pytest.raises(ValueError, match=r"Sample 0: .* on the left would cut"):
        processor(text=text, images=picture(), truncation=True, max_length=len(full) - 3)


def test_truncation_without_max_length_uses_the_tokenizers_model_max_length():
    processor = make_processor()
    processor.tokenizer.model_max_length = 4
    with pytest.raises(ValueError, match="more than max_length=4"):
        processor(text="<image> hello", images=picture(), truncation=True)
    assert len(processor(text="<image> hello", images=picture())["input_ids"][0]) > 4  # no truncation asked: none


def test_a_corrupt_empty_or_huge_image_raises_naming_its_sample(tmp_path):
    processor = make_processor()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    texts = ["<image> a", "<image> b"]
    with pytest.raises(ValueError, match="Sample 1: Image 0: cannot read .* as an image"):
        processor(text=texts, images=[[picture()], [str(broken)]], padding=True)
    with pytest.raises(ValueError, match=r"Sample 0: Image 0: empty image \(0x5 pixels"):
        processor(text=texts, images=[np.zeros((5, 0, 3), np.uint8), picture()], padding=True)
    with pytest.raises(ValueError, match="Sample 1: Image 0: image has 25x16 = 400 pixels, more than max_image_pix"):
        processor(text=texts, images=[picture(size=(5, 5)), picture(size=(25, 16))], padding=True,
                  max_image_pixels=300)


def test_unpadded_samples_of_different_lengths_cannot_become_one_tensor():
    with pytest.raises(ValueError, match="different lengths .* pass padding=True"):
        make_processor()(text=["<image> a", "<image> b c d"], images=[picture(), picture()], return_tensors="pt")


def test_the_tokenizer_must_hold_the_image_token_as_one_token_and_settings_are_checked():
    with pytest.raises(ValueError, match="must know '<img>' as one token"):
        make_processor(image_token="<img>")
    with pytest.raises(ValueError, match="num_image_tokens must be a positive int"):
        EagleProcessor(EagleImageProcessor(image_size=16), tiny_tokenizer(), num_image_tokens=0)
    with pytest.raises(ValueError, match="padding_side must be 'left' or 'right'"):
        make_processor()(text="<image> a", images=picture(), padding=True, padding_side="middle")


# ----- the processor of a model -----


def test_for_config_matches_the_models_image_tokens_size_and_statistics():
    config = tiny_eagle_config(("clip",))
    processor = EagleProcessor.for_config(config, tiny_tokenizer())
    assert processor.num_image_tokens == config.image_seq_length == 16
    assert processor.image_processor.image_size == config.image_size
    assert processor.image_processor.image_mean == config.image_mean
    with pytest.raises(ValueError, match="config.image_token_id is 94"):
        EagleProcessor.for_config(tiny_eagle_config(("clip",), image_token_id=94), tiny_tokenizer())


def test_chat_template_output_goes_straight_into_generate():
    config = tiny_eagle_config(("clip",))
    torch.manual_seed(0)
    model = EagleForConditionalGeneration(config).eval()
    processor = EagleProcessor.for_config(config, tiny_tokenizer(), chat_template=load_chat_template("vicuna_v1"))
    conversations = [
        [{"role": "user", "content": [{"type": "image", "image": picture()}, {"type": "text", "text": question}]}]
        for question in ("What is in the image?", "Where?")
    ]
    # processor_kwargs: how 5.x takes call options in apply_chat_template; EagleProcessor reads it on 4.57 too.
    batch = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True, return_dict=True,
                                          return_tensors="pt",
                                          processor_kwargs={"padding": True, "padding_side": "left"})
    generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape == (2, batch["input_ids"].shape[1] + 3)
    single = processor.apply_chat_template(conversations[0], add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    assert torch.equal(single["input_ids"], batch["input_ids"][:1])  # the longer prompt needs no padding
    alone = model.generate(**single, max_new_tokens=3, do_sample=False)
    assert torch.equal(alone, generated[:1])


# ----- saving and loading -----

# Run by the saving and by the loading side, so both make exactly the same calls.
REFERENCE_CALLS = textwrap.dedent(
    '''
    def reference_outputs(processor, image):
        """What a reloaded processor must reproduce exactly."""
        texts = ["USER: <image>\\nWhat is in the image? ASSISTANT:", "<image> Where?"]
        batch = processor(text=texts, images=[image, image], padding=True, padding_side="left", return_tensors="pt")
        parity = processor(text=texts[0], images=image, tokenize_chunks=True, return_tensors="pt")
        messages = [{"role": "user", "content": [{"type": "image", "image": image},
                                                 {"type": "text", "text": "What is in the image?"}]}]
        chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                             return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "pixel_values": batch["pixel_values"], "parity_ids": parity["input_ids"],
                "chat_ids": chat["input_ids"], "chat_pixel_values": chat["pixel_values"],
                "num_image_tokens": processor.num_image_tokens,
                "prompt": processor.apply_chat_template(messages, add_generation_prompt=True)}
    '''
)


def reference_outputs(processor, image):
    namespace = {}
    exec(REFERENCE_CALLS, namespace)
    return namespace["reference_outputs"](processor, image)


def open_image(path):
    image = Image.open(path)
    image.load()
    return image


def save_reference_checkpoint(path):
    """Saves a registered processor with its chat template, an image and the reference outputs into `path`."""
    EagleProcessor.register_for_auto_class("AutoProcessor")  # what eagle_hf/__init__.py is to do
    processor = make_processor(chat_template=load_chat_template("vicuna_v1"))
    processor.save_pretrained(path)
    picture(size=(23, 17)).save(os.path.join(path, "image.png"))
    outputs = reference_outputs(processor, open_image(os.path.join(path, "image.png")))
    torch.save(outputs, os.path.join(path, "processor_ref.pt"))
    return processor, outputs


LOADER = textwrap.dedent(
    """
    import sys
    sys.modules["eagle_hf"] = None  # the package must not be importable: only the checkpoint's files may run
    import torch, transformers
    from PIL import Image
    from transformers import AutoProcessor
    """
) + REFERENCE_CALLS + textwrap.dedent(
    """
    path = sys.argv[1]
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    for part in (processor, processor.image_processor):
        assert type(part).__module__.startswith("transformers_modules"), type(part).__module__
    assert type(processor).__name__ == "EagleProcessor", type(processor)
    image = Image.open(path + "/image.png")
    image.load()
    reference, outputs = torch.load(path + "/processor_ref.pt"), reference_outputs(processor, image)
    for key, value in reference.items():
        same = torch.equal(value, outputs[key]) if isinstance(value, torch.Tensor) else value == outputs[key]
        assert same, (key, value, outputs[key])
    print("processor loaded on transformers", transformers.__version__)
    """
)
SAVER = "import sys; from test_processing import save_reference_checkpoint; save_reference_checkpoint(sys.argv[1])"
HERE = os.path.dirname(os.path.abspath(__file__))


def run_python(python, script, path, tmp_path, with_package):
    pythonpath = os.pathsep.join([os.path.join(HERE, "..", "src"), HERE]) if with_package else ""
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / f"modules-{abs(hash(python))}"), HF_HUB_OFFLINE="1",
               PYTHONPATH=pythonpath, OMP_NUM_THREADS="1")
    result = subprocess.run([python, "-c", script, str(path)], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_processor_saves_and_reloads_with_its_chat_template(tmp_path):
    processor, outputs = save_reference_checkpoint(tmp_path)
    reloaded = EagleProcessor.from_pretrained(tmp_path)
    assert type(reloaded.image_processor) is EagleImageProcessor
    assert reloaded.chat_template == processor.chat_template == load_chat_template("vicuna_v1")
    assert reloaded.image_processor.to_dict() == processor.image_processor.to_dict()
    again = reference_outputs(reloaded, open_image(tmp_path / "image.png"))
    for key, value in outputs.items():
        assert torch.equal(value, again[key]) if isinstance(value, torch.Tensor) else value == again[key], key


def test_the_saved_processor_files_import_only_torch_transformers_the_standard_library_and_each_other(tmp_path):
    save_reference_checkpoint(tmp_path)
    shipped = {"processing_eagle.py", "image_processing_eagle.py", "text_processing_eagle.py"}
    assert shipped <= {path.name for path in tmp_path.iterdir()}
    allowed = {"torch", "transformers", "huggingface_hub"} | set(sys.stdlib_module_names)
    allowed |= {"numpy", "PIL"}  # the image processor's, as in test_remote_code
    for name in shipped:
        for line in (tmp_path / name).read_text().splitlines():
            words = line.split()
            if not words or words[0] not in ("import", "from") or line.startswith((" ", "\t")):
                continue
            module = words[1]
            if module.startswith("."):
                assert module[1:] + ".py" in shipped, f"{name}: {line}"
            else:
                assert module.split(".")[0] in allowed, f"{name}: {line}"


def test_the_saved_processor_loads_through_auto_processor_in_a_fresh_process_without_the_package(tmp_path):
    save_reference_checkpoint(tmp_path / "ckpt")
    stdout = run_python(sys.executable, LOADER, tmp_path / "ckpt", tmp_path, with_package=False)
    assert "processor loaded on transformers" in stdout


# The reverse direction (saved under the other version) is covered with logits in test_cross_version.py.
@pytest.mark.parametrize("direction", ["saved_here_loaded_there"])
def test_a_processor_saved_on_one_transformers_version_loads_on_the_other(tmp_path, direction, other_env):
    other = other_env[0]  # the other transformers major's interpreter (other_env.py builds it on first use)
    if direction == "saved_here_loaded_there":
        save_reference_checkpoint(tmp_path / "ckpt")
        loader = other
    else:
        run_python(other, SAVER, tmp_path / "ckpt", tmp_path, with_package=True)
        loader = sys.executable
    stdout = run_python(loader, LOADER, tmp_path / "ckpt", tmp_path, with_package=False)
    assert "processor loaded on transformers" in stdout
