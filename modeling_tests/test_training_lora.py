"""LoRA and QLoRA: adapters on the LLM's linear layers only, the projector trained in full as PEFT `modules_to_save` and
saved in the adapter at every checkpoint, PEFT's own loaders giving the model the merge gives, a merge into a
standalone checkpoint that loads with the Auto classes, and a 4-bit NF4 LLM next to bf16 experts (CPU)."""

import os

import pytest
import torch
from safetensors import safe_open
from transformers import TrainerCallback

from eagle_hf import EagleConfig
from eagle_hf.training import merge_lora, recipe_from_dict, run_plan
from test_training_stages import tensors
from tiny import (IMAGE_TOKEN_ID, TINY_BACKBONES, image_prompt, save_tiny_init, synthetic_caption_records,
                  tiny_llava_config, tiny_text_config)

LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=5e-3)  # the LoRA matrices' rate


def lora_recipe(root, records, stages, plan, **trainer):
    data = dict(records=records, image_folder=str(root / "images"))
    return recipe_from_dict(dict(
        name="tiny", plan=plan, model=dict(init=str(root / "init")), data=dict(pretrain=data, sft=data),
        per_device_batch_size=2, lora=LORA, stages=stages,
        trainer=dict(dict(bf16=False, disable_tqdm=True, save_steps=2), **trainer),
    ))


def keys(path):
    with safe_open(path, "pt") as handle:
        return set(handle.keys())


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    records = synthetic_caption_records(root / "images", 8)
    save_tiny_init(root / "init", tiny_llava_config())
    stage = dict(preset="llava_finetune", lora=True, global_batch_size=2, max_steps=4, learning_rate=1e-2)
    after = dict(preset="llava_finetune", global_batch_size=2, max_steps=1)
    recipe = lora_recipe(root, records, dict(lora_sft=stage, full_sft=after), ["lora_sft", "full_sft"])
    return root, run_plan(recipe, str(root / "run"))


def test_lora_adapts_only_the_llm_linears_and_every_checkpoint_holds_the_adapter_and_the_projector(lora_run):
    root, (result, _) = lora_run
    assert result.lora
    for folder in ("checkpoint-2", "checkpoint-4", ""):
        directory = os.path.join(result.output_dir, folder)
        saved = keys(os.path.join(directory, "adapter_model.safetensors"))
        adapter = {key for key in saved if ".lora_" in key}
        assert adapter and all(".language_model." in key for key in adapter), folder
        layers = {key.split(".lora_")[0].rsplit(".", 1)[-1] for key in adapter}
        assert layers == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        assert saved - adapter == {f"base_model.model.model.multi_modal_projector.linear_{i}.{p}"
                                   for i in (1, 2) for p in ("weight", "bias")}, folder
        assert not os.path.exists(os.path.join(directory, "non_lora_trainables.safetensors"))
    table = {line.split()[0]: line.split() for line in result.parameter_table.splitlines()[2:]}
    assert table["experts"][3] == "0" and table["projector"][2] == table["projector"][3]
    # r * (in + out) summed over the 14 linears of the 2 decoder layers: (256 + 192 + 192 + 256 + 3 * 384) * 2
    assert table["llm"][3] == "4,096"
    assert (table["llm"][4], table["projector"][4]) == ("5.00e-03", "1.00e-02")  # LoRA rate, stage rate


def test_peft_loaders_and_the_merge_give_the_trained_model_and_the_merge_loads_with_the_auto_classes(
        lora_run, tmp_path):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from eagle_hf import EagleForConditionalGeneration

    root, (result, after) = lora_run
    merged_dir = merge_lora(result.output_dir, str(tmp_path / "merged"), dtype=torch.float32)
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir, trust_remote_code=True).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    base = EagleForConditionalGeneration.from_pretrained(str(root / "init"))
    initial_projector = base.model.multi_modal_projector.linear_1.weight.detach().clone()
    adapted = PeftModel.from_pretrained(base, result.output_dir).eval()  # PEFT alone: no eagle-hf loading step
    auto = AutoPeftModelForCausalLM.from_pretrained(result.output_dir, trust_remote_code=True).eval()
    input_ids, pixel_values = image_prompt(merged.config)
    with torch.no_grad():
        expected = adapted(input_ids=input_ids, pixel_values=pixel_values).logits
        got = merged(input_ids=input_ids, pixel_values=pixel_values).logits
        through_auto = auto(input_ids=input_ids, pixel_values=pixel_values).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(through_auto, expected, atol=0, rtol=0)
    assert not torch.equal(merged.model.multi_modal_projector.linear_1.weight, initial_projector)  # it trained
    processor = AutoProcessor.from_pretrained(merged_dir, trust_remote_code=True)
    assert type(processor).__name__ == "EagleProcessor"
    assert processor.num_image_tokens == merged.config.image_seq_length
    assert {"processing_eagle.py", "image_processing_eagle.py", "text_processing_eagle.py", "README.md"} <= set(
        os.listdir(merged_dir))
    # The next stage of the plan started from the merged model the plan wrote next to the adapter.
    assert after.global_step == 1 and os.path.exists(os.path.join(result.output_dir, "merged", "config.json"))
    plan_merged = tensors(os.path.join(result.output_dir, "merged"))
    assert all(torch.allclose(plan_merged[k], v, atol=1e-6) for k, v in merged.state_dict().items() if k in plan_merged)


class Inspect(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.layers = {name: f"{type(module).__module__}.{type(module).__name__}"
                       for name, module in model.named_modules()}
        self.dtypes = {name: p.dtype for name, p in model.named_parameters()}


def test_qlora_trains_adapters_on_a_4bit_nf4_llm_while_experts_and_projector_stay_bf16(tmp_path):
    pytest.importorskip("bitsandbytes")
    # bitsandbytes' CPU kernels need input widths that are multiples of its 64-value blocks.
    clip = dict(image_size=32, backbone_config=dict(TINY_BACKBONES["clip"], num_hidden_layers=3))
    config = EagleConfig.llava_1_5(text_config=tiny_text_config(hidden_size=64, intermediate_size=128),
                                   expert_overrides={"clip": clip}, image_token_id=IMAGE_TOKEN_ID, image_size=32,
                                   grid_size=4)
    records = synthetic_caption_records(tmp_path / "images", 4)
    save_tiny_init(tmp_path / "init", config)
    inspect = Inspect()
    stage = dict(preset="llava_finetune", qlora=True, global_batch_size=2, max_steps=2, learning_rate=1e-3)
    recipe = lora_recipe(tmp_path, records, dict(qlora_sft=stage), ["qlora_sft"], bf16=True, save_strategy="no")
    result = run_plan(recipe, str(tmp_path / "run"), callbacks=[inspect])[0]
    quantized = {name for name, kind in inspect.layers.items() if kind == "bitsandbytes.nn.modules.Linear4bit"}
    assert all(".language_model.layers." in name and name.endswith(".base_layer") for name in quantized)
    assert len(quantized) == 2 * 7  # every linear of the 2 decoder layers, each under its LoRA wrapper
    assert not any("4bit" in kind for name, kind in inspect.layers.items()
                   if "vision_tower" in name or "multi_modal_projector" in name or name.endswith("lm_head"))
    assert {dtype for name, dtype in inspect.dtypes.items() if "vision_tower" in name or "projector" in name} == {
        torch.bfloat16}
    assert result.global_step == 2 and all(torch.isfinite(torch.tensor(loss)) for _, loss in result.losses)
    saved = keys(os.path.join(result.output_dir, "adapter_model.safetensors"))
    assert any(".lora_" in key for key in saved) and any(".multi_modal_projector." in key for key in saved)


def test_experts_trained_beside_lora_are_peft_modules_to_save_and_an_interrupted_run_resumes_to_the_same_adapter(
        tmp_path):
    from safetensors.torch import load_file

    from eagle_hf.training import StopAfterSteps
    from tiny import tiny_eagle_config

    records = synthetic_caption_records(tmp_path / "images", 8)
    save_tiny_init(tmp_path / "init", tiny_eagle_config(kinds=("clip", "convnext")))
    stage = dict(preset="eagle_sft", lora=True, global_batch_size=2, max_steps=4, learning_rate=1e-3,
                 group_by_modality_length=False)
    recipe = lora_recipe(tmp_path, records, dict(sft=stage), ["sft"])
    straight = run_plan(recipe, str(tmp_path / "straight"))[0]
    with pytest.raises(KeyboardInterrupt):  # killed after step 3; the last checkpoint is step 2
        run_plan(recipe, str(tmp_path / "killed"), callbacks=[StopAfterSteps(3)])
    resumed = run_plan(recipe, str(tmp_path / "killed"))[0]
    assert resumed.resumed_from.endswith("checkpoint-2")
    final = load_file(os.path.join(resumed.output_dir, "adapter_model.safetensors"))
    reference = load_file(os.path.join(straight.output_dir, "adapter_model.safetensors"))
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[key], reference[key]) for key in reference)
    saved_modules = {key.split(".")[5] for key in reference if ".vision_tower.experts." in key}
    assert saved_modules == {"0", "1"}  # base_model.model.model.vision_tower.experts.<i>...: both experts, in full
    initial = tensors(str(tmp_path / "init"))
    expert_key = next(key for key in reference if ".vision_tower.experts.0." in key and key.endswith("weight"))
    assert not torch.equal(reference[expert_key], initial[expert_key.replace("base_model.model.", "", 1)])
