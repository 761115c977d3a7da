"""`eagle-hf demo`: build a small Eagle, train it with Eagle's three stages, evaluate it on held-out questions against a
single-expert baseline, save it as a Hub-format checkpoint and check that the checkpoint answers the same way when
loaded through the Auto classes in a fresh process without this package."""

import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import replace

import torch
import transformers
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from ..modeling_eagle import EagleForConditionalGeneration
from ..synthetic import build
from ..synthetic.evaluate import accuracy_by_type, majority_baseline, predict
from .pipeline import FULL, QUICK, demo_recipe, stage_summary, train_plan
from .reload import reload_check
from .report import accuracy_table, draw_loss_curves, summary_markdown, write_results
from ..synthetic.scenes import SceneSplit, evaluation_items, tokenizer_corpus

SETTINGS_FILE = "demo_settings.json"
PLAN_TITLES = ("pre-align each expert", "align the fused projector", "fine-tune everything")
INTRO = """eagle-hf demo{quick}: the data, the tokenizer and the models are made here; nothing is downloaded.
No pretrained weights exist for models this small, so every weight (experts, projector, LLM) starts random and is
trained from scratch on this CPU ({threads} thread(s)). Outputs go to {out}/."""


def make_splits(settings):
    """The four splits, each from its own seed stream: nothing of one occurs in another."""
    return dict(train=SceneSplit("train", settings.seed, settings.train_size),
                captions=SceneSplit("captions", settings.seed, settings.caption_size),
                validation=SceneSplit("validation", settings.seed, settings.validation_size),
                test=SceneSplit("test", settings.seed, settings.test_size))


def train_model(label, kinds, settings, splits, tokenizer, out_dir):
    """Build (seeded), train through the plan and reload the final stage's model; returns (model, processor, stages)."""
    config = build.demo_config(tokenizer, kinds)
    processor = build.build_processor(config, tokenizer)
    model = build.build_model(config, settings.seed)
    recipe = demo_recipe(settings, f"demo-{label}", splits, len(kinds), len(build.MIXTURE), build.TEMPLATE)
    results = train_plan(recipe, model, processor, os.path.join(out_dir, "training", label), label,
                         os.path.join(out_dir, "training", "trainer_log.txt"))
    trained = EagleForConditionalGeneration.from_pretrained(results[-1].model_dir).eval()
    build.set_generation_defaults(trained)
    return trained, processor, stage_summary(results)


def evaluate_model(label, model, processor, splits):
    """Accuracy per question type on the validation and the held-out test split."""
    scores = {}
    for split_name in ("validation", "test"):
        split = splits[split_name]
        items = evaluation_items(split)
        with tqdm(total=len(items), desc=f"{label:>8} answering {split_name} questions", unit="q") as bar:
            predictions = predict(model, processor, split, items, progress=bar)
        scores[split_name] = accuracy_by_type(items, predictions)
    return scores


def parameter_count(model):
    return sum(parameter.numel() for parameter in model.parameters())


def model_entry(kinds, model, stages, scores, seconds):
    experts = model.config.vision_experts
    return dict(experts=list(kinds), expert_sizes=[expert.image_size for expert in experts],
                parameters=parameter_count(model), stages=stages, train_seconds=seconds, **scores)


def prepare_output(out_dir, settings):
    """Create `out_dir`; a folder from an earlier demo run is reused only when it was made with the same settings
    (finished stages are then skipped), any other non-empty folder is refused."""
    os.makedirs(os.path.join(out_dir, "training"), exist_ok=True)
    marker = os.path.join(out_dir, "training", SETTINGS_FILE)
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as handle:
            if json.load(handle) != settings.to_dict():
                raise ValueError(f"{out_dir} holds a demo run with other settings; choose another --out or delete it.")
    elif set(os.listdir(out_dir)) - {"training"} or os.listdir(os.path.join(out_dir, "training")):
        raise ValueError(f"{out_dir} is not empty and holds no demo run; choose an empty or new --out folder.")
    with open(marker, "w", encoding="utf-8") as handle:
        json.dump(settings.to_dict(), handle, indent=1)


def say(text=""):
    """The demo's report to the terminal (a command's own output, not library logging)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_demo(args):
    """Run the demo with the options of `cli.add_demo_arguments`; returns 0, or 1 when the reloaded checkpoint answered
    differently from the in-process model."""
    settings = replace(QUICK if args.quick else FULL, seed=args.seed)
    threads = args.threads  # resolved by cli.run_demo
    torch.set_num_threads(threads)
    prepare_output(args.out, settings)
    say(INTRO.format(out=args.out, threads=threads, quick=" (quick run)" if args.quick else ""))
    with quiet_transformers():
        results = demo_pipeline(settings, args.out, threads)
    say(accuracy_table(results))
    say(f"\nDone in {results['timing']['total_seconds'] / 60:.1f} minutes. {args.out}/: summary.md, results.json, "
        "loss_curves.png, checkpoint/ (load it with AutoModelForImageTextToText and AutoProcessor, "
        "trust_remote_code=True), samples/.")
    if not results["reload"]["answers_equal"]:
        say("The reloaded checkpoint answered differently from the in-process model: see summary.md.")
        return 1
    return 0


@contextlib.contextmanager
def quiet_transformers():
    """Without transformers' own progress bars (weight loading and saving) and info logs, restored afterwards."""
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_warning()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def train_both(settings, splits, tokenizer, out_dir):
    """The mixture, then the single-expert baseline: trained, evaluated; ({label: entry}, {label: (model, proc)})."""
    entries, trained = {}, {}
    for label, kinds in (("mixture", build.MIXTURE), ("baseline", build.BASELINE)):
        say(f"\n{label}: experts {' + '.join(kinds)}; stages {', '.join(PLAN_TITLES)}")
        started = time.time()
        model, processor, stages = train_model(label, kinds, settings, splits, tokenizer, out_dir)
        seconds = time.time() - started
        entries[label] = model_entry(kinds, model, stages, evaluate_model(label, model, processor, splits), seconds)
        trained[label] = (model, processor)
    return entries, trained


def environment(threads):
    return dict(threads=threads, cpu_count=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
                transformers=transformers.__version__, platform=platform.platform())


def demo_pipeline(settings, out_dir, threads):
    """Data, tokenizer, both models, the checkpoint and its reload check, then `results.json`, `summary.md` and
    `loss_curves.png` in `out_dir`; returns the results."""
    started = time.time()
    splits = make_splits(settings)
    tokenizer = build.train_tokenizer(build.tokenizer_texts(tokenizer_corpus(splits["train"])))
    say(f"data: {settings.train_size} training images (five questions each), {settings.caption_size} captioned images, "
        f"{settings.validation_size} validation and {settings.test_size} held-out test images; tokenizer: "
        f"{len(tokenizer)} tokens")
    entries, trained = train_both(settings, splits, tokenizer, out_dir)
    model, processor = trained["mixture"]
    checkpoint = os.path.join(out_dir, "checkpoint")
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    say("\nchecking the checkpoint in a fresh process (Auto classes, trust_remote_code=True, eagle_hf blocked)")
    reload = reload_check(model, processor, checkpoint, splits["test"], settings.samples,
                          os.path.join(out_dir, "samples"))
    test_items = evaluation_items(splits["test"])
    results = dict(
        settings=dict(settings.to_dict(), quick=settings == replace(QUICK, seed=settings.seed)),
        environment=environment(threads),
        data=dict(test_images=splits["test"].size, test_questions=len(test_items)),
        chance=majority_baseline(evaluation_items(splits["train"]), test_items),
        models=entries, reload=reload, timing=dict(total_seconds=time.time() - started),
    )
    write_results(os.path.join(out_dir, "results.json"), results)
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as handle:
        handle.write(summary_markdown(results))
    draw_loss_curves(os.path.join(out_dir, "loss_curves.png"),
                     {label: entry["stages"] for label, entry in entries.items()})
    return results
