#!/usr/bin/env python3
"""Step time against world size for stage 2 of the improved CLIP-ReID (ViT-B/16 at 256x128).

The model of docs/scaling.md, so that its tables can be re-derived and re-run with other inputs:

  t_step(n) = t_compute + t_exposed_comm(n)
  t_comm(n) = 2(n-1)/n * S / busbw(n) + buckets * latency(n)      (nccl-tests' all-reduce model)
  no overlap:   t_exposed_comm = t_comm
  full overlap: t_exposed_comm = max(0, t_comm - (1 - 1/buckets) * t_backward)
                (every bucket but the last can run under the rest of backward)
  efficiency(n) = t_compute / t_step(n)      (per-rank batch held fixed: weak scaling)

Inputs are named and sourced in docs/scaling.md; pass --help for the knobs. Standard library only.
"""
import argparse
import math

MIB = 1024 * 1024


def vit_params(width=768, layers=12, patch=16, tokens=129, embed=512):
    """Parameters of CLIP's ViT-B/16 visual tower at `tokens` positions (cls + patches)."""
    per_block = (width * 3 * width + 3 * width) + (width * width + width) + 4 * width \
        + (width * 4 * width + 4 * width) + (4 * width * width + width)
    return (3 * patch * patch * width + width + tokens * width + 2 * width
            + layers * per_block + 2 * width + width * embed)


def stage2_trainable_params(num_classes, cameras, width=768, embed=512):
    """Image side + necks + classifiers + SIE + cross-modal attention (the stage-2 trainables)."""
    heads = 2 * (width + embed) + num_classes * (width + embed) + cameras * width
    cross_attention = 4 * (embed * embed + embed) + 2 * 2 * embed
    return vit_params() + heads + cross_attention


def vit_train_flops_per_image(width=768, layers=12, tokens=129):
    """Forward matrix products x 2 (FLOPs) x 3 (forward + backward)."""
    macs = layers * (12 * width * width * tokens + 2 * tokens * tokens * width)
    return 3 * 2 * macs


def buckets_for(nbytes, cap_mib=25.0, first_mib=1.0):
    rest = max(0.0, nbytes - first_mib * MIB)
    return 1 + math.ceil(rest / (cap_mib * MIB))


def step(n, t_compute, nbytes, buckets, busbw, latency):
    if n == 1:
        return t_compute, t_compute, 0.0
    t_comm = 2 * (n - 1) / n * nbytes / busbw + buckets * latency
    t_backward = t_compute * 2 / 3
    hidden = (1 - 1 / buckets) * t_backward
    return t_compute + t_comm, t_compute + max(0.0, t_comm - hidden), t_comm


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per_rank_batch", type=int, default=64, help="images per rank and step (P_local * K)")
    ap.add_argument("--peak_tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100/H200 SXM: 989)")
    ap.add_argument("--mfu", type=float, default=0.35, help="achieved fraction of peak in the step")
    ap.add_argument("--classes", type=int, default=751, help="training identities (Market-1501: 751)")
    ap.add_argument("--cameras", type=int, default=6)
    args = ap.parse_args()

    params = stage2_trainable_params(args.classes, args.cameras)
    nbytes = 4 * params  # float32 gradients (AMP keeps float32 master gradients)
    buckets = buckets_for(nbytes)
    flops = vit_train_flops_per_image()
    t_compute = args.per_rank_batch * flops / (args.peak_tflops * 1e12 * args.mfu)
    print(f"stage-2 trainable parameters {params / 1e6:.1f} M, gradient bytes {nbytes / 1e6:.0f} MB, "
          f"{buckets} buckets (25 MiB cap, 1 MiB first)")
    print(f"training FLOPs per image {flops / 1e9:.1f} GFLOP; per-rank batch {args.per_rank_batch}: "
          f"compute {t_compute * 1e3:.1f} ms per step at {args.mfu:.0%} of {args.peak_tflops:.0f} TFLOP/s")
    print()
    # (world size, interconnect, bus bandwidth B/s, per-bucket latency s)
    scenarios = [
        (1, "one GPU", None, 0.0),
        (8, "one node, PCIe (no NVLink)", 25e9, 30e-6),
        (8, "one node, NVLink/NVSwitch (A100)", 200e9, 20e-6),
        (8, "one node, NVLink SHARP (H100)", 480e9, 20e-6),
        (64, "8 nodes, InfiniBand HDR x4 per node", 90e9, 2 * math.log2(64) * 5e-6),
        (512, "64 nodes, InfiniBand HDR x4 per node", 90e9, 2 * math.log2(512) * 5e-6),
    ]
    print("| GPUs | interconnect | bus bandwidth | all-reduce per step | step, no overlap | efficiency | "
          "step, overlap | efficiency |")
    print("|---|---|---|---|---|---|---|---|")
    for n, name, busbw, lat in scenarios:
        serial, overlapped, t_comm = step(n, t_compute, nbytes, buckets, busbw or 1.0, lat)
        bw = f"{busbw / 1e9:.0f} GB/s" if busbw else "-"
        print(f"| {n} | {name} | {bw} | {t_comm * 1e3:.1f} ms | {serial * 1e3:.1f} ms | "
              f"{t_compute / serial:.0%} | {overlapped * 1e3:.1f} ms | {t_compute / overlapped:.0%} |")


if __name__ == "__main__":
    main()
