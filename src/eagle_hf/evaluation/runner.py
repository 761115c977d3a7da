"""Runs a model over benchmarks: greedy decoding in left-padded batches, one predictions JSONL per task, resumable.

Each finished batch is appended to `<output_dir>/predictions/<task>.jsonl` and flushed, one JSON object per
sample, in the benchmark's order. A rerun reads the file back, drops a last line cut short by an interruption,
and generates only the samples not yet in it, so an interrupted run resumed gives the same file as an
uninterrupted one. `<output_dir>/run.json` records the settings that change predictions; resuming with other
settings is refused.
"""

import base64
import binascii
import hashlib
import json
import dataclasses
from dataclasses import dataclass
from typing import Optional
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers.utils import logging

from ..image_processing_eagle import load_rgb_image
from ..files import write_json_atomically

logger = logging.get_logger(__name__)

PREDICTIONS_DIR = "predictions"
RUN_FILE = "run.json"
_IMAGE_ERRORS = (OSError, ValueError, binascii.Error, Image.DecompressionBombError)


@dataclass
class GenerationSettings:
    """How answers are generated. `tokenize_chunks` tokenises the text between image markers piece by piece, as
    the original LLaVA / Eagle evaluation scripts (`tokenizer_image_token`) do; False tokenises the whole prompt;
    None (default) takes the processor's stored choice, the one the checkpoint was trained with."""

    max_new_tokens: int = 128
    batch_size: int = 8
    tokenize_chunks: Optional[bool] = None

    def for_processor(self, processor):
        """These settings with `tokenize_chunks` resolved against `processor`."""
        if self.tokenize_chunks is not None:
            return self
        return dataclasses.replace(self, tokenize_chunks=bool(getattr(processor, "tokenize_chunks", False)))


def open_image(sample):
    """The sample's image, fully decoded by the processor's own decoder (so that a truncated file fails here, not in
    the batch, and images read as in training and inference)."""
    if sample.image_base64 is not None:
        return load_rgb_image(base64.b64decode(sample.image_base64, validate=True))
    return load_rgb_image(sample.image_path)


def build_prompt(processor, question):
    """The chat-template text of one user turn holding an image and `question`, ready for the answer."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def generate_answers(model, processor, prompts, images, settings):
    """Greedy answers to `prompts` (one image each), decoded without special tokens and stripped."""
    # The chat template writes the BOS itself (as transformers' own apply_chat_template assumes), hence
    # add_special_tokens=False.
    inputs = processor(images=images, text=prompts, padding=True, padding_side="left", return_tensors="pt",
                       add_special_tokens=False, tokenize_chunks=settings.tokenize_chunks).to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    tokenizer = processor.tokenizer
    with torch.inference_mode():
        output = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=settings.max_new_tokens,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]  # (B, generated)
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def _record(task, sample, answer):
    parsed, score = task.score(answer, sample.reference, sample.fields)
    return {"id": sample.id, "question": sample.question, "prediction": answer, "parsed": parsed, "score": score,
            "reference": sample.reference, "fields": sample.fields, "source": sample.source}


def _skipped(sample, reason):
    logger.warning(f"{sample.source}: skipped: {reason}")
    return {"id": sample.id, "skipped": reason, "source": sample.source}


def _readable(processor, samples, images):
    """Splits a batch the processor refused into the samples it accepts alone and skip records for the others."""
    kept, skipped = [], []
    for sample, image in zip(samples, images):
        try:
            processor.image_processor(image)
            kept.append((sample, image))
        except ValueError as error:
            skipped.append(_skipped(sample, f"the image processor refused the image: {error}"))
    return kept, skipped


def predict_batch(model, processor, task, samples, settings):
    """Records for `samples`, in their order: a prediction with its per-sample score, or a skip with its reason."""
    records, ready = {}, []
    for sample in samples:
        try:
            ready.append((sample, open_image(sample)))
        except _IMAGE_ERRORS as error:
            records[sample.id] = _skipped(sample, f"cannot read the image: {error}")
    def answer(pairs):
        prompts = [build_prompt(processor, sample.question) for sample, _ in pairs]
        return generate_answers(model, processor, prompts, [image for _, image in pairs], settings) if pairs else []

    try:
        answers = answer(ready)
    except ValueError:  # the processor refused an image of the batch: find which, skip it, answer the others
        ready, skipped = _readable(processor, [sample for sample, _ in ready], [image for _, image in ready])
        records.update((record["id"], record) for record in skipped)
        answers = answer(ready)
    records.update((sample.id, _record(task, sample, text)) for (sample, _), text in zip(ready, answers))
    return [records[sample.id] for sample in samples]


def read_predictions(path):
    """{id: record} of a predictions file; a last line cut short by an interruption is removed from the file."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        logger.warning(f"{path}: dropping an unfinished last line left by an interrupted run")
        path.write_bytes(complete)
    records = {}
    for number, line in enumerate(complete.splitlines(), start=1):
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}:{number}: not a predictions record ({error}); remove the file to redo the "
                             "task") from error
        if not isinstance(record, dict) or "id" not in record:
            raise ValueError(f"{path}:{number}: a predictions record is an object with an `id`, got {line[:80]!r}; "
                             "remove the file to redo the task")
        records[record["id"]] = record
    return records


def predict_task(model, processor, task, samples, output_dir, settings, progress=True):
    """The records of `samples`, generating only those missing from the task's predictions file."""
    path = Path(output_dir) / PREDICTIONS_DIR / f"{task.name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = read_predictions(path)
    todo = [sample for sample in samples if sample.id not in done]
    if len(todo) < len(samples):
        logger.info(f"{task.name}: resuming, {len(samples) - len(todo)} of {len(samples)} samples already done")
    with tqdm(total=len(samples), initial=len(samples) - len(todo), desc=task.name, disable=not progress) as bar:
        with open(path, "a", encoding="utf-8") as handle:
            for start in range(0, len(todo), settings.batch_size):
                batch = todo[start : start + settings.batch_size]
                for record in predict_batch(model, processor, task, batch, settings):
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    done[record["id"]] = record
                handle.flush()
                bar.update(len(batch))
    return [done[sample.id] for sample in samples]


def run_settings(model_name, processor, settings, dtype):
    """What must stay the same for a resumed run to continue the same predictions."""
    template = processor.chat_template or ""
    return {"model": str(model_name), "dtype": str(dtype), "max_new_tokens": settings.max_new_tokens,
            "tokenize_chunks": settings.tokenize_chunks,
            "chat_template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest()}


def check_run_file(output_dir, run, overwrite=False):
    """Writes `run.json`, or checks it against `run` when resuming; with `overwrite`, old predictions go."""
    output_dir = Path(output_dir)
    run_file = output_dir / RUN_FILE
    if overwrite:
        for old in (output_dir / PREDICTIONS_DIR).glob("*.jsonl"):
            old.unlink()
    elif run_file.is_file():
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"{run_file} is unreadable ({error}); use another --output-dir, or --overwrite to "
                             "start again") from None
        changed = {key: (previous.get(key), value) for key, value in run.items() if previous.get(key) != value}
        if changed:
            details = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
            raise ValueError(f"{output_dir} holds predictions made with other settings ({details}); use another "
                             "--output-dir, or --overwrite to start again")
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomically(run_file, run, indent=2)
