#!/usr/bin/python3
"""Reference for bench_embed: CLIP-ReID's inference loop (processor do_inference over the val
loader of datasets/make_dataloader_clipreid.py) on a list of image files.

Each image: PIL Image.open(path).convert("RGB"), then CLIP-ReID's val_transforms
T.Compose([T.Resize((H, W)), T.ToTensor(), T.Normalize(mean, std)]) (torchvision, bilinear),
batched by a torch DataLoader (shuffle off, --workers worker processes, --batch per batch, the
val_collate_fn stacking); the model of tests/clipreid_model.py in eval mode, fp32, forward under
torch.no_grad() without cam_label (no SIE: crops of unknown cameras). The image side of the
weights comes from --weights (the state dict bench_embed writes, CLIP-ReID's key names); the
text side, which inference does not run, is a minimal random one.

  ref_embed.py --weights F.pth --images LIST.txt --out FEATURES.npy --height H --width W
      --stride S --heads N [--neck before|after] [--mean M M M] [--std S S S] [--threads T]
      [--workers K] [--batch B] [--passes P] [--device cpu|cuda] [--flip]

A warm-up pass writes FEATURES.npy (float32 (N, D)); P timed passes follow. Prints one JSON
object: {"images": N, "seconds": best seconds per pass, "images_per_s": ..., "workers": K}.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import clipreid_model  # noqa: E402  (the CLIP-ReID transcription)


class ImageDataset(torch.utils.data.Dataset):
    """CLIP-ReID's ImageDataset: (img, pid, camid, trackid, img_path) per item."""

    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = Image.open(self.paths[i]).convert("RGB")  # read_image
        return self.transform(img), 0, 0, 0, self.paths[i]


def val_collate_fn(batch):
    imgs, pids, camids, viewids, img_paths = zip(*batch)
    viewids = torch.tensor(viewids, dtype=torch.int64)
    camids_batch = torch.tensor(camids, dtype=torch.int64)
    return torch.stack(imgs, dim=0), pids, camids, camids_batch, viewids, img_paths


def build_model(weights, stride, height, width, heads, neck):
    """ClipReid with the image side of `weights` (loaded; every image-side key must be there) and
    a minimal text side (random, never run)."""
    sd = clipreid_model.load(weights)
    conv = sd["image_encoder.conv1.weight"]
    patch = conv.shape[-1]
    arch = dict(
        vision_width=conv.shape[0], patch=patch, stride=stride,
        h_resolution=(height - patch) // stride + 1, w_resolution=(width - patch) // stride + 1,
        vision_layers=clipreid_model._count_blocks(sd, "image_encoder.transformer.resblocks."),
        vision_heads=heads, embed_dim=sd["image_encoder.proj"].shape[1],
        num_classes=1, cameras=0, n_cls_ctx=1, prefix_len=1, suffix_len=1,
        text_width=64, text_layers=1, text_heads=1, context_length=4,
        text_embed_dim=sd["image_encoder.proj"].shape[1])
    model = clipreid_model.ClipReid(arch, neck_feat=neck)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    image_side = [k for k in missing if not k.startswith(
        ("text_encoder.", "prompt_learner.", "classifier"))]
    if unexpected or image_side:
        sys.exit(f"{weights}: unexpected keys {unexpected}, missing image-side keys {image_side}")
    return model.float().eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--images", required=True, help="text file: one image path per line")
    ap.add_argument("--out", required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--stride", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--neck", choices=("before", "after"), default="before")
    ap.add_argument("--mean", type=float, nargs=3, default=[0.5, 0.5, 0.5])
    ap.add_argument("--std", type=float, nargs=3, default=[0.5, 0.5, 0.5])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--flip", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.images, encoding="utf-8") as f:
        paths = [line.rstrip("\n") for line in f if line.strip()]
    model = build_model(args.weights, args.stride, args.height, args.width, args.heads,
                        args.neck).to(args.device)
    val_transforms = T.Compose([
        T.Resize((args.height, args.width)),
        T.ToTensor(),
        T.Normalize(mean=args.mean, std=args.std),
    ])
    dataset = ImageDataset(paths, val_transforms)

    def one_pass():
        # A fresh DataLoader per pass, as each evaluation of CLIP-ReID iterates its val_loader
        # anew (workers start with the iteration).
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=False,
                                             num_workers=args.workers,
                                             collate_fn=val_collate_fn)
        feats = []
        for img, _, _, _, _, _ in loader:
            with torch.no_grad():
                img = img.to(args.device)
                feat = model(img, cam_label=None)
                if args.flip:  # the mirror's feature averaged in, as bench_embed --flip does
                    feat = (feat + model(img.flip(3), cam_label=None)) / 2
                feats.append(feat.float().cpu())
        if args.device == "cuda":
            torch.cuda.synchronize()
        return torch.cat(feats)

    np.save(args.out, one_pass().numpy().astype(np.float32))
    best = float("inf")
    for _ in range(args.passes):
        t0 = time.perf_counter()
        one_pass()
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({"images": len(paths), "seconds": best, "images_per_s": len(paths) / best,
                      "workers": args.workers}))


if __name__ == "__main__":
    main()
