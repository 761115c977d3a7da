"""Plans: finished stages are skipped, an interrupted stage resumes to the same weights as an uninterrupted run, the
recipes in the repository hold the issue's settings, `sft.py` runs a recipe, and DDP over gloo keeps replicas equal."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from eagle_hf.training import StopAfterSteps, load_recipe, recipe_from_dict, run_plan
from eagle_hf.training.stages import apply_overrides
from test_training_stages import tensors
from tiny import save_tiny_init, synthetic_caption_records, tiny_llava_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(REPO, "training_scripts", "recipes")


def two_stage_recipe(root, records):
    data = dict(records=records, image_folder=str(root / "images"))
    return recipe_from_dict(dict(
        name="tiny", plan=["llava_pretrain", "llava_finetune"], model=dict(init=str(root / "init")),
        data=dict(pretrain=data, sft=data), per_device_batch_size=2,
        stages=dict(llava_pretrain=dict(global_batch_size=4, max_steps=3),
                    llava_finetune=dict(global_batch_size=4, max_steps=6, learning_rate=1e-3)),
        trainer=dict(bf16=False, disable_tqdm=True, save_steps=2),
    ))


def test_an_interrupted_stage_resumes_to_the_weights_of_an_uninterrupted_run_and_finished_stages_are_skipped(
        tmp_path):
    records = synthetic_caption_records(tmp_path / "images", 16)
    save_tiny_init(tmp_path / "init", tiny_llava_config())
    recipe = two_stage_recipe(tmp_path, records)
    straight = run_plan(recipe, str(tmp_path / "straight"))
    with pytest.raises(KeyboardInterrupt):  # the job is killed in stage 2, after its checkpoint at step 4
        run_plan(recipe, str(tmp_path / "killed"), callbacks=[StopAfterSteps(5)])
    assert os.path.exists(tmp_path / "killed" / "llava_pretrain" / "stage_result.json")
    assert not os.path.exists(tmp_path / "killed" / "llava_finetune" / "stage_result.json")
    resumed = run_plan(recipe, str(tmp_path / "killed"))
    assert resumed[0].skipped and not resumed[1].skipped
    assert resumed[1].resumed_from.endswith("checkpoint-4")
    final, reference = tensors(resumed[1].output_dir), tensors(straight[1].output_dir)
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[name], reference[name]) for name in reference)
    assert [loss for _, loss in resumed[1].losses] == [loss for _, loss in straight[1].losses]
    again = run_plan(recipe, str(tmp_path / "killed"))
    assert all(result.skipped for result in again)


def test_recipes_in_the_repository_hold_the_issues_stages():
    llava = load_recipe(os.path.join(RECIPES, "llava_1_5.yaml"))
    assert llava.plan == ["llava_pretrain", "llava_finetune"]
    pretrain, finetune = llava.stage("llava_pretrain"), llava.stage("llava_finetune")
    assert (pretrain.train, pretrain.template, pretrain.learning_rate, pretrain.global_batch_size) == (
        ("projector",), "plain", 1e-3, 256)
    assert (pretrain.num_train_epochs, pretrain.lr_scheduler_type, pretrain.warmup_ratio) == (1, "cosine", 0.03)
    assert (finetune.train, finetune.learning_rate, finetune.global_batch_size) == (("projector", "llm"), 2e-5, 128)
    for name in ("eagle_x4", "eagle_x5"):
        eagle = load_recipe(os.path.join(RECIPES, f"{name}.yaml"))
        assert eagle.plan == ["eagle_prealign", "eagle_align", "eagle_sft"]
        prealign, align, sft = (eagle.stage(stage) for stage in eagle.plan)
        assert (prealign.build, prealign.train) == ("prealign", ("experts", "projector"))
        assert (align.build, align.train, align.template, align.data) == ("align", ("projector",), "plain", "pretrain")
        assert sft.train == ("experts", "projector", "llm")
        two_stage = load_recipe(os.path.join(RECIPES, f"{name}.yaml"), ["plan=[llava_pretrain,eagle_sft]"])
        assert two_stage.plan == ["llava_pretrain", "eagle_sft"]


def test_recipe_overrides_and_mistakes_get_clear_errors():
    values = {"name": "x", "plan": ["llava_pretrain"], "data": {"pretrain": {"json": "a.json"}}}
    changed = apply_overrides(values, ["stages.llava_pretrain.learning_rate=5e-4", "trainer.save_steps=7"])
    recipe = recipe_from_dict(changed)
    assert recipe.stage("llava_pretrain").learning_rate == 5e-4 and recipe.trainer == {"save_steps": 7}
    with pytest.raises(ValueError, match="unknown module group"):
        recipe_from_dict({**values, "stages": {"llava_pretrain": {"train": ["vision"]}}})
    with pytest.raises(ValueError, match="cannot be cached"):
        recipe_from_dict({**values, "stages": {"llava_pretrain": {"train": ["experts"], "feature_cache": True}}})
    with pytest.raises(ValueError, match="reads data set 'sft'"):
        recipe_from_dict({**values, "plan": ["llava_finetune"]})


def write_tiny_recipe(root, records, plan, stages):
    (root / "data.json").write_text(json.dumps(records))
    recipe = dict(name="tiny", plan=plan, model=dict(init=str(root / "init")), per_device_batch_size=2,
                  data=dict(pretrain=dict(json=str(root / "data.json"), image_folder=str(root / "images")),
                            sft=dict(json=str(root / "data.json"), image_folder=str(root / "images"))),
                  stages=stages, trainer=dict(bf16=False, disable_tqdm=True, save_strategy="no"))
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return root / "recipe.yaml"


def free_port():
    """A TCP port nothing listens on now (fixed ports collide when two runs of the suite share a machine)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def subprocess_env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, "src"), os.path.dirname(__file__)]),
                OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


@pytest.mark.slow  # a fresh interpreter imports torch, transformers, TRL and PEFT: ~15 s idle, ~30 s on a busy box
def test_sft_script_runs_one_stage_of_a_recipe_with_overrides(tmp_path):
    records = synthetic_caption_records(tmp_path / "images", 8)
    save_tiny_init(tmp_path / "init", tiny_llava_config())
    recipe = write_tiny_recipe(tmp_path, records, ["llava_pretrain", "llava_finetune"],
                               dict(llava_pretrain=dict(global_batch_size=2, max_steps=2),
                                    llava_finetune=dict(global_batch_size=2, max_steps=2)))
    command = [sys.executable, os.path.join(REPO, "training_scripts", "sft.py"), "--recipe", str(recipe),
               "--output_dir", str(tmp_path / "run"), "--stage", "llava_pretrain",
               "--set", "stages.llava_pretrain.max_steps=3"]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "llava_pretrain" / "stage_result.json").read_text())
    assert result["global_step"] == 3 and "projector" in result["parameter_table"]
    assert not (tmp_path / "run" / "llava_finetune").exists()
    assert "llava_pretrain: trained, 3 steps" in done.stderr
    assert "stage llava_pretrain: trainable parameters by module group" in done.stderr


DDP_SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    import torch
    from transformers import TrainerCallback
    from eagle_hf.training import load_recipe, run_plan

    class Fingerprint(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            digest = hashlib.sha256()
            for name, parameter in sorted(model.named_parameters()):
                digest.update(parameter.detach().numpy().tobytes())
            stage = os.path.basename(args.output_dir)
            with open(os.path.join(sys.argv[2], f"{stage}_rank{args.process_index}.json"), "w") as handle:
                json.dump(dict(sha=digest.hexdigest(), world=args.world_size, steps=state.global_step,
                               kind=str(args.distributed_state.distributed_type)), handle)

    run_plan(load_recipe(sys.argv[1]), sys.argv[2], callbacks=[Fingerprint()])
""")


@pytest.mark.slow  # two fresh interpreters (torchrun): ~20 s idle, ~40 s on a busy box
def test_two_cpu_processes_train_data_parallel_over_gloo_and_keep_identical_replicas(tmp_path):
    records = synthetic_caption_records(tmp_path / "images", 16)
    save_tiny_init(tmp_path / "init", tiny_llava_config())
    # The first stage also fills the feature cache from both processes, each its share.
    recipe = write_tiny_recipe(tmp_path, records, ["llava_pretrain", "llava_finetune"],
                               dict(llava_pretrain=dict(global_batch_size=4, max_steps=2, feature_cache=True),
                                    llava_finetune=dict(global_batch_size=4, max_steps=3, learning_rate=1e-3)))
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(tmp_path / "ddp.py"), str(recipe), str(tmp_path / "run")]
    done = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for stage, steps in (("llava_pretrain", 2), ("llava_finetune", 3)):
        ranks = [json.loads((tmp_path / "run" / f"{stage}_rank{rank}.json").read_text()) for rank in (0, 1)]
        assert ranks[0]["world"] == ranks[1]["world"] == 2 and "MULTI_CPU" in ranks[0]["kind"]
        assert ranks[0]["steps"] == steps and ranks[0]["sha"] == ranks[1]["sha"]
    cached = [f for _, _, files in os.walk(tmp_path / "run" / "feature_cache") for f in files]
    assert len(cached) == len({(tmp_path / "images" / r["image"]).read_bytes() for r in records})
    saved = tensors(str(tmp_path / "run" / "llava_finetune"))
    initial = tensors(str(tmp_path / "init"))
    assert not torch.equal(saved["lm_head.weight"], initial["lm_head.weight"])
    result = json.loads((tmp_path / "run" / "llava_finetune" / "stage_result.json").read_text())
    assert result["data_report"]["read"] == 3 * 4  # both ranks' samples, gathered


def test_training_on_a_transformers_older_than_its_floor_is_refused_naming_both_versions_and_the_extra():
    from eagle_hf.training.plan import TRAINING_FLOOR, check_training_transformers

    with pytest.raises(RuntimeError, match=rf"needs transformers>={TRAINING_FLOOR}, found 4\.57\.6.*eagle-hf\[train\]"):
        check_training_transformers("4.57.6")
    check_training_transformers()  # the installed one is new enough


def test_the_training_floor_is_the_one_pyproject_declares_in_its_train_extra():
    import tomllib
    from pathlib import Path

    from eagle_hf.training.plan import TRAINING_FLOOR

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert any(req.replace(" ", "").startswith(f"transformers>={TRAINING_FLOOR},")
               for req in project["optional-dependencies"]["train"])
