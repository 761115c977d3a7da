"""One image decoder: the processor, training and evaluation read a file to the same pixels (16-bit images rounded to
8 bits, not clipped to white; EXIF orientation applied once)."""

import base64
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from eagle_hf import EagleImageProcessor
from eagle_hf.evaluation.runner import open_image
from eagle_hf.image_processing_eagle import load_rgb_image
from eagle_hf.training.data import SkippedSample, decode_image


def sixteen_bit_png(path):
    values = np.full((24, 40), 30000, dtype=np.uint16)  # 30000 / 257 -> 117: mid grey, never white
    values[:, :10] = 65535
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I;16")


def rotated_jpeg(path):
    image = Image.new("RGB", (40, 24), (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, 10, 24))  # a blue band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    image.save(path, exif=exif)


@pytest.mark.parametrize("make", [sixteen_bit_png, rotated_jpeg])
def test_processor_training_and_evaluation_read_a_file_to_the_same_pixels(tmp_path, make):
    path = tmp_path / ("image.png" if make is sixteen_bit_png else "image.jpg")
    make(path)
    processor = EagleImageProcessor(image_size=32)
    data = path.read_bytes()
    read = {
        "processor": processor(str(path), return_tensors="pt")["pixel_values"],
        "training": processor(decode_image(data, "image"), return_tensors="pt")["pixel_values"],
        "evaluation (file)": processor(open_image(SimpleNamespace(image_base64=None, image_path=str(path))),
                                       return_tensors="pt")["pixel_values"],
        "evaluation (base64)": processor(open_image(SimpleNamespace(
            image_base64=base64.b64encode(data).decode(), image_path=None)), return_tensors="pt")["pixel_values"],
    }
    for name, pixel_values in read.items():
        torch.testing.assert_close(pixel_values, read["processor"], atol=0, rtol=0, msg=name)
    decoded = load_rgb_image(data)
    if make is sixteen_bit_png:
        assert decoded.getpixel((20, 12)) == (117, 117, 117) and decoded.getpixel((2, 2)) == (255, 255, 255)
    else:
        assert decoded.size == (24, 40) and decoded.getpixel((12, 2))[2] > 150  # upright: the blue band is on top


def test_an_unreadable_image_is_a_skipped_sample_in_training_naming_the_reference():
    with pytest.raises(SkippedSample) as skipped:
        decode_image(b"not an image", "shelf/broken.png")
    assert skipped.value.reason == "unreadable_image" and "shelf/broken.png" in skipped.value.detail
    assert "cannot read" in skipped.value.detail and "corrupt or not an image" in skipped.value.detail
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    with pytest.raises(SkippedSample, match="truncated"):
        decode_image(buffer.getvalue()[:60], "cut.png")
