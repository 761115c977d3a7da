"""Training data: LLaVA JSON and HF `messages`/`images` data sets, lazily loaded images, assistant-only labels.

The trainer sees a small index data set (`index`, `length`); the collator reads each record, loads its images, renders
the stage's chat template and tokenises it. Labels keep only the assistant tokens the template marks with
`{% generation %}`; image, system and user tokens are -100. A sample that cannot be used (a missing or unreadable
image, an image that truncation would cut, no answer left) is dropped from its batch and counted in a `DataReport`,
never replaced.
"""

import hashlib
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field

import torch
from PIL import Image
from transformers.utils import logging
from transformers.utils.chat_template_utils import render_jinja_template

from ..image_processing_eagle import load_rgb_image
from ..files import path_inside
from ..text_processing_eagle import expand_image_tokens, tokenize_with_images

logger = logging.get_logger(__name__)

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
IMAGE_PLACEHOLDER = "<image>"
SKIP_REASONS = {
    "missing_image": "the image file does not exist",
    "image_outside_folder": "the image path leads outside the data set's image_folder",
    "unreadable_image": "the image could not be decoded",
    "image_count_mismatch": "the number of <image> placeholders differs from the number of images",
    "bad_conversation": "the chat template refused the conversation",
    "no_answer": "no assistant token to train on",
    "image_cut_by_truncation": "max_length would cut an image's tokens",
    "answer_cut_by_truncation": "max_length would cut every assistant token",
}


class SkippedSample(Exception):
    """A sample that cannot be trained on; `reason` is a key of `SKIP_REASONS`."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class DataReport:
    """Samples read, used and skipped (by reason, with a few examples each)."""

    read: int = 0
    used: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    empty_batches: int = 0
    max_examples = 3

    def skip(self, index, reason, detail):
        self.skipped[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append(f"#{index} {detail}".strip())

    def update(self, other):
        other = other if isinstance(other, DataReport) else DataReport.from_dict(other)
        self.read += other.read
        self.used += other.used
        self.empty_batches += other.empty_batches
        self.skipped.update(other.skipped)
        for reason, examples in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(examples[: self.max_examples - len(mine)])

    def to_dict(self):
        return dict(read=self.read, used=self.used, skipped=dict(self.skipped), examples=dict(self.examples),
                    empty_batches=self.empty_batches)

    @classmethod
    def from_dict(cls, values):
        return cls(read=int(values.get("read", 0)), used=int(values.get("used", 0)),
                   skipped=Counter({k: int(v) for k, v in values.get("skipped", {}).items()}),
                   examples={k: list(v) for k, v in values.get("examples", {}).items()},
                   empty_batches=int(values.get("empty_batches", 0)))

    def summary(self):
        total = sum(self.skipped.values())
        text = f"{self.read} samples read, {self.used} used, {total} skipped"
        for reason, count in sorted(self.skipped.items()):
            text += f"\n  {reason} ({SKIP_REASONS.get(reason, reason)}): {count}, e.g. " + "; ".join(
                self.examples.get(reason, []))
        if self.empty_batches:
            text += f"\n  {self.empty_batches} batch(es) had no usable sample and trained on nothing"
        return text


# ----- records -----


def load_records(spec, name=None):
    """The raw records of a `DataSpec` (the recipe's data set `name`): a list (LLaVA JSON / JSONL, in-memory) or a
    `datasets.Dataset`."""
    if spec.records is not None:
        records = spec.records
    elif spec.json is not None:
        if not os.path.isfile(spec.json):
            raise FileNotFoundError(f"Data set {name or spec.json!r}: {spec.json} does not exist (relative paths are "
                                    f"read from {os.getcwd()}).")
        records = _read_json_records(spec.json, name)
    else:
        import datasets

        if os.path.isdir(spec.hf_dataset) and os.path.exists(os.path.join(spec.hf_dataset, "dataset_info.json")):
            records = datasets.load_from_disk(spec.hf_dataset)
        else:
            records = datasets.load_dataset(spec.hf_dataset, split=spec.hf_split)
        # Decode in the collator, so that an unreadable image is counted instead of stopping the epoch.
        images, image = records.features.get("images"), records.features.get("image")
        if isinstance(getattr(images, "feature", None), datasets.Image):
            records = records.cast_column("images", type(images)(datasets.Image(decode=False)))
        if isinstance(image, datasets.Image):
            records = records.cast_column("image", datasets.Image(decode=False))
    if spec.max_samples is not None:
        records = records[: spec.max_samples] if isinstance(records, list) else records.select(
            range(min(spec.max_samples, len(records))))
    return records


def _read_json_records(path, name=None):
    """The records of a LLaVA JSON list or JSONL file; a file or line that is not one names the file and line."""
    where = f"Data set {name!r} ({path})" if name else path
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(f"{where}, line {line}: not UTF-8 text ({error.reason})") from None
    if str(path).endswith(".jsonl"):
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{where}, line {number}: not a JSON record ({error.msg} at column "
                                     f"{error.colno})") from None
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}, line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})"
                             ) from None
        if not isinstance(records, list):
            raise ValueError(f"{where}: expected a JSON list of records, got a {type(records).__name__}")
    bad = next((index for index, record in enumerate(records) if not isinstance(record, dict)), None)
    if bad is not None:
        raise ValueError(f"{where}: record {bad} is a {type(records[bad]).__name__}, not an object")
    return records


def conversation_of(record):
    """A LLaVA record (`image`, `conversations` of `from`/`value`) or a `messages`/`images` record -> (messages,
    image references). An image given without any placeholder goes first in the first user turn, as LLaVA does."""
    if "conversations" in record:
        images = record.get("image")
        images = [] if images is None else [images] if isinstance(images, str) else list(images)
        messages = []
        for turn in record["conversations"]:
            role = ROLES.get(turn.get("from"))
            if role is None:
                raise SkippedSample("bad_conversation", f"unknown speaker {turn.get('from')!r}")
            messages.append({"role": role, "content": turn["value"]})
    elif "messages" in record:
        messages = [dict(message) for message in record["messages"]]
        images = record.get("images") or ([record["image"]] if record.get("image") is not None else [])
        images = list(images)
    else:
        raise SkippedSample("bad_conversation", f"a record needs `conversations` or `messages`, got {sorted(record)}")
    placeholders = sum(_count_placeholders(message["content"]) for message in messages)
    if images and placeholders == 0:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise SkippedSample("bad_conversation", "images but no user turn")
        content = first_user["content"]
        first_user["content"] = (IMAGE_PLACEHOLDER * len(images) + "\n" + content if isinstance(content, str)
                                 else [{"type": "image"}] * len(images) + list(content))
        placeholders = len(images)
    if placeholders != len(images):
        raise SkippedSample("image_count_mismatch", f"{placeholders} placeholder(s), {len(images)} image(s)")
    return messages, images


def _count_placeholders(content):
    if isinstance(content, str):
        return content.count(IMAGE_PLACEHOLDER)
    return sum(1 for item in content if isinstance(item, dict) and item.get("type") == "image")


def estimate_length(record, num_image_tokens):
    """LLaVA's grouping length: words of every turn plus the image tokens, negative for text-only samples."""
    messages, images = conversation_of(record)
    words = 0
    for message in messages:
        content = message["content"]
        text = content if isinstance(content, str) else " ".join(
            item.get("text") or "" for item in content if isinstance(item, dict))
        words += len(text.split())
    return words + num_image_tokens * len(images) if images else -max(words, 1)


# ----- images -----


def read_image_bytes(reference, image_folder):
    """The content of an image reference (a path under `image_folder`, `{"bytes", "path"}`, bytes or a PIL image),
    as bytes: what the feature cache keys on and what `decode_image` decodes."""
    if isinstance(reference, Image.Image):
        return reference
    if isinstance(reference, dict):
        data = reference.get("bytes")
        reference = data if data is not None else reference.get("path")
    if isinstance(reference, (bytes, bytearray)):
        return bytes(reference)
    if not isinstance(reference, (str, os.PathLike)):
        raise SkippedSample("unreadable_image", f"unsupported image reference {type(reference).__name__}")
    path = reference
    if image_folder:  # the declared folder holds every image: "../x.png" or a link out of it is refused
        try:
            path = path_inside(image_folder, reference)
        except ValueError as error:
            raise SkippedSample("image_outside_folder", str(error)) from None
    if not os.path.isfile(path):
        raise SkippedSample("missing_image", str(path))
    with open(path, "rb") as handle:
        return handle.read()


def decode_image(data, reference=""):
    """Bytes (or a PIL image) -> a fully decoded RGB PIL image through the processor's own decoder (`load_rgb_image`:
    16-bit images, EXIF orientation and alpha read as in inference); an unreadable image is a skipped sample."""
    try:
        return load_rgb_image(data)
    except ValueError as error:
        raise SkippedSample("unreadable_image", f"{reference}: {error}") from None


def read_image(reference, image_folder):
    return decode_image(read_image_bytes(reference, image_folder), reference)


def image_key(data):
    """Content key of an image: sha256 of its file bytes (of mode, size and pixels for an in-memory image)."""
    if isinstance(data, Image.Image):
        data = f"{data.mode}{data.size}".encode() + data.tobytes()
    return hashlib.sha256(data).hexdigest()


# ----- tokenisation -----


class ConversationEncoder:
    """messages + images -> input_ids (image tokens expanded), labels (assistant tokens only).

    The template is rendered once; its `{% generation %}` character spans are mapped to tokens through the tokenizer's
    offsets, then every `<image>` token is expanded into `num_image_tokens` copies (labels -100). Tokenisation and
    expansion are the processor's own functions (`tokenize_with_images`, `expand_image_tokens`): the whole text at once
    (default), or with `tokenize_chunks` each piece between images on its own, BOS kept once (the ids the released
    LLaVA/Eagle models were trained on).
    """

    def __init__(self, tokenizer, chat_template, num_image_tokens, image_token=IMAGE_PLACEHOLDER, max_length=None,
                 tokenize_chunks=False):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("Assistant-token labels need a fast tokenizer (character offsets); got "
                             f"{type(tokenizer).__name__}.")
        if "generation" not in chat_template:
            raise ValueError("The chat template has no {% generation %} markers, so assistant tokens cannot be found.")
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.num_image_tokens = int(num_image_tokens)
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"The tokenizer has no {image_token!r} token.")
        self.max_length = max_length
        self.tokenize_chunks = tokenize_chunks

    def render(self, messages):
        """(text, generation spans as (start, end) character ranges)."""
        try:
            prompts, spans = render_jinja_template(
                conversations=[messages], chat_template=self.chat_template, return_assistant_tokens_mask=True,
                **self.tokenizer.special_tokens_map,
            )
        except Exception as error:  # jinja's raise_exception and template errors: the sample's fault, not the run's
            raise SkippedSample("bad_conversation", str(error)) from None
        return prompts[0], spans[0]

    def tokenize(self, messages):
        """(input_ids, labels) before image expansion: `<image>` is one token. The ids are the processor's own
        (`tokenize_with_images`); a rendered text that starts with the BOS text keeps that BOS and gets no other."""
        text, spans = self.render(messages)
        bos = self.tokenizer.bos_token
        input_ids, offsets = tokenize_with_images(
            self.tokenizer, text, self.image_token, add_special_tokens=not (bos and text.startswith(bos)),
            tokenize_chunks=self.tokenize_chunks, with_offsets=True,
        )
        labels = []
        for token_id, (start, end) in zip(input_ids, offsets):
            supervised = any(start < span_end and end > span_start for span_start, span_end in spans)
            labels.append(token_id if supervised and token_id != self.image_token_id else -100)
        return input_ids, labels

    def __call__(self, messages, num_images):
        input_ids, labels = self.tokenize(messages)
        if input_ids.count(self.image_token_id) != num_images:
            raise SkippedSample("image_count_mismatch", f"{input_ids.count(self.image_token_id)} image token(s) "
                                f"after the template, {num_images} image(s)")
        expanded_ids, expanded_labels = expand_image_tokens(input_ids, labels, self.image_token_id,
                                                            self.num_image_tokens)
        if all(label == -100 for label in expanded_labels):
            raise SkippedSample("no_answer", f"{len(expanded_ids)} tokens, none from an assistant turn")
        return self.truncate(expanded_ids, expanded_labels)

    def truncate(self, input_ids, labels):
        if self.max_length is None or len(input_ids) <= self.max_length:
            return input_ids, labels
        kept = input_ids[: self.max_length]
        if kept.count(self.image_token_id) != input_ids.count(self.image_token_id):
            raise SkippedSample("image_cut_by_truncation", f"{len(input_ids)} tokens > max_length {self.max_length}")
        labels = labels[: self.max_length]
        if all(label == -100 for label in labels):
            raise SkippedSample("answer_cut_by_truncation", f"{len(input_ids)} tokens > max_length {self.max_length}")
        return kept, labels


# ----- batches -----


class EagleDataCollator:
    """Index rows -> a padded batch (right padding). Skipped samples leave the batch and go into `data_report`, a
    plain dict the trainer pops before the forward pass. With a feature cache, the batch carries the frozen experts'
    fused features (num_images, T, C) as `mm_encoder_outputs={"image": {"last_hidden_state": ...}}` instead of
    `pixel_values`: the model's own forward projects and places them."""

    def __init__(self, records, encoder, image_processor, pad_token_id, image_folder=None, feature_cache=None):
        self.records = records
        self.encoder = encoder
        self.image_processor = image_processor
        self.pad_token_id = pad_token_id
        self.image_folder = image_folder
        self.feature_cache = feature_cache

    def encode(self, index):
        """One record -> (input_ids, labels, decoded images or cached features)."""
        messages, references = conversation_of(self.records[index])
        input_ids, labels = self.encoder(messages, len(references))
        images = []
        for reference in references:
            if self.feature_cache is not None:
                images.append(self.feature_cache.load_reference(reference, self.image_folder))
            else:
                images.append(read_image(reference, self.image_folder))
        return input_ids, labels, images

    def __call__(self, rows):
        report = DataReport()
        samples = []
        for row in rows:
            index = int(row["index"])
            report.read += 1
            try:
                samples.append(self.encode(index))
            except SkippedSample as skipped:
                report.skip(index, skipped.reason, skipped.detail)
        report.used = len(samples)
        if not samples:
            # Every rank must still run forward and backward (DDP); a lone padding token with no label trains nothing.
            report.empty_batches = 1
            samples = [([self.pad_token_id], [-100], [])]
        batch = self.pad(samples)
        batch["data_report"] = report.to_dict()
        return batch

    def pad(self, samples):
        length = max(len(ids) for ids, _, _ in samples)
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), length), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for row, (ids, sample_labels, _) in enumerate(samples):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(ids)] = torch.tensor(sample_labels)
            attention_mask[row, : len(ids)] = 1
        batch = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        images = [image for _, _, sample_images in samples for image in sample_images]
        if images and self.feature_cache is not None:
            batch["mm_encoder_outputs"] = {"image": {"last_hidden_state": torch.stack(images)}}
        elif images:
            try:
                batch["pixel_values"] = self.image_processor(images, return_tensors="pt")["pixel_values"]
            except ValueError as error:
                raise ValueError(f"The image processor refused decoded images: {error}") from error
        return batch


# ----- sampling -----


class ModalityLengthGroupedSampler(torch.utils.data.Sampler):
    """LLaVA's `group_by_modality_length`: image and text-only samples never share a batch, and each group of
    `batch_size * batches_per_group` samples is ordered by length and split into batches of similar total length.
    Deterministic for a seed and an epoch (so a resumed run replays the same order)."""

    def __init__(self, lengths, batch_size, batches_per_group, seed=0):
        if any(length == 0 for length in lengths):
            raise ValueError("Lengths must be non-zero: positive for image samples, negative for text-only ones.")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.batches_per_group = batches_per_group
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        group_size = self.batch_size * self.batches_per_group
        image = [i for i, length in enumerate(self.lengths) if length > 0]
        text = [i for i, length in enumerate(self.lengths) if length < 0]
        groups, leftovers = [], []
        for indices in (image, text):
            ordered = self._length_grouped(indices, group_size, generator)
            full = len(ordered) - len(ordered) % group_size
            groups += [ordered[i: i + group_size] for i in range(0, full, group_size)]
            leftovers += ordered[full:]
        order = torch.randperm(len(groups), generator=generator).tolist()
        groups = [groups[i] for i in order]
        if leftovers:
            groups.append(leftovers)  # the one mixed group, last (as LLaVA's `additional_batch`)
        return iter([index for group in groups for index in group])

    def _length_grouped(self, indices, group_size, generator):
        shuffled = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        ordered = []
        for start in range(0, len(shuffled), group_size):
            group = sorted(shuffled[start: start + group_size], key=lambda i: abs(self.lengths[i]), reverse=True)
            ordered += self._even_batches(group)
        return ordered

    def _even_batches(self, group):
        """Deal a length-sorted group into batches of equal size and similar total length (longest-first greedy)."""
        num_batches = max(1, math.ceil(len(group) / self.batch_size))
        batches, totals = [[] for _ in range(num_batches)], [0] * num_batches
        for index in group:
            open_batches = [b for b in range(num_batches) if len(batches[b]) < self.batch_size]
            target = min(open_batches, key=lambda b: totals[b])
            batches[target].append(index)
            totals[target] += abs(self.lengths[index])
        return [index for batch in batches for index in batch]


__all__ = [
    "ConversationEncoder", "DataReport", "EagleDataCollator", "ModalityLengthGroupedSampler", "SKIP_REASONS",
    "SkippedSample", "conversation_of", "decode_image", "estimate_length", "image_key", "load_records", "read_image",
    "read_image_bytes",
]
