"""LLaVA-1.5 checkpoints convert: transformers' LLaVA (llava-hf, any of its key layouts) gives transformers' own logits
and greedy generations, and LLaVA's original layout gives the very weights its llava-hf conversion gives.

Sources (from `conversion_fixtures`, one set of seeded tiny weights): the original layout with the CLIP inside the
checkpoint (self-trained models) or in a separate `CLIPModel` folder named by `mm_vision_tower` (the released models,
`.bin` shards); and transformers' LLaVA made from the same weights as transformers' conversion script makes it
(`<image>` = 95, rows padded to 128 at the mean row), saved by the running transformers or with pre-4.52 keys.
"""

import json

import pytest
import torch
from transformers import AutoTokenizer, LlavaForConditionalGeneration

from conversion_fixtures import LEGACY_RENAMES, source_tokenizer, write_llava, write_llava_hf
from eagle_hf.conversion import ConversionError, convert_checkpoint
from eagle_hf.conversion.rename import apply_table, llava_hf_table, Drop
from eagle_hf import EagleForConditionalGeneration, EagleProcessor  # the package path registers the Auto classes
from llava_reference import rename_llava_key
from tiny import tiny_llava_config, tiny_text_config

SOURCE_VOCAB = 95
MAX_NEW_TOKENS = 8
SOURCES = ("hf-current", "hf-legacy", "original-inside", "original-separate")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{name: (source folder, conversion report, converted model)} plus the original state dict."""
    root = tmp_path_factory.mktemp("llava")
    state = write_llava(root / "original-inside", tower="inside")
    assert write_llava(root / "original-separate", tower="separate").keys() == state.keys()
    for layout in ("current", "legacy"):
        write_llava_hf(root / f"hf-{layout}", state, layout=layout)
    converted = {}
    for name in SOURCES:
        family = "llava-hf" if name.startswith("hf") else "llava"
        report = convert_checkpoint(str(root / name), str(root / f"{name}-out"), family)
        model = EagleForConditionalGeneration.from_pretrained(root / f"{name}-out").eval()
        converted[name] = (root / name, report, model)
    return converted, state


def image_prompt(config, seed=0):
    torch.manual_seed(seed)
    ids = [1, 5, 6] + [config.image_token_id] * config.image_seq_length + [7, 8, 9]
    return torch.tensor([ids]), torch.randn(1, 3, config.image_size, config.image_size)


def run(model, input_ids, pixel_values):
    with torch.no_grad():
        logits = model(input_ids=input_ids, pixel_values=pixel_values).logits
        tokens = model.generate(input_ids=input_ids, pixel_values=pixel_values, max_new_tokens=MAX_NEW_TOKENS,
                                do_sample=False)
    return logits, tokens


@pytest.mark.parametrize("name", ["hf-current", "hf-legacy"])
def test_llava_hf_converts_to_transformers_llava_logits_and_greedy_generations(checkpoints, name):
    converted, _ = checkpoints
    folder, _, ours = converted[name]
    llava = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    input_ids, pixel_values = image_prompt(ours.config)
    assert ours.config.image_token_id == llava.config.image_token_id == SOURCE_VOCAB
    reference_logits, reference_tokens = run(llava, input_ids, pixel_values)
    logits, tokens = run(ours, input_ids, pixel_values)
    torch.testing.assert_close(logits, reference_logits, atol=1e-6, rtol=0)  # observed: exactly equal
    assert torch.equal(tokens, reference_tokens)
    assert tokens.shape[1] == input_ids.shape[1] + MAX_NEW_TOKENS  # greedy ran to the end: no early EOS


@pytest.mark.parametrize("name", ["original-inside", "original-separate", "hf-legacy"])
def test_every_source_converts_to_the_same_weights_as_transformers_llava_saved_by_this_version(checkpoints, name):
    converted, _ = checkpoints
    reference = converted["hf-current"][2].state_dict()
    ours = converted[name][2].state_dict()
    assert ours.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(ours[key], value), key


def test_original_llava_gives_llava_hf_logits_and_generations(checkpoints):
    converted, _ = checkpoints
    llava = LlavaForConditionalGeneration.from_pretrained(converted["hf-current"][0]).eval()
    for name in ("original-inside", "original-separate"):
        ours = converted[name][2]
        input_ids, pixel_values = image_prompt(ours.config, seed=1)
        logits, tokens = run(ours, input_ids, pixel_values)
        reference_logits, reference_tokens = run(llava, input_ids, pixel_values)
        torch.testing.assert_close(logits, reference_logits, atol=1e-6, rtol=0)
        assert torch.equal(tokens, reference_tokens), name


def test_what_each_source_leaves_out_is_the_pruned_clip_layer_the_post_layernorm_and_the_clip_text_half(checkpoints):
    converted, state = checkpoints
    layer = "a layer after the selected feature layer"
    post = "the features are read before CLIP's post-layernorm"
    for name in ("hf-current", "hf-legacy", "original-inside"):
        assert converted[name][1].dropped == {layer: 16, post: 2}, name
    separate = converted["original-separate"][1].dropped
    assert separate[layer] == 16 and separate[post] == 2
    assert separate["a non-persistent buffer rebuilt from the config"] == 1  # the 2021 file's position_ids
    assert {"CLIP's text encoder", "CLIP's contrastive projections", "CLIP's contrastive temperature"} <= set(separate)


def test_the_original_gets_image_as_a_new_token_and_llava_hf_keeps_its_own(checkpoints, tmp_path):
    converted, _ = checkpoints
    original, hf = converted["original-separate"][1].vocabulary, converted["hf-current"][1].vocabulary
    assert (original.source_rows, original.rows, original.image_token_id, original.added_tokens) == (
        95, 128, 95, ["<image>"])
    assert (hf.source_rows, hf.rows, hf.image_token_id, hf.added_tokens, hf.suppressed) == (128, 128, 95, [], [])
    for name in ("original-separate", "hf-current"):
        tokenizer = AutoTokenizer.from_pretrained(converted[name][0].parent / f"{name}-out")
        assert tokenizer.convert_tokens_to_ids("<image>") == 95
        text = "USER: What is in the image? ASSISTANT:"
        assert tokenizer(text).input_ids == source_tokenizer()(text).input_ids


def test_the_image_processor_pads_to_square_at_the_clip_resolution(checkpoints):
    converted, _ = checkpoints
    for name in ("original-inside", "hf-legacy"):
        processor = EagleProcessor.from_pretrained(converted[name][0].parent / f"{name}-out")
        image_processor = processor.image_processor
        assert (image_processor.image_size, image_processor.aspect_ratio_mode) == (32, "pad")
        assert processor.num_image_tokens == 16 and processor.image_token_id == 95


def test_the_rename_table_agrees_with_the_llava_reference_on_all_three_key_layouts():
    config = tiny_llava_config()
    model = LlavaForConditionalGeneration(__import__("llava_reference").llava_reference_config(config))
    keys = set(model.state_dict())
    layouts = set()
    for key in keys:
        flat = key.replace("vision_tower.vision_model.", "vision_tower.")
        layouts |= {flat, flat.replace("model.vision_tower.", "model.vision_tower.vision_model.")}
        for old, new in LEGACY_RENAMES:
            if flat.startswith(old):
                layouts.add(new + flat[len(old):])
    table = llava_hf_table(config)
    for key in sorted(layouts):
        ours = apply_table(table, key)
        assert ours is not None, key
        if not isinstance(ours, Drop):
            assert ours == rename_llava_key(key), key


def test_a_missing_vision_tower_is_refused_by_name(tmp_path):
    write_llava(tmp_path / "source", tower="separate")
    tower = tmp_path / "source-clip"
    for path in tower.iterdir():
        path.unlink()
    tower.rmdir()
    with pytest.raises(ConversionError, match="source-clip"):
        convert_checkpoint(str(tmp_path / "source"), str(tmp_path / "out"), "llava")
    assert not (tmp_path / "out").exists()


def test_an_unknown_projector_is_refused_by_name(tmp_path):
    write_llava(tmp_path / "source")
    config = json.loads((tmp_path / "source" / "config.json").read_text())
    config["mm_projector_type"] = "mlp3x_gelu"
    (tmp_path / "source" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="mlp3x_gelu"):
        convert_checkpoint(str(tmp_path / "source"), str(tmp_path / "out"), "llava")
    assert not (tmp_path / "out").exists()


def test_a_llava_hf_folder_given_as_llava_is_refused_with_the_right_family(tmp_path, checkpoints):
    converted, _ = checkpoints
    with pytest.raises(ConversionError, match="model_type 'llava'"):
        convert_checkpoint(str(converted["original-inside"][0]), str(tmp_path / "out"), "llava-hf")
    assert tiny_text_config().vocab_size == 96  # the tiny factory's vocabulary, for orientation: ours is 95 + <image>
