"""Scores of a run, summarised with the `evaluate` metrics, written as JSON and markdown (and into a model card)."""

from pathlib import Path

from ..files import write_json_atomically
from .metrics import load_metric

SUMMARY_JSON = "summary.json"
SUMMARY_MARKDOWN = "summary.md"
CARD_START = "<!-- eagle-hf eval: start -->"
CARD_END = "<!-- eagle-hf eval: end -->"
_LISTED_PROBLEMS = 20


def _metric_inputs(task, records):
    inputs = {"predictions": [r["prediction"] for r in records], "references": [r["reference"] for r in records]}
    for argument, name in task.metric_fields.items():
        inputs[argument] = [r["fields"][name] for r in records]
    return inputs


def compute_scores(task, records, metrics=None):
    """The task's metric over the scored records (and per `task.group_by` value, with "overall" for all)."""
    metrics = {} if metrics is None else metrics
    if task.metric not in metrics:
        metrics[task.metric] = load_metric(task.metric, keep_in_memory=True)  # no Arrow cache files per run
    metric = metrics[task.metric]
    if task.group_by is None:
        return metric.compute(**_metric_inputs(task, records))
    scores = {"overall": metric.compute(**_metric_inputs(task, records))}
    for value in sorted({r["fields"][task.group_by] for r in records}):
        scores[value] = metric.compute(**_metric_inputs(task, [r for r in records if r["fields"][task.group_by] ==
                                                                value]))
    return scores


def _lookup(scores, key):
    for part in key.split("."):
        if not isinstance(scores, dict) or part not in scores:
            return None
        scores = scores[part]
    return scores


def summarize_task(task, problems, records, metrics=None):
    """One task's entry of the summary: protocol, headline numbers, full scores, and every skipped sample."""
    scored = [r for r in records if "prediction" in r]
    skipped = [p.to_dict() for p in problems]
    skipped += [{"file": r["source"], "location": None, "message": r["skipped"]} for r in records if "skipped" in r]
    scores = compute_scores(task, scored, metrics) if scored else {}
    headline = {label: (None if _lookup(scores, key) is None else _lookup(scores, key) * scale)
                for label, key, scale in task.headline}
    return {"title": task.title, "metric": task.metric, "protocol": task.protocol, "scored": len(scored),
            "skipped": len(skipped), "headline": headline, "scores": scores, "skipped_samples": skipped}


def _number(value):
    return "n/a" if value is None else f"{value:.2f}"


def summary_markdown(summary):
    """The summary as markdown: one table row per task, then the protocols, then the skipped samples."""
    run = summary["run"]
    tokenised = "piece by piece around each image, as the original evaluation scripts" if run["tokenize_chunks"] \
        else "whole"
    limited = f" Only the first {run['limit']} samples of each task (`--limit`)." if run["limit"] else ""
    lines = [
        f"## Evaluation of `{run['model']}`",
        "",
        f"Greedy decoding (1 beam, no sampling), at most {run['max_new_tokens']} new tokens, batches of "
        f"{run['batch_size']} left-padded; prompts from the checkpoint's chat template, tokenised {tokenised}; "
        f"dtype {run['dtype']}; eagle-hf {run['eagle_hf']}, transformers {run['transformers']}, torch "
        f"{run['torch']}.{limited}",
        "",
        "| task | metric | score | scored | skipped |",
        "|---|---|---|---|---|",
    ]
    for name, task in summary["tasks"].items():
        labels = " / ".join(task["headline"])
        values = " / ".join(_number(value) for value in task["headline"].values())
        lines.append(f"| {task['title']} (`{name}`) | {labels} | {values} | {task['scored']} | {task['skipped']} |")
    lines += ["", "Protocols:", ""]
    lines += [f"- **{task['title']}**: {task['protocol']}" for task in summary["tasks"].values()]
    problems = [(name, entry) for name, task in summary["tasks"].items() for entry in task["skipped_samples"]]
    if problems:
        lines += ["", f"Skipped samples ({len(problems)}; all are listed in {SUMMARY_JSON}):", ""]
        for name, entry in problems[:_LISTED_PROBLEMS]:
            where = f"{entry['file']}:{entry['location']}" if entry["location"] else entry["file"]
            lines.append(f"- `{name}` {where}: {entry['message']}")
    return "\n".join(lines) + "\n"


def write_summary(summary, output_dir):
    """Writes `summary.json` and `summary.md` into `output_dir`; returns the markdown."""
    output_dir = Path(output_dir)
    write_json_atomically(output_dir / SUMMARY_JSON, summary, indent=2, ensure_ascii=False)
    markdown = summary_markdown(summary)
    (output_dir / SUMMARY_MARKDOWN).write_text(markdown, encoding="utf-8")
    return markdown


def write_model_card(model_dir, markdown):
    """Puts `markdown` into `<model_dir>/README.md` between the eagle-hf eval markers: replaces the section of an
    earlier run, or appends one (creating the file if needed)."""
    card = Path(model_dir) / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    section = f"{CARD_START}\n{markdown.rstrip()}\n{CARD_END}\n"
    start, end = text.find(CARD_START), text.find(CARD_END)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(CARD_END):].lstrip("\n")
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
    card.write_text(text, encoding="utf-8")
    return card
