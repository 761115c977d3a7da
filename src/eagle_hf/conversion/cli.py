"""`eagle-hf convert --from {nveagle,llava,llava-hf} SRC OUT`: the command line over `convert_checkpoint`."""

import json
import sys

from .convert import FAMILIES, DTYPES, convert_checkpoint
from .source import ConversionError


def _json_object(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def add_convert_arguments(parser):
    """Add the `convert` arguments to an argparse (sub)parser."""
    parser.add_argument("--from", dest="family", required=True, choices=FAMILIES,
                        help="the source layout: NVEagle (Eagle-X4/X5), LLaVA-1.5 original, or transformers' LLaVA")
    parser.add_argument("source", help="a local checkpoint folder or a Hub id")
    parser.add_argument("output", help="the folder to write (must not exist or be empty, unless --overwrite)")
    parser.add_argument("--vision-tower", help="llava: the CLIP checkpoint (folder or Hub id) if the source lacks the "
                                               "tower weights and its mm_vision_tower is not the one to use")
    parser.add_argument("--tokenizer", help="a folder or Hub id to take the tokenizer from when the source has none "
                                            "(e.g. lmsys/vicuna-7b-v1.5)")
    parser.add_argument("--chat-template", choices=("vicuna_v1", "llama3", "chatml", "plain"),
                        help="override the chat template inferred from the source tokenizer")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="cast the weights (default: keep the source dtype)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest output shard (default: 5GB)")
    parser.add_argument("--pad-vocab-to-multiple-of", type=int, default=64,
                        help="round the vocabulary up after adding <image> (default: 64, as llava-hf)")
    parser.add_argument("--expert-overrides", type=_json_object, default=None,
                        help='JSON: fields changed per expert kind, e.g. \'{"clip": {"image_size": 448}}\'')
    parser.add_argument("--config-overrides", type=_json_object, default=None,
                        help="JSON: EagleConfig fields to change, e.g. '{\"grid_size\": 24}'")
    return _add_output_options(parser)


def _add_output_options(parser):
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip reloading the result with from_pretrained (saves one model's worth of memory)")
    return parser


def run_convert(args):
    """Run a conversion from parsed arguments; returns the process exit status (0, or 1 with the error on stderr)."""
    try:
        report = convert_checkpoint(
            args.source, args.output, args.family, vision_tower=args.vision_tower, tokenizer=args.tokenizer,
            chat_template=args.chat_template, dtype=args.dtype, expert_overrides=args.expert_overrides,
            config_overrides=args.config_overrides, max_shard_size=args.max_shard_size,
            pad_vocab_to_multiple_of=args.pad_vocab_to_multiple_of, overwrite=args.overwrite, verify=args.verify,
        )
    except ConversionError as error:
        sys.stderr.write(f"eagle-hf convert: error: {error}\n")
        return 1
    vocabulary = report.vocabulary
    experts = ", ".join(expert.kind for expert in report.config.vision_experts)
    sys.stdout.write(f"Wrote {report.output}: experts {experts}; <image> = {vocabulary.image_token_id}; vocabulary "
                     f"{vocabulary.source_rows} -> {vocabulary.rows} rows; chat template {report.chat_template}.\n")
    return 0




def _expert_source(text):
    kind, separator, source = text.partition("=")
    if not separator or not kind or not source:
        raise ValueError(f"expected KIND=SOURCE (e.g. clip=openai/clip-vit-large-patch14-336), got {text!r}")
    return kind, source


def add_init_arguments(parser):
    """Add the `init` arguments to an argparse (sub)parser."""
    from .init import DEFAULT_SOURCES, PRESETS

    defaults = "; ".join(f"{kind}={source}" for kind, source in DEFAULT_SOURCES.items())
    parser.add_argument("output", help="the folder to write (must not exist or be empty, unless --overwrite)")
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS), help="the model to start")
    parser.add_argument("--llm", required=True, help="a causal LM with its tokenizer: folder or Hub id "
                                                     "(e.g. lmsys/vicuna-7b-v1.5)")
    parser.add_argument("--expert", dest="experts", action="append", type=_expert_source, default=[],
                        metavar="KIND=SOURCE", help=f"an expert's source instead of the default ({defaults}); "
                                                    "eva02 takes a .pth file or owner/name:path/in/repo")
    parser.add_argument("--template", dest="chat_template", choices=("vicuna_v1", "llama3", "chatml", "plain"),
                        help="the chat template (default: from the LLM's tokenizer: Llama-3 -> llama3, ChatML "
                             "(Yi, Qwen) -> chatml, else vicuna_v1)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="cast the weights (default: keep each source's dtype)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest output shard (default: 5GB)")
    parser.add_argument("--seed", type=int, default=0, help="the new projector's initialisation (default: 0)")
    return _add_output_options(parser)


def run_init(args):
    """`eagle-hf init`: returns the exit status (0, or 1 with the error on stderr)."""
    from .init import init_checkpoint

    try:
        config = init_checkpoint(args.output, args.preset, args.llm, experts=dict(args.experts),
                                 chat_template=args.chat_template, dtype=args.dtype, seed=args.seed,
                                 max_shard_size=args.max_shard_size, overwrite=args.overwrite, verify=args.verify)
    except ConversionError as error:
        sys.stderr.write(f"eagle-hf init: error: {error}\n")
        return 1
    experts = ", ".join(expert.kind for expert in config.vision_experts)
    sys.stdout.write(f"Wrote {args.output}: {args.preset} ({experts}), <image> = {config.image_token_id}; train it "
                     f"with training_scripts/sft.py --config training_scripts/recipes/{args.preset}.yaml\n")
    return 0


__all__ = ["add_convert_arguments", "add_init_arguments", "run_convert", "run_init"]
