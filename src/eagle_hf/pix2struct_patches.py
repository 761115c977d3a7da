# Copyright 2026 The eagle-hf developers. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance
# with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software distributed under the License is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.
"""Pix2Struct flattened-patch preprocessing, batched and on the device, in torch.

Eagle feeds its Pix2Struct-large expert the same CLIP-normalised image as every other
expert. The original code (NVlabs/EAGLE ``pix2struct_encoder.py``) undoes the CLIP
normalisation and then runs transformers' ``Pix2StructImageProcessor`` on the CPU, one
image at a time, inside ``forward``. This module does the same maths in torch on whatever
device the tensor is on, for the whole batch at once, with no numpy round trip.

Reference behaviour (transformers 4.44 - 4.57 ``Pix2StructImageProcessor``, ``is_vqa=False``,
``max_patches=2048``, also 5.x ``Pix2StructImageProcessorPil``), in this order:

1. per-image standardisation over all C*H*W values, population std, floored at
   ``1/sqrt(C*H*W)`` (TF ``per_image_standardization``);
2. bilinear resize (``align_corners=False``, ``antialias=True``) of the *standardised*
   image to ``rows*ph x cols*pw``, the largest aspect-preserving grid with at most
   ``max_patches`` patches;
3. patches flattened as (patch_row, patch_col, channel), i.e. channel fastest;
4. 1-based row and column ids prepended, zero rows appended up to ``max_patches``.

Only ``torch`` and the standard-library ``math`` are imported, because this file is
shipped next to the checkpoint weights and must not pull in image libraries.
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["denormalize", "extract_flattened_patches", "patch_grid"]


def denormalize(pixel_values: torch.Tensor, image_mean, image_std) -> torch.Tensor:
    """Undo a per-channel (x - mean) / std normalisation and rescale to 0..255.

    Args:
        pixel_values: (B, 3, H, W) normalised images, any float dtype.
        image_mean: 3 per-channel means (sequence of floats or tensor), in 0..1 units.
        image_std: 3 per-channel stds (sequence of floats or tensor), in 0..1 units.

    Returns:
        (B, 3, H, W) float32 images in 0..255 (not clamped, not rounded: the original
        hands the unclamped float tensor straight to the Pix2Struct processor).
    """
    device = pixel_values.device
    # fp32 on purpose: the patch statistics downstream are computed in fp32 by the
    # reference, and bf16 here would already cost ~1 grey level out of 255.
    mean = torch.as_tensor(image_mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.as_tensor(image_std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    # Same operation order as the original: (x * std + mean) * 255.
    return (pixel_values.float() * std + mean) * 255.0


def patch_grid(height: int, width: int, patch_size: int = 16, max_patches: int = 2048) -> tuple[int, int]:
    """Number of patch rows and columns the Pix2Struct processor picks for an image.

    Pure Python on ints, so it never touches (or synchronises) the device.

    Returns:
        (rows, cols) with rows * cols <= max_patches; (45, 45) for 1024x1024, 16, 2048.
    """
    ph = pw = patch_size
    # math.sqrt / math.floor, not ``** 0.5`` / int(): transformers 4.x uses these, and
    # ``x ** 0.5`` differs from sqrt in the last ulp for some sizes, which can flip the
    # floor (e.g. 1415x1415 with max_patches=2025 gives 45 rows with sqrt, 44 with pow).
    scale = math.sqrt(max_patches * (ph / height) * (pw / width))
    rows = max(min(math.floor(scale * height / ph), max_patches), 1)
    cols = max(min(math.floor(scale * width / pw), max_patches), 1)
    return rows, cols


def extract_flattened_patches(
    images: torch.Tensor, patch_size: int = 16, max_patches: int = 2048
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Pix2Struct ``flattened_patches`` and ``attention_mask`` for a batch of images.

    Args:
        images: (B, 3, H, W) float images in 0..255; every image of the batch has the
            same H and W (true for Eagle, where all experts see one resized tensor).
        patch_size: square patch side (16 for Pix2Struct).
        max_patches: sequence length to pad to (2048 in Eagle).

    Returns:
        flattened_patches: (B, max_patches, 2 + 3 * patch_size**2) float32; column 0 is
            the 1-based patch row id, column 1 the 1-based patch column id, the rest the
            standardised pixels of the patch in (y, x, channel) order; rows past
            rows * cols are all zeros.
        attention_mask: (B, max_patches) float32, 1 for the rows * cols real patches,
            0 for padding.
        rows: number of patch rows (45 for 1024x1024 with max_patches=2048).
        cols: number of patch columns.
    """
    if images.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    ph = pw = patch_size
    x = images.float()

    # 1. Per-image standardisation, before the resize (as the reference does). The
    # population std (correction=0) is the original numpy ``np.std``; transformers 5.x's
    # torchvision backend switched to torch.std's unbiased estimator, which we do not copy.
    var, mean = torch.var_mean(x, dim=(1, 2, 3), correction=0, keepdim=True)
    min_std = 1.0 / math.sqrt(c * h * w)
    std = var.sqrt().clamp_min(min_std)
    x = (x - mean) / std

    # 2. Resize to an exact multiple of the patch size. Always interpolate (even for a
    # same-size target) because the reference does, and antialiasing is what makes the
    # 1024 -> 720 downsample match.
    rows, cols = patch_grid(h, w, patch_size, max_patches)
    x = F.interpolate(x, size=(rows * ph, cols * pw), mode="bilinear", align_corners=False, antialias=True)

    # 3. Patches. transformers does unfold -> (B, C, ph, pw, L) -> permute(0, 4, 2, 3, 1),
    # so inside a patch the channel varies fastest, then x, then y; patches are in
    # raster order (row-major over the grid). A view/permute gives the identical layout
    # without unfold's im2col copy.
    patches = (
        x.reshape(b, c, rows, ph, cols, pw)
        .permute(0, 2, 4, 3, 5, 1)  # (B, rows, cols, ph, pw, C)
        .reshape(b, rows * cols, ph * pw * c)
    )

    # 4. 1-based ids (0 is reserved for padding), float like the pixel columns.
    n = rows * cols
    row_ids = torch.arange(1, rows + 1, device=x.device, dtype=torch.float32).repeat_interleave(cols)
    col_ids = torch.arange(1, cols + 1, device=x.device, dtype=torch.float32).repeat(rows)
    ids = torch.stack([row_ids, col_ids], dim=-1).unsqueeze(0).expand(b, n, 2)
    result = torch.cat([ids, patches], dim=-1)
    result = F.pad(result, (0, 0, 0, max_patches - n))

    # transformers derives the mask from ``patches.sum(-1) != 0``; a real patch always
    # carries ids >= 1 so this positional mask is the same except for a real patch whose
    # values sum to exactly 0 (measure zero), and it needs no data-dependent op.
    mask = (torch.arange(max_patches, device=x.device) < n).to(torch.float32)
    return result, mask.unsqueeze(0).expand(b, max_patches).contiguous(), rows, cols
