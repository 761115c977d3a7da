"""The demo's outputs: `results.json`, the markdown summary and the loss-curve PNG (drawn with PIL)."""

import json
import math

from PIL import Image, ImageDraw, ImageFont

from ..synthetic.scenes import QUESTION_TYPES

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
PANEL_WIDTH, PANEL_HEIGHT = 960, 280
INSET = dict(left=64, right=24, top=34, bottom=40)


def write_results(path, results):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


def percent(value):
    return "-" if value is None else f"{100 * value:.0f}%"


def accuracy_table(results):
    """Markdown rows: one per question type and one for all, chance / baseline / mixture on the test split."""
    models = results["models"]
    baseline, mixture = models["baseline"], models["mixture"]
    lines = [f"| question type | chance (most frequent answer) | baseline: {' + '.join(baseline['experts'])} alone | "
             f"Eagle: {' + '.join(mixture['experts'])} |", "|---|---|---|---|"]
    for kind in (*QUESTION_TYPES, "all"):
        cells = [percent(results["chance"].get(kind)), percent(baseline["test"].get(kind)),
                 percent(mixture["test"].get(kind))]
        name = "**all**" if kind == "all" else kind
        lines.append(f"| {name} | " + " | ".join(f"**{c}**" if kind == "all" else c for c in cells) + " |")
    return "\n".join(lines)


def _model_rows(results):
    lines = ["| model | experts (input pixels) | parameters | training |", "|---|---|---|---|"]
    for label, model in results["models"].items():
        experts = ", ".join(f"{kind} ({size})" for kind, size in zip(model["experts"], model["expert_sizes"]))
        lines.append(f"| {label} | {experts} | {model['parameters']:,} | {model['train_seconds']:.0f} s |")
    return lines


def _stage_rows(results):
    lines = ["| model | stage | steps | loss: first -> last |", "|---|---|---|---|"]
    for label, model in results["models"].items():
        for stage in model["stages"]:
            first, last = stage["first_loss"], stage["last_loss"]
            losses = "-" if first is None else f"{first:.2f} -> {last:.2f}"
            lines.append(f"| {label} | {stage['stage']} | {stage['steps']} | {losses} |")
    return lines


def _sample_rows(results):
    lines = ["| image | question | expected | in-process answer | reloaded answer |", "|---|---|---|---|---|"]
    for sample in results["reload"]["samples"]:
        lines.append(f"| ![]({sample['image']}) | {sample['question']} | {sample['answer']} | "
                     f"{sample['in_process']} | {sample['reloaded']} |")
    return lines


def summary_markdown(results):
    """The summary: what ran, the accuracy table, models, stages, the reload check and the files."""
    reload, timing = results["reload"], results["timing"]
    same = "equal" if reload["answers_equal"] else "DIFFERENT"
    lines = [
        "# eagle-hf demo" + (" (quick)" if results["settings"]["quick"] else ""), "",
        f"Everything here was made on the spot and trained from scratch on the CPU ({results['environment']['threads']}"
        f" thread(s)) in {timing['total_seconds'] / 60:.1f} minutes: no pretrained weight exists for these small "
        "models, so every weight of the experts, the projector and the LLM started random.", "",
        f"Held-out test split: {results['data']['test_images']} images, {results['data']['test_questions']} questions "
        "(five types, one of each per image); greedy decoding, exact match after normalisation. \"Chance\" always "
        "gives the training split's most frequent answer of the type.", "",
        accuracy_table(results), "",
        "## Models", "", *_model_rows(results), "",
        "## Stages (Eagle's plan: pre-align each expert, align the fused projector, fine-tune everything)", "",
        *_stage_rows(results), "",
        "With no pretrained LLM, the first two stages align the experts and the projector to a *random*, frozen LLM: "
        "their loss falls little and the fine-tuning stage does most of the learning. With a pretrained LLM, as in the "
        "real recipe, they are what lets each expert speak the LLM's language first.", "",
        "Loss curves: `loss_curves.png`.", "",
        "## The checkpoint, reloaded", "",
        f"`checkpoint/` was loaded with `AutoModelForImageTextToText` and `AutoProcessor` (`trust_remote_code=True`) in a "
        f"fresh process where `eagle_hf` cannot be imported; its answers are {same} to the in-process model's.", "",
        *_sample_rows(results), "",
    ]
    return "\n".join(lines)


def _font():
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _log_range(losses):
    low, high = math.log10(max(min(losses), 1e-4)), math.log10(max(losses))
    if high - low < 1:
        middle = (high + low) / 2
        low, high = middle - 0.5, middle + 0.5
    return low - 0.05, high + 0.05


def _y_ticks(low, high):
    ticks = []
    for decade in range(math.floor(low), math.ceil(high) + 1):
        for factor in (1, 2, 5):
            value = math.log10(factor) + decade
            if low <= value <= high:
                ticks.append(value)
    return ticks


def _draw_axes(draw, box, low, high, title, font):
    left, top, right, bottom = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((left, top - 22), title, fill=(0, 0, 0), font=font)
    for value in _y_ticks(low, high):
        y = bottom - (value - low) / (high - low) * (bottom - top)
        draw.line((left - 4, y, left, y), fill=(0, 0, 0))
        draw.line((left + 1, y, right - 1, y), fill=(225, 225, 225))
        draw.text((left - 6, y), f"{10 ** value:g}", fill=(0, 0, 0), font=font, anchor="rm")
    draw.text(((left + right) // 2, bottom + 22), "optimizer step (stages end to end)", fill=(0, 0, 0), font=font,
              anchor="mm")


def _draw_panel(draw, origin, title, stages, font):
    """One model's stages, end to end on a shared step axis, log-scaled loss."""
    box = (origin[0] + INSET["left"], origin[1] + INSET["top"], origin[0] + PANEL_WIDTH - INSET["right"],
           origin[1] + PANEL_HEIGHT - INSET["bottom"])
    left, top, right, bottom = box
    losses = [loss for stage in stages for _, loss in stage["losses"]] or [1.0]
    low, high = _log_range(losses)
    _draw_axes(draw, box, low, high, title, font)
    total = max(1, sum(stage["steps"] for stage in stages))
    offset = 0
    for index, stage in enumerate(stages):
        colour = PALETTE[index % len(PALETTE)]
        points = [(left + (offset + step) / total * (right - left),
                   bottom - (math.log10(max(loss, 1e-4)) - low) / (high - low) * (bottom - top))
                  for step, loss in stage["losses"]]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        start = left + offset / total * (right - left)
        if offset:
            draw.line((start, top, start, bottom), fill=(160, 160, 160))
        if index == 0 or stage["steps"] >= 0.04 * total:  # tick labels of very short stages would overlap
            draw.text((start, bottom + 4), str(offset), fill=(0, 0, 0), font=font, anchor="mt")
        offset += stage["steps"]
    draw.text((right, bottom + 4), str(offset), fill=(0, 0, 0), font=font, anchor="rt")
    _draw_legend(draw, (right - 8, top + 8), stages, font)


def _draw_legend(draw, corner, stages, font):
    """Stage names in their colours, right-aligned from `corner` (top right) down, on a white box."""
    labels = [f"{stage['stage'].replace('eagle_', '')} ({stage['steps']} steps)" for stage in stages]
    width = max(draw.textlength(label, font=font) for label in labels) + 30
    right, top = corner
    draw.rectangle((right - width, top, right, top + 16 * len(labels) + 6), fill=(255, 255, 255),
                   outline=(200, 200, 200))
    for index, label in enumerate(labels):
        y = top + 11 + 16 * index
        colour = PALETTE[index % len(PALETTE)]
        draw.line((right - width + 6, y, right - width + 20, y), fill=colour, width=3)
        draw.text((right - width + 24, y), label, fill=(0, 0, 0), font=font, anchor="lm")


def draw_loss_curves(path, models):
    """A PNG with one panel per model: {label: [stage summary (stage, steps, losses)]}."""
    image = Image.new("RGB", (PANEL_WIDTH, PANEL_HEIGHT * len(models)), (255, 255, 255))
    draw, font = ImageDraw.Draw(image), _font()
    for row, (label, stages) in enumerate(models.items()):
        _draw_panel(draw, (0, row * PANEL_HEIGHT), f"{label}: training loss per stage", stages, font)
    image.save(path)
