#!/usr/bin/python3
"""Reference for bench_clip: forward + backward of the ViT-B/16 image encoder (CLIP-ReID's
version, tests/clip_reference.py) in Python PyTorch, batch 8 at 256x128, stride 16, training mode.

  ref_clip.py THREADS ITERS   prints the best seconds per iteration over ITERS (after a warm-up)
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from clip_reference import VisionTransformer  # noqa: E402


def main(threads, iters):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    vis = VisionTransformer(16, 8, 16, 16, 768, 12, 12, 512).train()
    x = torch.randn(8, 3, 256, 128)

    def step():
        x11, x12, xproj = vis(x)
        (x11[:, 0].sum() + x12[:, 0].sum() + xproj[:, 0].sum()).backward()

    step()
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    print(f"{best:.6f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(int(sys.argv[1]), int(sys.argv[2]))
