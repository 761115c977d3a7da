"""Each stage trains exactly its module groups (frozen ones stay bit-identical), the pre-align -> align -> SFT hand-off
carries the right tensors, per-group learning rates reach the optimizer, and the loss falls."""

import pytest
import torch
from transformers import TrainerCallback

from eagle_hf.training import StageCheckCallback, make_stage, recipe_from_dict, run_plan
from eagle_hf.training.groups import apply_trainability, group_of, plain_name
from eagle_hf.training.models import CheckpointTensors
from tiny import save_tiny_init, synthetic_caption_records, tiny_eagle_config, tiny_llava_config

KINDS = ("clip", "sam")  # two widths (32 and 64 channels), and SAM's pixel-unshuffle path


class Snapshot(TrainerCallback):
    """What each run started from: its tensors and its optimizer's learning rate per module group."""

    def __init__(self):
        self.states, self.learning_rates = [], []

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.states.append({plain_name(n): p.detach().clone() for n, p in model.named_parameters()})
        self.learning_rates.append({g["group"]: g["initial_lr"] for g in optimizer.param_groups})


def tiny_recipe(init, records, image_folder, plan, **stage_fields):
    data = dict(records=records, image_folder=image_folder)
    stages = {name: {**dict(global_batch_size=2, max_steps=2, warmup_ratio=0.0), **stage_fields.get(name, {})}
              for name in plan}
    return recipe_from_dict(dict(
        name="tiny", plan=plan, model=dict(init=init), data=dict(pretrain=data, sft=data), per_device_batch_size=2,
        stages=stages, trainer=dict(bf16=False, disable_tqdm=True, save_strategy="no"),
    ))


def tensors(source):
    source = CheckpointTensors(source)
    keys = source.files if source.files is not None else source.tensors
    return {key: source[key] for key in keys}


def split_by_change(before, after):
    """{group: (changed tensors, unchanged tensors)} over the names both hold."""
    split = {}
    for name in sorted(set(before) & set(after)):
        changed, unchanged = split.setdefault(group_of(name), ([], []))
        (unchanged if torch.equal(before[name], after[name]) else changed).append(name)
    return split


@pytest.fixture(scope="module")
def eagle_plan(tmp_path_factory):
    root = tmp_path_factory.mktemp("eagle_plan")
    records = synthetic_caption_records(root / "images", 8)
    save_tiny_init(root / "init", tiny_eagle_config(KINDS))
    snapshot = Snapshot()
    recipe = tiny_recipe(str(root / "init"), records, str(root / "images"),
                         ["eagle_prealign", "eagle_align", "eagle_sft"],
                         eagle_sft=dict(group_learning_rates={"experts": 1e-4, "projector": 1e-3}))
    results = run_plan(recipe, str(root / "run"), callbacks=[snapshot])
    return dict(results=results, snapshot=snapshot, init=tensors(str(root / "init")))


def test_prealign_trains_each_expert_alone_with_a_new_projector_and_leaves_the_llm_bit_identical(eagle_plan):
    init, results = eagle_plan["init"], eagle_plan["results"]
    assert [r.name for r in results] == ["eagle_prealign/expert_0_clip", "eagle_prealign/expert_1_sam",
                                         "eagle_align", "eagle_sft"]
    for index in range(2):
        output = tensors(results[index].output_dir)
        assert {k.split(".")[3] for k in output if k.startswith("model.vision_tower.")} == {"0"}
        own = {k.replace("experts.0.", f"experts.{index}."): v for k, v in output.items()}
        split = split_by_change(init, own)
        assert split["experts"][1] == [] and split["experts"][0]  # every tensor of this expert trained
        assert split["llm"][0] == []  # the LLM is bit-identical
        started = eagle_plan["snapshot"].states[index]
        projector = split_by_change(started, output)["projector"]
        assert projector[1] == [] and output["model.multi_modal_projector.linear_1.weight"].shape[1] == (32, 64)[index]


def test_align_loads_the_prealigned_experts_and_original_llm_and_trains_only_the_new_fused_projector(eagle_plan):
    init, results, snapshot = eagle_plan["init"], eagle_plan["results"], eagle_plan["snapshot"]
    started, output = snapshot.states[2], tensors(results[2].output_dir)
    for index in range(2):
        prealigned = tensors(results[index].output_dir)
        for name, tensor in prealigned.items():
            if name.startswith("model.vision_tower.experts.0."):
                assert torch.equal(started[name.replace("experts.0.", f"experts.{index}.")], tensor), name
    for name, tensor in init.items():
        if group_of(name) == "llm":
            assert torch.equal(started[name], tensor), name
    assert started["model.multi_modal_projector.linear_1.weight"].shape[1] == 32 + 64
    split = split_by_change(started, output)
    assert split["experts"][0] == [] and split["llm"][0] == []
    assert split["projector"][1] == [] and split["projector"][0]


def test_sft_starts_from_the_aligned_model_and_trains_every_group_at_its_own_rate(eagle_plan):
    results, snapshot = eagle_plan["results"], eagle_plan["snapshot"]
    aligned, started, output = tensors(results[2].output_dir), snapshot.states[3], tensors(results[3].output_dir)
    assert all(torch.equal(started[name], tensor) for name, tensor in aligned.items())
    split = split_by_change(started, output)
    assert all(split[group][1] == [] and split[group][0] for group in ("experts", "projector", "llm"))
    assert snapshot.learning_rates[3] == {"experts": 1e-4, "projector": 1e-3, "llm": 2e-5}
    assert "experts" in results[3].parameter_table and results[3].data_report["used"] == 4


@pytest.mark.parametrize("stage, trained", [("llava_pretrain", {"projector"}),
                                            ("llava_finetune", {"projector", "llm"})])
def test_llava_stages_change_exactly_their_groups(tmp_path, stage, trained):
    records = synthetic_caption_records(tmp_path / "images", 4)
    save_tiny_init(tmp_path / "init", tiny_llava_config())
    recipe = tiny_recipe(str(tmp_path / "init"), records, str(tmp_path / "images"), [stage])
    result = run_plan(recipe, str(tmp_path / "run"))[0]
    split = split_by_change(tensors(str(tmp_path / "init")), tensors(result.output_dir))
    for group, (changed, unchanged) in split.items():
        if group in trained:
            assert changed and not unchanged, (group, unchanged)
        else:
            assert not changed, (group, changed)


def test_loss_falls_over_a_few_dozen_steps(tmp_path):
    records = synthetic_caption_records(tmp_path / "images", 32)
    save_tiny_init(tmp_path / "init", tiny_llava_config())
    recipe = tiny_recipe(str(tmp_path / "init"), records, str(tmp_path / "images"), ["llava_finetune"],
                         llava_finetune=dict(max_steps=30, learning_rate=3e-3, global_batch_size=4))
    losses = [loss for _, loss in run_plan(recipe, str(tmp_path / "run"))[0].losses]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


class _Optimizer:
    def __init__(self, groups):
        self.param_groups = groups


def test_stage_check_refuses_a_wrong_trainable_set_and_parameters_missing_from_the_optimizer():
    from eagle_hf import EagleForConditionalGeneration

    torch.manual_seed(0)
    model = EagleForConditionalGeneration(tiny_llava_config())
    stage = make_stage("llava_pretrain")
    apply_trainability(model, stage.train)
    projector = [p for n, p in model.named_parameters() if p.requires_grad]
    check = StageCheckCallback(stage)
    state = type("State", (), {"is_world_process_zero": True})()
    check.on_train_begin(None, state, None, model=model, optimizer=_Optimizer([dict(params=projector, lr=1e-3)]))
    assert "projector" in check.table
    with pytest.raises(RuntimeError, match="lacks 1 trainable"):
        check.on_train_begin(None, state, None, model=model,
                             optimizer=_Optimizer([dict(params=projector[1:], lr=1e-3)]))
    with pytest.raises(RuntimeError, match="trains at lr"):
        check.on_train_begin(None, state, None, model=model, optimizer=_Optimizer([dict(params=projector, lr=2e-5)]))
    model.lm_head.weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match="wrong trainable flag.*lm_head"):
        check.on_train_begin(None, state, None, model=model, optimizer=_Optimizer([dict(params=projector, lr=1e-3)]))


def test_every_parameter_name_maps_to_one_group_through_training_wrappers():
    assert group_of("model.vision_tower.experts.3.backbone.blocks.0.attn.qkv.weight") == "experts"
    assert group_of("model.vision_tower.fusion.adapters.0.weight") == "projector"  # learned fusion trains with it
    assert group_of("model.multi_modal_projector.linear_1.weight") == "projector"
    assert group_of("lm_head.weight") == "llm"
    wrapped = ("module.base_model.model._fsdp_wrapped_module.model.language_model.layers.0.mlp.up_proj."
               "lora_A.default.weight")
    assert plain_name(wrapped) == "model.language_model.layers.0.mlp.up_proj.lora_A.default.weight"
    assert group_of(wrapped) == "llm"
    with pytest.raises(ValueError, match="belongs to no module group"):
        group_of("model.something_else.weight")


@pytest.mark.parametrize("stored, stage_setting, expected", [(True, None, True), (False, None, False),
                                                             (False, True, True), (True, False, False)])
def test_a_stage_tokenises_as_its_processor_stores_unless_it_says_otherwise_and_saves_what_it_used(
        tmp_path, monkeypatch, stored, stage_setting, expected):
    from eagle_hf.processing_eagle import EagleProcessor
    from eagle_hf.training import data

    records = synthetic_caption_records(tmp_path / "images", 2)
    _, processor = save_tiny_init(tmp_path / "init", tiny_llava_config())
    processor.tokenize_chunks = stored
    processor.save_pretrained(tmp_path / "init")
    used, tokenize = [], data.tokenize_with_images
    monkeypatch.setattr(data, "tokenize_with_images",
                        lambda *a, **k: used.append(k["tokenize_chunks"]) or tokenize(*a, **k))
    settings = {} if stage_setting is None else dict(tokenize_chunks=stage_setting)
    recipe = tiny_recipe(str(tmp_path / "init"), records, str(tmp_path / "images"), ["llava_finetune"],
                         llava_finetune=dict(max_steps=1, **settings))
    result = run_plan(recipe, str(tmp_path / "run"))[0]
    assert used and set(used) == {expected}
    assert EagleProcessor.from_pretrained(result.output_dir).tokenize_chunks is expected
    assert EagleProcessor.from_pretrained(tmp_path / "init").tokenize_chunks is stored  # the start is left alone
