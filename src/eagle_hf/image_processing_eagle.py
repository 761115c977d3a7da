# Copyright 2026 The eagle-hf developers. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in compliance
# with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software distributed under the License is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND.
"""Image processor for Eagle and LLaVA-1.5: `expand2square` padding, then the CLIP resize / crop / normalise.

Shipped flat next to checkpoint weights, so it imports only numpy, PIL, torch and transformers, and it
subclasses `BaseImageProcessor` (present in transformers 4.57 and 5.x) instead of a v5-only backend.

Pixel values equal transformers' slow `CLIPImageProcessor` (4.57; `CLIPImageProcessorPil` in 5.x) given the
same RGB image, because every step is the same operation:

* "pad" (LLaVA/Eagle `expand2square`): paste the image onto a square canvas of colour
  `tuple(int(m * 255) for m in image_mean)` at offset `((side - width) // 2, (side - height) // 2)`;
* resize the shortest edge to `image_size` with PIL, the long edge being `int(image_size * long / short)`
  as in `get_resize_output_image_size(default_to_square=False)`;
* centre crop `image_size` with offsets `(new - image_size) // 2` (a no-op after padding);
* rescale in float64 then cast to float32, normalise in float32 (done through a 256-entry table per
  channel, which gives the same float32 numbers as the arithmetic, since PIL's output is uint8).

Conversion to RGB follows the original Eagle code, which reads every image with `Image.convert("RGB")`:

* RGBA / LA / PA: the alpha channel is dropped, not composited. transformers 4.57's `convert_to_rgb` does
  the same; 5.x composites on white, so 5.x CLIP differs from the original (and from this class) there;
* L, P, CMYK, YCbCr, I, F: PIL's `convert("RGB")` (I and F values are clipped to 0..255 by PIL);
* I;16 (16-bit): scaled to 8 bits with rounding (`v / 257`). PIL's `convert("RGB")`, which the original
  used, clips such images to almost white; this is the one deliberate departure from it.

Also unlike the original, the EXIF orientation of PIL images and files is applied (`ImageOps.exif_transpose`).
Arrays and tensors are read as uint8 0..255 or float 0..1; floats are rounded (not truncated) to uint8 so
that `array / 255` gives back exactly the uint8 result.
"""

import io
import math
import os
from typing import Any, Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.utils import logging


logger = logging.get_logger(__name__)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ASPECT_RATIO_MODES = ("pad", "square")
# PIL's integer codes (Image.Resampling); the original Eagle uses 3 (bicubic).
RESAMPLE_CODES = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}
PARAMETER_NAMES = (
    "image_size",
    "aspect_ratio_mode",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "max_image_pixels",
)
# Keys that transformers itself writes into preprocessor_config.json; passed on to the base class.
_METADATA_KEYS = ("image_processor_type", "processor_class", "feature_extractor_type", "auto_map", "_processor_class")
_EXIF_ORIENTATION = 0x0112
DEFAULT_MAX_IMAGE_PIXELS = 16384 * 16384
_ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_FLOAT_RANGE_TOLERANCE = 1e-3

ImageInput = Union[Image.Image, np.ndarray, torch.Tensor, str, os.PathLike]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_positive_int(name: str, value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_rgb_triple(name: str, value: Any, positive: bool) -> list[float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
        raise ValueError(f"{name} must be 3 numbers (R, G, B), got {value!r}")
    if not all(_is_real(v) and math.isfinite(v) and (v > 0 or not positive) for v in value):
        kind = "positive finite" if positive else "finite"
        raise ValueError(f"{name} must be 3 {kind} numbers (R, G, B), got {value!r}")
    return [float(v) for v in value]


def _check_resample(value: Any) -> int:
    if not _is_int(value) or int(value) not in RESAMPLE_CODES.values():
        allowed = ", ".join(f"{code} ({name})" for name, code in RESAMPLE_CODES.items())
        raise ValueError(f"resample must be one of the PIL codes {allowed}, got {value!r}")
    return int(value)


def validate_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Checks every parameter and returns them in their saved (JSON-ready) form; raises ValueError."""
    mode = settings["aspect_ratio_mode"]
    if mode not in ASPECT_RATIO_MODES:
        raise ValueError(f"aspect_ratio_mode must be one of {list(ASPECT_RATIO_MODES)}, got {mode!r}")
    factor = settings["rescale_factor"]
    if not (_is_real(factor) and math.isfinite(factor) and factor > 0):
        raise ValueError(f"rescale_factor must be a positive finite number, got {factor!r}")
    image_mean = _check_rgb_triple("image_mean", settings["image_mean"], positive=False)
    if mode == "pad" and not all(0.0 <= m <= 1.0 for m in image_mean):
        raise ValueError(
            "image_mean must lie in [0, 1] with aspect_ratio_mode='pad', because the pad colour is "
            f"int(mean * 255) per channel; got {image_mean}"
        )
    return {
        "image_size": _check_positive_int("image_size", settings["image_size"]),
        "aspect_ratio_mode": mode,
        "resample": _check_resample(settings["resample"]),
        "do_rescale": _check_bool("do_rescale", settings["do_rescale"]),
        "rescale_factor": float(factor),
        "do_normalize": _check_bool("do_normalize", settings["do_normalize"]),
        "image_mean": image_mean,
        "image_std": _check_rgb_triple("image_std", settings["image_std"], positive=True),
        "max_image_pixels": _check_positive_int("max_image_pixels", settings["max_image_pixels"]),
    }


def _sample_error(index: int, problem: str) -> ValueError:
    return ValueError(f"Image {index}: {problem}")


def _check_pixel_count(index: int, width: int, height: int, max_image_pixels: int, what: str = "image") -> None:
    if width <= 0 or height <= 0:
        raise _sample_error(index, f"empty {what} ({width}x{height} pixels, width x height)")
    if width * height > max_image_pixels:
        raise _sample_error(
            index,
            f"{what} has {width}x{height} = {width * height} pixels, more than max_image_pixels="
            f"{max_image_pixels} (a guard against decompression bombs; raise it if the image is legitimate)",
        )


def _apply_exif_orientation(image: Image.Image, index: int) -> Image.Image:
    """Rotates/flips `image` as its EXIF orientation tag says (camera photos); other images pass unchanged."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(image)
    except Exception as error:  # malformed EXIF is metadata damage, not pixel damage
        logger.warning(f"Image {index}: ignoring unreadable EXIF orientation ({type(error).__name__}: {error})")
    return image


def _pil_to_rgb(image: Image.Image, index: int, max_image_pixels: int) -> Image.Image:
    """Returns a new, fully decoded RGB copy of `image`, upright per its EXIF orientation."""
    _check_pixel_count(index, image.width, image.height, max_image_pixels)
    try:
        image = _apply_exif_orientation(image, index)
        if image.mode.startswith("I;16"):
            # 16-bit to 8-bit with rounding: PIL's convert("RGB") would clip everything above 255 to white.
            wide = np.asarray(image).astype(np.uint32)
            return Image.fromarray(((wide + 128) // 257).astype(np.uint8)).convert("RGB")
        # Like the original (Image.open(...).convert("RGB")): alpha is dropped, not composited.
        return image.convert("RGB")
    except (OSError, SyntaxError, EOFError) as error:
        raise _sample_error(index, f"corrupt or truncated image data ({type(error).__name__}: {error})") from error


def _open_encoded(source, name: str, index: int, max_image_pixels: int) -> Image.Image:
    """Opens, size-checks (before decoding) and fully decodes an encoded image (`source`: a path or a binary file
    object, called `name` in errors), as RGB."""
    try:
        opened = Image.open(source)
    except FileNotFoundError as error:
        raise _sample_error(index, f"no such file {name!r}") from error
    except Image.DecompressionBombError as error:
        raise _sample_error(index, f"{name!r} is over PIL's decompression-bomb limit ({error})") from error
    except Exception as error:
        problem = f"{type(error).__name__}: {error}"
        raise _sample_error(index, f"cannot read {name!r} as an image, corrupt or not an image ({problem})") from error
    with opened:
        _check_pixel_count(index, opened.width, opened.height, max_image_pixels)
        try:
            opened.load()
        except Exception as error:
            problem = f"{type(error).__name__}: {error}"
            raise _sample_error(index, f"{name!r} is corrupt or truncated ({problem})") from error
        return _pil_to_rgb(opened, index, max_image_pixels)


def _channels_last(array: np.ndarray, index: int) -> np.ndarray:
    """(H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4 -> (H, W, C); a shape that reads both ways is refused."""
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise _sample_error(index, f"expected 2 or 3 dimensions (H, W, C or C, H, W), got shape {array.shape}")
    first_ok, last_ok = array.shape[0] in _ARRAY_MODES, array.shape[-1] in _ARRAY_MODES
    if first_ok and last_ok:
        raise _sample_error(index, f"shape {array.shape} reads as both (C, H, W) and (H, W, C); pass a PIL image, "
                                   "or an array whose height and width are not 1, 3 or 4 where channels could be")
    if first_ok:
        return np.moveaxis(array, 0, -1)
    if last_ok:
        return array
    raise _sample_error(
        index,
        f"wrong channel count: expected 1, 3 or 4 channels in the first or last dimension, got shape {array.shape}",
    )


def _to_uint8(array: np.ndarray, index: int) -> np.ndarray:
    """uint8 stays; other integers must lie in 0..255; floats must lie in [0, 1] and are rounded to 0..255."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise _sample_error(index, f"integer images must lie in 0..255, got values in [{low}, {high}]")
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise _sample_error(index, "float image contains NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < -_FLOAT_RANGE_TOLERANCE or high > 1 + _FLOAT_RANGE_TOLERANCE:
            found = f"got values in [{low:.4g}, {high:.4g}]"
            raise _sample_error(index, f"float images must lie in [0, 1], {found} (pass uint8 for 0..255)")
        return np.clip(np.rint(array.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    raise _sample_error(index, f"unsupported array dtype {array.dtype}; expected uint8, another integer type or float")


def _array_to_rgb(array: np.ndarray, index: int, max_image_pixels: int) -> Image.Image:
    array = _channels_last(array, index)  # (H, W, C)
    height, width = array.shape[:2]
    _check_pixel_count(index, width, height, max_image_pixels)
    array = np.ascontiguousarray(_to_uint8(array, index))
    if array.shape[-1] == 1:
        array = array[:, :, 0]
    # Same route as a PIL image of that mode, so RGBA arrays drop alpha exactly as RGBA images do.
    return Image.fromarray(array).convert("RGB")


def load_rgb_image(image: ImageInput, index: int = 0, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Any supported input -> a decoded, upright RGB PIL image, or a ValueError naming sample `index` and the problem.

    The one image decoder of the package: the processor, training and evaluation all read images through it (16-bit
    images rounded to 8 bits, EXIF orientation applied, alpha dropped, size checked before decoding). Takes a PIL
    image, a numpy array, a torch tensor, a file path, or the bytes of an image file."""
    if isinstance(image, (str, os.PathLike)):
        return _open_encoded(image, os.fspath(image), index, max_image_pixels)
    if isinstance(image, (bytes, bytearray)):
        return _open_encoded(io.BytesIO(image), f"<{len(image)} bytes>", index, max_image_pixels)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, index, max_image_pixels)
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        try:
            array = tensor.numpy()
        except TypeError as error:
            raise _sample_error(index, f"unsupported tensor dtype {tensor.dtype}") from error
        return _array_to_rgb(array, index, max_image_pixels)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, index, max_image_pixels)
    raise _sample_error(
        index,
        f"unsupported input type {type(image).__name__}; expected a PIL image, a numpy array, a torch tensor "
        "a file path or the bytes of an image file",
    )


def expand_to_square(image: Image.Image, background_color: tuple[int, int, int]) -> Image.Image:
    """LLaVA's `expand2square`: centre `image` on a square canvas of `background_color`."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background_color)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def shortest_edge_size(width: int, height: int, shortest_edge: int) -> tuple[int, int]:
    """(new_width, new_height) as transformers' get_resize_output_image_size(default_to_square=False)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest_edge * long / short)  # truncation, as transformers
    return (shortest_edge, new_long) if width <= height else (new_long, shortest_edge)


def resize_and_crop(image: Image.Image, settings: dict[str, Any], index: int) -> np.ndarray:
    """RGB image -> (S, S, 3) uint8: optional expand2square, PIL resize of the shortest edge, centre crop."""
    size = settings["image_size"]
    if settings["aspect_ratio_mode"] == "pad":
        background = tuple(int(m * 255) for m in settings["image_mean"])  # int() truncates, as the original
        side = max(image.size)
        _check_pixel_count(index, side, side, settings["max_image_pixels"], what="padded square image")
        image = expand_to_square(image, background)
    new_width, new_height = shortest_edge_size(image.width, image.height, size)
    # A 1x10000 strip would need a huge intermediate image: refuse it like an oversized input.
    _check_pixel_count(index, new_width, new_height, settings["max_image_pixels"], what="resized image")
    resized = np.asarray(image.resize((new_width, new_height), resample=settings["resample"]))  # (H', W', 3)
    top, left = (new_height - size) // 2, (new_width - size) // 2  # floor, as transformers' center_crop
    return resized[top : top + size, left : left + size]


def normalisation_table(settings: dict[str, Any]) -> np.ndarray:
    """(3, 256) float32: the rescaled and normalised value of each uint8 level, per channel.

    Same float operations as transformers (rescale in float64 then cast to float32, then (x - mean) / std in
    float32), so a table lookup gives the same numbers as the arithmetic on the whole image.
    """
    levels = np.arange(256, dtype=np.uint8)
    if settings["do_rescale"]:
        values = (levels.astype(np.float64) * settings["rescale_factor"]).astype(np.float32)
    else:
        values = levels.astype(np.float32)
    table = np.repeat(values[None, :], 3, axis=0)
    if settings["do_normalize"]:
        mean = np.asarray(settings["image_mean"], dtype=np.float32)[:, None]
        std = np.asarray(settings["image_std"], dtype=np.float32)[:, None]
        table = (table - mean) / std
    return table


class EagleImageProcessor(BaseImageProcessor):
    r"""
    Image processor of Eagle and LLaVA-1.5: optional padding to a square (`expand2square`), CLIP resize and
    centre crop to `image_size`, rescale and normalise.

    Args:
        image_size (`int`, defaults to 1024): side of the square output.
        aspect_ratio_mode (`str`, defaults to `"pad"`): `"pad"` centres the image on a square of the mean colour
            first (the original's SFT / released setting); `"square"` resizes the shortest edge and centre crops
            (the original's pre-training setting).
        resample (`int`, defaults to 3): PIL filter: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic.
        do_rescale (`bool`, defaults to `True`) and rescale_factor (`float`, defaults to 1/255).
        do_normalize (`bool`, defaults to `True`), image_mean and image_std (3 floats each, OpenAI CLIP's).
        max_image_pixels (`int`, defaults to 16384 * 16384): larger inputs, padded squares or resized
            intermediates are refused with a ValueError (decompression bombs, extreme aspect ratios). Files also
            meet PIL's own limit (`Image.MAX_IMAGE_PIXELS`, error above twice it).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        image_size: int = 1024,
        aspect_ratio_mode: str = "pad",
        resample: int = 3,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Optional[list[float]] = None,
        image_std: Optional[list[float]] = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        **kwargs,
    ):
        unknown = sorted(key for key in kwargs if key not in _METADATA_KEYS)
        if unknown:
            logger.warning(f"EagleImageProcessor ignores unknown arguments {unknown}; it takes {PARAMETER_NAMES}")
        super().__init__(**{key: value for key, value in kwargs.items() if key in _METADATA_KEYS})
        settings = validate_settings(
            {
                "image_size": image_size,
                "aspect_ratio_mode": aspect_ratio_mode,
                "resample": resample,
                "do_rescale": do_rescale,
                "rescale_factor": rescale_factor,
                "do_normalize": do_normalize,
                "image_mean": OPENAI_CLIP_MEAN if image_mean is None else image_mean,
                "image_std": OPENAI_CLIP_STD if image_std is None else image_std,
                "max_image_pixels": max_image_pixels,
            }
        )
        for name, value in settings.items():
            setattr(self, name, value)

    @classmethod
    def from_dict(cls, image_processor_dict: dict[str, Any], **kwargs):
        """Routes parameter overrides given to `from_pretrained` through `__init__`, so they are validated."""
        image_processor_dict = dict(image_processor_dict)
        for name in PARAMETER_NAMES:
            if name in kwargs:
                image_processor_dict[name] = kwargs.pop(name)
        return super().from_dict(image_processor_dict, **kwargs)

    def settings(self, **overrides) -> dict[str, Any]:
        """The current parameters with `overrides` applied (None means "keep"), validated."""
        unknown = sorted(key for key, value in overrides.items() if key not in PARAMETER_NAMES and value is not None)
        if unknown:
            raise ValueError(f"unknown preprocess arguments {unknown}; allowed: {list(PARAMETER_NAMES)}")
        merged = {name: getattr(self, name) for name in PARAMETER_NAMES}
        merged.update({key: value for key, value in overrides.items() if key in PARAMETER_NAMES and value is not None})
        # Re-validated also without overrides: attributes can be set directly after construction.
        return validate_settings(merged)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def preprocess(self, images, return_tensors=None, **overrides) -> BatchFeature:
        """
        Args:
            images: one image or a list of them: PIL image (any mode), numpy array or torch tensor (H, W, C) or
                (C, H, W) with C in 1, 3, 4 (uint8 0..255 or float 0..1; a 4-D array is a batch), or a file path.
            return_tensors: None or "np" for numpy, "pt" for torch.
            **overrides: any constructor parameter, for this call only.

        Returns:
            `BatchFeature` with `pixel_values` (N, 3, image_size, image_size) float32.
        """
        settings = self.settings(**overrides)
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            images = list(images)
        elif not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            raise ValueError("expected at least one image, got an empty list")
        size, table = settings["image_size"], normalisation_table(settings)
        pixel_values = np.empty((len(images), 3, size, size), dtype=np.float32)  # (N, 3, S, S)
        for index, image in enumerate(images):
            square = resize_and_crop(load_rgb_image(image, index, settings["max_image_pixels"]), settings, index)
            for channel in range(3):
                np.take(table[channel], square[:, :, channel], out=pixel_values[index, channel], mode="clip")
        if return_tensors == "pt":  # also TensorType.PYTORCH, a str enum
            pixel_values = torch.from_numpy(pixel_values)
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)


# ----- which images go to which sample -----


def _is_single_image(item) -> bool:
    return not isinstance(item, (list, tuple)) and getattr(item, "ndim", 3) != 4


def flat_images(images) -> list:
    """One image / a flat list / a 4-D array or tensor -> a flat list."""
    if getattr(images, "ndim", None) == 4:
        return list(images)
    return [images] if _is_single_image(images) else list(images)


def _describe(marker_counts: list[int]) -> str:
    return ", ".join(f"sample {index}: {count}" for index, count in enumerate(marker_counts))


def split_images_by_sample(images, marker_counts: list[int], image_token: str = "<image>") -> list[list]:
    """One list of images per sample, whose texts hold `marker_counts[i]` markers each; a ValueError naming the sample
    and both counts on any mismatch."""
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
    flat = flat_images(images)
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


EagleImageProcessor.register_for_auto_class("AutoImageProcessor")  # save_pretrained ships this file


__all__ = ["EagleImageProcessor", "flat_images", "split_images_by_sample"]
