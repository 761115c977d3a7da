"""Frozen-expert feature cache: the same training as running the experts, filled once, keyed by image content and by
the tower (expert configs and weights, preprocessing)."""

import os
import shutil

import torch

from eagle_hf import EagleForConditionalGeneration
from eagle_hf.training import FeatureCache, recipe_from_dict, run_plan, tower_fingerprint
from test_training_stages import tensors
from tiny import image_prompt, save_tiny_init, synthetic_caption_records, tiny_eagle_config, tiny_processor

KINDS = ("clip", "sam")


def test_a_model_given_cached_features_computes_what_it_computes_from_pixels():
    config = tiny_eagle_config(KINDS)
    torch.manual_seed(0)
    model = EagleForConditionalGeneration(config).eval()
    input_ids, pixel_values = image_prompt(config, num_images=2)
    with torch.no_grad():
        expected = model(input_ids=input_ids, pixel_values=pixel_values).logits
        features = model.model.vision_tower(pixel_values)  # (2, 16, 32 + 64)
        got = model(input_ids=input_ids, mm_encoder_outputs={"image": {"last_hidden_state": features}}).logits
    torch.testing.assert_close(got, expected)


def test_a_frozen_expert_stage_trains_the_same_with_and_without_the_cache_and_fills_it_once(tmp_path):
    records = synthetic_caption_records(tmp_path / "images", 6)
    records[5]["image"] = "missing.png"
    save_tiny_init(tmp_path / "init", tiny_eagle_config(KINDS))
    data = dict(records=records, image_folder=str(tmp_path / "images"))

    def run(name, feature_cache):
        recipe = recipe_from_dict(dict(
            name="tiny", plan=["eagle_pretrain"], model=dict(init=str(tmp_path / "init")), per_device_batch_size=2,
            data=dict(pretrain=data), feature_cache_dir=str(tmp_path / "cache"),
            stages=dict(eagle_pretrain=dict(preset="llava_pretrain", global_batch_size=2, num_train_epochs=2,
                                            feature_cache=feature_cache)),
            trainer=dict(bf16=False, disable_tqdm=True, save_strategy="no"),
        ))
        return run_plan(recipe, str(tmp_path / name))[0]

    plain, cached = run("plain", False), run("cached", True)
    assert [step for step, _ in cached.losses] == [step for step, _ in plain.losses] == list(range(1, 7))
    torch.testing.assert_close([loss for _, loss in cached.losses], [loss for _, loss in plain.losses])
    expected, got = tensors(plain.output_dir), tensors(cached.output_dir)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    assert cached.data_report["skipped"] == plain.data_report["skipped"] == {"missing_image": 2}  # once per epoch
    (cache_folder,) = os.listdir(tmp_path / "cache")
    entries = [f for _, _, files in os.walk(tmp_path / "cache" / cache_folder) for f in files]
    unique = {(tmp_path / "images" / r["image"]).read_bytes() for r in records[:5]}
    assert len(entries) == len(unique)  # one per distinct readable image, computed once for both epochs
    shutil.rmtree(tmp_path / "cached")
    def modification_times():
        return {f: os.path.getmtime(os.path.join(root, f)) for root, _, files in os.walk(tmp_path / "cache")
                for f in files}

    before = modification_times()
    run("cached", True)
    assert modification_times() == before  # a second run computes nothing


def test_cache_entries_are_keyed_by_image_content_and_by_the_tower(tmp_path):
    records = synthetic_caption_records(tmp_path / "images", 2)
    shutil.copy(tmp_path / "images" / records[0]["image"], tmp_path / "images" / "copy.png")
    records.append({**records[0], "image": "copy.png"})
    config = tiny_eagle_config(KINDS)
    processor = tiny_processor(config)
    torch.manual_seed(0)
    model = EagleForConditionalGeneration(config)
    fingerprint = tower_fingerprint(model, processor.image_processor)
    cache = FeatureCache(str(tmp_path / "cache"), fingerprint)
    assert cache.fill(model, records, processor.image_processor, str(tmp_path / "images")) == 2  # the copy is a hit
    assert cache.fill(model, records, processor.image_processor, str(tmp_path / "images")) == 0
    features = cache.load_reference("copy.png", str(tmp_path / "images"))
    assert features.shape == (config.image_seq_length, config.mm_hidden_size)
    with torch.no_grad():
        model.model.vision_tower.experts[1].backbone.neck.conv1.weight.mul_(2)
    assert tower_fingerprint(model, processor.image_processor) != fingerprint
    model.model.vision_tower.experts[1].backbone.neck.conv1.weight.data.div_(2)
    assert tower_fingerprint(model, processor.image_processor) == fingerprint
    processor.image_processor.aspect_ratio_mode = "square"
    assert tower_fingerprint(model, processor.image_processor) != fingerprint
