"""Hub publishing, offline: model cards rendered from model_cards/, and a push / pull round trip through the fake Hub
of `fake_hub.py` (127.0.0.1 only), pulled back in fresh processes where eagle_hf cannot be imported, on this
transformers and on the other major (see `other_env.py`)."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
import transformers
from huggingface_hub import ModelCard

from eagle_hf.hub import detect_variant, load_card_facts, render_model_card
from fake_hub import FakeHub
from other_env import other_env  # noqa: F401  (the session fixture, requested by name below)
from other_env import run_script, sample_image, transformers_major
from tiny import tiny_eagle_config, tiny_expert, tiny_llava_config

REPO_ID = "org/eagle-x5"
RAW_REPO_ID = "org/eagle-x5-raw"  # pushed with transformers' own model.push_to_hub / processor.push_to_hub
EVAL_RESULTS = [
    dict(dataset="MME", dataset_type="lmms-lab/MME", split="test", metric="perception", value=1528.4),
    dict(dataset="TextVQA", dataset_type="lmms-lab/textvqa", split="validation", metric="accuracy", value=70.9),
]
X5_CHECKPOINTS = ["openai/clip-vit-large-patch14-336", "timm/convnext_xxlarge.clip_laion2b_soup_ft_in1k",
                  "facebook/sam-vit-large", "Yuxin-CV/EVA-02", "google/pix2struct-large"]
SHIPPED = {"configuration_eagle.py", "configuration_experts.py", "configuration_eva02.py", "fusion.py",
           "modeling_eagle.py", "modeling_eva02.py", "pix2struct_patches.py", "vision_experts.py",
           "image_processing_eagle.py", "processing_eagle.py", "text_processing_eagle.py"}


# ----- model cards -----


def test_the_variant_is_read_from_the_ordered_expert_kinds():
    facts = load_card_facts()
    assert detect_variant(tiny_eagle_config(), facts) == "eagle_x5"
    assert detect_variant(tiny_eagle_config(kinds=("clip", "convnext", "eva02", "pix2struct")), facts) == "eagle_x4"
    assert detect_variant(tiny_llava_config(), facts) == "llava_1_5"
    assert detect_variant(tiny_eagle_config(kinds=("convnext", "clip")), facts) == "custom"
    custom = tiny_eagle_config(vision_experts=[tiny_expert("siglip"), tiny_expert("dinov2")])
    assert detect_variant(custom, facts) == "custom"


def test_every_expert_kind_has_a_source_checkpoint_and_licence_in_the_card_data():
    from eagle_hf.vision_experts import EXPERT_KINDS

    experts = load_card_facts()["experts"]
    assert set(experts) == set(EXPERT_KINDS)
    for kind, facts in experts.items():
        assert facts["checkpoint"] and facts["license"] and facts["name"], kind


def test_the_eagle_x5_card_has_the_hub_metadata_both_loaders_and_the_evaluation_table(tmp_path):
    # Weights built from the released parts (as `eagle-hf init` writes them) name those parts as base models.
    card = render_model_card(tiny_eagle_config(), REPO_ID, eval_results=EVAL_RESULTS,
                             base_models=["lmsys/vicuna-7b-v1.5", *X5_CHECKPOINTS])
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")  # a local file: nothing is fetched
    assert loaded.content == card.content
    data = loaded.data
    assert data.license == "cc-by-nc-sa-4.0"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "image-text-to-text"
    assert data.base_model == ["lmsys/vicuna-7b-v1.5", *X5_CHECKPOINTS] and data.base_model_relation == "finetune"
    assert {"eagle-hf", "eagle", "mixture-of-vision-experts"} <= set(data.tags)
    assert data.datasets == ["liuhaotian/LLaVA-Pretrain", "shi-labs/Eagle-1.8M"]
    assert [(r.dataset_name, r.metric_type, r.metric_value) for r in data.eval_results] == [
        ("MME", "perception", 1528.4), ("TextVQA", "accuracy", 70.9)]
    text = loaded.text
    assert f'AutoModelForImageTextToText.from_pretrained("{REPO_ID}", trust_remote_code=True' in text
    assert f'AutoModelForVision2Seq.from_pretrained("{REPO_ID}", trust_remote_code=True' in text
    assert f'pipeline("image-text-to-text", model="{REPO_ID}", trust_remote_code=True)' in text
    assert "| MME | test | perception | 1528.4 |" in text
    assert "| TextVQA | validation | accuracy | 70.9 |" in text
    assert "| 2. supervised fine-tuning | experts, projector, LLM | 2e-5 |" in text
    for checkpoint in X5_CHECKPOINTS:
        assert f"[{checkpoint}](https://huggingface.co/{checkpoint})" in text
    for line in ("language model, Vicuna-7B v1.5: `llama2`", "Pix2Struct-Large encoder (Google): `apache-2.0`",
                 "Segment Anything ViT-L image encoder (Meta): `apache-2.0`"):
        assert line in text


def test_a_card_without_results_says_so_and_has_no_model_index(tmp_path):
    card = render_model_card(tiny_llava_config(), "org/llava-1.5",
                             base_models=["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336"])
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.license == "llama2"
    assert loaded.data.base_model == ["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336"]
    assert loaded.data.eval_results is None and "model-index" not in loaded.data.to_dict()
    assert "No evaluation results were recorded for this checkpoint." in loaded.text
    assert "| 1. feature alignment | projector | 1e-3 |" in loaded.text


def test_weights_of_no_recorded_source_claim_no_base_model_and_no_expert_source(tmp_path):
    card = render_model_card(tiny_eagle_config(), REPO_ID)  # e.g. trained from random initialisation
    assert card.data.base_model is None and card.data.to_dict().get("base_model_relation") is None
    assert "| 0 | clip | not recorded |" in card.text and "openai/clip-vit-large-patch14-336" not in card.text
    assert card.data.license is None and "language model, Vicuna" not in card.text
    assert "No training stages were recorded for this checkpoint." in card.text


def test_weights_sources_read_the_card_of_the_folder_or_the_hub_id_they_were_loaded_from(tmp_path):
    from eagle_hf.hub import weights_sources

    render_model_card(tiny_llava_config(), base_models=["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336"]
                      ).save(tmp_path / "README.md")
    assert weights_sources(str(tmp_path)) == ["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336"]
    assert weights_sources("NVEagle/Eagle-X5-7B") == ["NVEagle/Eagle-X5-7B"]
    (tmp_path / "bare").mkdir()
    assert weights_sources(str(tmp_path / "bare")) == [] and weights_sources("") == []


def test_card_data_and_training_stages_given_by_the_caller_win():
    Stage = pytest.importorskip("eagle_hf.training.stages", reason="the training extras are not installed").Stage
    stages = [Stage(name="align", train=("projector",), learning_rate=1e-3, data="pretrain", template="plain"),
              Stage(name="sft", train=("experts", "projector", "llm"), group_learning_rates={"experts": 2e-6})]
    card = render_model_card(tiny_eagle_config(), REPO_ID, training_stages=stages,
                             card_data={"license": "apache-2.0", "base_model": "NVEagle/Eagle-X5-7B"})
    assert card.data.license == "apache-2.0" and card.data.base_model == "NVEagle/Eagle-X5-7B"
    assert card.data.to_dict().get("base_model_relation") is None
    assert "| align | projector | 0.001 | pretrain, `plain` template |" in card.text
    assert "| sft | experts, projector, llm | 2e-05 (experts 2e-06) | sft, `vicuna_v1` template |" in card.text
    assert "This checkpoint: `apache-2.0`." in card.text


def test_malformed_evaluation_results_are_refused_with_the_missing_keys():
    with pytest.raises(ValueError, match=r"lacks \['value'\]"):
        render_model_card(tiny_eagle_config(), REPO_ID, eval_results=[dict(dataset="MME", metric="perception")])


# ----- push / pull through the fake Hub -----

PUBLISHER = """
import json, sys
import torch
torch.set_num_threads(1)
from eagle_hf.hub import push_checkpoint
from other_env import save_checkpoint
folder, repo_id, raw_repo_id, eval_results = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
model, processor, _ = save_checkpoint(folder)
model.push_to_hub(raw_repo_id, tags=["eagle-hf"])
processor.push_to_hub(raw_repo_id)
commit = push_checkpoint(model, processor, repo_id, eval_results=eval_results)
print("COMMIT", commit.oid)
"""


def hub_env(hub, home):
    """A fresh process's environment that talks to the fake Hub only (huggingface_hub reads these at import)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    return dict(env, HF_ENDPOINT=hub.url, HF_TOKEN="fake-token", HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
                HF_HUB_DISABLE_XET="1", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The fake Hub after one publisher process pushed the tiny Eagle-X5 three ways; stopped after the module."""
    folder = tmp_path_factory.mktemp("publisher")
    with FakeHub() as hub:
        env = dict(hub_env(hub, folder / "hf_home"), PYTHONPATH=os.pathsep.join([
            os.path.dirname(__file__), os.path.join(os.path.dirname(os.path.dirname(__file__)), "src")]))
        result = subprocess.run([sys.executable, "-c", PUBLISHER, str(folder / "local"), REPO_ID, RAW_REPO_ID,
                                 json.dumps(EVAL_RESULTS)], env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-5000:]}"
        commit = re.search(r"COMMIT ([0-9a-f]{40})", result.stdout).group(1)
        yield hub, folder / "local" / "reference.pt", commit


def test_push_checkpoint_uploads_weights_code_processor_and_card_in_one_commit(published):
    hub, _, commit = published
    repo = hub.repos[REPO_ID]
    assert repo.branches["main"] == commit and len(repo.snapshots) == 2  # the repo's initial commit, then ours
    files = hub.files(REPO_ID)
    expected = {"README.md", "config.json", "generation_config.json", "model.safetensors", "processor_config.json",
                "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} | SHIPPED
    assert expected <= set(files), sorted(expected - set(files))
    card = ModelCard(files["README.md"].decode())
    assert card.data.pipeline_tag == "image-text-to-text"
    # random weights built in the publisher: no base model, and no released variant's licence, claimed
    assert card.data.base_model is None and card.data.license is None
    assert "| MME | test | perception | 1528.4 |" in card.text
    auto_map = json.loads(files["config.json"])["auto_map"]
    assert auto_map["AutoModelForVision2Seq"] == auto_map["AutoModelForImageTextToText"]
    assert json.loads(files["tokenizer_config.json"])["tokenizer_class"] != "TokenizersBackend"  # 4.57 must read it


def test_transformers_push_to_hub_of_model_and_processor_gives_a_loadable_repo(published, tmp_path):
    hub, reference, _ = published
    files = hub.files(RAW_REPO_ID)
    assert {"config.json", "model.safetensors", "processor_config.json", "README.md"} | SHIPPED <= set(files)
    card = ModelCard(files["README.md"].decode())  # transformers' default card, tagged
    assert card.data.library_name == "transformers" and "eagle-hf" in card.data.tags
    output = run_script(sys.executable, "check", RAW_REPO_ID, reference, env=hub_env(hub, tmp_path / "empty_home"))
    assert "OK AutoModelForImageTextToText:" in output


def test_a_pushed_checkpoint_loads_from_the_hub_in_a_fresh_process_without_the_package(published, tmp_path):
    hub, reference, _ = published
    output = run_script(sys.executable, "check", REPO_ID, reference, "--pipeline",
                        env=hub_env(hub, tmp_path / "empty_home"))
    assert f"transformers {transformers.__version__} loads {REPO_ID}" in output
    for loader in (["AutoModelForVision2Seq"] if transformers_major(transformers.__version__) < 5 else []):
        assert f"OK {loader}:" in output
    assert "OK AutoModelForImageTextToText:" in output and "OK pipeline image-text-to-text" in output
    assert any(path.startswith(f"/{REPO_ID}/resolve/") for _, path, _ in hub.log)


def test_a_pushed_checkpoint_loads_from_the_hub_in_the_other_transformers(published, tmp_path, request):
    hub, reference, _ = published
    python, version, _ = request.getfixturevalue("other_env")
    output = run_script(python, "check", REPO_ID, reference, "--pipeline", env=hub_env(hub, tmp_path / "empty_home"))
    assert f"transformers {version} loads {REPO_ID}" in output
    for loader in (["AutoModelForVision2Seq"] if transformers_major(version) < 5 else []):
        assert f"OK {loader}:" in output
    assert "OK AutoModelForImageTextToText:" in output and "OK pipeline image-text-to-text" in output


def card_snippets(card_text, max_new_tokens):
    """The card's chat and pipeline snippets as one script, generating `max_new_tokens` tokens instead of 64."""
    blocks = re.findall(r"```python\n(.*?)```", card_text, flags=re.S)
    chosen = [block for block in blocks if "apply_chat_template" in block or "pipeline(" in block]
    assert len(chosen) == 2, blocks
    script = "\n".join(chosen)
    assert script.count("max_new_tokens=64") == 2
    return script.replace("max_new_tokens=64", f"max_new_tokens={max_new_tokens}")


@pytest.mark.parametrize("environment", ["main", "other"])
def test_the_card_snippets_run_against_the_pushed_repo_and_give_the_reference_answer(published, environment,
                                                                                     request, tmp_path):
    hub, reference_path, _ = published
    reference = torch.load(reference_path, weights_only=True)
    python = sys.executable if environment == "main" else request.getfixturevalue("other_env")[0]
    new_tokens = reference["tokens"].shape[1] - reference["inputs"]["input_ids"].shape[1]
    (tmp_path / "snippets.py").write_text(card_snippets(hub.files(REPO_ID)["README.md"].decode(), new_tokens))
    sample_image().save(tmp_path / "photo.jpg", format="PNG")  # lossless under the snippet's file name
    env = dict(hub_env(hub, tmp_path / "empty_home"), PYTHONPATH="")
    code = "import sys; sys.modules['eagle_hf'] = None; exec(open('snippets.py').read())"  # as a user, no package
    result = subprocess.run([python, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    answer = reference["generated_text"]
    assert result.stdout == f"{answer}\n{answer}\n"
