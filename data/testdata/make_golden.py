#!/usr/bin/python3
"""Writes the JPEG fixtures and the PIL/torchvision reference outputs of jpeg_test.cc and
transforms_test.cc.

Run from the project root with Debian's Python: /usr/bin/python3 data/testdata/make_golden.py
Outputs (raw, row-major): <name>.jpg; <name>_decoded.rgb (H, W, 3) uint8 = PIL open + convert RGB;
<name>_<interp>_<H>x<W>.rgb = PIL resize; a_test_64x32.f32 (3, 64, 32) float32 = torchvision
Resize((64, 32)) -> ToTensor -> Normalize(0.5, 0.5), the reference's test pipeline.
"""
import os

import numpy as np
import torchvision.transforms as T
from PIL import Image

OUT = os.path.dirname(os.path.abspath(__file__))


def photo(h, w, seed):
    """A photo-like image: smooth colour field, hard edges, texture and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(4):
            fy, fx, ph = rng.uniform(0.5, 6) / h, rng.uniform(0.5, 6) / w, rng.uniform(0, 6.3)
            img[..., c] += rng.uniform(20, 60) * np.sin(2 * np.pi * (fy * y + fx * x) + ph)
    img += 128
    img[h // 4: h // 2, w // 3: 2 * w // 3] = rng.uniform(0, 255, 3)   # a block with hard edges
    img[(x + y).astype(int) % 9 < 2] *= 0.7                             # diagonal texture
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def save_raw(name, arr):
    np.ascontiguousarray(arr).tofile(os.path.join(OUT, name))


def main():
    specs = {  # name: (h, w, save kwargs, mode)
        "a": (128, 64, dict(quality=90, subsampling=2), "RGB"),           # Market-1501 size, 4:2:0
        "b": (90, 200, dict(quality=95, subsampling=0), "RGB"),           # larger, 4:4:4
        "c": (45, 100, dict(quality=85), "L"),                            # greyscale
        "d": (128, 64, dict(quality=80, progressive=True), "RGB"),        # progressive
    }
    resizes = {
        "a": [("bicubic", 256, 128), ("bilinear", 256, 128)],
        "b": [("bicubic", 32, 64), ("bilinear", 48, 96)],
        "c": [("bicubic", 80, 160), ("bilinear", 30, 70)],
        "d": [("bicubic", 96, 48)],
    }
    for i, (name, (h, w, kwargs, mode)) in enumerate(specs.items()):
        path = os.path.join(OUT, name + ".jpg")
        photo(h, w, seed=i).convert(mode).save(path, "JPEG", **kwargs)
        im = Image.open(path).convert("RGB")
        save_raw(f"{name}_decoded.rgb", np.asarray(im))
        for interp, rh, rw in resizes[name]:
            mode_id = Image.BICUBIC if interp == "bicubic" else Image.BILINEAR
            save_raw(f"{name}_{interp}_{rh}x{rw}.rgb", np.asarray(im.resize((rw, rh), mode_id)))
    test = T.Compose([T.Resize((64, 32)), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    out = test(Image.open(os.path.join(OUT, "a.jpg")).convert("RGB"))
    save_raw("a_test_64x32.f32", out.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
