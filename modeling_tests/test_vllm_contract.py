"""What vLLM's Transformers modeling backend reads from a multimodal model and its processor (vLLM itself needs a GPU
build this machine cannot install: `benchmarks/gpu/vllm_check.sh` runs the real thing on a lent GPU):

* the processor's `_get_num_multimodal_tokens(image_sizes)` -> `MultiModalData` with `num_image_tokens` (how many
  placeholder tokens each image becomes) and `num_image_patches`;
* `return_mm_token_type_ids=True` -> `mm_token_type_ids`, 1 exactly where image tokens are;
* `processor.image_token` (its dummy prompts) and `model.get_encoder(modality="image")` naming the vision encoder class.
"""

import pytest
import torch
from PIL import Image

from eagle_hf import EagleForConditionalGeneration
from tiny import tiny_eagle_config, tiny_llava_config, tiny_processor


@pytest.mark.parametrize("make_config", [tiny_llava_config, tiny_eagle_config])
def test_the_processor_tells_how_many_tokens_each_image_takes_whatever_its_size(make_config):
    config = make_config()
    processor = tiny_processor(config)
    sizes = [(20, 50), (64, 64), (90, 31)]
    data = processor._get_num_multimodal_tokens(image_sizes=sizes)
    assert data.num_image_tokens == [config.image_seq_length] * 3 and data.num_image_patches == [1, 1, 1]
    for (height, width), expected in zip(sizes, data.num_image_tokens):
        batch = processor(text=f"say {processor.image_token} now", images=[Image.new("RGB", (width, height))])
        assert batch["input_ids"][0].count(processor.image_token_id) == expected
    assert processor._get_num_multimodal_tokens().num_image_tokens is None


def test_mm_token_type_ids_mark_exactly_the_image_positions_in_a_padded_batch():
    config = tiny_llava_config()
    processor = tiny_processor(config)
    images = [Image.new("RGB", (40, 40), "red") for _ in range(3)]
    batch = processor(text=[f"a {processor.image_token} b", f"{processor.image_token} c {processor.image_token} d e"],
                      images=images, padding=True, padding_side="left", return_mm_token_type_ids=True,
                      return_tensors="pt")
    assert batch["mm_token_type_ids"].dtype == torch.int64
    assert torch.equal(batch["mm_token_type_ids"], (batch["input_ids"] == config.image_token_id).long())
    assert batch["mm_token_type_ids"].sum() == 3 * config.image_seq_length
    assert "mm_token_type_ids" not in processor(text="plain text", return_tensors="pt")


def test_the_model_names_its_vision_encoder_for_the_backend():
    model = EagleForConditionalGeneration(tiny_eagle_config(kinds=("clip", "convnext")))
    encoder = model.get_encoder(modality="image")
    assert encoder is model.model.vision_tower and type(encoder) is not type(model)
    assert model.get_encoder() is not encoder  # the text side stays the default
