"""`eagle-hf eval`: the arguments, the model loading and the run, for `eagle_hf.cli` to wire in.

    eagle-hf eval --model ./my-eagle --tasks textvqa,pope,mme --data-dir ~/benchmarks --output-dir eval/my-eagle
"""

import argparse
import sys
from pathlib import Path

import torch
import transformers
from transformers.utils import logging

from .. import __version__
from ..chat_templates import TEMPLATE_NAMES, load_chat_template
from .runner import GenerationSettings, build_prompt, check_run_file, predict_task, run_settings
from .summary import summarize_task, write_model_card, write_summary
from .tasks import TASKS, get_tasks

logger = logging.get_logger(__name__)

DTYPES = ("auto", "bfloat16", "float16", "float32")


def add_eval_arguments(parser):
    """Adds the `eagle-hf eval` options to `parser` (an `argparse` parser or subparser)."""
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id (loaded with trust_remote_code)")
    parser.add_argument("--tasks", required=True, help=f"comma-separated benchmarks: {', '.join(TASKS)}")
    parser.add_argument("--data-dir", required=True, type=Path,
                        help="folder holding each benchmark's files in its released layout (see the README)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="predictions, run.json and the summary (default: eval_results/<model name>); a rerun "
                             "into the same folder resumes")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples of each task")
    parser.add_argument("--tokenization", choices=("chunks", "whole"), default=None,
                        help="chunks: text around each image tokenised apart, as the original evaluation scripts; "
                             "whole: the prompt at once, as chat-template users and TRL do (default: the "
                             "checkpoint's, stored in its processor config: chunks for converted checkpoints)")
    parser.add_argument("--chat-template", choices=TEMPLATE_NAMES, default=None,
                        help="use this template instead of the checkpoint's (needed if it ships none)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--revision", default=None, help="Hub revision of --model")
    parser.add_argument("--overwrite", action="store_true", help="discard predictions already in --output-dir")
    parser.add_argument("--write-model-card", action="store_true",
                        help="also write the summary into <model>/README.md (a local folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def load_model_and_processor(name, dtype="auto", device=None, revision=None, chat_template=None):
    """The checkpoint's model (eval mode, on `device`) and processor, through the Auto classes and its own code."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dtype_argument = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(name, trust_remote_code=True, revision=revision,
                                                        **{dtype_argument: torch_dtype})
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    processor = AutoProcessor.from_pretrained(name, trust_remote_code=True, revision=revision)
    if chat_template is not None:
        processor.chat_template = load_chat_template(chat_template)
    if not processor.chat_template:
        raise ValueError(f"{name} ships no chat template: pass --chat-template ({', '.join(TEMPLATE_NAMES)})")
    return model, processor


def _run_description(model_name, model, settings, limit):
    return {"model": str(model_name), "dtype": str(model.dtype).replace("torch.", ""),
            "batch_size": settings.batch_size, "max_new_tokens": settings.max_new_tokens,
            "tokenize_chunks": settings.tokenize_chunks, "limit": limit, "eagle_hf": __version__,
            "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}


def evaluate_model(model, processor, tasks, data_dir, output_dir, settings=None, limit=None, overwrite=False,
                   model_name=None, progress=True):
    """Runs `tasks` (names, or a comma-separated string) on the benchmarks under `data_dir`, resuming whatever
    `output_dir` already holds; writes the predictions, `summary.json` and `summary.md` there.

    Returns:
        (summary dict, summary markdown).
    """
    settings = (settings or GenerationSettings()).for_processor(processor)
    tasks = get_tasks(tasks)
    model_name = model_name or getattr(model, "name_or_path", "") or "model"
    check_run_file(output_dir, run_settings(model_name, processor, settings, model.dtype), overwrite)
    summary = {"run": _run_description(model_name, model, settings, limit), "tasks": {}}
    metrics = {}
    for task in tasks:
        samples, problems = task.load(data_dir)
        for problem in problems:
            logger.warning(f"{task.name}: skipped: {problem}")
        samples = samples if limit is None else samples[:limit]
        records = predict_task(model, processor, task, samples, output_dir, settings, progress)
        entry = summary["tasks"][task.name] = summarize_task(task, problems, records, metrics)
        entry["example_prompt"] = build_prompt(processor, samples[0].question) if samples else None
    return summary, write_summary(summary, output_dir)


def run_eval(args):
    """`eagle-hf eval`: loads `--model`, runs the tasks, writes the results, prints the markdown summary."""
    if args.batch_size < 1 or args.max_new_tokens < 1 or (args.limit is not None and args.limit < 1):
        raise ValueError("--batch-size, --max-new-tokens and --limit must be positive")
    model, processor = load_model_and_processor(args.model, args.dtype, args.device, args.revision,
                                                args.chat_template)
    output_dir = args.output_dir or Path("eval_results") / Path(str(args.model).rstrip("/")).name
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                  tokenize_chunks=None if args.tokenization is None else args.tokenization == "chunks")
    _, markdown = evaluate_model(model, processor, args.tasks, args.data_dir, output_dir, settings, args.limit,
                                 args.overwrite, args.model, progress=not args.no_progress)
    if args.write_model_card:
        if not Path(args.model).is_dir():
            raise ValueError("--write-model-card needs --model to be a local checkpoint folder")
        logger.info(f"summary written into {write_model_card(args.model, markdown)}")
    sys.stdout.write(markdown)
    return 0


def main(argv=None):
    """`python -m eagle_hf.evaluation.cli ...`, the same as `eagle-hf eval ...`."""
    parser = add_eval_arguments(argparse.ArgumentParser(prog="eagle-hf eval", description=__doc__,
                                                        formatter_class=argparse.RawDescriptionHelpFormatter))
    return run_eval(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
