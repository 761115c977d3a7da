# Copyright 2026 The eagle-hf developers. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance
# with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software distributed under the License is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.
"""Processor for Eagle and LLaVA-1.5: the image processor plus the tokenizer, each `<image>` expanded to its image's
token span.

Shipped flat next to checkpoint weights, so it imports only torch, transformers and its sibling image processor, and
it loads on transformers 4.57 and 5.x: it implements `__call__` itself instead of v5's `replace_image_token` hook, sets
v4's `attributes` / `*_class` only on v4, and writes a tokenizer_config.json that 4.57 can read.

How images map to samples (`text` a string or a list of strings):

* one list per sample (`[[img], [], [img1, img2]]`): sample i takes list i, which must hold one image per `<image>`
  in its text;
* a flat list (or one image, or a 4-D array / tensor): consumed in order, sample 0 takes as many images as it has
  `<image>` markers, then sample 1, and so on; the total must match.

Two tokenisations, both giving `num_image_tokens` copies of the image token per `<image>`:

* default: the whole text at once, as chat templates and TRL expect (`<image>` must be one special token);
* `tokenize_chunks=True` (parity with the original): the text is split on `<image>` and each piece tokenised on its
  own, BOS kept once, exactly like LLaVA's / Eagle's `tokenizer_image_token`. It can differ from the whole-text ids
  at the piece boundaries (a SentencePiece tokenizer starts every piece with "▁"), and it gives the ids the released
  models saw.
"""

import json
import os
from typing import Optional

import torch
import transformers
from transformers import AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .image_processing_eagle import PARAMETER_NAMES as IMAGE_PARAMETER_NAMES
from .image_processing_eagle import EagleImageProcessor


logger = logging.get_logger(__name__)

_TRANSFORMERS_V5 = int(transformers.__version__.split(".")[0]) >= 5
# A tokenizer without a real limit reports transformers' VERY_LARGE_INTEGER (1e30) as its model_max_length.
_NO_LIMIT = int(1e20)
_TRUNCATE = {"true": True, "longest_first": True, "only_first": True, "false": False, "none": False,
             "do_not_truncate": False}
_PADDING = {"true": "longest", "longest": "longest", "max_length": "max_length", "false": None, "none": None,
            "do_not_pad": None}
_TEXT_OPTIONS = ("add_special_tokens", "return_offsets_mapping", "return_attention_mask", "pad_to_multiple_of")
_SAVE_OPTIONS = ("legacy_serialization", "save_jinja_files")  # save_pretrained's own options, the rest are the Hub's
# Passed by transformers' own apply_chat_template: offsets are already returned in the caller's text coordinates,
# so the chat-template code needs no replacement record; the others concern videos and audio.
_IGNORED_OPTIONS = ("return_text_replacement_offsets", "do_sample_frames", "return_metadata", "return_token_type_ids")


def _option_key(value) -> str:
    """True / "longest" / PaddingStrategy.LONGEST ... -> "true" / "longest" / "longest"."""
    value = getattr(value, "value", value)  # the Strategy enums are str enums
    return str(value).lower()


def _is_single_image(item) -> bool:
    return not isinstance(item, (list, tuple)) and getattr(item, "ndim", 3) != 4


def _flat_images(images) -> list:
    """One image / a flat list / a 4-D array or tensor -> a flat list."""
    if getattr(images, "ndim", None) == 4:
        return list(images)
    return [images] if _is_single_image(images) else list(images)


def _describe(marker_counts: list[int]) -> str:
    return ", ".join(f"sample {index}: {count}" for index, count in enumerate(marker_counts))


def split_images_by_sample(images, marker_counts: list[int], image_token: str = "<image>") -> list[list]:
    """Assigns `images` to the samples whose texts hold `marker_counts[i]` image markers each.

    Returns:
        One list of images per sample. Raises ValueError naming the sample and both counts on any mismatch.
    """
    if images is None:
        for index, count in enumerate(marker_counts):
            if count:
                raise ValueError(f"Sample {index} has {count} {image_token} marker(s) but no images were given.")
        return [[] for _ in marker_counts]
    if isinstance(images, (list, tuple)) and images and not all(_is_single_image(item) for item in images):
        if not all(isinstance(item, (list, tuple)) for item in images):
            raise ValueError("`images` mixes lists and single images: give one list of images per sample, or one flat "
                             "list of images consumed in order.")
        if len(images) != len(marker_counts):
            raise ValueError(f"`images` holds {len(images)} per-sample lists for {len(marker_counts)} text samples.")
        for index, (sample_images, count) in enumerate(zip(images, marker_counts)):
            if len(sample_images) != count:
                raise ValueError(f"Sample {index} has {count} {image_token} marker(s) but {len(sample_images)} "
                                 "image(s).")
        return [list(sample_images) for sample_images in images]
    flat = _flat_images(images)
    if len(flat) > sum(marker_counts):
        raise ValueError(f"{len(flat)} images were given but the text has {sum(marker_counts)} {image_token} "
                         f"marker(s) ({_describe(marker_counts)}); a flat image list is consumed in order, one image "
                         f"per marker, so images {sum(marker_counts)} and after have no marker.")
    per_sample, start = [], 0
    for index, count in enumerate(marker_counts):
        if start + count > len(flat):
            raise ValueError(f"Sample {index} has {count} {image_token} marker(s) but only {len(flat) - start} of the "
                             f"{len(flat)} images are left for it (a flat image list is consumed in order; "
                             f"{_describe(marker_counts)}).")
        per_sample.append(flat[start : start + count])
        start += count
    return per_sample


def tokenize_with_images(tokenizer, text: str, image_token: str, add_special_tokens: bool = True,
                         tokenize_chunks: bool = False, with_offsets: bool = False):
    """(ids, offsets) of `text` with each `image_token` one token, not yet expanded; offsets are character spans in
    `text` (None entries without `with_offsets`). The one tokenisation of the package: the processor and training's
    label builder both call it.

    Whole text (default): tokenised at once; a text that starts with the BOS text came from a chat template, which
    wrote every special token it wants, so the tokenizer adds none. `tokenize_chunks`: LLaVA's / Eagle's
    `tokenizer_image_token`: each piece between markers tokenised alone, BOS kept once; a text that starts with the
    BOS text while `add_special_tokens` is False is tokenised as the original did (the template wrote that BOS).
    """
    bos = tokenizer.bos_token
    starts_with_bos = bool(bos) and text.startswith(bos)
    if not tokenize_chunks:
        return _tokenize(tokenizer, text, add_special_tokens and not starts_with_bos, with_offsets)
    start = 0
    if not add_special_tokens and starts_with_bos:
        start, add_special_tokens = len(bos), True
    image_token_id = tokenizer.convert_tokens_to_ids(image_token)
    ids, offsets, drop_first, position = [], [], False, start
    for index, chunk in enumerate(text[start:].split(image_token)):
        chunk_ids, chunk_offsets = _tokenize(tokenizer, chunk, add_special_tokens, with_offsets)
        if with_offsets:
            chunk_offsets = [(first + position, last + position) for first, last in chunk_offsets]
        if index == 0:
            drop_first = bool(chunk_ids) and chunk_ids[0] == tokenizer.bos_token_id
        else:
            ids.append(image_token_id)
            offsets.append((position - len(image_token), position) if with_offsets else None)
            if drop_first:  # the original drops the first token of every later piece: that piece's BOS
                chunk_ids, chunk_offsets = chunk_ids[1:], chunk_offsets[1:]
        ids += chunk_ids
        offsets += chunk_offsets
        position += len(chunk) + len(image_token)
    return ids, offsets


def _tokenize(tokenizer, text: str, add_special_tokens: bool, with_offsets: bool):
    encoding = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=with_offsets,
                         return_attention_mask=False, return_token_type_ids=False)
    ids = list(encoding["input_ids"])
    offsets = [tuple(pair) for pair in encoding["offset_mapping"]] if with_offsets else [None] * len(ids)
    return ids, offsets


def expand_image_tokens(ids: list[int], aligned: list, image_token_id: int, num_image_tokens: int):
    """Each image token -> `num_image_tokens` copies; `aligned` (offsets, labels...) is copied alongside."""
    expanded_ids, expanded_aligned = [], []
    for token_id, value in zip(ids, aligned):
        copies = num_image_tokens if token_id == image_token_id else 1
        expanded_ids += [token_id] * copies
        expanded_aligned += [value] * copies
    return expanded_ids, expanded_aligned


class EagleProcessor(ProcessorMixin):
    r"""
    Processor of Eagle and LLaVA-1.5: [`EagleImageProcessor`] for the pixels and a tokenizer for the text, with each
    `image_token` in the text expanded to `num_image_tokens` copies (the model scatters one image feature into each).

    Args:
        image_processor ([`EagleImageProcessor`]): the image processor.
        tokenizer ([`PreTrainedTokenizerBase`]): a tokenizer that has `image_token` as one special token.
        chat_template (`str`, *optional*): a Jinja chat template, e.g. `eagle_hf.chat_templates.load_chat_template(
            "vicuna_v1")`; it is saved as `chat_template.jinja`.
        num_image_tokens (`int`, defaults to 1024): tokens per image; must equal the model's `config.image_seq_length`
            (Eagle 32x32 = 1024, LLaVA-1.5 24x24 = 576). [`EagleProcessor.for_config`] sets it from a config.
        image_token (`str`, defaults to `"<image>"`): the placeholder written in the text.
    """

    model_input_names = ["input_ids", "attention_mask", "pixel_values"]
    if not _TRANSFORMERS_V5:
        # transformers 4.x reads the sub-processors from these; 5.x infers them from `__init__` and warns on `*_class`.
        attributes = ["image_processor", "tokenizer"]
        image_processor_class = "AutoImageProcessor"
        tokenizer_class = "AutoTokenizer"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, num_image_tokens=1024,
                 image_token="<image>", **kwargs):
        if image_processor is None or tokenizer is None:
            raise ValueError("EagleProcessor needs both an image_processor and a tokenizer.")
        if kwargs:
            logger.warning(f"EagleProcessor ignores unknown arguments {sorted(kwargs)}.")
        if isinstance(num_image_tokens, bool) or not isinstance(num_image_tokens, int) or num_image_tokens < 1:
            raise ValueError(f"num_image_tokens must be a positive int, got {num_image_tokens!r}.")
        if not isinstance(image_token, str) or not image_token:
            raise ValueError(f"image_token must be a non-empty string, got {image_token!r}.")
        self.num_image_tokens = num_image_tokens
        self.image_token = image_token
        self.image_token_id = self._single_token_id(tokenizer, image_token)
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    @staticmethod
    def _single_token_id(tokenizer, image_token: str) -> int:
        token_id = tokenizer.convert_tokens_to_ids(image_token)
        encoded = tokenizer.encode(image_token, add_special_tokens=False)
        if token_id is None or token_id == tokenizer.unk_token_id or encoded != [token_id]:
            raise ValueError(
                f"The tokenizer must know {image_token!r} as one token, but it encodes it as {encoded}. Add it with "
                f"tokenizer.add_special_tokens({{'additional_special_tokens': [{image_token!r}]}}) and resize the "
                "model's embeddings to the new vocabulary size."
            )
        return token_id

    @classmethod
    def for_config(cls, config, tokenizer, chat_template=None, image_token="<image>", **image_processor_kwargs):
        """A processor matching `config` (an `EagleConfig`): `num_image_tokens = config.image_seq_length`, images at
        `config.image_size` normalised with `config.image_mean` / `config.image_std`, and a check that the tokenizer's
        `image_token` has the id `config.image_token_id`. `image_processor_kwargs` go to [`EagleImageProcessor`]."""
        image_processor = EagleImageProcessor(image_size=config.image_size, image_mean=config.image_mean,
                                              image_std=config.image_std, **image_processor_kwargs)
        processor = cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template,
                        num_image_tokens=config.image_seq_length, image_token=image_token)
        if processor.image_token_id != config.image_token_id:
            raise ValueError(f"The tokenizer gives {image_token!r} the id {processor.image_token_id}, but the model's "
                             f"config.image_token_id is {config.image_token_id}.")
        return processor

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """[image_processor, tokenizer] read from a saved folder (4.57 and 5.x call this with different arguments).

        The image processor is this file's sibling, so it is built directly: AutoImageProcessor would ask for
        `trust_remote_code` because its saved config has an `auto_map`, even where eagle_hf is installed.
        """
        image_processor = EagleImageProcessor.from_pretrained(pretrained_model_name_or_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return [image_processor, tokenizer]

    def __call__(self, images=None, text=None, padding=False, padding_side=None, truncation=None, max_length=None,
                 return_tensors=None, tokenize_chunks=False, **kwargs) -> BatchFeature:
        """
        Args:
            images: see the module docstring for how images map to samples. Each image is anything
                [`EagleImageProcessor`] reads (PIL image, array, tensor, file path).
            text (`str` or `list[str]`): prompts with one `image_token` per image.
            padding (`bool` or `str`): False, True / "longest", or "max_length" (to `max_length`).
            padding_side (`str`, *optional*): "left" (batched generation) or "right"; defaults to the tokenizer's.
            truncation (`bool` or `str`): cut text tokens past `max_length` (default: the tokenizer's
                `model_max_length`) on the tokenizer's `truncation_side`. A cut that would reach an image span raises
                a ValueError instead: an image span is never cut.
            max_length (`int`, *optional*): see `padding` and `truncation`.
            return_tensors (`str`, *optional*): "pt", "np" or None (lists).
            tokenize_chunks (`bool`, defaults to False): the original's piece-wise tokenisation (module docstring). A
                text that starts with the BOS text (a chat template's output) counts as "tokenizer adds the BOS".
            **kwargs: `add_special_tokens`, `return_offsets_mapping` (in the coordinates of `text`, image copies
                sharing their marker's span), `return_attention_mask`, `pad_to_multiple_of`; any
                [`EagleImageProcessor`] parameter for this call; `text_kwargs` / `images_kwargs` dicts of those.

        Returns:
            [`BatchFeature`] with `input_ids` and `attention_mask` (one row per sample, also for a single string),
            `pixel_values` (N, 3, S, S) for the N images in sample order when images are given, and `offset_mapping`
            when asked. Never `token_type_ids`.
        """
        call = dict(padding=padding, padding_side=padding_side, truncation=truncation, max_length=max_length,
                    return_tensors=return_tensors, tokenize_chunks=tokenize_chunks)
        options = self._split_options(kwargs, call)
        if text is None:
            if images is None or (isinstance(images, (list, tuple)) and not any(images)):
                raise ValueError("EagleProcessor needs `text`, `images` or both.")
            pixel_values = self._pixel_values([_flat_images(images)], options["image"], call["return_tensors"])
            return BatchFeature({"pixel_values": pixel_values}, tensor_type=call["return_tensors"])
        samples = self._text_samples(text)
        marker_counts = [sample.count(self.image_token) for sample in samples]
        per_sample_images = split_images_by_sample(images, marker_counts, self.image_token)
        data = self._encode(samples, marker_counts, options["text"], call)
        data = self._pad(data, call, options["text"])
        if any(per_sample_images):
            data["pixel_values"] = self._pixel_values(per_sample_images, options["image"], call["return_tensors"])
        return BatchFeature(data, tensor_type=call["return_tensors"])

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """As ProcessorMixin's, after turning string message contents into one text block: transformers 4.57's
        tokenising path reads every content as a list of blocks (the shipped templates render both forms alike)."""
        return super().apply_chat_template(_contents_as_blocks(conversation), chat_template, **kwargs)

    # ----- inputs -----

    def _split_options(self, kwargs: dict, call: dict) -> dict:
        """Flat or nested (`text_kwargs`, `images_kwargs`...) options -> {"text": {...}, "image": {...}}; a call
        parameter found in a nested dict updates `call` in place."""
        merged = dict(kwargs)
        # `processor_kwargs` is how 5.x's apply_chat_template takes call options; 4.57 passes the dict through as is.
        for nested in ("processor_kwargs", "text_kwargs", "images_kwargs", "common_kwargs"):
            merged.update(merged.pop(nested, None) or {})
        call.update({key: merged.pop(key) for key in list(call) if key in merged})
        for other in ("videos", "audio", "audios"):
            value = merged.pop(other, None)
            # Harnesses such as lmms-eval always pass empty lists; only real videos or audio are refused.
            if value is not None and not (isinstance(value, (list, tuple)) and len(value) == 0):
                raise ValueError(f"EagleProcessor handles images and text only; got `{other}`.")
        text_options = {key: merged.pop(key) for key in _TEXT_OPTIONS if key in merged}
        image_options = {key: merged.pop(key) for key in IMAGE_PARAMETER_NAMES if key in merged}
        for key in _IGNORED_OPTIONS:
            value = merged.pop(key, None)
            if key == "return_token_type_ids" and value:
                raise ValueError("EagleProcessor never returns token_type_ids: the model takes none.")
        unused = sorted(key for key, value in merged.items() if value is not None)
        if unused:
            logger.warning_once(f"EagleProcessor ignores the arguments {unused}.")
        return {"text": text_options, "image": image_options}

    @staticmethod
    def _text_samples(text) -> list[str]:
        if isinstance(text, str):
            return [text]
        if isinstance(text, (list, tuple)) and text and all(isinstance(sample, str) for sample in text):
            return list(text)
        raise ValueError(f"`text` must be a string or a non-empty list of strings, got {type(text).__name__}.")

    def _pixel_values(self, per_sample_images: list[list], image_options: dict, return_tensors):
        """(N, 3, S, S) for all images in sample order; a bad image raises a ValueError naming its sample."""
        batches = []
        for index, sample_images in enumerate(per_sample_images):
            if not sample_images:
                continue
            try:
                processed = self.image_processor(sample_images, return_tensors="pt", **image_options)
            except ValueError as error:
                raise ValueError(f"Sample {index}: {error}") from error
            batches.append(processed["pixel_values"])
        pixel_values = torch.cat(batches) if len(batches) > 1 else batches[0]
        # Without return_tensors, numpy, as image processors give it.
        return pixel_values.numpy() if return_tensors is None else pixel_values

    # ----- text -----

    def _encode(self, samples, marker_counts, text_options, call) -> dict:
        add_special_tokens = text_options.get("add_special_tokens", True)
        with_offsets = bool(text_options.get("return_offsets_mapping", False))
        limit = self._truncation_limit(call["truncation"], call["max_length"])
        all_ids, all_offsets = [], []
        for index, (sample, count) in enumerate(zip(samples, marker_counts)):
            ids, offsets = tokenize_with_images(self.tokenizer, sample, self.image_token, add_special_tokens,
                                                call["tokenize_chunks"], with_offsets)
            found = ids.count(self.image_token_id)
            if found != count:
                raise ValueError(f"Sample {index}: the text has {count} {self.image_token} marker(s) but its tokens "
                                 f"hold {found} image token(s) (id {self.image_token_id}): the tokenizer must turn "
                                 "each marker, and nothing else, into that token.")
            ids, offsets = expand_image_tokens(ids, offsets, self.image_token_id, self.num_image_tokens)
            if limit is not None:
                ids, offsets = self._truncate(index, ids, offsets, limit, count)
            elif len(ids) > self.tokenizer.model_max_length:
                logger.warning_once(f"Sample {index} is {len(ids)} tokens long, more than the tokenizer's "
                                    f"model_max_length {self.tokenizer.model_max_length}.")
            all_ids.append(ids)
            all_offsets.append(offsets)
        return {"input_ids": all_ids, "offset_mapping": all_offsets if with_offsets else None}

    def _truncation_limit(self, truncation, max_length) -> Optional[int]:
        key = _option_key(truncation)
        if key not in _TRUNCATE:
            raise ValueError(f"truncation must be one of True, False, 'longest_first', 'only_first', "
                             f"'do_not_truncate', got {truncation!r}.")
        if not _TRUNCATE[key]:
            return None
        limit = max_length if max_length is not None else self.tokenizer.model_max_length
        return None if limit is None or limit >= _NO_LIMIT else int(limit)

    def _truncate(self, index: int, ids: list[int], offsets: list, limit: int, num_images: int):
        if len(ids) <= limit:
            return ids, offsets
        side = self.tokenizer.truncation_side
        kept = slice(0, limit) if side == "right" else slice(len(ids) - limit, len(ids))
        cut = ids.count(self.image_token_id) - ids[kept].count(self.image_token_id)
        if cut:
            raise ValueError(
                f"Sample {index}: {len(ids)} tokens with its {num_images} image(s) expanded to "
                f"{self.num_image_tokens} tokens each, more than max_length={limit}; truncating on the {side} would "
                f"cut {cut} image token(s), and an image span is never cut. Shorten the text, raise max_length or "
                "give fewer images."
            )
        return ids[kept], offsets[kept]

    def _pad(self, data: dict, call: dict, text_options: dict) -> dict:
        """Pads `input_ids` (and offsets) to one length, adds `attention_mask`; drops `offset_mapping` if not asked."""
        key = _option_key(call["padding"])
        if key not in _PADDING:
            raise ValueError(f"padding must be one of True, False, 'longest', 'max_length', 'do_not_pad', got "
                             f"{call['padding']!r}.")
        side = call["padding_side"] or self.tokenizer.padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}.")
        lengths = [len(ids) for ids in data["input_ids"]]
        multiple = text_options.get("pad_to_multiple_of")
        target = self._padded_length(_PADDING[key], lengths, call["max_length"], multiple)
        if target is None and call["return_tensors"] is not None and len(set(lengths)) > 1:
            raise ValueError(f"The {len(lengths)} samples have different lengths {lengths}: pass padding=True "
                             "(with padding_side='left' for batched generation).")
        pad_id = self.tokenizer.pad_token_id
        if target is not None and pad_id is None and any(length < target for length in lengths):
            raise ValueError("The tokenizer has no pad token: set tokenizer.pad_token before padding.")
        output = {"input_ids": [], "attention_mask": [], "offset_mapping": []}
        for row, ids in enumerate(data["input_ids"]):
            missing = (target or len(ids)) - len(ids)
            mask = [1] * len(ids)
            offsets = data["offset_mapping"][row] if data["offset_mapping"] is not None else []
            # Padding offsets stay sorted (v4's assistant mask bisects them) and zero-width (never in a span).
            end = max([last for _, last in offsets], default=0)
            if side == "left":
                ids, mask, offsets = [pad_id] * missing + ids, [0] * missing + mask, [(0, 0)] * missing + offsets
            else:
                ids, mask, offsets = ids + [pad_id] * missing, mask + [0] * missing, offsets + [(end, end)] * missing
            output["input_ids"].append(ids)
            output["attention_mask"].append(mask)
            output["offset_mapping"].append(offsets)
        if data["offset_mapping"] is None:
            del output["offset_mapping"]
        if not text_options.get("return_attention_mask", True):
            del output["attention_mask"]
        return output

    def _padded_length(self, strategy, lengths, max_length, pad_to_multiple_of) -> Optional[int]:
        if strategy is None:
            return None
        if strategy == "max_length":
            if max_length is None:
                raise ValueError("padding='max_length' needs max_length.")
            target = max(max_length, *lengths)
        else:
            target = max(lengths)
        if pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
        return target

    # ----- saving -----

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """As ProcessorMixin's, then makes tokenizer_config.json loadable by transformers 4.57 (see
        `make_tokenizer_config_portable`). `push_to_hub=True` pushes what `push_to_hub` saves, which is the same."""
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(os.fspath(save_directory))))
            save_kwargs = {key: kwargs.pop(key) for key in _SAVE_OPTIONS if key in kwargs}
            files = self.save_pretrained(save_directory, **save_kwargs)
            self.push_to_hub(repo_id, **kwargs)
            return files
        files = super().save_pretrained(save_directory, **kwargs)
        make_tokenizer_config_portable(os.path.join(save_directory, "tokenizer_config.json"))
        return files


def _contents_as_blocks(conversation):
    """A copy of a conversation (or of a batch of them) where each string `content` is `[{"type": "text", ...}]`."""
    if isinstance(conversation, (list, tuple)) and conversation and isinstance(conversation[0], (list, tuple)):
        return [_contents_as_blocks(single) for single in conversation]
    if not isinstance(conversation, (list, tuple)):
        return conversation
    return [
        {**message, "content": [{"type": "text", "text": message["content"]}]}
        if isinstance(message, dict) and isinstance(message.get("content"), str) else message
        for message in conversation
    ]


def make_tokenizer_config_portable(path) -> None:
    """Rewrites, in place, what transformers 5.x writes and 4.57 cannot read: `tokenizer_class: TokenizersBackend`
    becomes `PreTrainedTokenizerFast` (an alias of it in 5.x) and a list-valued `extra_special_tokens` moves into
    `additional_special_tokens` (4.57 expects a dict of named tokens there). Other files and keys are left alone."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    changed = False
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        changed = True
    extra = config.get("extra_special_tokens")
    if isinstance(extra, list):
        additional = list(config.get("additional_special_tokens") or [])
        config["additional_special_tokens"] = additional + [token for token in extra if token not in additional]
        del config["extra_special_tokens"]
        changed = True
    if changed:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, ensure_ascii=False, sort_keys=True)
            handle.write("\n")


__all__ = ["EagleProcessor", "expand_image_tokens", "tokenize_with_images"]
