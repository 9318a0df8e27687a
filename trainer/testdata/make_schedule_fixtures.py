#!/usr/bin/python3
"""Writes schedule_fixtures.txt: the learning rates of CLIP-ReID's two schedulers, computed with
the reference code's own formulas (timm CosineLRScheduler as solver/cosine_lr.py uses it, and
solver/lr_scheduler.py's WarmupMultiStepLR), for the ViT-B-16 config and one short config.
Lines: "<schedule> <epoch> <lr>" with 17 significant digits. Run from the repository root:
    /usr/bin/python3 trainer/testdata/make_schedule_fixtures.py > trainer/testdata/schedule_fixtures.txt
"""
import math
from bisect import bisect_right


def cosine_lr(t, base_lr, t_initial, lr_min, warmup_lr_init, warmup_t, cycle_limit=1):
    # timm.scheduler.CosineLRScheduler._get_lr with cycle_mul=1, cycle_decay=1, warmup_prefix=False
    if t < warmup_t:
        warmup_steps = (base_lr - warmup_lr_init) / warmup_t
        return warmup_lr_init + t * warmup_steps
    i = math.floor(t / t_initial)
    t_i = t_initial
    t_curr = t - t_initial * i
    if i < cycle_limit:
        return lr_min + 0.5 * (base_lr - lr_min) * (1 + math.cos(math.pi * t_curr / t_i))
    return lr_min


def warmup_multistep(last_epoch, base_lr, milestones, gamma, warmup_factor, warmup_iters, method):
    # solver/lr_scheduler.py WarmupMultiStepLR.get_lr
    wf = 1
    if last_epoch < warmup_iters:
        if method == "constant":
            wf = warmup_factor
        elif method == "linear":
            alpha = last_epoch / warmup_iters
            wf = warmup_factor * (1 - alpha) + alpha
    return base_lr * wf * gamma ** bisect_right(milestones, last_epoch)


def main():
    for e in range(1, 121):
        print("stage1_vitb16 %d %.17g" % (e, cosine_lr(e, 3.5e-4, 120, 1e-6, 1e-5, 5)))
    for e in range(1, 21):
        print("stage1_tiny %d %.17g" % (e, cosine_lr(e, 1e-3, 20, 1e-6, 1e-5, 2)))
    for e in range(1, 61):
        print("stage2_vitb16 %d %.17g" % (e, warmup_multistep(e, 5e-6, [30, 50], 0.1, 0.1, 10, "linear")))
        print("stage2_vitb16_bias %d %.17g" % (e, warmup_multistep(e, 1e-5, [30, 50], 0.1, 0.1, 10, "linear")))
    for e in range(1, 16):
        print("stage2_constant %d %.17g" % (e, warmup_multistep(e, 3e-4, [12], 0.1, 0.1, 2, "constant")))


if __name__ == "__main__":
    main()
