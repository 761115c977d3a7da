"""`sft.py` as TRL users drive it: `--config` recipes and every `SFTConfig` flag (TrlParser), values layered from preset
to flag with mappings merged, evaluation during training, mistakes named with what is allowed; the documented CPU
smoke run through `accelerate launch --cpu`; the package's model cards on training outputs and in the built wheel."""

import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from eagle_hf.training import make_training_args, recipe_from_dict, run_plan
from eagle_hf.training.arguments import parse_sft_args, recipe_from_args
from eagle_hf.training.plan import check_plan_inputs
from test_training_plan import REPO, RECIPES, subprocess_env
from tiny import save_tiny_init, synthetic_caption_records, tiny_llava_config

LLAVA_RECIPE = os.path.join(RECIPES, "llava_1_5.yaml")


def parse(*argv):
    values, plan_args, output_dir = parse_sft_args(list(argv))
    return recipe_from_args(values, plan_args), plan_args, output_dir


def test_recipe_values_layer_from_preset_to_flag_and_mappings_merge_instead_of_replacing(tmp_path):
    recipe, _, output_dir = parse("--config", LLAVA_RECIPE, "--output_dir", "runs/x")
    pretrain, finetune = recipe.stage("llava_pretrain"), recipe.stage("llava_finetune")
    assert output_dir == "runs/x"
    assert (pretrain.learning_rate, finetune.learning_rate) == (1e-3, 2e-5)  # the presets
    assert (recipe.per_device_batch_size, pretrain.per_device_batch_size) == (16, 32)  # recipe-wide, the stage's own
    assert recipe.trainer["tf32"] is True and pretrain.trainer == {"save_steps": 24000}

    recipe, _, _ = parse("--config", LLAVA_RECIPE, "--output_dir", "o",
                         "--set", "stages.llava_finetune.learning_rate=3e-5", "lora.r=8",
                         "--set", "save_strategy=no", "--save_steps", "7", "--max_steps", "5")
    assert recipe.stage("llava_finetune").learning_rate == 3e-5 and recipe.stage("llava_pretrain").learning_rate == 1e-3
    assert recipe.lora == {"r": 8, "lora_alpha": 256, "lora_dropout": 0.05, "learning_rate": 2e-4}
    assert recipe.trainer["save_strategy"] == "no"  # the string, not YAML 1.1's False
    for name in recipe.plan:  # a flag is every stage's, over the stage's own value
        assert recipe.stage(name).trainer["save_steps"] == 7 and recipe.stage(name).max_steps == 5

    recipe, _, _ = parse("--config", LLAVA_RECIPE, "--output_dir", "o", "--learning_rate", "1e-4",
                         "--per_device_train_batch_size", "2", "--lora")
    assert all(recipe.stage(name).learning_rate == 1e-4 for name in recipe.plan)
    assert recipe.per_device_batch_size == 2 and recipe.stage("llava_pretrain").per_device_batch_size == 2
    assert recipe.stage("llava_finetune").lora and not recipe.stage("llava_pretrain").lora  # only where the LLM trains

    # A top-level SFTConfig field is every stage's default, below the stage's own value; the old `trainer:` spelling
    # and `--recipe` still work.
    own = dict(name="t", plan=["llava_pretrain", "llava_finetune"], data=dict(pretrain=dict(json="a.json"),
                                                                              sft=dict(json="a.json")),
               learning_rate=5e-4, stages=dict(llava_finetune=dict(learning_rate=1e-5, eval_strategy="no")),
               trainer=dict(logging_steps=3))
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(own))
    recipe, _, _ = parse("--recipe", str(tmp_path / "own.yaml"), "--output_dir", "o")
    assert (recipe.stage("llava_pretrain").learning_rate, recipe.stage("llava_finetune").learning_rate) == (5e-4, 1e-5)
    assert recipe.trainer == {"logging_steps": 3} and recipe.stage("llava_finetune").trainer == {"eval_strategy": "no"}


def test_a_stage_gets_the_sft_config_its_layers_say_and_gpu_only_settings_are_switched_off_on_cpu(caplog):
    recipe, _, _ = parse("--config", LLAVA_RECIPE, "--output_dir", "o", "--save_steps", "7",
                         "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "3",
                         "--set", "trainer.gradient_checkpointing=false")
    args = make_training_args(recipe, recipe.stage("llava_finetune"), "o/llava_finetune")
    assert (args.learning_rate, args.save_steps, args.per_device_train_batch_size) == (2e-5, 7, 2)
    assert args.gradient_accumulation_steps == 3 and args.seed == 42
    if not torch.cuda.is_available():
        assert not args.tf32 and args.use_cpu
        assert "`tf32: true` needs a CUDA GPU" in caplog.text
    recipe, _, _ = parse("--config", LLAVA_RECIPE, "--output_dir", "o", "--cpu")
    args = make_training_args(recipe, recipe.stage("llava_pretrain"), "o/llava_pretrain")
    assert (args.bf16, args.fp16, args.tf32, args.use_cpu) == (False, False, None, True)
    assert recipe.model["dtype"] == "float32"


@pytest.mark.parametrize("argv, error", [
    (["--learning_rat", "1e-4"], r"Unknown argument\(s\): --learning_rat \(did you mean --learning_rate\?\)"),
    (["--set", "stages.llava_finetun.learning_rate=1"], r"not in the plan .* \(did you mean `llava_finetune`\?\)"),
    (["--set", "stages.llava_finetune.learning_rat=1"], r"stages.llava_finetune .*unknown key\(s\) \['learning_rat'\]"),
    (["--set", "lora.rr=3"], r"recipe `lora`: unknown key\(s\) \['rr'\] \(did you mean `r`\?\)"),
    (["--set", "model.int=x"], r"recipe `model`: unknown key\(s\) \['int'\] \(did you mean `init`\?\)"),
    (["--set", "data.sft.jsn=x"], r"data set 'sft': unknown key\(s\) \['jsn'\] \(did you mean `json`\?\)"),
    (["--eval_data", "nope"], r"evaluates on data set 'nope', which `data` does not define \(defined: \['pretrain'"),
    (["--eval_fraction", "1.5"], r"`eval_fraction` must be a number between 0 and 1"),
    (["--set", "output_dir=x"], None),  # allowed: the recipe may hold its output_dir
])
def test_flags_and_recipe_keys_that_name_nothing_are_refused_naming_them_and_what_is_allowed(argv, error):
    if error is None:
        assert parse("--config", LLAVA_RECIPE, *argv)[2] == "x"
        return
    with pytest.raises(ValueError, match=error):
        parse("--config", LLAVA_RECIPE, "--output_dir", "o", *argv)


def test_recipe_files_with_unknown_keys_missing_outputs_or_missing_data_are_refused_before_any_model_is_built(
        tmp_path):
    (tmp_path / "r.yaml").write_text("name: x\nplan: [llava_pretrain]\ndata: {pretrain: {json: a.json}}\nmodell: {}\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['modell'\] \(did you mean `model`\?\)"):
        parse("--config", str(tmp_path / "r.yaml"), "--output_dir", "o")
    with pytest.raises(ValueError, match="No output directory"):
        parse("--config", LLAVA_RECIPE)
    save_tiny_init(tmp_path / "init", tiny_llava_config())
    recipe, plan_args, _ = parse("--config", LLAVA_RECIPE, "--output_dir", "o", "--init", str(tmp_path / "init"),
                                 "--set", f"data.pretrain.json={tmp_path / 'missing.json'}")
    with pytest.raises(FileNotFoundError, match=r"Data set 'pretrain': its json .*missing.json does not exist"):
        check_plan_inputs(recipe, plan_args.stage)
    recipe, plan_args, _ = parse("--config", LLAVA_RECIPE, "--output_dir", "o", "--init", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match=r"starting checkpoint .*nothing does not exist.*eagle-hf init"):
        check_plan_inputs(recipe, plan_args.stage)
    recipe, _, _ = parse("--config", LLAVA_RECIPE, "--output_dir", "o", "--eval_strategy", "steps")
    with pytest.raises(ValueError, match=r"llava_pretrain: `eval_strategy: steps` needs an eval set; .*eval_fraction"):
        make_training_args(recipe, recipe.stage("llava_pretrain"), "o/llava_pretrain")


def test_a_stage_evaluates_on_another_data_set_during_training_and_counts_only_training_samples_as_read(tmp_path):
    records = synthetic_caption_records(tmp_path / "images", 8)
    held_out = synthetic_caption_records(tmp_path / "val_images", 3, seed=1)
    save_tiny_init(tmp_path / "init", tiny_llava_config())
    recipe = recipe_from_dict(dict(
        name="tiny", plan=["llava_pretrain"], model=dict(init=str(tmp_path / "init")), per_device_batch_size=2,
        data=dict(pretrain=dict(records=records, image_folder=str(tmp_path / "images")),
                  val=dict(records=held_out, image_folder=str(tmp_path / "val_images"))),
        stages=dict(llava_pretrain=dict(global_batch_size=2, max_steps=3, eval_data="val")),
        bf16=False, disable_tqdm=True, save_strategy="no", eval_strategy="steps", eval_steps=1,
    ))
    result = run_plan(recipe, str(tmp_path / "run"))[0]
    assert [step for step, _ in result.eval_losses] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in result.eval_losses)
    assert result.data_report["read"] == 3 * 2  # the eval batches are not training samples


def test_a_stage_card_names_the_sources_of_its_starting_weights_and_a_random_start_names_none(tmp_path):
    from eagle_hf.hub import render_model_card

    records = synthetic_caption_records(tmp_path / "images", 4)
    config = tiny_llava_config()
    for name, sources in (("sourced", ["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336"]), ("random", [])):
        save_tiny_init(tmp_path / name, config)
        if sources:  # as `eagle-hf init` leaves it: a card listing where the weights came from
            render_model_card(config, base_models=sources).save(tmp_path / name / "README.md")
        data = dict(records=records, image_folder=str(tmp_path / "images"))
        recipe = recipe_from_dict(dict(
            name="t", plan=["llava_pretrain", "llava_finetune"], model=dict(init=str(tmp_path / name)),
            per_device_batch_size=2, data=dict(pretrain=data, sft=data), bf16=False, disable_tqdm=True,
            save_strategy="no", max_steps=1, stages=dict(llava_pretrain=dict(global_batch_size=2),
                                                         llava_finetune=dict(global_batch_size=2, lora=True)),
            lora=dict(r=2),
        ))
        pretrain, finetune = run_plan(recipe, str(tmp_path / f"run_{name}"))
        card = ModelCard.load(os.path.join(pretrain.output_dir, "README.md"))
        assert card.data.base_model == (sources or None), name
        assert card.data.to_dict().get("base_model_relation") == ("finetune" if sources else None)
        assert "fine-tuned version of" not in card.text and "stage `llava_pretrain`" in card.text
        adapter = ModelCard.load(os.path.join(finetune.output_dir, "README.md"))
        assert adapter.data.base_model is None  # the adapter's base is a local folder, not a Hub repo
        assert "AutoPeftModelForCausalLM" in adapter.text


@pytest.mark.slow  # accelerate launch + a fresh interpreter: ~20 s idle
def test_the_documented_cpu_smoke_run_trains_a_recipe_with_eval_through_accelerate_launch(tmp_path):
    kit = subprocess.run([sys.executable, "-m", "eagle_hf", "smoke-kit", str(tmp_path / "kit"), "--preset",
                          "llava_1_5", "--samples", "8"], env=subprocess_env(), capture_output=True, text=True,
                         timeout=300)
    assert kit.returncode == 0, kit.stderr[-3000:]
    data = tmp_path / "kit" / "data"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
               os.path.join(REPO, "training_scripts", "sft.py"), "--config", LLAVA_RECIPE, "--cpu",
               "--init", str(tmp_path / "kit" / "init"), "--output_dir", str(tmp_path / "run"),
               "--max_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
               "--eval_fraction", "0.25", "--dataloader_num_workers", "0",
               "--set", f"data.pretrain.json={data / 'captions.json'}", f"data.pretrain.image_folder={data / 'images'}",
               f"data.sft.json={data / 'conversations.json'}", f"data.sft.image_folder={data / 'images'}"]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    for stage in ("llava_pretrain", "llava_finetune"):
        result = json.loads((tmp_path / "run" / stage / "stage_result.json").read_text())
        assert result["global_step"] == 2 and result["data_report"]["read"] == 4
        assert any("eval_loss" in entry for entry in result["log_history"])
        assert f"{stage}: trained, 2 steps" in done.stderr and "eval loss" in done.stderr
    assert "--cpu: the model trains in float32" in done.stderr


def test_the_built_wheel_ships_the_model_card_templates_and_renders_cards_from_them(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", REPO,
                            "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("eagle_hf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"eagle_hf/model_cards/eagle.md", "eagle_hf/model_cards/card_data.yaml"} <= names
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    script = ("import sys, eagle_hf; from eagle_hf.hub.model_card import model_cards_dir, render_model_card;"
              "from eagle_hf import EagleConfig; assert eagle_hf.__file__.startswith(sys.argv[1]), eagle_hf.__file__;"
              "print(model_cards_dir()); print(render_model_card(EagleConfig.eagle_x5()).data.pipeline_tag)")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "site")], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(tmp_path / "site" / "eagle_hf" / "model_cards"), "image-text-to-text"]
