"""Sharded training that has run: DeepSpeed ZeRO-2 and ZeRO-3 through `accelerate launch` with the repository's
configs on 2 CPU processes (DeepSpeed's CPU accelerator: gloo), gradient checkpointing on. Under ZeRO-2 Eagle's whole
plan (pre-align -> align -> SFT) gives the weights of a one-process run with the same global batch, and a rank
SIGKILLed mid-stage resumes from DeepSpeed's checkpoint; under ZeRO-3 the model-assembling stages are refused before any
step and a `continue` stage matches one process. The accelerate configs fit the models they claim to; sharding
mistakes are refused before any step. (FSDP does not run on CPU through accelerate: see the README.)"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from safetensors.torch import load_file

from deepspeed_env import deepspeed_env
from other_env import OtherEnvError
from test_training_plan import REPO, free_port, subprocess_env
from tiny import save_tiny_init, synthetic_caption_records, tiny_eagle_config, tiny_llava_config

CONFIGS = os.path.join(REPO, "training_scripts", "accelerate_configs")

SCRIPT = textwrap.dedent("""
    import json, logging, os, signal, sys
    from accelerate.state import AcceleratorState
    from transformers import TrainerCallback
    from eagle_hf.training import load_recipe, run_plan

    recipe, output, kill = sys.argv[1], sys.argv[2], sys.argv[3]
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("eagle_hf").setLevel(logging.INFO)

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            partitioned = sum(hasattr(p, "ds_numel") for p in model.parameters())
            name = os.path.basename(args.output_dir) + f"_rank{args.process_index}.json"
            with open(os.path.join(output, name), "w") as handle:
                json.dump(dict(kind=str(args.distributed_state.distributed_type), world=args.world_size,
                               zero=getattr(AcceleratorState().deepspeed_plugin, "zero_stage", None),
                               partitioned=partitioned, total=len(list(model.parameters())),
                               checkpointing=bool(getattr(model, "is_gradient_checkpointing", False))), handle)

        def on_step_end(self, args, state, control, **kwargs):  # one rank dies mid-stage: no handler runs
            if kill == "yes" and os.path.basename(args.output_dir) == "eagle_sft" and args.process_index == 1 \\
                    and state.global_step == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    os.makedirs(output, exist_ok=True)
    run_plan(load_recipe(recipe), output, callbacks=[Record()])
""")


def eagle_recipe(root, plan=("eagle_prealign", "eagle_align", "eagle_sft")):
    if not (root / "init").exists():
        save_tiny_init(root / "init", tiny_eagle_config(kinds=("clip", "convnext")))
        records = synthetic_caption_records(root / "images", 16)
        (root / "data.json").write_text(json.dumps(records))
    data = dict(json=str(root / "data.json"), image_folder=str(root / "images"))
    common = dict(global_batch_size=4, group_by_modality_length=False, max_length=None)
    recipe = dict(
        name="tiny", plan=list(plan), model=dict(init=str(root / "init")), per_device_batch_size=2,
        data=dict(pretrain=data, sft=data),
        stages=dict(eagle_prealign=dict(max_steps=2, **common), eagle_align=dict(max_steps=2, **common),
                    eagle_sft=dict(max_steps=3, group_learning_rates=dict(experts=1e-4), **common)),
        bf16=False, disable_tqdm=True, gradient_checkpointing=True, save_strategy="steps", save_steps=1,
        dataloader_num_workers=0, learning_rate=1e-3,
    )
    path = root / f"recipe_{len(plan)}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def cpu_config(root, name, port):
    """A repository accelerate config as it is, on 2 CPU processes in fp32 (no CUDA here)."""
    with open(os.path.join(CONFIGS, name)) as handle:
        config = yaml.safe_load(handle)
    config.update(num_processes=2, mixed_precision="no", main_process_port=port)
    path = root / f"cpu_{name}"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def ds_env():
    try:
        return deepspeed_env(subprocess_env())
    except OtherEnvError as error:  # never a skip: CI must exercise DeepSpeed
        pytest.fail(str(error), pytrace=False)


def run(root, env, recipe, output, config=None, kill="no"):
    (root / "script.py").write_text(SCRIPT)
    launcher = ([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                 str(cpu_config(root, config, free_port()))] if config else [sys.executable])
    command = [*launcher, str(root / "script.py"), str(recipe), str(output), kill]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def weights(output, stage="eagle_sft"):
    return load_file(str(output / stage / "model.safetensors"))


def max_difference(got, want):
    assert got.keys() == want.keys()
    return max((got[k] - want[k]).abs().max().item() for k in want)


@pytest.mark.slow  # four plan runs in fresh interpreters, three of them 2-process: ~2 min
def test_zero2_runs_the_eagle_plan_like_one_process_and_resumes_after_a_rank_is_killed(tmp_path, ds_env):
    recipe = eagle_recipe(tmp_path)
    single = run(tmp_path, ds_env, recipe, tmp_path / "single")
    assert single.returncode == 0, single.stderr[-3000:]
    sharded = run(tmp_path, ds_env, recipe, tmp_path / "zero2", "zero2.yaml")
    assert sharded.returncode == 0, sharded.stderr[-4000:]
    for stage in ("expert_0_clip", "expert_1_convnext", "eagle_align", "eagle_sft"):
        ranks = [json.loads((tmp_path / "zero2" / f"{stage}_rank{rank}.json").read_text()) for rank in (0, 1)]
        assert all(r["kind"] == "DistributedType.DEEPSPEED" and r["world"] == 2 and r["zero"] == 2 for r in ranks)
        assert ranks[0]["checkpointing"], ranks[0]
    # The per-group rates and the trainable-set check ran on DeepSpeed's optimizer (the table follows them).
    assert "stage eagle_sft: trainable parameters by module group" in sharded.stderr
    got, want = weights(tmp_path / "zero2"), weights(tmp_path / "single")
    initial = load_file(str(tmp_path / "init" / "model.safetensors"))
    moved = max((want[k] - initial[k]).abs().max().item() for k in want if k in initial)
    difference = max_difference(got, want)
    print(f"ZeRO-2 vs one process: max |weight difference| {difference:.2e}, largest update {moved:.2e}")
    assert difference < 1e-5 and moved > 1e-3  # fp32 rounding, against updates of ~1e-3

    killed = run(tmp_path, ds_env, recipe, tmp_path / "killed", "zero2.yaml", kill="yes")
    assert killed.returncode != 0 and not (tmp_path / "killed" / "eagle_sft" / "stage_result.json").exists()
    assert (tmp_path / "killed" / "eagle_align" / "stage_result.json").exists()
    resumed = run(tmp_path, ds_env, recipe, tmp_path / "killed", "zero2.yaml")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "stage eagle_sft: resuming from" in resumed.stderr
    assert max_difference(weights(tmp_path / "killed"), got) < 1e-5
    from transformers import AutoModelForImageTextToText  # a normal checkpoint, for the Auto classes

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "killed" / "eagle_sft", trust_remote_code=True)
    assert torch.equal(model.state_dict()["lm_head.weight"], weights(tmp_path / "killed")["lm_head.weight"])


@pytest.mark.slow  # three runs in fresh interpreters, two of them 2-process: ~1 min
def test_zero3_refuses_the_assembling_stages_before_any_step_and_runs_a_continue_stage_like_one_process(
        tmp_path, ds_env):
    refused = run(tmp_path, ds_env, eagle_recipe(tmp_path), tmp_path / "refused", "zero3.yaml")
    assert refused.returncode != 0
    assert "Stage eagle_prealign/expert_0_clip (build: prealign) assembles its model" in refused.stderr
    assert not list((tmp_path / "refused").glob("eagle_prealign/*/checkpoint-*"))
    recipe = eagle_recipe(tmp_path, plan=("eagle_sft",))
    single = run(tmp_path, ds_env, recipe, tmp_path / "single")
    assert single.returncode == 0, single.stderr[-3000:]
    sharded = run(tmp_path, ds_env, recipe, tmp_path / "zero3", "zero3.yaml")
    assert sharded.returncode == 0, sharded.stderr[-4000:]
    ranks = [json.loads((tmp_path / "zero3" / f"eagle_sft_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(r["zero"] == 3 and r["partitioned"] == r["total"] > 0 for r in ranks), ranks
    difference = max_difference(weights(tmp_path / "zero3"), weights(tmp_path / "single"))
    print(f"ZeRO-3 vs one process: max |weight difference| {difference:.2e}")
    assert difference < 1e-5


def test_the_accelerate_configs_fit_the_models_they_claim_to():
    from accelerate.utils.dataclasses import get_module_class_from_name  # what accelerate resolves names with

    from eagle_hf import EagleForConditionalGeneration

    configs = {}
    for name in os.listdir(CONFIGS):
        with open(os.path.join(CONFIGS, name)) as handle:
            configs[name] = yaml.safe_load(handle)
    assert set(configs) == {"single_gpu.yaml", "multi_gpu.yaml", "zero2.yaml", "zero3.yaml", "fsdp.yaml"}
    assert configs["zero2.yaml"]["deepspeed_config"]["zero_stage"] == 2
    zero3 = configs["zero3.yaml"]["deepspeed_config"]
    assert zero3["zero_stage"] == 3 and zero3["zero3_save_16bit_model"]  # the final model is a normal checkpoint
    fsdp = configs["fsdp.yaml"]["fsdp_config"]
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # checkpoints and the final model gathered
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    for config in (tiny_eagle_config(), tiny_llava_config()):
        model = EagleForConditionalGeneration(config)
        wrapped = fsdp.get("fsdp_transformer_layer_cls_to_wrap")
        names = wrapped.split(",") if wrapped else model._no_split_modules  # what accelerate wraps
        assert set(names) >= {"EagleVisionExpert", "LlamaDecoderLayer"}
        assert all(get_module_class_from_name(model, name) is not None for name in names), names


def test_another_llm_family_gets_its_own_decoder_layer_wrapped():
    from transformers import Qwen2Config

    from eagle_hf import EagleForConditionalGeneration

    text = Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2)
    model = EagleForConditionalGeneration(tiny_eagle_config(kinds=("clip",), text_config=text))
    assert set(model._no_split_modules) == {"EagleVisionExpert", "Qwen2DecoderLayer"}


def test_sharding_mistakes_are_refused_before_any_model_is_built(monkeypatch):
    from eagle_hf import EagleForConditionalGeneration
    from eagle_hf.training.plan import check_stage_sharding, check_wrap_classes
    from eagle_hf.training.stages import make_stage

    with pytest.raises(ValueError, match=r"eagle_align \(build: align\) .* ZeRO-3 .*zero2.yaml or fsdp.yaml"):
        check_stage_sharding(make_stage("eagle_align"), "eagle_align", mode="zero3")
    with pytest.raises(ValueError, match=r"sft is QLoRA, .*FSDP cannot shard.*single_gpu.yaml or multi_gpu.yaml"):
        check_stage_sharding(make_stage("sft", preset="eagle_sft", qlora=True), "sft", mode="fsdp")
    check_stage_sharding(make_stage("eagle_align"), "eagle_align", mode="fsdp")  # FSDP assembles after building
    model = EagleForConditionalGeneration(tiny_llava_config())
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "MistralDecoderLayer,EagleVisionExpert")
    with pytest.raises(ValueError, match=r"wraps \['MistralDecoderLayer'\], which this model does not contain.*"
                                         r"\['EagleVisionExpert', 'LlamaDecoderLayer'\]"):
        check_wrap_classes(model, "llava_finetune")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "LlamaDecoderLayer")
    check_wrap_classes(model, "llava_finetune")


FSDP2 = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist
    from accelerate.utils.dataclasses import get_module_class_from_name
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from eagle_hf import EagleForConditionalGeneration
    from eagle_hf.training.groups import apply_trainability, group_of
    from eagle_hf.training.stages import make_stage

    init, batches, output = sys.argv[1:4]
    sharded = dist.is_available() and "RANK" in __import__("os").environ
    if sharded:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if sharded else 0
    model = EagleForConditionalGeneration.from_pretrained(init)
    stage = make_stage("eagle_sft", learning_rate=1e-3, group_learning_rates={"experts": 1e-4})
    apply_trainability(model, stage.train)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    wrapped = 0
    if sharded:  # accelerate's TRANSFORMER_BASED_WRAP: the model's own `_no_split_modules`, then the root
        classes = tuple(get_module_class_from_name(model, name) for name in model._no_split_modules)
        for module in list(model.modules()):
            if isinstance(module, classes):
                fully_shard(module)
                wrapped += 1
        fully_shard(model)
    rates = stage.learning_rates()
    groups = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault(group_of(name), []).append(parameter)
    optimizer = torch.optim.AdamW([dict(params=p, lr=rates[g]) for g, p in groups.items()], weight_decay=0.0)
    for step_batches in torch.load(batches):  # each step: the global batch as two halves
        halves = [step_batches[rank]] if sharded else step_batches
        for half in halves:
            (model(**half).loss / len(halves)).backward()
        optimizer.step()
        optimizer.zero_grad()
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in state.items()}, output)
        json.dump(dict(wrapped=wrapped, dtensors=sum(isinstance(p, DTensor) for p in model.parameters()),
                       total=len(list(model.parameters()))), open(output + ".json", "w"))
    if sharded:
        dist.destroy_process_group()
""")


@pytest.mark.slow  # two fresh interpreters via torchrun: ~20 s
def test_the_model_trains_under_fsdp2_sharding_on_two_cpu_processes_like_one_process(tmp_path):
    """What accelerate would do on a GPU, done by hand on CPU (accelerate's FSDP needs an accelerator): each block of
    `_no_split_modules` and the root sharded with FSDP2, gradient checkpointing on, per-group learning rates."""
    from eagle_hf.chat_templates import load_chat_template
    from eagle_hf.training.data import ConversationEncoder, EagleDataCollator
    from tiny import tiny_processor

    config = tiny_eagle_config(kinds=("clip", "convnext"))
    save_tiny_init(tmp_path / "init", config)
    records = synthetic_caption_records(tmp_path / "images", 12)
    processor = tiny_processor(config)
    encoder = ConversationEncoder(processor.tokenizer, load_chat_template("vicuna_v1"), config.image_seq_length)
    collator = EagleDataCollator(records, encoder, processor.image_processor, 0, image_folder=str(tmp_path / "images"))

    def batch(indices):
        values = collator([{"index": i} for i in indices])
        values.pop("data_report")
        return values

    steps = [[batch([4 * s, 4 * s + 1]), batch([4 * s + 2, 4 * s + 3])] for s in range(3)]
    torch.save(steps, tmp_path / "batches.pt")
    (tmp_path / "fsdp2.py").write_text(FSDP2)
    args = [str(tmp_path / "init"), str(tmp_path / "batches.pt")]
    single = subprocess.run([sys.executable, str(tmp_path / "fsdp2.py"), *args, str(tmp_path / "single.pt")],
                            env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    sharded = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                              str(free_port()), str(tmp_path / "fsdp2.py"), *args, str(tmp_path / "fsdp.pt")],
                             env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    info = json.loads((tmp_path / "fsdp.pt.json").read_text())
    assert info["wrapped"] == 2 + config.text_config.num_hidden_layers  # two experts, the LLM's decoder layers
    assert info["dtensors"] == info["total"]
    got, want = torch.load(tmp_path / "fsdp.pt"), torch.load(tmp_path / "single.pt")
    initial = load_file(str(tmp_path / "init" / "model.safetensors"))
    difference = max((got[k] - want[k]).abs().max().item() for k in want)
    moved = max((want[k] - initial[k]).abs().max().item() for k in want if k in initial)
    print(f"FSDP2 vs one process: max |weight difference| {difference:.2e}, largest update {moved:.2e}")
    assert got.keys() == want.keys() and difference < 1e-5 and moved > 1e-3
