"""`eagle-hf update-code`: a checkpoint saved with older code gets the installed package's code files, and loads."""

import os
import subprocess
import sys

import pytest

from eagle_hf.cli import main
from eagle_hf.hub.code import PACKAGE_DIR, shipped_code_files, update_checkpoint_code
from test_remote_code import LOADER, save_tiny_checkpoint
from tiny import tiny_eagle_config, tiny_processor

STALE = "raise ImportError('code saved by an older eagle-hf')\n"


def load_without_the_package(path, tmp_path):
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", PYTHONPATH="")
    return subprocess.run([sys.executable, "-c", LOADER, str(path)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)


def test_the_shipped_files_are_exactly_the_ones_save_pretrained_writes(tmp_path):
    save_tiny_checkpoint(tmp_path)
    tiny_processor(tiny_eagle_config()).save_pretrained(tmp_path)  # the processor's code files too
    assert shipped_code_files() == sorted(p.name for p in tmp_path.glob("*.py"))


def test_stale_code_is_rewritten_atomically_and_the_checkpoint_loads_again_with_the_same_numbers(tmp_path, capsys):
    checkpoint = tmp_path / "ckpt"
    save_tiny_checkpoint(checkpoint)
    tiny_processor(tiny_eagle_config()).save_pretrained(checkpoint)
    (checkpoint / "modeling_eagle.py").write_text(STALE)
    (checkpoint / "fusion.py").unlink()  # a file newer code needs that an old checkpoint lacks
    weights_before = (checkpoint / "model.safetensors").read_bytes()
    config_before = (checkpoint / "config.json").read_text()
    failed = load_without_the_package(checkpoint, tmp_path)
    assert failed.returncode != 0  # fusion.py missing, or the stale modeling file raising

    assert main(["update-code", str(checkpoint), "--dry-run"]) == 0
    assert "  updated  modeling_eagle.py" in capsys.readouterr().out
    assert (checkpoint / "modeling_eagle.py").read_text() == STALE and not (checkpoint / "fusion.py").exists()

    report = dict(update_checkpoint_code(checkpoint))
    assert report["modeling_eagle.py"] == "updated" and report["fusion.py"] == "added"
    assert {status for name, status in report.items() if name not in ("modeling_eagle.py", "fusion.py")} == {
        "unchanged"}
    for name in shipped_code_files():
        assert (checkpoint / name).read_bytes() == (PACKAGE_DIR / name).read_bytes(), name
    assert not [p for p in checkpoint.iterdir() if p.name.startswith(".")]  # no staging file left behind
    assert (checkpoint / "model.safetensors").read_bytes() == weights_before
    assert (checkpoint / "config.json").read_text() == config_before
    assert set(dict(update_checkpoint_code(checkpoint)).values()) == {"unchanged"}

    loaded = load_without_the_package(checkpoint, tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]  # identical logits and greedy tokens (LOADER asserts them)
    assert "loaded with AutoModelForImageTextToText" in loaded.stdout


def test_a_folder_that_is_not_an_eagle_checkpoint_is_refused_saying_what_was_expected(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="holds no config.json: expected the folder of an eagle-hf"):
        update_checkpoint_code(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llava", "auto_map": {"AutoConfig": "my_code.MyConfig"}}')
    with pytest.raises(ValueError, match=r"has auto_map \{'AutoConfig': 'my_code.MyConfig'\}; expected an eagle-hf"):
        update_checkpoint_code(tmp_path)
    assert main(["update-code", str(tmp_path)]) == 2
    assert "expected an eagle-hf checkpoint" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # nothing written
