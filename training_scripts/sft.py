"""Train Eagle / LLaVA-1.5 from a recipe: one stage or a whole plan; re-running skips finished stages and resumes an
interrupted one from its last checkpoint. The command line is TRL's (`TrlParser`): `--config` holds the recipe, every
`SFTConfig` field is a flag (`--help` lists them).

    accelerate launch --config_file training_scripts/accelerate_configs/multi_gpu.yaml training_scripts/sft.py \
        --config training_scripts/recipes/llava_1_5.yaml --output_dir runs/llava-1.5-7b
    ... sft.py --config ... --output_dir ... --stage llava_finetune --qlora --save_steps 200 --eval_fraction 0.01
    python training_scripts/sft.py merge --adapter runs/llava-1.5-7b/llava_finetune --output_dir llava-1.5-7b-merged
"""

import argparse
import logging
import os
import sys


def train(argv):
    from eagle_hf.training import run_plan
    from eagle_hf.training.plan import check_plan_inputs
    from eagle_hf.training.arguments import make_parser, parse_sft_args, recipe_from_args

    if any(token in ("-h", "--help") for token in argv):
        make_parser().print_help()
        return
    try:
        values, plan_args, output_dir = parse_sft_args(argv)
        recipe = recipe_from_args(values, plan_args)
        check_plan_inputs(recipe, plan_args.stage)
    except (ValueError, FileNotFoundError) as error:  # a mistake in the recipe, flags or paths: the message says which
        logging.getLogger("sft").error(f"sft.py: {error}")
        sys.exit(2)
    results = run_plan(recipe, output_dir, stages=plan_args.stage)
    for result in results:
        final = result.losses[-1][1] if result.losses else float("nan")
        state = "done earlier" if result.skipped else f"resumed from {result.resumed_from}" if result.resumed_from \
            else "trained"
        evaluated = f", eval loss {result.eval_losses[-1][1]:.4f}" if result.eval_losses else ""
        where = f"model in {result.model_dir}"
        if result.lora and not os.path.exists(os.path.join(result.model_dir, "config.json")):
            where = (f"LoRA adapter in {result.output_dir} (a standalone checkpoint: python {sys.argv[0]} merge "
                     f"--adapter {result.output_dir} --output_dir OUT)")
        logging.getLogger("sft").info(f"{result.name}: {state}, {result.global_step} steps, last loss {final:.4f}"
                                      f"{evaluated}, {where}")


def merge(argv):
    from eagle_hf.training import merge_lora
    from eagle_hf.training.models import DTYPE_NAMES

    parser = argparse.ArgumentParser(prog="sft.py merge", description=(
        "Write a standalone checkpoint (weights, processor and its code, model card) from a LoRA stage folder."))
    parser.add_argument("--adapter", required=True, help="a LoRA stage folder (adapter_model.safetensors and co.)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--base", help="base checkpoint (default: the one named in adapter_config.json)")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_NAMES,
                        help="weights' dtype (default: auto, the base checkpoint's)")
    args = parser.parse_args(argv)
    merge_lora(args.adapter, args.output_dir, base=args.base, dtype=args.dtype)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("eagle_hf", "sft"):  # the stage tables, data reports and summaries
        logging.getLogger(name).setLevel(logging.INFO)
    if argv and argv[0] == "merge":
        merge(argv[1:])
    else:
        train(argv)


if __name__ == "__main__":
    main()
