#!/usr/bin/python3
"""Reference for bench_train_step: one stage-2 training step of the improved CLIP-ReID in Python
PyTorch (the model, losses and optimiser of tests/train_step_reference.py, which follows
CLIP-ReID's processor_clipreid_stage2.py), random init, a P x K batch of random images and a
random frozen text bank.

  ref_train_step.py CONFIG CLASSES THREADS ITERS [DEVICE]   prints the best seconds per step over
  ITERS (after a warm-up); CONFIG is a full effective config (`reid print-config` text)
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from train_step_reference import (ReidModel, parse_textproto, stage2_optimizer,  # noqa: E402
                                  stage2_step)


def main(config, classes, threads, iters, device):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = parse_textproto(open(config).read())
    s2, size = cfg["stage2"], cfg["input"]["size_train"]
    model = ReidModel(cfg, classes).to(device).train()
    model.tokenized_prompts = model.tokenized_prompts.to(device)
    optimizer = stage2_optimizer(model, s2, 1)
    p, k = s2["ids_per_batch"], s2["num_instances"]
    x = torch.randn(p * k, 3, size["height"], size["width"], device=device)
    y = torch.arange(p, device=device).repeat_interleave(k)
    bank = torch.randn(classes, cfg["model"]["embed_dim"], device=device)

    def step():
        stage2_step(model, optimizer, cfg, x, y, None, bank)
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
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
         sys.argv[5] if len(sys.argv) > 5 else "cpu")
