# Copyright 2026 The eagle-hf developers. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance
# with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software distributed under the License is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.
"""Processor for Eagle and LLaVA-1.5: the image processor plus the tokenizer, each `<image>` expanded to its image's
token span. Shipped flat next to checkpoint weights; loads on transformers 4.57 and 5.x.

Images map to samples either as one list per sample (`[[img], [], [img1, img2]]`) or as a flat list (one image, or a
4-D array / tensor) consumed in order, one image per `<image>`. Two tokenisations give the same image spans: the whole
text at once (as chat templates and TRL do), or `tokenize_chunks` (each piece between markers alone, BOS kept once:
the original's `tokenizer_image_token`, the ids the released models saw). The processor config stores which one a
checkpoint uses, so training and evaluation agree.
"""

import os

import torch
import transformers
from transformers import AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import MultiModalData, ProcessorMixin
from transformers.utils import logging

from .image_processing_eagle import PARAMETER_NAMES as IMAGE_PARAMETER_NAMES
from .image_processing_eagle import EagleImageProcessor, flat_images, split_images_by_sample
from .text_processing_eagle import contents_as_blocks, expand_image_tokens, make_tokenizer_config_portable
from .text_processing_eagle import single_token_id, tokenize_with_images, truncate_keeping_images, truncation_limit


logger = logging.get_logger(__name__)

_TRANSFORMERS_V5 = int(transformers.__version__.split(".")[0]) >= 5
_TEXT_OPTIONS = ("add_special_tokens", "return_offsets_mapping", "return_attention_mask", "pad_to_multiple_of",
                 "return_mm_token_type_ids")
_SAVE_OPTIONS = ("legacy_serialization", "save_jinja_files")  # save_pretrained's own options, the rest are the Hub's
# Passed by transformers' own apply_chat_template: offsets are already in the caller's text coordinates, so it needs
# no replacement record; the others concern videos and audio.
_IGNORED_OPTIONS = ("return_text_replacement_offsets", "do_sample_frames", "return_metadata", "return_token_type_ids")


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
        tokenize_chunks (`bool`, defaults to False): this checkpoint's default tokenisation (module docstring); True
            for checkpoints converted from the originals. Training and `eagle-hf eval` follow it.
    """

    model_input_names = ["input_ids", "attention_mask", "pixel_values"]
    if not _TRANSFORMERS_V5:
        # transformers 4.x reads the sub-processors from these; 5.x infers them from `__init__` and warns on `*_class`.
        attributes = ["image_processor", "tokenizer"]
        image_processor_class = "AutoImageProcessor"
        tokenizer_class = "AutoTokenizer"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, num_image_tokens=1024,
                 image_token="<image>", tokenize_chunks=False, **kwargs):
        if image_processor is None or tokenizer is None:
            raise ValueError("EagleProcessor needs both an image_processor and a tokenizer.")
        if kwargs:
            logger.warning(f"EagleProcessor ignores unknown arguments {sorted(kwargs)}.")
        if isinstance(num_image_tokens, bool) or not isinstance(num_image_tokens, int) or num_image_tokens < 1:
            raise ValueError(f"num_image_tokens must be a positive int, got {num_image_tokens!r}.")
        if not isinstance(image_token, str) or not image_token:
            raise ValueError(f"image_token must be a non-empty string, got {image_token!r}.")
        if not isinstance(tokenize_chunks, bool):
            raise ValueError(f"tokenize_chunks must be True or False, got {tokenize_chunks!r}.")
        self.num_image_tokens = num_image_tokens
        self.image_token = image_token
        self.tokenize_chunks = tokenize_chunks
        self.image_token_id = single_token_id(tokenizer, image_token)
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    @classmethod
    def for_config(cls, config, tokenizer, chat_template=None, image_token="<image>", tokenize_chunks=False,
                   **image_processor_kwargs):
        """A processor matching `config` (an `EagleConfig`): `num_image_tokens = config.image_seq_length`, images at
        `config.image_size` normalised with `config.image_mean` / `config.image_std`, and a check that the tokenizer's
        `image_token` has the id `config.image_token_id`. `image_processor_kwargs` go to [`EagleImageProcessor`]."""
        image_processor = EagleImageProcessor(image_size=config.image_size, image_mean=config.image_mean,
                                              image_std=config.image_std, **image_processor_kwargs)
        processor = cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template,
                        num_image_tokens=config.image_seq_length, image_token=image_token,
                        tokenize_chunks=tokenize_chunks)
        if processor.image_token_id != config.image_token_id:
            raise ValueError(f"The tokenizer gives {image_token!r} the id {processor.image_token_id}, but the model's "
                             f"config.image_token_id is {config.image_token_id}.")
        return processor

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """[image_processor, tokenizer] read from a saved folder (4.57 and 5.x call this with different arguments).
        The image processor is built directly: AutoImageProcessor would ask for `trust_remote_code` because its saved
        config has an `auto_map`, even where eagle_hf is installed."""
        image_processor = EagleImageProcessor.from_pretrained(pretrained_model_name_or_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return [image_processor, tokenizer]

    def __call__(self, images=None, text=None, padding=False, padding_side=None, truncation=None, max_length=None,
                 return_tensors=None, tokenize_chunks=None, **kwargs) -> BatchFeature:
        """
        Args:
            images: images for the `image_token` markers (module docstring), each anything [`EagleImageProcessor`]
                reads (PIL image, array, tensor, file path).
            text (`str` or `list[str]`): prompts with one `image_token` per image.
            padding, padding_side, max_length, return_tensors: as the tokenizer's (`tokenizer.pad` pads).
            truncation (`bool` or `str`): cut text tokens past `max_length` (default: the tokenizer's
                `model_max_length`) on the tokenizer's `truncation_side`; a cut that would reach an image span raises
                a ValueError instead.
            tokenize_chunks (`bool`, *optional*): the original's piece-wise tokenisation; default: this processor's.
            **kwargs: `add_special_tokens`, `return_offsets_mapping` (in the coordinates of `text`, image copies
                sharing their marker's span), `return_attention_mask`, `pad_to_multiple_of`; any
                [`EagleImageProcessor`] parameter; `text_kwargs` / `images_kwargs` dicts of those.

        Returns:
            [`BatchFeature`] with `input_ids` and `attention_mask` (one row per sample), `pixel_values` (N, 3, S, S)
            for the N images in sample order when images are given, and `offset_mapping` when asked.
        """
        call = dict(padding=padding, padding_side=padding_side, truncation=truncation, max_length=max_length,
                    return_tensors=return_tensors, tokenize_chunks=tokenize_chunks)
        options = self._split_options(kwargs, call)
        if text is None:
            if images is None or (isinstance(images, (list, tuple)) and not any(images)):
                raise ValueError("EagleProcessor needs `text`, `images` or both.")
            pixel_values = self._pixel_values([flat_images(images)], options["image"], call["return_tensors"])
            return BatchFeature({"pixel_values": pixel_values}, tensor_type=call["return_tensors"])
        samples = self._text_samples(text)
        marker_counts = [sample.count(self.image_token) for sample in samples]
        per_sample_images = split_images_by_sample(images, marker_counts, self.image_token)
        mm_token_types = options["text"].pop("return_mm_token_type_ids", False)
        data = self._pad(self._encode(samples, marker_counts, options["text"], call), call, options["text"])
        if mm_token_types:  # 1 at image positions, 0 elsewhere (vLLM's Transformers backend finds images by it)
            data["mm_token_type_ids"] = [[int(token == self.image_token_id) for token in row]
                                         for row in data["input_ids"]]
        if any(per_sample_images):
            data["pixel_values"] = self._pixel_values(per_sample_images, options["image"], call["return_tensors"])
        batch = BatchFeature(data, tensor_type=call["return_tensors"])
        for key in ("input_ids", "attention_mask", "offset_mapping", "mm_token_type_ids"):  # an empty row: float
            if key in batch and hasattr(batch[key], "dtype") and str(batch[key].dtype) not in ("torch.int64", "int64"):
                batch[key] = batch[key].long() if hasattr(batch[key], "long") else batch[key].astype("int64")
        return batch

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs):
        """How many placeholder tokens each image of the given (height, width) sizes becomes, as transformers'
        processors tell vLLM's Transformers backend: `num_image_tokens` for every size (each image is resized to one
        square), one patch each."""
        data = {}
        if image_sizes is not None:
            data.update(num_image_tokens=[self.num_image_tokens] * len(image_sizes),
                        num_image_patches=[1] * len(image_sizes))
        return MultiModalData(**data)

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """As ProcessorMixin's, after turning string message contents into one text block: transformers 4.57's
        tokenising path reads every content as a list of blocks (the shipped templates render both forms alike)."""
        return super().apply_chat_template(contents_as_blocks(conversation), chat_template, **kwargs)

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
            if merged.pop(key, None) and key == "return_token_type_ids":
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
        return pixel_values.numpy() if return_tensors is None else pixel_values  # as image processors give it

    def _encode(self, samples, marker_counts, text_options, call) -> dict:
        """Per sample: tokenise, check one image token per marker, expand, truncate (never an image span)."""
        chunks = self.tokenize_chunks if call["tokenize_chunks"] is None else call["tokenize_chunks"]
        with_offsets = bool(text_options.get("return_offsets_mapping", False))
        limit = truncation_limit(self.tokenizer, call["truncation"], call["max_length"])
        all_ids, all_offsets = [], []
        for index, (sample, count) in enumerate(zip(samples, marker_counts)):
            ids, offsets = tokenize_with_images(self.tokenizer, sample, self.image_token,
                                                text_options.get("add_special_tokens", True), chunks, with_offsets)
            found = ids.count(self.image_token_id)
            if found != count:
                raise ValueError(f"Sample {index}: the text has {count} {self.image_token} marker(s) but its tokens "
                                 f"hold {found} image token(s) (id {self.image_token_id}): the tokenizer must turn "
                                 "each marker, and nothing else, into that token.")
            ids, offsets = expand_image_tokens(ids, offsets, self.image_token_id, self.num_image_tokens)
            if limit is not None:
                ids, offsets = truncate_keeping_images(ids, offsets, limit, self.tokenizer.truncation_side,
                                                       self.image_token_id, index)
            elif len(ids) > self.tokenizer.model_max_length:
                logger.warning_once(f"Sample {index} is {len(ids)} tokens long, more than the tokenizer's "
                                    f"model_max_length {self.tokenizer.model_max_length}.")
            all_ids.append(ids)
            all_offsets.append(offsets)
        return {"input_ids": all_ids, "offset_mapping": all_offsets if with_offsets else None}

    def _pad(self, data: dict, call: dict, text_options: dict) -> dict:
        """`tokenizer.pad` over the expanded ids; offsets padded alongside (sorted and zero-width, as v4's assistant
        mask bisects them)."""
        side = call["padding_side"] or self.tokenizer.padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}.")
        lengths = [len(ids) for ids in data["input_ids"]]
        if not call["padding"] and call["return_tensors"] is not None and len(set(lengths)) > 1:
            raise ValueError(f"The {len(lengths)} samples have different lengths {lengths}: pass padding=True "
                             "(with padding_side='left' for batched generation).")
        padded = self.tokenizer.pad({"input_ids": data["input_ids"]}, padding=call["padding"],
                                    max_length=call["max_length"], padding_side=side,
                                    pad_to_multiple_of=text_options.get("pad_to_multiple_of"),
                                    return_attention_mask=text_options.get("return_attention_mask", True))
        output = {key: [list(row) for row in padded[key]] for key in ("input_ids", "attention_mask") if key in padded}
        if data["offset_mapping"] is not None:
            output["offset_mapping"] = []
            for offsets, ids in zip(data["offset_mapping"], output["input_ids"]):
                end = max([last for _, last in offsets], default=0)
                missing = len(ids) - len(offsets)
                padding = [(0, 0) if side == "left" else (end, end)] * missing
                output["offset_mapping"].append(padding + offsets if side == "left" else offsets + padding)
        return output

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """As ProcessorMixin's, then makes tokenizer_config.json loadable by transformers 4.57 (see
        `make_tokenizer_config_portable`). `push_to_hub=True` pushes what `push_to_hub` saves, which is the same."""
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(os.fspath(save_directory))))
            files = self.save_pretrained(save_directory, **{key: kwargs.pop(key) for key in _SAVE_OPTIONS
                                                            if key in kwargs})
            self.push_to_hub(repo_id, **kwargs)
            return files
        files = super().save_pretrained(save_directory, **kwargs)
        make_tokenizer_config_portable(os.path.join(save_directory, "tokenizer_config.json"))
        return files


EagleProcessor.register_for_auto_class("AutoProcessor")  # save_pretrained ships this file and its siblings


__all__ = ["EagleProcessor"]
