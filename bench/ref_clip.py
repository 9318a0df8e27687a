#!/usr/bin/python3
"""Reference for bench_clip: forward + backward of the ViT-B/16 image encoder (CLIP-ReID's
version, tests/clip_reference.py) in Python PyTorch, batch 8 at 256x128, stride 16, training mode.

  ref_clip.py THREADS ITERS [BATCH [DEVICE]]   prints the best seconds per iteration over ITERS
  (after a warm-up); BATCH defaults to 8, DEVICE (cpu or cuda) to cpu
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from clip_reference import VisionTransformer  # noqa: E402


def main(threads, iters, batch, device):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    vis = VisionTransformer(16, 8, 16, 16, 768, 12, 12, 512).to(device).train()
    x = torch.randn(batch, 3, 256, 128, device=device)

    def step():
        x11, x12, xproj = vis(x)
        (x11[:, 0].sum() + x12[:, 0].sum() + xproj[:, 0].sum()).backward()
        if device == "cuda":
            torch.cuda.synchronize()

    step()
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    print(f"{best:.6f}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4, 5):
        sys.exit(__doc__)
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 8,
         sys.argv[4] if len(sys.argv) > 4 else "cpu")
