"""Frozen-expert feature cache: the experts' fused features, computed once per image and reused across epochs and runs.

Only for stages where every expert is frozen (the projector and/or LLM train): the fused features
(image_seq_length, mm_hidden_size) of an image then never change. They are stored on disk under
`<cache_dir>/<tower fingerprint>/<image sha256[:2]>/<image sha256>.safetensors`; the fingerprint covers the experts'
configs and weights, the fusion and grid, and the image processor's settings, so features of other experts or other
preprocessing are never reused. Disk cost: image_seq_length * mm_hidden_size * 2 bytes per image in bf16 (LLaVA-1.5:
576 x 1024 -> 1.2 MB; Eagle-X5: 1024 x 7680 -> 15.7 MB). The collator hands them to the model's own forward
(`mm_encoder_outputs`), which projects and places them as it does the tower's live output.
"""

import hashlib
import json
import os

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers.utils import logging

from .data import SkippedSample, conversation_of, decode_image, image_key, read_image_bytes

logger = logging.get_logger(__name__)


def tower_fingerprint(model, image_processor):
    """sha256 over what decides an image's fused features: expert configs and weights, fusion, grid, preprocessing."""
    config = model.config
    digest = hashlib.sha256()
    described = dict(
        experts=[expert.to_dict() for expert in config.vision_experts], fusion=config.fusion,
        grid_size=config.grid_size, image_size=config.image_size, image_mean=config.image_mean,
        image_std=config.image_std,
        image_processor={k: v for k, v in image_processor.to_dict().items() if not k.startswith("_")},
    )
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.model.vision_tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """On-disk store of fused expert features keyed by image content, for one tower fingerprint."""

    def __init__(self, cache_dir, fingerprint):
        self.directory = os.path.join(cache_dir, fingerprint[:32])
        os.makedirs(self.directory, exist_ok=True)

    def path(self, key):
        return os.path.join(self.directory, key[:2], f"{key}.safetensors")

    def has(self, key):
        return os.path.exists(self.path(key))

    def save(self, key, features):
        path = self.path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"  # written whole, then renamed: a killed run leaves no half file
        save_file({"features": features.detach().to("cpu").contiguous()}, temporary)  # in the tower's dtype
        os.replace(temporary, path)

    def load(self, key):
        return load_file(self.path(key))["features"]

    def load_reference(self, reference, image_folder):
        """The cached features of an image reference, read without decoding the image. `fill` caches every readable
        image, so a miss is either an unreadable image (skipped, as without a cache) or a cache that was not filled."""
        data = read_image_bytes(reference, image_folder)
        key = image_key(data)
        if not self.has(key):
            decode_image(data, reference)
            raise RuntimeError(f"No cached features for image {reference!r} (key {key[:12]}); fill the cache first.")
        return self.load(key)

    @torch.no_grad()
    def fill(self, model, records, image_processor, image_folder=None, batch_size=8, process_index=0,
             num_processes=1):
        """Compute and store the features of every image of `records` that the cache lacks; returns how many were
        computed. With several processes each computes its share (wait for all before training). Unusable images are
        left out here and counted by the collator, as without a cache."""
        tower = model.model.vision_tower
        device = next(tower.parameters()).device
        was_training = tower.training
        tower.eval()
        pending, computed = [], 0
        for index in tqdm(range(process_index, len(records), num_processes), desc="feature cache", mininterval=5,
                          disable=process_index != 0):
            try:
                _, references = conversation_of(records[index])
                for reference in references:
                    data = read_image_bytes(reference, image_folder)
                    key = image_key(data)
                    if not self.has(key) and key not in {k for k, _ in pending}:
                        pending.append((key, decode_image(data, reference)))
            except SkippedSample:
                pass
            if len(pending) >= batch_size:
                computed += self._compute(tower, image_processor, pending, device)
                pending = []
        if pending:
            computed += self._compute(tower, image_processor, pending, device)
        tower.train(was_training)
        return computed

    def _compute(self, tower, image_processor, pending, device):
        pixel_values = image_processor([image for _, image in pending], return_tensors="pt")["pixel_values"]
        dtype = next(tower.parameters()).dtype
        features = tower(pixel_values.to(device, dtype))  # (N, T, mm_hidden_size)
        for (key, _), feature in zip(pending, features):
            self.save(key, feature)
        return len(pending)


__all__ = ["FeatureCache", "tower_fingerprint"]
