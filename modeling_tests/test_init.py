"""`eagle-hf init`: a training run's starting checkpoint from pretrained experts and an LLM, each source written here
in its released layout at tiny size (CLIPModel, timm ConvNeXt safetensors, SamModel, Pix2StructForConditionalGeneration,
the EVA-02 detector's `.pth` under `backbone.net.` with detector heads and RoPE tables, a Llama causal LM).

Each expert of the result computes what its source computes (the references of test_conversion_nveagle, fed the source
tensors); text logits equal the source LLM's; the result loads without the package and trains with the recipes.
"""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, LlamaForCausalLM, Pix2StructConfig, SamConfig
from transformers.models.pix2struct.modeling_pix2struct import Pix2StructForConditionalGeneration
from transformers.models.sam.modeling_sam import SamModel

from conversion_fixtures import convnext_state, eva02_state, source_tokenizer
from eagle_hf.configuration_eagle import EagleConfig
from eagle_hf.conversion import ConversionError
from eagle_hf.conversion.init import init_checkpoint
from eagle_hf.modeling_eagle import EagleForConditionalGeneration
from llava_reference import randomize_
from test_conversion_nveagle import reference_grid
from tiny import TINY_BACKBONES, tiny_expert, tiny_text_config

SOURCE_VOCAB = 95
X5 = ("clip", "convnext", "sam", "eva02", "pix2struct")
TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50,
            bos_token_id=0, eos_token_id=1, pad_token_id=1)
EVA = dict(TINY_BACKBONES["eva02"], window_size=2, image_size=64)  # window 2x2 of a 4x4 map: the schedule shows


def expert_overrides(kinds):
    """The tiny input contract (image sizes, patches); the backbones' sizes come from the sources."""
    return {kind: {k: v for k, v in tiny_expert(kind).items() if k not in ("kind", "backbone_config")}
            for kind in kinds}


def write_sources(root, seed=0):
    """{role: (folder or file, state in the source's own key names)} in each released layout."""
    from eagle_hf.configuration_eva02 import Eva02VisionConfig

    root.mkdir(parents=True, exist_ok=True)
    sources = {}
    llm = randomize_(LlamaForCausalLM(tiny_text_config(vocab_size=SOURCE_VOCAB)), seed)
    llm.save_pretrained(root / "llm")
    source_tokenizer().save_pretrained(root / "llm")
    sources["llm"] = (root / "llm", llm.state_dict())
    clip = randomize_(CLIPModel(CLIPConfig(vision_config=dict(TINY_BACKBONES["clip"], image_size=32),
                                           text_config=TEXT)), seed + 1)
    clip.save_pretrained(root / "clip")
    sources["clip"] = (root / "clip", clip.state_dict())
    convnext = convnext_state(EagleConfig(vision_experts=[tiny_expert("convnext")]).vision_experts[0].backbone_config,
                              seed + 2)
    (root / "convnext").mkdir()
    save_file(convnext, root / "convnext" / "model.safetensors")
    (root / "convnext" / "config.json").write_text(json.dumps({"architecture": "convnext_xxlarge", "num_classes": 10}))
    sources["convnext"] = (root / "convnext", convnext)
    sam_config = SamConfig(vision_config=dict(TINY_BACKBONES["sam"], image_size=64),
                           prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8,
                                                      mask_input_channels=4),
                           mask_decoder_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                    mlp_dim=32, iou_head_hidden_dim=16))
    sam = randomize_(SamModel(sam_config), seed + 3)
    sam.save_pretrained(root / "sam")
    sources["sam"] = (root / "sam", sam.state_dict())
    pix = randomize_(Pix2StructForConditionalGeneration(Pix2StructConfig(
        vision_config=TINY_BACKBONES["pix2struct"], text_config=dict(vocab_size=50, hidden_size=32, d_kv=16, d_ff=48,
                                                                      num_layers=1, num_heads=2))), seed + 4)
    pix.save_pretrained(root / "pix2struct")
    sources["pix2struct"] = (root / "pix2struct", pix.state_dict())
    eva = eva02_state(Eva02VisionConfig(**EVA), seed + 5)
    detector = {"model": {**{"backbone.net." + key: value for key, value in eva.items()},
                          "roi_heads.box_predictor.cls_score.weight": torch.randn(3, 8),
                          "backbone.simfp_2.0.weight": torch.randn(4, 4)}, "iteration": 7}
    torch.save(detector, root / "eva02_det.pth")
    sources["eva02"] = (root / "eva02_det.pth", eva)
    return sources


def run_init(sources, output, kinds=X5, preset="eagle_x5", **kwargs):
    experts = {kind: str(sources[kind][0]) for kind in kinds}
    size = dict(image_size=32) if preset == "llava_1_5" else dict(image_size=64)
    return init_checkpoint(str(output), preset, str(sources["llm"][0]), experts=experts,
                           expert_overrides=expert_overrides(kinds), config_overrides=dict(size, grid_size=4),
                           **kwargs)


def stripped(state, prefix):
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


@pytest.fixture(scope="module")
def x5(tmp_path_factory):
    root = tmp_path_factory.mktemp("init")
    sources = write_sources(root / "sources")
    config = run_init(sources, root / "out")
    model = EagleForConditionalGeneration.from_pretrained(root / "out").eval()
    return sources, config, model, root


REFERENCE_SOURCE = {  # the source tensors under the names the references of test_conversion_nveagle read
    "clip": lambda state: stripped(state, ""),
    "convnext": lambda state: state,
    "sam": lambda state: stripped(state, "vision_encoder."),
    "eva02": lambda state: state,
    "pix2struct": lambda state: stripped(state, "encoder."),
}


def test_each_expert_computes_what_its_source_model_computes(x5):
    sources, config, model, _ = x5
    torch.manual_seed(0)
    pixel_values = torch.randn(2, 3, config.image_size, config.image_size)
    for index, kind in enumerate(X5):
        expert = config.vision_experts[index]
        source = REFERENCE_SOURCE[kind](sources[kind][1])
        if kind == "clip":
            source = {k: v for k, v in source.items() if k.startswith("vision_model.")}
        with torch.no_grad():
            ours = model.model.vision_tower.experts[index](pixel_values)
            reference = reference_grid(kind, source, expert, pixel_values, config)
        torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0, msg=lambda text, kind=kind: f"{kind}: {text}")


def test_sizes_come_from_the_sources_and_the_eva_schedule_from_its_rope_tables(x5):
    _, config, _, _ = x5
    by_kind = {expert.kind: expert.backbone_config for expert in config.vision_experts}
    assert by_kind["convnext"].hidden_sizes == TINY_BACKBONES["convnext"]["hidden_sizes"]
    assert by_kind["convnext"].depths == [1, 1, 1, 1]
    assert by_kind["eva02"].window_size == 2 and list(by_kind["eva02"].global_attn_indexes) == [1]
    assert by_kind["eva02"].num_attention_heads == 2 and by_kind["eva02"].intermediate_size == 48
    assert by_kind["sam"].hidden_size == 32 and by_kind["pix2struct"].d_ff == 48 and by_kind["clip"].hidden_size == 32


def test_text_logits_equal_the_source_llms_and_the_new_rows_are_the_mean(x5):
    sources, config, model, _ = x5
    llm = LlamaForCausalLM(tiny_text_config(vocab_size=SOURCE_VOCAB)).eval()
    llm.load_state_dict(sources["llm"][1])
    ids = torch.tensor([[1, 7, 8, 9, 30]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits[..., :SOURCE_VOCAB], llm(input_ids=ids).logits,
                                   atol=1e-6, rtol=0)
    embedding = model.get_input_embeddings().weight
    assert config.image_token_id == SOURCE_VOCAB and embedding.shape[0] == 128
    torch.testing.assert_close(embedding[SOURCE_VOCAB], llm.get_input_embeddings().weight.mean(0))


def test_the_folder_loads_without_the_package_and_names_every_source(x5):
    sources, config, _, root = x5
    card = (root / "out" / "README.md").read_text()
    assert all(str(sources[role][0]) in card for role in ("llm", *X5))
    processor = json.loads((root / "out" / "processor_config.json").read_text())
    assert processor["num_image_tokens"] == config.image_seq_length and processor["tokenize_chunks"] is False
    script = (
        "import sys; sys.modules['eagle_hf'] = None\n"
        "import torch\n"
        "from transformers import AutoModelForImageTextToText, AutoProcessor\n"
        f"model = AutoModelForImageTextToText.from_pretrained({str(root / 'out')!r}, trust_remote_code=True)\n"
        f"processor = AutoProcessor.from_pretrained({str(root / 'out')!r}, trust_remote_code=True)\n"
        "from PIL import Image\n"
        "inputs = processor(text='USER: <image>\\nhi ASSISTANT:', images=Image.new('RGB', (30, 20)),\n"
        "                   return_tensors='pt')\n"
        "print(type(model).__name__, model.generate(**inputs, max_new_tokens=2, do_sample=False).shape[1] > 2)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().endswith("EagleForConditionalGeneration True"), result.stderr[-2000:]


def test_llava_1_5_starts_from_a_clip_and_an_llm(tmp_path):
    sources = write_sources(tmp_path / "sources")
    config = run_init(sources, tmp_path / "out", kinds=("clip",), preset="llava_1_5")
    assert [expert.kind for expert in config.vision_experts] == ["clip"]
    assert config.vision_experts[0].feature_layer == -2
    model = EagleForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert model.config.text_config.vocab_size == 128


# ----- bad input: a clear error naming the problem, and no output -----


@pytest.fixture(scope="module")
def bad_sources(tmp_path_factory):
    return write_sources(tmp_path_factory.mktemp("bad") / "sources")


def assert_refused(tmp_path, match, sources, **kwargs):
    with pytest.raises(ConversionError, match=match):
        run_init(sources, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_an_unknown_expert_kind_is_refused_with_the_presets_kinds(tmp_path, bad_sources):
    with pytest.raises(ConversionError, match=r"names \['dino'\], but the eagle_x5 preset's experts are"):
        init_checkpoint(str(tmp_path / "out"), "eagle_x5", str(bad_sources["llm"][0]), experts={"dino": "x/y"})


def test_a_source_of_the_wrong_architecture_is_refused_naming_the_expert(tmp_path, bad_sources):
    swapped = dict(bad_sources, clip=bad_sources["sam"])
    assert_refused(tmp_path, r"expert 0 \(clip, from .*sam\).*model_type 'sam'", swapped)


def test_a_source_that_does_not_fit_the_preset_names_the_key_and_both_shapes(tmp_path, bad_sources):
    with pytest.raises(ConversionError, match=r"expert 0 \(clip.*position_embedding.weight has shape \[17, 32\] but "
                                              r"the preset needs \[5, 32\]"):
        init_checkpoint(str(tmp_path / "out"), "llava_1_5", str(bad_sources["llm"][0]),
                        experts={"clip": str(bad_sources["clip"][0])},
                        expert_overrides={"clip": {"image_size": 16}}, config_overrides=dict(image_size=16,
                                                                                             grid_size=2))
    assert not (tmp_path / "out").exists()


def test_a_missing_shard_is_refused_by_name(tmp_path, bad_sources):
    import shutil

    broken = tmp_path / "pix"
    shutil.copytree(bad_sources["pix2struct"][0], broken)
    (broken / "model.safetensors").unlink()
    assert_refused(tmp_path, r"No weights in .*pix", dict(bad_sources, pix2struct=(broken, None)))


def test_an_llm_whose_tokenizer_already_has_an_image_token_is_refused(tmp_path, bad_sources):
    import shutil

    llm = tmp_path / "llm"
    shutil.copytree(bad_sources["llm"][0], llm)
    tokenizer = source_tokenizer()
    tokenizer.add_tokens(["<image>"])
    tokenizer.save_pretrained(llm)
    assert_refused(tmp_path, r"already has '<image>'", dict(bad_sources, llm=(llm, None)))


def test_a_non_empty_output_is_refused_before_anything_is_read(tmp_path, bad_sources):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="exists and is not empty"):
        init_checkpoint(str(tmp_path / "out"), "eagle_x5", "/nonexistent/llm")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


# ----- the repository's recipes start from it -----


@pytest.mark.parametrize("recipe_name, preset, kinds", [("llava_1_5", "llava_1_5", ("clip",)),
                                                        ("eagle_x5", "eagle_x5", X5)])
def test_the_repositorys_recipes_run_two_steps_per_stage_from_the_init_checkpoint(tmp_path, recipe_name, preset,
                                                                                   kinds):
    import os

    from eagle_hf.training import load_recipe, run_plan
    from tiny import synthetic_caption_records

    sources = write_sources(tmp_path / "sources")
    run_init(sources, tmp_path / "init", kinds=kinds, preset=preset)
    records = synthetic_caption_records(tmp_path / "images", 4)
    (tmp_path / "data.json").write_text(json.dumps(records))
    recipe_path = os.path.join(os.path.dirname(__file__), "..", "training_scripts", "recipes", f"{recipe_name}.yaml")
    recipe = load_recipe(recipe_path)
    overrides = [f"model.init={tmp_path / 'init'}", "model.dtype=float32", "per_device_batch_size=2",
                 "trainer.bf16=false", "trainer.tf32=false", "trainer.gradient_checkpointing=false",
                 "trainer.dataloader_num_workers=0", 'trainer.save_strategy="no"', "trainer.report_to=none"]
    for data in ("pretrain", "sft"):
        overrides += [f"data.{data}.json={tmp_path / 'data.json'}", f"data.{data}.image_folder={tmp_path / 'images'}"]
    for stage in recipe.plan:
        overrides += [f"stages.{stage}.{key}={value}" for key, value in
                      (("max_steps", 2), ("global_batch_size", 2), ("per_device_batch_size", 2))]
    results = run_plan(load_recipe(recipe_path, overrides), str(tmp_path / "run"))
    expected = len(recipe.plan) + (len(kinds) - 1 if "eagle_prealign" in recipe.plan else 0)
    assert len(results) == expected and all(result.global_step == 2 for result in results)


def test_the_command_line_builds_llava_1_5_at_the_presets_own_resolution(tmp_path, capsys):
    from eagle_hf.cli import main

    sources = write_sources(tmp_path / "sources")
    clip = randomize_(CLIPModel(CLIPConfig(vision_config=dict(TINY_BACKBONES["clip"], image_size=336),
                                           text_config=TEXT)), 3)
    clip.save_pretrained(tmp_path / "clip336")
    assert main(["init", str(tmp_path / "out"), "--preset", "llava_1_5", "--llm", str(sources["llm"][0]),
                 "--expert", f"clip={tmp_path / 'clip336'}", "--dtype", "float32"]) == 0
    assert "Wrote" in capsys.readouterr().out
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["vision_experts"][0]["backbone_config"]["image_size"] == 336 and config["grid_size"] == 24
    assert main(["init", str(tmp_path / "other"), "--preset", "llava_1_5", "--llm", str(sources["llm"][0]),
                 "--expert", f"clip={tmp_path / 'clip336'}", "--expert", "sam=x/y"]) == 1
    assert "names ['sam'], but the llava_1_5 preset's experts are ['clip']" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


INIT_FROM_HUB = """
import sys
from eagle_hf.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_hub_sources_are_downloaded_and_their_licences_named_in_the_card(tmp_path):
    import os

    from fake_hub import FakeHub, FakeRepo
    from test_conversion_cli import SRC, TESTS, fresh_env

    sources = write_sources(tmp_path / "sources")
    clip = randomize_(CLIPModel(CLIPConfig(vision_config=dict(TINY_BACKBONES["clip"], image_size=336),
                                           text_config=TEXT)), 3)
    clip.save_pretrained(tmp_path / "clip336")
    (tmp_path / "clip336" / "README.md").write_text("---\nlicense: mit\n---\n# tiny CLIP\n")
    with FakeHub() as hub:
        for repo_id, folder in (("lmsys/vicuna-tiny", sources["llm"][0]), ("openai/clip-tiny", tmp_path / "clip336")):
            hub.repos[repo_id] = repo = FakeRepo(repo_id)
            repo.commit({**repo.resolve("main")[1], **{p.name: p.read_bytes() for p in folder.iterdir()}}, "upload")
        argv = ["init", str(tmp_path / "out"), "--preset", "llava_1_5", "--llm", "lmsys/vicuna-tiny", "--expert",
                "clip=openai/clip-tiny"]
        env = fresh_env(tmp_path / "hf_home", HF_ENDPOINT=hub.url, PYTHONPATH=f"{SRC}{os.pathsep}{TESTS}")
        result = subprocess.run([sys.executable, "-c", INIT_FROM_HUB, *argv], env=env, capture_output=True, text=True,
                                timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "- lmsys/vicuna-tiny\n- openai/clip-tiny\n" in card and "| clip | `openai/clip-tiny` | mit |" in card
