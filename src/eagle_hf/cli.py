"""Command line: `eagle-hf demo | presets | convert | eval | search-experts | update-code`."""

import argparse
import sys

from .configuration_eagle import EagleConfig

PRESETS = {"llava_1_5": EagleConfig.llava_1_5, "eagle_x4": EagleConfig.eagle_x4, "eagle_x5": EagleConfig.eagle_x5}


def presets_table():
    """Markdown table of every preset's experts, built from the configs themselves (nothing is downloaded)."""
    lines = ["| preset | expert | input | layer | native map | to grid | channels |", "|---|---|---|---|---|---|---|"]
    for name, build in PRESETS.items():
        config = build()
        for expert in config.vision_experts:
            side = expert.feature_map_size
            lines.append(
                f"| {name} | {expert.kind} | {expert.image_size} | {expert.feature_layer} | {side}x{side} | "
                f"{expert.grid_resample} -> {config.grid_size}x{config.grid_size} | {expert.hidden_size} |"
            )
        lines.append(
            f"| {name} | **fused** ({config.fusion}) | {config.image_size} | | | {config.image_seq_length} tokens | "
            f"**{config.mm_hidden_size}** |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="eagle-hf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    from .demo import add_demo_arguments, run_demo

    add_demo_arguments(commands.add_parser(
        "demo", help="train a small Eagle from scratch on CPU with data made on the spot, evaluate it, save and reload it"))
    commands.add_parser("presets", help="print the experts, maps and channels of every preset")
    from .conversion import add_convert_arguments, run_convert
    from .evaluation.cli import add_eval_arguments, run_eval

    add_convert_arguments(commands.add_parser(
        "convert", help="convert an original Eagle / LLaVA-1.5 or a transformers LLaVA checkpoint"))
    add_eval_arguments(commands.add_parser("eval", help="run benchmarks on a checkpoint and summarise them"))
    from .search.cli import add_search_arguments, run_search

    add_search_arguments(commands.add_parser(
        "search-experts", help="greedy search over vision experts on the demo's synthetic scenes"))
    from .hub.code import add_update_code_arguments, run_update_code

    add_update_code_arguments(commands.add_parser(
        "update-code", help="rewrite a saved checkpoint's model and processor code with this eagle-hf's"))
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args)
    if args.command == "presets":
        sys.stdout.write(presets_table() + "\n")
        return 0
    if args.command == "convert":
        return run_convert(args)
    if args.command == "eval":
        return run_eval(args)
    if args.command == "search-experts":
        return run_search(args)
    if args.command == "update-code":
        return run_update_code(args)
    return 0
