"""Decoding photos as people took them: EXIF orientation applied, JPEGs decoded at reduced scale within the
pixels accounted for, and an upright copy for reviewers when the original is turned or too large."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from teaming._validation import DataError
from teaming.decode import (
    DECODE_BYTES_PER_PIXEL,
    decode_image,
    decode_photo,
    decoded_pixels,
    photo_least,
    read_header,
)
from teaming.preprocess import InputContract
from tests.support.photos import oriented, phone_jpeg


def _upright() -> Image.Image:
    """A 64 x 48 photo whose every quarter differs, so any turn or mirror shows."""
    a = np.zeros((48, 64, 3), np.uint8)
    a[:24, :32] = (250, 20, 20)
    a[:24, 32:] = (20, 250, 20)
    a[24:, :32] = (20, 20, 250)
    a[24:, 32:] = (240, 240, 30)
    return Image.fromarray(a)


@pytest.mark.parametrize("fmt, tolerance", [("PNG", 0), ("JPEG", 4)])
def test_every_exif_orientation_decodes_upright(fmt, tolerance):
    photos = oriented(_upright(), fmt)
    want = decode_image(photos[1]).int()
    assert want.shape == (3, 48, 64)
    for tag, data in photos.items():
        assert read_header(data).orientation == tag
        got = decode_image(data).int()
        assert got.shape == want.shape, tag
        assert (got - want).abs().max() <= tolerance, tag
        model_input = decode_image(data, InputContract(size=32, resize="letterbox")).int()
        assert (
            model_input - decode_image(photos[1], InputContract(size=32, resize="letterbox")).int()
        ).abs().max() <= tolerance


def test_a_turned_photo_gets_an_upright_copy_for_people():
    turned = oriented(_upright())[6]
    pixels, copy = decode_photo(turned, 32)
    assert pixels.shape == (3, 32, 32)
    shown = Image.open(io.BytesIO(copy))
    assert shown.size == (64, 48) and not shown.getexif().get(0x0112)  # upright as stored: no tag left to obey
    assert decode_photo(oriented(_upright())[1], 32)[1] is None  # an upright small photo is shown as it came


MEASURE = """
import json, sys
from teaming.decode import decode_image, decode_photo

def status(key):
    return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith(key + ":"))

data = open(sys.argv[1], "rb").read()
open("/proc/self/clear_refs", "w").write("5")  # the peak resident size starts again from now
before = status("VmRSS")
pixels = decode_photo(data, 224)[0] if sys.argv[2] == "photo" else decode_image(data)
print(json.dumps({"grew_kb": status("VmHWM") - before, "shape": list(pixels.shape)}))
"""


def test_a_phone_photo_decodes_within_the_pixels_it_is_charged(tmp_path):
    data = phone_jpeg()
    assert 3e6 <= len(data) <= 6e6
    header = read_header(data)
    held = decoded_pixels(header, photo_least(header, 224))
    assert held <= header.width * header.height // 4  # a quarter of the pixels or fewer are decoded
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)

    runs = {how: subprocess.Popen([sys.executable, "-c", MEASURE, str(path), how], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for how in ("photo", "full")}  # fmt: skip

    def peak(how: str) -> dict:
        out, err = runs[how].communicate(timeout=300)
        if "clear_refs" in err:
            pytest.skip("this kernel does not let a process reset its peak resident size (/proc/self/clear_refs)")
        assert runs[how].returncode == 0, err
        return json.loads(out)

    photo, full = peak("photo"), peak("full")
    assert photo["shape"] == [3, 224, 224] and full["shape"] == [3, 3000, 4000]
    assert full["grew_kb"] * 1024 >= header.width * header.height * 3  # the measure sees a full decode
    assert photo["grew_kb"] * 1024 <= DECODE_BYTES_PER_PIXEL * held + 4e6, photo  # what it was charged for
    assert photo["grew_kb"] < full["grew_kb"] / 2  # a fraction of what the full photo would have taken


def test_bytes_that_are_no_image_name_the_item():
    with pytest.raises(DataError, match="item-7: cannot decode image"):
        decode_photo(b"GIF89a not really", 32, "item-7")
