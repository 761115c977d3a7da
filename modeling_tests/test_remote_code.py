"""A saved checkpoint carries its flat model files and loads through the Auto classes where eagle_hf is not importable."""

import ast
import json
import os
import subprocess
import sys
import textwrap

import torch

from eagle_hf import EagleForConditionalGeneration, EagleImageProcessor
from tiny import image_prompt, tiny_eagle_config

SHIPPED = {
    "configuration_eagle.py", "configuration_experts.py", "configuration_eva02.py", "fusion.py", "modeling_eagle.py",
    "modeling_eva02.py",
    "pix2struct_patches.py", "vision_experts.py",
}
# What a checkpoint's files may import besides each other: transformers' own requirements and the standard library.
ALLOWED_IMPORTS = {"torch", "transformers", "huggingface_hub", "numpy", "PIL", *sys.stdlib_module_names}


def save_tiny_checkpoint(path):
    config = tiny_eagle_config()
    torch.manual_seed(0)
    model = EagleForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    EagleImageProcessor(image_size=config.image_size).save_pretrained(path)
    input_ids, pixel_values = image_prompt(config)
    with torch.no_grad():
        logits = model(input_ids=input_ids, pixel_values=pixel_values).logits
    tokens = model.generate(input_ids=input_ids, pixel_values=pixel_values, max_new_tokens=5, do_sample=False)
    torch.save(dict(input_ids=input_ids, pixel_values=pixel_values, logits=logits, tokens=tokens), path / "ref.pt")
    return model


def test_save_writes_the_flat_model_files_and_a_cross_version_auto_map(tmp_path):
    save_tiny_checkpoint(tmp_path)
    assert SHIPPED <= {p.name for p in tmp_path.iterdir()}
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_eagle.EagleConfig",
        "AutoModel": "modeling_eagle.EagleModel",
        "AutoModelForCausalLM": "modeling_eagle.EagleForConditionalGeneration",
        "AutoModelForImageTextToText": "modeling_eagle.EagleForConditionalGeneration",
        "AutoModelForVision2Seq": "modeling_eagle.EagleForConditionalGeneration",
    }


def test_shipped_files_import_only_each_other_torch_transformers_and_the_standard_library(tmp_path):
    save_tiny_checkpoint(tmp_path)
    for name in SHIPPED:
        for node in ast.walk(ast.parse((tmp_path / name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert f"{node.module}.py" in SHIPPED, f"{name}: from .{node.module} import ..."
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
                for module in modules:
                    assert module.split(".")[0] in ALLOWED_IMPORTS, f"{name}: imports {module}"


LOADER = textwrap.dedent(
    """
    import sys
    sys.modules["eagle_hf"] = None  # the package must not be importable: only the checkpoint's files may run
    import torch, transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText
    path = sys.argv[1]
    ref = torch.load(path + "/ref.pt")
    classes = [AutoModelForImageTextToText]
    if int(transformers.__version__.split(".")[0]) < 5:
        from transformers import AutoModelForVision2Seq
        classes.append(AutoModelForVision2Seq)
    assert AutoConfig.from_pretrained(path, trust_remote_code=True).mm_hidden_size == 192
    assert AutoImageProcessor.from_pretrained(path, trust_remote_code=True).image_size == 64
    for auto_class in classes:
        model = auto_class.from_pretrained(path, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(input_ids=ref["input_ids"], pixel_values=ref["pixel_values"]).logits
        assert torch.equal(logits, ref["logits"]), (logits - ref["logits"]).abs().max()
        tokens = model.generate(input_ids=ref["input_ids"], pixel_values=ref["pixel_values"], max_new_tokens=5,
                                do_sample=False)
        assert torch.equal(tokens, ref["tokens"]), (tokens, ref["tokens"])
        print("loaded with", auto_class.__name__)
    """
)


def test_checkpoint_loads_through_the_auto_classes_in_a_fresh_process_without_the_package(tmp_path):
    save_tiny_checkpoint(tmp_path / "ckpt")
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path / "ckpt")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded with AutoModelForImageTextToText" in result.stdout


CONFIG_ONLY = textwrap.dedent(
    """
    import sys
    sys.modules["eagle_hf"] = None
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)
    assert type(config).__module__.startswith("transformers_modules"), type(config).__module__
    modeling = sorted(name for name in sys.modules if ".modeling_" in f".{name}" and not name.endswith("modeling_auto")
                      and not name.startswith(("transformers.modeling_", "accelerate.")))
    print("config", config.mm_hidden_size, "modeling modules:", modeling)
    """
)


def test_loading_a_config_as_remote_code_imports_no_modeling_module(tmp_path):
    """The configuration side (configuration_eagle, configuration_experts, configuration_eva02) holds every fact a
    config needs; no modeling file of ours or of transformers' backbones is imported to load one."""
    save_tiny_checkpoint(tmp_path / "ckpt")
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", CONFIG_ONLY, str(tmp_path / "ckpt")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "config 192 modeling modules: []" in result.stdout, result.stdout
