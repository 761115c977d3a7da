"""Bad input by class (issue: "every failure a clear error, nothing half-written trusted, nothing read from outside
its folder"): silent coercions refused, raw exceptions replaced by errors naming the file and line, half-written state
files passed over with a logged reason, image paths kept inside their folder, conversion mismatches explained."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from eagle_hf import EagleConfig, EagleForConditionalGeneration
from eagle_hf.training import recipe_from_dict, run_plan
from eagle_hf.training.data import DataReport, EagleDataCollator, load_records
from eagle_hf.training.stages import DataSpec
from tiny import (image_prompt, save_tiny_init, synthetic_caption_records, tiny_eagle_config, tiny_expert,
                  tiny_llava_config, tiny_processor)

# ----- silent coercions -----


@pytest.mark.parametrize("build, error", [
    (lambda: EagleConfig(vision_experts=[]), r"`vision_experts` must be a non-empty list"),
    (lambda: EagleConfig(vision_experts=[tiny_expert("clip", feature_layer=1.7)]), r"`feature_layer` must be an int"),
    (lambda: EagleConfig(grid_size=2.5), r"`grid_size` must be positive \(an int >= 1\), got 2.5"),
    (lambda: EagleConfig(grid_size=True), r"`grid_size` must be positive .* got True"),
    (lambda: EagleConfig(image_size="336"), r"`image_size` must be positive .* got '336'"),
    (lambda: EagleConfig(image_token_id=3.5, text_config=dict(vocab_size=64)), r"`image_token_id` must be an int"),
    (lambda: EagleConfig(vision_experts=[tiny_expert("clip", feature_layr=2)]),
     r"unknown field `feature_layr` \(did you mean `feature_layer`\?\)"),
    (lambda: EagleConfig(grid_sise=4), r"EagleConfig: unknown field `grid_sise` \(did you mean `grid_size`\?\)"),
    (lambda: EagleConfig.llava_1_5(expert_overrides={"clip": {"num_hidden_layers": 2}}),
     r"`num_hidden_layers` is a field of its backbone config.*backbone_config"),
    (lambda: EagleConfig(multimodal_projector_bias="yes"), r"`multimodal_projector_bias` must be true or false"),
])
def test_config_values_are_never_truncated_coerced_or_ignored(build, error):
    with pytest.raises(ValueError, match=error):
        build()


def test_whole_floats_as_json_writes_them_and_unknown_metadata_still_load():
    config = EagleConfig(vision_experts=[tiny_expert("clip")], grid_size=4.0, image_size=64,
                         text_config=tiny_llava_config().text_config, image_token_id=95, note_from_a_tool="kept")
    assert config.grid_size == 4 and isinstance(config.grid_size, int) and config.note_from_a_tool == "kept"
    assert EagleConfig(**config.to_dict()).to_dict() == config.to_dict()


def test_integer_and_non_finite_pixel_values_are_refused_by_the_model():
    config = tiny_llava_config()
    model = EagleForConditionalGeneration(config).eval()
    input_ids, pixel_values = image_prompt(config)
    with pytest.raises(ValueError, match=r"floating-point pixel_values .* got torch.int64"):
        model(input_ids=input_ids, pixel_values=(pixel_values * 100).long())
    pixel_values[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(input_ids=input_ids, pixel_values=pixel_values)


def test_empty_text_gives_integer_ids_and_ambiguous_array_layouts_are_refused():
    processor = tiny_processor(tiny_llava_config())
    batch = processor(text="", add_special_tokens=False, return_tensors="pt")
    assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].shape == (1, 0)
    assert batch["attention_mask"].dtype == torch.int64
    for image in (torch.rand(3, 40, 3), np.random.rand(4, 40, 3).astype("float32")):
        with pytest.raises(ValueError, match=r"reads as both \(C, H, W\) and \(H, W, C\)"):
            processor(text="<image> hi", images=[image], return_tensors="pt")
    unambiguous = processor(text="<image> hi", images=[torch.rand(3, 40, 30)], return_tensors="pt")
    assert unambiguous["pixel_values"].shape[1] == 3


# ----- raw exceptions -> errors naming the file and line -----


def test_malformed_training_files_name_the_file_and_line(tmp_path):
    good = json.dumps({"image": "a.png", "conversations": []})
    (tmp_path / "d.jsonl").write_text(f"{good}\n{good}\n{{broken\n")
    with pytest.raises(ValueError, match=r"Data set 'sft' \(.*d.jsonl\), line 3: not a JSON record"):
        load_records(DataSpec(json=str(tmp_path / "d.jsonl")), "sft")
    (tmp_path / "d.json").write_text(f"[\n{good},\n{good}\n")
    with pytest.raises(ValueError, match=r"d.json\), line 4: not valid JSON"):
        load_records(DataSpec(json=str(tmp_path / "d.json")), "sft")
    (tmp_path / "u.jsonl").write_bytes(f"{good}\n".encode() + b'{"image": "\xff"}\n')
    with pytest.raises(ValueError, match=r"u.jsonl\), line 2: not UTF-8 text"):
        load_records(DataSpec(json=str(tmp_path / "u.jsonl")), "sft")
    (tmp_path / "o.json").write_text(json.dumps({"records": []}))
    with pytest.raises(ValueError, match="expected a JSON list of records, got a dict"):
        load_records(DataSpec(json=str(tmp_path / "o.json")), "sft")


def plan(root, records, **stage):
    save_tiny_init(root / "init", tiny_llava_config())
    data = dict(records=records, image_folder=str(root / "images"))
    return recipe_from_dict(dict(
        name="t", plan=["llava_pretrain"], model=dict(init=str(root / "init")), per_device_batch_size=2,
        data=dict(pretrain=data), bf16=False, disable_tqdm=True, save_strategy="no",
        stages=dict(llava_pretrain=dict(global_batch_size=2, max_steps=2, **stage)),
    ))


def test_an_empty_data_set_and_a_stage_with_no_usable_sample_are_errors_not_finished_stages(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="data set 'pretrain' holds no samples"):
        run_plan(plan(tmp_path, []), str(tmp_path / "empty"))
    records = [{"image": "missing.png", "conversations": [{"from": "human", "value": "<image>"},
                                                          {"from": "gpt", "value": "x"}]}] * 4
    with pytest.raises(ValueError, match=r"(?s)none of the 4 samples read could be used.*missing_image"):
        run_plan(plan(tmp_path, records), str(tmp_path / "unusable"))
    assert not (tmp_path / "unusable" / "llava_pretrain" / "stage_result.json").exists()


# ----- paths outside their folder -----


def test_image_paths_that_lead_out_of_the_image_folder_are_refused_and_counted(tmp_path):
    records = synthetic_caption_records(tmp_path / "images", 2)
    outside = tmp_path / "secret.png"
    (tmp_path / "images" / records[0]["image"]).rename(outside)
    os.symlink(outside, tmp_path / "images" / "link.png")
    escape = [dict(records[0], image="../secret.png"), dict(records[1], image="link.png"),
              dict(records[1], image=str(outside))]
    config = tiny_llava_config()
    processor = tiny_processor(config)
    collator = EagleDataCollator(escape + [records[1]], _encoder(processor, config), processor.image_processor, 0,
                                 image_folder=str(tmp_path / "images"))
    report = DataReport.from_dict(collator([{"index": i} for i in range(4)])["data_report"])
    assert report.used == 1 and report.skipped == {"image_outside_folder": 3}
    assert "outside its folder" in report.examples["image_outside_folder"][0]


def _encoder(processor, config):
    from eagle_hf.chat_templates import load_chat_template
    from eagle_hf.training.data import ConversationEncoder

    return ConversationEncoder(processor.tokenizer, load_chat_template("plain"), config.image_seq_length)


def test_benchmark_files_with_bad_bytes_ids_or_escaping_images_lose_only_those_entries(tmp_path):
    from eagle_hf.evaluation import TASKS
    from eagle_hf.evaluation.runner import read_predictions
    from test_eval_benchmarks import write_benchmarks

    data_dir = write_benchmarks(tmp_path / "data", ["pope"])
    random = data_dir / "pope" / "coco" / "coco_pope_random.json"
    lines = random.read_bytes().splitlines()
    escaping = json.loads(lines[1])
    escaping["image"] = "../../../secret.jpg"
    random.write_bytes(b"\n".join([lines[0][:-2] + b"\xff\"}", json.dumps(escaping).encode(), *lines[2:]]) + b"\n")
    samples, problems = TASKS["pope"].load(data_dir)
    assert len(samples) == 6 - 2
    text = [str(problem) for problem in problems]
    assert any("coco_pope_random.json" in line and "line 1" in line and "not UTF-8" in line for line in text)
    assert any("line 2" in line and "outside its folder" in line for line in text)
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prediction": "x"}\n{"prediction": "y"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: a predictions record is an object with an `id`"):
        read_predictions(tmp_path / "p.jsonl")


# ----- half-written state -----


def test_a_checkpoint_with_a_truncated_state_is_passed_over_and_a_half_written_result_is_not_a_finished_stage(
        tmp_path, caplog):
    from eagle_hf.training.plan import StageResult, last_complete_checkpoint

    stage = tmp_path / "stage"
    for step in (2, 4):
        folder = stage / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"))
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert last_complete_checkpoint(str(stage)).endswith("checkpoint-4")
    (stage / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4, "log_hist')
    assert last_complete_checkpoint(str(stage)).endswith("checkpoint-2")
    assert "checkpoint-4 cannot be resumed from: trainer_state.json is missing or incomplete" in caplog.text
    (stage / "checkpoint-2" / "model.safetensors").unlink()
    assert last_complete_checkpoint(str(stage)) is None
    (stage / "checkpoint-2" / "global_step2").mkdir()  # DeepSpeed keeps its states there
    assert last_complete_checkpoint(str(stage)).endswith("checkpoint-2")
    (stage / "stage_result.json").write_text('{"name": "x", "output_dir": "')
    assert StageResult.read(str(stage)) is None
    assert "stage_result.json is incomplete or unreadable" in caplog.text


def test_a_staging_folder_left_by_a_killed_conversion_is_removed_by_the_next_one(tmp_path, caplog):
    from eagle_hf.conversion.writer import remove_stale_staging, staged_output

    dead = tmp_path / ".out.partial-999999999-abcd"  # no such process
    live = tmp_path / f".out.partial-{os.getpid()}-efgh"  # this one: a conversion running beside the next
    dead.mkdir(), live.mkdir()
    with staged_output(tmp_path / "out") as staging:
        (staging / "x").write_text("x")
    assert not dead.exists() and live.exists() and (tmp_path / "out" / "x").is_file()
    assert "left by an interrupted run" in caplog.text
    assert remove_stale_staging(tmp_path / "out") == []


# ----- conversion explains mismatches -----


def test_conversion_errors_name_the_file_the_counts_and_the_override_that_fixes_them(tmp_path, capsys):
    from conversion_fixtures import X4, nveagle_overrides, write_nveagle
    from eagle_hf.cli import main
    from eagle_hf.conversion import ConversionError, convert_checkpoint

    write_nveagle(tmp_path / "source", X4)
    overrides = nveagle_overrides(X4)
    deeper = json.loads(json.dumps(overrides["expert_overrides"]))
    deeper["clip"]["backbone_config"]["num_hidden_layers"] = 5
    with pytest.raises(ConversionError) as raised:
        convert_checkpoint(str(tmp_path / "source"), str(tmp_path / "a"), "nveagle", expert_overrides=deeper)
    message = str(raised.value)
    assert len(message) < 1500 and "model tensor(s) the source does not provide, e.g." in message
    assert "experts.0.backbone.encoder.layers has 2 in the source, 5 in the config" in message
    assert "--expert-overrides" in message
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for item in (tmp_path / "source").iterdir():
        (truncated / item.name).write_bytes(item.read_bytes())
    victim = sorted(truncated.glob("*.safetensors"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(ConversionError, match=rf"{victim.name} is not a readable safetensors file"):
        convert_checkpoint(str(truncated), str(tmp_path / "b"), "nveagle", **overrides)
    status = main(["convert", "--from", "nveagle", str(truncated), str(tmp_path / "c"),
                   "--expert-overrides", json.dumps(overrides["expert_overrides"])])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err and victim.name in err and err.count("\n") == 1
    assert not list(tmp_path.glob(".c.partial-*")) and not (tmp_path / "c").exists()


def test_an_eva02_schedule_that_disagrees_with_the_sources_rope_tables_is_refused(tmp_path):
    from conversion_fixtures import (EXPERT_STATES, SOURCE_VOCAB, llm_state, nveagle_overrides, projector_state,
                                     write_nveagle)
    from eagle_hf.conversion import ConversionError, convert_checkpoint
    from tiny import TINY_BACKBONES, tiny_text_config

    # A map larger than a window (64 px at patch 8: 8x8, windows of 2x2), so windowed and global tables differ.
    eva_backbone = dict(TINY_BACKBONES["eva02"], patch_size=8, window_size=2, global_attn_indexes=[1])
    config = tiny_eagle_config(("clip", "eva02"), text_config=tiny_text_config(vocab_size=SOURCE_VOCAB),
                               image_token_id=0, vision_experts=[tiny_expert("clip"),
                                                                 tiny_expert("eva02", backbone_config=eva_backbone)])
    state = {}
    for index, expert in enumerate(config.vision_experts):
        prefix = f"model.vision_tower.vision_towers.{index}.vision_tower."
        state.update({prefix + k: v for k, v in EXPERT_STATES[expert.kind](expert.backbone_config, index).items()})
    state.update(projector_state(config.mm_hidden_size, config.text_config.hidden_size, 100))
    state.update(llm_state(200, SOURCE_VOCAB))
    write_nveagle(tmp_path / "source", ("clip", "eva02"), state=state)
    overrides = nveagle_overrides(("clip", "eva02"))
    overrides["expert_overrides"]["eva02"]["backbone_config"] = eva_backbone
    converted = convert_checkpoint(str(tmp_path / "source"), str(tmp_path / "ok"), "nveagle", **overrides)
    assert converted.config.vision_experts[1].backbone_config.global_attn_indexes == [1]
    overrides["expert_overrides"]["eva02"]["backbone_config"] = dict(eva_backbone, global_attn_indexes=[0])
    with pytest.raises(ConversionError, match=r"record EVA-02 attention \{'window_size': 2, 'global_attn_indexes': "
                                              r"\[1\]\}, but the config of expert 1 \(eva02\) says .*\[0\]"):
        convert_checkpoint(str(tmp_path / "source"), str(tmp_path / "bad"), "nveagle", **overrides)
    assert not (tmp_path / "bad").exists()
