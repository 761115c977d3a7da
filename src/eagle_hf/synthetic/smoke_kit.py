"""`eagle-hf smoke-kit`: what a CPU smoke run of a training recipe needs, made on the spot: a tiny randomly
initialised starting checkpoint with the preset's expert kinds (the demo's sizes) and a few LLaVA-format samples
(captions for the alignment stages, question-answer conversations for the others) with their images.

    eagle-hf smoke-kit smoke --preset eagle_x5
    python training_scripts/sft.py --config training_scripts/recipes/eagle_x5.yaml --cpu --init smoke/init ...

Nothing trained here means anything: the run checks that a recipe's stages, data, checkpoints and merges work.
"""

import json
import os
from pathlib import Path

PRESETS = ("llava_1_5", "eagle_x4", "eagle_x5")


def add_smoke_kit_arguments(parser):
    parser.add_argument("output", help="folder to write (init/ and data/); must not exist or be empty")
    parser.add_argument("--preset", choices=PRESETS, default="eagle_x5", help="whose expert kinds (default eagle_x5)")
    parser.add_argument("--samples", type=int, default=16, help="samples per data file (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _llava_record(image_name, messages):
    roles = {"user": "human", "assistant": "gpt"}
    return {"image": image_name, "conversations": [{"from": roles[m["role"]], "value": m["content"]}
                                                   for m in messages]}


def write_smoke_kit(output, preset="eagle_x5", samples=16, seed=0):
    """Write `output/init` (checkpoint + processor) and `output/data/{captions,conversations}.json` + `images/`."""
    from ..configuration_eagle import EagleConfig
    from . import build
    from .scenes import CaptionRecords, ConversationRecords, SceneSplit, tokenizer_corpus

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {preset!r}.")
    if samples < 2:
        raise ValueError(f"samples must be at least 2, got {samples}.")
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output} exists and is not empty; choose a new folder.")
    kinds = [expert.kind for expert in getattr(EagleConfig, preset)().vision_experts]
    split = SceneSplit("smoke", seed, samples)
    tokenizer = build.train_tokenizer(build.tokenizer_texts(tokenizer_corpus(split)))
    config = build.demo_config(tokenizer, kinds)
    model = build.build_model(config, seed)
    processor = build.build_processor(config, tokenizer)
    model.save_pretrained(output / "init")
    processor.save_pretrained(output / "init")
    images = output / "data" / "images"
    images.mkdir(parents=True)
    captions, conversations = CaptionRecords(split), ConversationRecords(split)
    files = {"captions.json": [], "conversations.json": []}
    for index in range(samples):
        name = f"{index:04d}.png"
        split.image(index).save(images / name)
        files["captions.json"].append(_llava_record(name, captions.conversation(index)))
        files["conversations.json"].append(_llava_record(name, conversations.conversation(index)))
    for name, records in files.items():
        (output / "data" / name).write_text(json.dumps(records, indent=1), encoding="utf-8")
    return output


def run_smoke_kit(args):
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    output = write_smoke_kit(args.output, args.preset, args.samples, args.seed)
    print(f"wrote {output}/init (a tiny random {args.preset}) and {output}/data ({args.samples} captions and "
          f"conversations, images in {output}/data/images)")
    return 0


__all__ = ["add_smoke_kit_arguments", "run_smoke_kit", "write_smoke_kit"]
