"""EagleForConditionalGeneration on tiny configs: experts, fusion, loss, generate, save/load, attention kernels."""

import pytest
import torch

from eagle_hf.configuration_eagle import EagleConfig
from eagle_hf.modeling_eagle import EagleForConditionalGeneration
from eagle_hf.vision_experts import EXPERT_KINDS, EagleVisionExpert
from tiny import IMAGE_TOKEN_ID, PAD_TOKEN_ID, image_prompt, tiny_eagle_config, tiny_expert

ALL_KINDS = sorted(EXPERT_KINDS)


def build(config, seed=0):
    torch.manual_seed(seed)
    return EagleForConditionalGeneration(config).eval()


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("image_size", [64, 96])
def test_each_expert_alone_gives_the_map_and_channels_its_config_announces(kind, image_size):
    expert_config = tiny_eagle_config((kind,), image_size=image_size).vision_experts[0]
    expert_config = tiny_eagle_config((kind,), vision_experts=[tiny_expert(kind, image_size=image_size)],
                                      image_size=image_size).vision_experts[0]
    native = expert_config.feature_map_size
    grid = native // (expert_config.unshuffle_factor if expert_config.grid_resample == "pixel_unshuffle" else 1)
    expert = EagleVisionExpert(expert_config, [0.5] * 3, [0.5] * 3, grid_size=grid).eval()
    with torch.no_grad():
        out = expert(torch.randn(2, 3, image_size, image_size))
    assert out.shape == (2, expert_config.hidden_size, grid, grid)


@pytest.mark.parametrize("kinds", [("clip", "convnext", "eva02", "pix2struct"), ("clip", "convnext", "sam", "eva02",
                                                                                 "pix2struct")], ids=["x4", "x5"])
def test_tiny_x4_and_x5_fuse_every_expert_on_the_grid_and_give_logits(kinds):
    config = tiny_eagle_config(kinds)
    model = build(config)
    input_ids, pixel_values = image_prompt(config)
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values)
        fused = model.model.vision_tower(pixel_values)
    assert fused.shape == (1, 16, config.mm_hidden_size)
    assert out.image_hidden_states.shape == (1, 16, 32)
    assert out.logits.shape == (1, input_ids.shape[1], 96)
    widths = [e.hidden_size for e in config.vision_experts]
    assert config.mm_hidden_size == sum(widths)


def test_channel_order_is_expert_order():
    config = tiny_eagle_config(("clip", "eva02"))
    model = build(config)
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fused = model.model.vision_tower(pixel_values)
        clip_grid = model.model.vision_tower.experts[0](pixel_values)
    torch.testing.assert_close(fused[..., :32], clip_grid.flatten(2).transpose(1, 2))


def test_image_features_replace_exactly_the_image_token_positions():
    config = tiny_eagle_config(("clip",))
    model = build(config)
    input_ids, pixel_values = image_prompt(config)
    with torch.no_grad():
        out = model.model(input_ids=input_ids, pixel_values=pixel_values, output_hidden_states=True)
        features = model.get_image_features(pixel_values).pooler_output
    embeds = out.hidden_states[0]
    is_image = input_ids[0] == IMAGE_TOKEN_ID
    torch.testing.assert_close(embeds[0, is_image], features[0])
    text_embeds = model.get_input_embeddings()(input_ids)[0, ~is_image]
    torch.testing.assert_close(embeds[0, ~is_image], text_embeds)


def test_loss_is_the_shifted_cross_entropy_over_unmasked_labels():
    config = tiny_eagle_config(("clip",))
    model = build(config)
    input_ids, pixel_values = image_prompt(config)
    labels = input_ids.clone()
    labels[labels == IMAGE_TOKEN_ID] = -100
    out = model(input_ids=input_ids, pixel_values=pixel_values, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[0, :-1], labels[0, 1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_gradients_reach_every_parameter_of_a_tiny_x5():
    config = tiny_eagle_config()
    model = build(config).train()
    input_ids, pixel_values = image_prompt(config)
    model(input_ids=input_ids, pixel_values=pixel_values, labels=input_ids).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_unused_backbone_layers_are_pruned_at_construction():
    config = tiny_eagle_config(("clip", "dinov2"), vision_experts=[
        tiny_expert("clip", feature_layer=-2, prefix_tokens="drop"), tiny_expert("dinov2", feature_layer=1)])
    model = build(config)
    clip, dinov2 = (expert.backbone for expert in model.model.vision_tower.experts)
    assert len(clip.encoder.layers) == 1 and len(dinov2.encoder.layer) == 1
    names = [name for name, _ in model.named_parameters()]
    assert not any("post_layernorm" in name or "mask_token" in name for name in names)


def test_save_and_load_give_identical_logits(tmp_path):
    config = tiny_eagle_config()
    model = build(config)
    input_ids, pixel_values = image_prompt(config)
    model.save_pretrained(tmp_path)
    loaded = EagleForConditionalGeneration.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected = model(input_ids=input_ids, pixel_values=pixel_values).logits
        actual = loaded(input_ids=input_ids, pixel_values=pixel_values).logits
    assert torch.equal(expected, actual)


def test_tied_embeddings_stay_tied_after_save_and_load(tmp_path):
    config = tiny_eagle_config(("clip",), tie_word_embeddings=True)
    model = build(config)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    model.save_pretrained(tmp_path)
    loaded = EagleForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_eager_and_sdpa_agree(tmp_path):
    config = tiny_eagle_config(("clip", "siglip", "dinov2", "sam", "eva02", "pix2struct"))
    build(config).save_pretrained(tmp_path)
    input_ids, pixel_values = image_prompt(config)
    logits = {}
    for kernel in ("eager", "sdpa"):
        model = EagleForConditionalGeneration.from_pretrained(tmp_path, attn_implementation=kernel).eval()
        assert model.config.text_config._attn_implementation == kernel
        kernels = {e.backbone_config._attn_implementation for e in model.config.vision_experts}
        assert kernel in kernels
        with torch.no_grad():
            logits[kernel] = model(input_ids=input_ids, pixel_values=pixel_values).logits
    torch.testing.assert_close(logits["eager"], logits["sdpa"], atol=1e-5, rtol=1e-5)


def test_set_attn_implementation_reaches_the_experts():
    model = build(tiny_eagle_config(("clip", "eva02")))
    model.set_attn_implementation("eager")
    assert {e.backbone_config._attn_implementation for e in model.config.vision_experts} == {"eager"}


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_eagle_config()
    input_ids, pixel_values = image_prompt(config)
    grads = []
    for checkpointing in (False, True):
        model = build(config).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert all(expert.gradient_checkpointing for expert in model.model.vision_tower.experts)
        model(input_ids=input_ids, pixel_values=pixel_values, labels=input_ids).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5, msg=name)


def test_several_images_in_one_prompt_fill_their_own_spans():
    config = tiny_eagle_config(("clip",))
    model = build(config)
    input_ids, pixel_values = image_prompt(config, num_images=2)
    with torch.no_grad():
        both = model(input_ids=input_ids, pixel_values=pixel_values).logits
        swapped = model(input_ids=input_ids, pixel_values=pixel_values.flip(0)).logits
    assert both.shape[1] == input_ids.shape[1]
    assert not torch.allclose(both, swapped)


def test_text_only_prompts_run_without_images():
    model = build(tiny_eagle_config(("clip",)))
    out = model.generate(input_ids=torch.tensor([[1, 5, 6, 7]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 8)


def test_generate_with_the_kv_cache_equals_generate_without_it():
    config = tiny_eagle_config(("clip", "sam"))
    model = build(config)
    input_ids, pixel_values = image_prompt(config)
    kwargs = dict(input_ids=input_ids, pixel_values=pixel_values, max_new_tokens=6, do_sample=False)
    cached = model.generate(**kwargs, use_cache=True)
    uncached = model.generate(**kwargs, use_cache=False)
    assert torch.equal(cached, uncached)


def test_batched_generation_with_left_padding_equals_one_by_one():
    config = tiny_eagle_config(("clip", "convnext"))
    model = build(config)
    short_ids, short_pixels = image_prompt(config, text_after=(7,))
    long_ids, long_pixels = image_prompt(config, text_after=(7, 8, 9, 10, 11))
    pad = long_ids.shape[1] - short_ids.shape[1]
    batch_ids = torch.cat([torch.cat([torch.full((1, pad), PAD_TOKEN_ID), short_ids], 1), long_ids])
    attention_mask = (torch.arange(batch_ids.shape[1]) >= torch.tensor([[pad], [0]])).long()
    pixel_values = torch.cat([short_pixels, long_pixels])
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=PAD_TOKEN_ID)
    batched = model.generate(input_ids=batch_ids, attention_mask=attention_mask, pixel_values=pixel_values, **kwargs)
    one = model.generate(input_ids=short_ids, pixel_values=short_pixels, **kwargs)
    two = model.generate(input_ids=long_ids, pixel_values=long_pixels, **kwargs)
    assert torch.equal(batched[0, -6:], one[0, -6:])
    assert torch.equal(batched[1, -6:], two[0, -6:])


def test_wrong_pixel_size_or_channels_are_refused_with_both_shapes():
    config = tiny_eagle_config(("clip",))
    model = build(config)
    input_ids, _ = image_prompt(config)
    for bad in (torch.randn(1, 3, 32, 32), torch.randn(1, 4, 64, 64)):
        with pytest.raises(ValueError, match=r"Expected pixel_values of shape \(num_images, 3, 64, 64\), got"):
            model(input_ids=input_ids, pixel_values=bad)


def test_more_image_tokens_than_images_is_refused_with_both_counts():
    config = tiny_eagle_config(("clip",))
    model = build(config)
    input_ids, pixel_values = image_prompt(config, num_images=2)
    with pytest.raises(ValueError, match=r"holds 32 image tokens, but 1 image\(s\) x 16 tokens = 16"):
        model(input_ids=input_ids, pixel_values=pixel_values[:1])
    with pytest.raises(ValueError, match=r"holds 32 image tokens but no pixel_values"):
        model(input_ids=input_ids)


def test_full_size_x5_builds_from_config_alone_with_the_expected_parameter_counts():
    config = EagleConfig.eagle_x5()
    with torch.device("meta"):
        model = EagleForConditionalGeneration(config)
    counts = {e.expert_config.kind: sum(p.numel() for p in e.parameters()) for e in model.model.vision_tower.experts}
    # Public sizes: CLIP-L ~0.30B, ConvNeXt-XXL ~0.85B, SAM-L encoder ~0.31B, EVA-02-L ~0.30B, Pix2Struct-L enc ~0.6B.
    millions = {kind: round(count / 1e6) for kind, count in counts.items()}
    assert 300 <= millions["clip"] <= 305
    assert 800 <= millions["convnext"] <= 860
    assert 300 <= millions["sam"] <= 310
    assert 290 <= millions["eva02"] <= 310
    assert 500 <= millions["pix2struct"] <= 700
    assert model.model.multi_modal_projector.linear_1.weight.shape == (4096, 7680)


def test_a_prompt_longer_than_model_max_length_is_refused_with_both_lengths():
    config = tiny_eagle_config(("clip",), model_max_length=20)
    model = build(config)
    input_ids, pixel_values = image_prompt(config)  # 2 + 16 image tokens + 3 = 21 tokens
    with pytest.raises(ValueError, match="21 tokens long .* model_max_length 20"):
        model(input_ids=input_ids, pixel_values=pixel_values)
    model(input_ids=input_ids[:, :-1], pixel_values=pixel_values)  # 20 tokens: accepted
