"""A real SIGKILL (no exception handler, no `finally` runs) of a subprocess mid-stage, mid-checkpoint-write,
mid-evaluation and mid-conversion; the rerun finishes and gives what an uninterrupted run gives."""

import json
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from test_training_plan import subprocess_env, write_tiny_recipe
from tiny import save_tiny_init, synthetic_caption_records, tiny_llava_config

pytestmark = pytest.mark.slow  # each test starts fresh interpreters (~10-20 s idle)

TRAIN = textwrap.dedent("""
    import json, logging, os, signal, sys
    from transformers import TrainerCallback
    from transformers.trainer_callback import TrainerState
    from eagle_hf.training import load_recipe, run_plan

    recipe, output, kill = sys.argv[1], sys.argv[2], sys.argv[3]
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("eagle_hf").setLevel(logging.INFO)

    class KillAtStep(TrainerCallback):  # SIGKILL while step 3 runs: checkpoint-2 is the last whole one
        def on_step_end(self, args, state, control, **kwargs):
            if kill == "step" and state.global_step == 3:
                os.kill(os.getpid(), signal.SIGKILL)

    if kill == "state":  # SIGKILL in the middle of writing checkpoint-4's trainer_state.json
        save = TrainerState.save_to_json
        def half_then_kill(self, path):
            if self.global_step == 4:
                with open(path, "w") as handle:
                    handle.write(json.dumps({"global_step": 4})[:9])
                os.kill(os.getpid(), signal.SIGKILL)
            save(self, path)
        TrainerState.save_to_json = half_then_kill
    run_plan(load_recipe(recipe), output, callbacks=[KillAtStep()])
""")


def run(script, *args, killed=False):
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=subprocess_env(), capture_output=True,
                          text=True, timeout=600)
    if killed:
        assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    else:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("kill", ["step", "state"])
def test_a_stage_killed_mid_step_or_mid_checkpoint_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, kill):
    records = synthetic_caption_records(tmp_path / "images", 12)
    save_tiny_init(tmp_path / "init", tiny_llava_config())
    recipe = write_tiny_recipe(tmp_path, records, ["llava_pretrain"],
                               dict(llava_pretrain=dict(global_batch_size=2, max_steps=6)))
    values = json.loads(json.dumps(__import__("yaml").safe_load(recipe.read_text())))
    values["trainer"].update(save_strategy="steps", save_steps=2)
    recipe.write_text(json.dumps(values))
    run(TRAIN, recipe, tmp_path / "straight", "none")
    run(TRAIN, recipe, tmp_path / "killed", kill, killed=True)
    stage = tmp_path / "killed" / "llava_pretrain"
    assert not (stage / "stage_result.json").exists()
    if kill == "state":
        assert (stage / "checkpoint-4").is_dir()  # written but for its state: passed over on resume
    resumed = run(TRAIN, recipe, tmp_path / "killed", "none")
    assert "resuming from" in resumed.stderr and "checkpoint-2" in resumed.stderr.split("resuming from")[1][:200]
    if kill == "state":
        assert "checkpoint-4 cannot be resumed from: trainer_state.json is missing or incomplete" in resumed.stderr
    final = load_file(str(stage / "model.safetensors"))
    reference = load_file(str(tmp_path / "straight" / "llava_pretrain" / "model.safetensors"))
    assert final.keys() == reference.keys() and all(torch.equal(final[k], reference[k]) for k in reference)
    result = json.loads((stage / "stage_result.json").read_text())
    assert result["global_step"] == 6


EVAL = textwrap.dedent("""
    import argparse, os, signal, sys
    from eagle_hf.evaluation import add_eval_arguments, run_eval
    from transformers import GenerationMixin

    model_dir, data_dir, output, kill = sys.argv[1:5]
    if kill == "yes":  # SIGKILL during the third batch's generation
        generate, calls = GenerationMixin.generate, []
        def generate_then_kill(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return generate(self, *args, **kwargs)
        GenerationMixin.generate = generate_then_kill
    args = add_eval_arguments(argparse.ArgumentParser()).parse_args([
        "--model", model_dir, "--tasks", "pope,mmvp", "--data-dir", data_dir, "--output-dir", output,
        "--batch-size", "2", "--max-new-tokens", "3", "--dtype", "float32", "--device", "cpu", "--no-progress"])
    sys.exit(run_eval(args))
""")


def test_an_evaluation_killed_mid_run_resumes_to_the_predictions_of_an_uninterrupted_run(tmp_path):
    from eagle_hf import EagleForConditionalGeneration
    from test_eval_benchmarks import write_benchmarks
    from tiny import tiny_processor

    config = tiny_llava_config()
    torch.manual_seed(0)
    EagleForConditionalGeneration(config).save_pretrained(tmp_path / "model")
    tiny_processor(config).save_pretrained(tmp_path / "model")
    data_dir = write_benchmarks(tmp_path / "data", ["pope", "mmvp"])
    run(EVAL, tmp_path / "model", data_dir, tmp_path / "straight", "no")
    run(EVAL, tmp_path / "model", data_dir, tmp_path / "killed", "yes", killed=True)
    assert not (tmp_path / "killed" / "summary.json").exists()
    run(EVAL, tmp_path / "model", data_dir, tmp_path / "killed", "no")
    for name in ("pope", "mmvp"):
        assert ((tmp_path / "killed" / "predictions" / f"{name}.jsonl").read_bytes()
                == (tmp_path / "straight" / "predictions" / f"{name}.jsonl").read_bytes())
    assert (json.loads((tmp_path / "killed" / "summary.json").read_text())
            == json.loads((tmp_path / "straight" / "summary.json").read_text()))


CONVERT = textwrap.dedent("""
    import json, os, signal, sys
    from eagle_hf.conversion import convert_checkpoint
    from eagle_hf.conversion.writer import ShardWriter

    source, output, overrides, kill = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    if kill == "yes":  # SIGKILL right after the second shard is on disk
        flush = ShardWriter.flush
        def flush_then_kill(self):
            flush(self)
            if len(self.shard_files) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        ShardWriter.flush = flush_then_kill
    convert_checkpoint(source, output, "nveagle", max_shard_size="20KB", **overrides)
""")


def test_a_conversion_killed_mid_write_leaves_no_output_and_the_rerun_cleans_up_and_converts(tmp_path):
    from conversion_fixtures import X4, nveagle_overrides, write_nveagle

    write_nveagle(tmp_path / "source", X4)
    overrides = json.dumps(nveagle_overrides(X4))
    run(CONVERT, tmp_path / "source", tmp_path / "straight", overrides, "no")
    run(CONVERT, tmp_path / "source", tmp_path / "out", overrides, "yes", killed=True)
    assert not (tmp_path / "out").exists() and len(list(tmp_path.glob(".out.partial-*"))) == 1
    rerun = run(CONVERT, tmp_path / "source", tmp_path / "out", overrides, "no")
    assert "left by an interrupted run" in rerun.stderr
    assert not list(tmp_path.glob(".out.partial-*"))
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    reference = json.loads((tmp_path / "straight" / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == reference["weight_map"]
    for shard in set(index["weight_map"].values()):
        got, want = load_file(str(tmp_path / "out" / shard)), load_file(str(tmp_path / "straight" / shard))
        assert all(torch.equal(got[k], want[k]) for k in want)
