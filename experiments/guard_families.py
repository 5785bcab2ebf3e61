"""The familiarity guard measured the honest way: every family of images that are none of the classes (photos,
textures, faces, digits, noise, flat colours) rendered two ways and sent through the service's decode path, with
the family under test left out of whatever the guard was fitted against.

Guards compared:
  shipped    the shipped model's guard: training features against synthetic outliers made from them
  distances  the rarer of the two distance ranks alone (Mahalanobis to the nearest class, a low feature norm):
             no outlier regression, nothing fitted against any outlier
  exposed    for each family, a guard fitted against the synthetic outliers and the *other* families (rendered
             the first way): what exposure to real outliers buys on a family it never saw
Each guard's limit is the shipped policy's: the 0.9 quantile of its scores on items 7000..8499. Reported on the
held-out families, and on items 8500..9999 the deferral the guard adds beyond the confidence rule (its cost).

Usage: python experiments/guard_families.py [--n 200] [--model models/cifar10h-default]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image

from teaming.datasets import load_default_test
from teaming.decode import decode_photo
from teaming.model import load_artifact
from teaming.model.familiarity import FamiliarityGuard
from teaming.model.outliers import synthetic_outliers
from teaming.model.predict import predict_outputs
from teaming.policy import load_policy
from teaming.probes import SKIMAGE_PHOTOS, SKIMAGE_TEXTURES, _rgb, _skimage, _skimage_dir

FAMILIES = ("photos", "textures", "faces", "digits", "noise", "constant")


def encode(img: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def crops(sources: list[np.ndarray], n: int, rng, smallest: float, side: int | None) -> list[bytes]:
    """n random crops (a `smallest` share to all of the shorter side, any aspect near square) of the sources,
    resized to side x side when given, else kept at their size, as JPEGs."""
    out = []
    for k in range(n):
        img = sources[k % len(sources)]
        h, w = img.shape[:2]
        s = int(rng.integers(int(smallest * min(h, w)), min(h, w) + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = Image.fromarray(img[y : y + s, x : x + s])
        out.append(encode(np.asarray(crop.resize((side, side), Image.BILINEAR) if side else crop)))
    return out


def digit_photo(digit: np.ndarray, rng) -> np.ndarray:
    """A whole 8 x 8 digit drawn as ink on tinted paper at 64 x 64: not teaming.probes' grey crops."""
    ink = np.asarray(Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize((48, 48), Image.BICUBIC)) / 255
    canvas = np.zeros((64, 64))
    canvas[8:56, 8:56] = ink
    paper, pen = rng.uniform(170, 250, 3), rng.uniform(0, 90, 3)
    img = paper * (1 - canvas[..., None]) + pen * canvas[..., None] + rng.normal(0, 4, (64, 64, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def renderings(n: int, seed: int = 1) -> dict[str, dict[str, list[bytes]]]:
    """Each family, two ways, as encoded bytes a caller would send."""
    from sklearn.datasets import load_digits, load_sample_images

    rng = np.random.default_rng(seed)
    photos = [_rgb(i) for i in load_sample_images().images] + _skimage(SKIMAGE_PHOTOS)
    textures = _skimage(SKIMAGE_TEXTURES)
    faces = [_rgb(f) for f in np.load(_skimage_dir() / "lfw_subset.npy")]
    digits = load_digits().images[rng.permutation(1797)[:n]]
    gray = rng.integers(0, 256, (n, 1, 1, 3))
    return {
        "photos": {"small crops": crops(photos, n, rng, 0.25, 128), "large crops": crops(photos, n, rng, 0.8, None)},
        "textures": {"small crops": crops(textures, n, rng, 0.25, 128), "whole": crops(textures, n, rng, 0.9, None)},
        "faces": {
            "crops": crops(faces, n, rng, 0.5, 96),
            "whole": [encode(np.asarray(Image.fromarray(f).resize((100, 100), Image.BICUBIC))) for f in faces[:n]],
        },  # fmt: skip
        "digits": {
            "grey crops": crops([_rgb(d * 16) for d in digits], n, rng, 0.5, 64),
            "ink on paper": [encode(digit_photo(d, rng)) for d in digits],
        },  # fmt: skip
        "noise": {
            "uniform": [encode(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "PNG") for _ in range(n)],
            "gaussian": [
                encode(np.clip(g + rng.normal(0, 40, (64, 64, 3)), 0, 255).astype(np.uint8), "PNG") for g in gray
            ],
        },  # fmt: skip
        "constant": {
            "flat": [encode(np.broadcast_to(g, (64, 64, 3)).astype(np.uint8), "PNG") for g in gray],
            "gradient": [
                encode(np.linspace(g[0, 0], 255 - g[0, 0], 64)[None].repeat(64, 0).astype(np.uint8), "PNG")
                for g in gray
            ],
        },  # fmt: skip
    }


def decoded(art, blobs: list[bytes]) -> torch.Tensor:
    """What the service's decode path makes of the bytes: upright, shaped by the model's input contract."""
    return torch.stack([decode_photo(b, art.contract)[0] for b in blobs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/cifar10h-default")
    ap.add_argument("--n", type=int, default=200, help="images per family and way")
    args = ap.parse_args()
    start = time.perf_counter()
    art = load_artifact(args.model)
    policy = load_policy(f"{args.model}/policy.json")
    test = load_default_test()
    tr = torch.from_numpy(art.meta.used_positions())
    feats = lambda x: predict_outputs(art.net, x, tta=art.meta.tta)[1]  # noqa: E731
    from teaming.datasets import load_cifar10h

    counts = load_cifar10h().counts
    train_f = feats(test.images[tr])
    train_y = counts[tr.numpy()].argmax(1)
    synthetic = feats(synthetic_outliers(test.images[tr], len(tr), 0))
    fit_f, held_f = feats(test.images[7000:8500]), feats(test.images[8500:10000])
    logits_held = predict_outputs(art.net, test.images[8500:10000], tta=art.meta.tta)[0]
    unsure = policy.decide(torch.softmax(logits_held / art.meta.temperature, 1).double().numpy())
    sets = renderings(args.n)
    probe_f = {f: {way: feats(decoded(art, blobs)) for way, blobs in ways.items()} for f, ways in sets.items()}
    print(f"# guard_families on {args.model}, {time.strftime('%Y-%m-%d')}, {args.n} images a family and way")
    print("| guard | held-out family | " + " | ".join("way" for _ in range(2)) + " | deferral added on 8500..9999 |")

    def row(name: str, guard: FamiliarityGuard, family: str) -> list[float]:
        limit = np.quantile(guard.score(fit_f), 0.9)
        added = float(((guard.score(held_f) > limit) & ~unsure).mean())
        shares = {way: float((guard.score(f) > limit).mean()) for way, f in probe_f[family].items()}
        print(f"| {name} | {family} | " + " | ".join(f"{w} {s:.1%}" for w, s in shares.items()) + f" | +{added:.1%} |",
              flush=True)  # fmt: skip
        return list(shares.values())

    shipped = {f: row("shipped", art.guard, f) for f in FAMILIES}
    plain = FamiliarityGuard.fit(train_f, train_y, len(art.classes))
    distances = {f: row("distances", plain, f) for f in FAMILIES}
    exposed = {}
    for family in FAMILIES:
        others = torch.cat([next(iter(probe_f[o].values())) for o in FAMILIES if o != family])
        guard = FamiliarityGuard.fit(train_f, train_y, len(art.classes), torch.cat([synthetic, others]))
        exposed[family] = row("exposed (this family left out)", guard, family)
    for name, table in (("shipped", shipped), ("distances", distances), ("exposed", exposed)):
        worst = min((s, f) for f, shares in table.items() for s in shares)
        print(f"worst held-out family and way, {name}: {worst[1]} {worst[0]:.1%}")
    print(f"took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
