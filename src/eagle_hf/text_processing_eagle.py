# Copyright 2026 The eagle-hf developers. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance
# with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software distributed under the License is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.
"""The text side of the processor, as functions of a tokenizer: the package's one tokenisation of a prompt with image
markers (whole text, or the original's piece-wise `tokenize_chunks`), image-token expansion, truncation that never
cuts an image span, and the tokenizer_config.json rewrite that lets transformers 4.57 read what 5.x saves.

Shipped flat next to checkpoint weights (imported by `processing_eagle.py`); training's label builder calls the same
functions, so training and inference tokenise alike.
"""

import json
import os
from typing import Optional


_NO_LIMIT = int(1e20)  # a tokenizer without a real limit reports transformers' VERY_LARGE_INTEGER (1e30)
_TRUNCATE = {"true": True, "longest_first": True, "only_first": True, "false": False, "none": False,
             "do_not_truncate": False}


def tokenize_with_images(tokenizer, text: str, image_token: str, add_special_tokens: bool = True,
                         tokenize_chunks: bool = False, with_offsets: bool = False):
    """(ids, offsets) of `text` with each `image_token` one token, not yet expanded; offsets are character spans in
    `text` (None entries without `with_offsets`). The package's one tokenisation: the processor and training's label
    builder both call it.

    A text that starts with the BOS text came from a chat template, which wrote every special token it wants: the
    whole text is then tokenised without added tokens. The chunks follow the original exactly: with
    `add_special_tokens` the tokenizer adds its BOS (a Llama-3 prompt then holds two, as the released models saw);
    without, the template's BOS is the one kept.
    """
    bos = tokenizer.bos_token
    starts_with_bos = bool(bos) and text.startswith(bos)
    if not tokenize_chunks:
        return _tokenize(tokenizer, text, add_special_tokens and not starts_with_bos, with_offsets)
    start = 0
    if not add_special_tokens and starts_with_bos:  # the template wrote the BOS the original's first piece gets
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


def truncate_keeping_images(ids: list, aligned: list, limit: int, side: str, image_token_id: int, sample: int):
    """`ids` (and `aligned`) cut to `limit` tokens on `side`; a ValueError if the cut would reach an image span."""
    if len(ids) <= limit:
        return ids, aligned
    kept = slice(0, limit) if side == "right" else slice(len(ids) - limit, len(ids))
    cut = ids.count(image_token_id) - ids[kept].count(image_token_id)
    if cut:
        raise ValueError(f"Sample {sample}: {len(ids)} tokens with its images expanded, more than max_length={limit}; "
                         f"truncating on the {side} would cut {cut} image token(s), and an image span is never cut. "
                         "Shorten the text, raise max_length or give fewer images.")
    return ids[kept], aligned[kept]


def single_token_id(tokenizer, image_token: str) -> int:
    """The id of `image_token`, which the tokenizer must encode as exactly that one token."""
    token_id = tokenizer.convert_tokens_to_ids(image_token)
    encoded = tokenizer.encode(image_token, add_special_tokens=False)
    if token_id is None or token_id == tokenizer.unk_token_id or encoded != [token_id]:
        raise ValueError(
            f"The tokenizer must know {image_token!r} as one token, but it encodes it as {encoded}. Add it with "
            f"tokenizer.add_special_tokens({{'additional_special_tokens': [{image_token!r}]}}) and resize the "
            "model's embeddings to the new vocabulary size."
        )
    return token_id


def truncation_limit(tokenizer, truncation, max_length) -> Optional[int]:
    """The length to cut to, or None: `truncation` as the tokenizer's (True, "longest_first", ...), `max_length`
    defaulting to the tokenizer's `model_max_length`."""
    key = str(getattr(truncation, "value", truncation)).lower()  # the Strategy enums are str enums
    if key not in _TRUNCATE:
        raise ValueError(f"truncation must be one of True, False, 'longest_first', 'only_first', "
                         f"'do_not_truncate', got {truncation!r}.")
    limit = max_length if max_length is not None else tokenizer.model_max_length
    return None if not _TRUNCATE[key] or limit is None or limit >= _NO_LIMIT else int(limit)


def contents_as_blocks(conversation):
    """A copy of a conversation (or of a batch of them) where each string `content` is `[{"type": "text", ...}]`."""
    if isinstance(conversation, (list, tuple)) and conversation and isinstance(conversation[0], (list, tuple)):
        return [contents_as_blocks(single) for single in conversation]
    if not isinstance(conversation, (list, tuple)):
        return conversation
    return [{**message, "content": [{"type": "text", "text": message["content"]}]}
            if isinstance(message, dict) and isinstance(message.get("content"), str) else message
            for message in conversation]


def make_tokenizer_config_portable(path) -> None:
    """Rewrites, in place, what transformers 5.x writes and 4.57 cannot read: `tokenizer_class: TokenizersBackend`
    becomes `PreTrainedTokenizerFast` (its 5.x alias) and a list-valued `extra_special_tokens` moves into
    `additional_special_tokens` (4.57 expects a dict of named tokens there). Other files and keys are left alone."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    before = json.dumps(config, sort_keys=True)
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        additional = list(config.get("additional_special_tokens") or [])
        config["additional_special_tokens"] = additional + [token for token in extra if token not in additional]
    elif extra is not None:
        config["extra_special_tokens"] = extra
    if json.dumps(config, sort_keys=True) != before:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, ensure_ascii=False, sort_keys=True)
            handle.write("\n")


__all__ = ["contents_as_blocks", "expand_image_tokens", "make_tokenizer_config_portable", "single_token_id",
           "tokenize_with_images", "truncate_keeping_images", "truncation_limit"]
