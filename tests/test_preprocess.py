"""Input contracts: parsed from --preprocess, and each resize policy shaping photos of any aspect."""

from __future__ import annotations

import pytest
import torch

from teaming.preprocess import IMAGENET_MEAN, InputContract, conform, parse_preprocess, to_input


def test_presets_and_keys_parse_into_a_contract():
    tv = parse_preprocess("torchvision")
    assert (tv.size, tv.resize, tv.crop_pct, tv.mean) == (224, "crop", 0.875, IMAGENET_MEAN)
    assert parse_preprocess("torchvision,size=160").size == 160  # a preset, then overrides
    c = parse_preprocess("size=64,resize=letterbox,interp=bicubic,mean=0.5/0.5/0.5,std=0.25/0.25/0.25")
    assert (c.size, c.resize, c.interp, c.mean, c.std) == (64, "letterbox", "bicubic", (0.5,) * 3, (0.25,) * 3)
    assert parse_preprocess(None, size=48) == InputContract(size=48)  # the graph's declared size, stretched
    assert parse_preprocess("resize=crop", size=48).size == 48
    assert "shorter side resized to 256, the centre 224x224 kept" in tv.describe()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("size=64,colour=yes", "unknown key 'colour'"),
        ("imagenet", "unknown preset 'imagenet'"),
        ("size=64,mean=0.5/0.5", "three numbers"),
        ("size=64,mean=a/b/c", "not three numbers"),
        ("size=64,mean=0.5/0.5/0.5", "mean and std together"),
        ("size=64,resize=squash", "resize"),
        ("size=0", "size"),
        ("resize=crop", "needs size=N"),
    ],
)
def test_a_bad_spec_is_one_line_naming_its_part(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_preprocess(spec)
    assert "\n" not in str(err.value)


def _marked(h: int, w: int) -> torch.Tensor:
    """A grey h x w image with a white square at its centre."""
    img = torch.full((1, 3, h, w), 100, dtype=torch.uint8)
    img[..., h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4] = 255
    return img


def test_each_resize_policy_makes_the_size_and_keeps_what_it_promises():
    wide = _marked(60, 120)
    stretch = conform(wide, InputContract(size=32))
    crop = conform(wide, InputContract(size=32, resize="crop", crop_pct=0.875))
    box = conform(wide, InputContract(size=32, resize="letterbox", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
    for out in (stretch, crop, box):
        assert out.shape == (1, 3, 32, 32) and out.dtype == torch.uint8
    assert crop[0, 0, 16, 16] > 200  # the centre stays the centre
    assert box[0, 0, 0, 16] == 0 and box[0, 0, 16, 0] == 100  # padded above and below with the mean, not beside
    assert box[0, 0, 16, 16] > 200
    assert torch.equal(conform(wide, 32), stretch)  # an int is a plain stretch


def test_to_input_normalises_only_where_the_contract_says():
    x = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    assert torch.allclose(to_input(x, InputContract(size=8)), torch.ones(1, 3, 8, 8))
    norm = to_input(x, InputContract(size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    assert torch.allclose(norm, torch.full((1, 3, 8, 8), 2.0))
