"""Bringing the code inside a saved checkpoint up to the installed eagle-hf.

A checkpoint carries its model and processor code (flat files next to the weights); a folder saved by an older eagle-hf
keeps that older code, which may not run on a newer transformers (5.24 renamed the cache in every model output, which
broke the code of eagle-hf 0.1.0's first checkpoints). `update_checkpoint_code` rewrites those files with the installed
package's, leaving weights, configs and tokenizer untouched; `eagle-hf update-code CKPT` is the command line.
"""

import filecmp
import json
import os
import tempfile
from pathlib import Path

from transformers.dynamic_module_utils import get_relative_import_files

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The modules the checkpoint's auto_map entries name (model, config, processor, image processor).
ENTRY_FILES = ("configuration_eagle.py", "modeling_eagle.py", "processing_eagle.py", "image_processing_eagle.py")


def shipped_code_files():
    """The flat files a checkpoint carries: the entry modules and every sibling they import, gathered the way
    transformers' `save_pretrained` gathers them."""
    names = set(ENTRY_FILES)
    for entry in ENTRY_FILES:
        names.update(Path(path).name for path in get_relative_import_files(PACKAGE_DIR / entry))
    return sorted(names)


def update_checkpoint_code(folder, dry_run=False):
    """Rewrites the code files of the eagle-hf checkpoint in `folder` with the installed package's, each atomically.
    Returns [(file name, "updated" | "added" | "unchanged")]; with `dry_run`, only says what it would do."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} holds no config.json: expected the folder of an eagle-hf checkpoint.")
    auto_map = json.loads(config_path.read_text()).get("auto_map") or {}
    if not str(auto_map.get("AutoConfig", "")).startswith("configuration_eagle."):
        raise ValueError(f"{config_path} has auto_map {auto_map or None}; expected an eagle-hf checkpoint, whose "
                         f"AutoConfig entry is 'configuration_eagle.EagleConfig'.")
    report = []
    for name in shipped_code_files():
        source, target = PACKAGE_DIR / name, folder / name
        if not target.exists():
            status = "added"
        else:
            status = "unchanged" if filecmp.cmp(source, target, shallow=False) else "updated"
        if status != "unchanged" and not dry_run:
            with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=f".{name}.", delete=False) as staging:
                staging.write(source.read_bytes())
            os.replace(staging.name, target)
        report.append((name, status))
    return report


def add_update_code_arguments(parser):
    parser.add_argument("checkpoint", help="folder of a saved eagle-hf checkpoint (config.json with its auto_map)")
    parser.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")


def run_update_code(args):
    try:
        report = update_checkpoint_code(args.checkpoint, dry_run=args.dry_run)
    except (FileNotFoundError, ValueError) as error:
        print(f"eagle-hf update-code: {error}")
        return 2
    verb = "would be" if args.dry_run else "were"
    for name, status in report:
        print(f"{status:>9}  {name}")
    changed = sum(status != "unchanged" for _, status in report)
    print(f"{changed} of {len(report)} code files {verb} written in {args.checkpoint}; weights, configs and tokenizer "
          f"are untouched. Push the folder again (push_checkpoint or huggingface_hub) to update a Hub copy.")
    return 0
