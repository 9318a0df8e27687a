#!/usr/bin/python3
"""Reference for bench_data_loader: the stage-2 train pipeline of CLIP-ReID in Python.

PIL decode + torchvision Resize(256x128, bicubic) -> RandomHorizontalFlip -> Pad(10) ->
RandomCrop -> ToTensor -> Normalize(0.5, 0.5) -> RandomErasing(0.5, per-pixel normal noise; the
reference uses timm's, which Debian does not ship: torchvision's value='random' does the same
work), batched by a torch DataLoader with --workers worker processes.
Prints one JSON object: {"workers": W, "images": N, "seconds": S, "images_per_s": R}.
"""
import argparse
import glob
import json
import os
import time

import torch
import torchvision.transforms as T
from PIL import Image


class Images(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(Image.open(self.paths[i]).convert("RGB")), i


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="folder of JPEGs")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=1024, help="images to time (after warm-up)")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(1)
    paths = sorted(glob.glob(os.path.join(args.dir, "*.jpg")))
    transform = T.Compose([
        T.Resize((args.height, args.width), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=0.5),
        T.Pad(10),
        T.RandomCrop((args.height, args.width)),
        T.ToTensor(),
        T.Normalize(mean=[0.5] * 3, std=[0.5] * 3),
        T.RandomErasing(p=0.5, value="random"),
    ])
    # Enough samples for a warm-up batch plus the timed images, cycling over the files.
    total = args.batch + (args.images + args.batch - 1) // args.batch * args.batch
    repeated = [paths[i % len(paths)] for i in range(total)]
    loader = torch.utils.data.DataLoader(Images(repeated, transform), batch_size=args.batch,
                                         shuffle=True, num_workers=args.workers,
                                         prefetch_factor=4, persistent_workers=False)
    it = iter(loader)
    next(it)  # warm-up: worker start and first batch are not timed
    start, n = time.perf_counter(), 0
    for images, _ in it:
        n += images.shape[0]
    seconds = time.perf_counter() - start
    print(json.dumps({"workers": args.workers, "images": n, "seconds": seconds,
                      "images_per_s": n / seconds}))


if __name__ == "__main__":
    main()
