#!/usr/bin/python3
"""CLIP-ReID's inference path in plain PyTorch: a transcription of build_transformer
(model/make_model_clipreid.py) and the CLIP modules it is made of (model/clip/model.py), used to
show that a state dict `reid` exports is one CLIP-ReID's own code loads and computes with.

  clipreid_model.py --weights F.pth --stride S --height H --width W
      (--images_npy X.npy | --images LIST.txt) --out Y.npy
      [--neck before|after] [--sie_coe 3.0] [--camid N | --camids_npy C.npy]
      [--heads N] [--text_heads N] [--mean 0.5 0.5 0.5] [--std 0.5 0.5 0.5]

X.npy: float32 (N, 3, H, W) images already normalised; LIST.txt: one image path per line, read
with CLIP-ReID's test transforms (PIL RGB, Resize((H, W)) bilinear, ToTensor, Normalize). Y.npy:
float32 (N, D) eval features (not L2-normalised; CLIP-ReID's evaluator normalises later).

The weights are read with torch.load(weights_only=True) only, and loaded with
load_state_dict(strict=True): every key of the file must be a parameter or buffer of the model
and every parameter or buffer must be in the file. The architecture comes from the state dict
(widths, layers, patch, classes, cameras, context length, prompt lengths); stride, input size,
heads (width // 64 unless given), neck and SIE coefficient are arguments, as they are config
values in CLIP-ReID.

Needs only torch (Debian python3-torch 1.13), numpy and PIL.
"""
import argparse
import sys
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image
from torch import nn


# --- CLIP building blocks (model/clip/model.py) --------------------------------------------------

class LayerNorm(nn.LayerNorm):
    """CLIP's LayerNorm: computed in fp32, returned in the input's dtype."""

    def forward(self, x):
        return super().forward(x.type(torch.float32)).type(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block over sequence-first (L, N, E) tokens; attn_mask is a plain attribute."""

    def __init__(self, d_model, n_head, attn_mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model))]))
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask

    def attention(self, x):
        mask = None
        if self.attn_mask is not None:
            mask = self.attn_mask.to(dtype=x.dtype, device=x.device)
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, attn_mask=None):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(
            *[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """CLIP-ReID's ViT: conv stride, an h x w positional grid, SIE on the CLS token, and three
    outputs (tokens after the second-to-last block, ln_post(tokens), ln_post(tokens) @ proj)."""

    def __init__(self, h_resolution, w_resolution, patch_size, stride_size, width, layers, heads,
                 output_dim):
        super().__init__()
        self.h_resolution = h_resolution
        self.w_resolution = w_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=stride_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(
            scale * torch.randn(h_resolution * w_resolution + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x, cv_emb=None):
        x = self.conv1(x)                                             # (N, W, h, w)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)    # (N, h*w, W)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(
            x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([cls, x], dim=1)                                # (N, 1 + h*w, W)
        if cv_emb is not None:
            x[:, 0] = x[:, 0] + cv_emb                                # SIE: CLS only, before pos
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)                                        # NLD -> LND
        # CLIP-ReID splits ViT-B/16's 12 blocks as resblocks[:11] and resblocks[11]: all but the
        # last, then the last.
        x11 = self.transformer.resblocks[:-1](x)
        x12 = self.transformer.resblocks[-1](x11)
        x11 = x11.permute(1, 0, 2)                                    # LND -> NLD
        x12 = x12.permute(1, 0, 2)
        x12 = self.ln_post(x12)                                       # every token
        xproj = x12 @ self.proj                                       # every token
        return x11, x12, xproj


def build_attention_mask(context_length):
    """Additive causal mask: 0 on and below the diagonal, -inf above."""
    mask = torch.empty(context_length, context_length)
    mask.fill_(float("-inf"))
    return mask.triu_(1)


class TextEncoder(nn.Module):
    """CLIP-ReID's TextEncoder: CLIP's text transformer without the token embedding."""

    def __init__(self, context_length, width, layers, heads, embed_dim):
        super().__init__()
        self.transformer = Transformer(width, layers, heads, build_attention_mask(context_length))
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, embed_dim) * width ** -0.5)

    def forward(self, prompts, eot):
        """prompts (N, L, W) token embeddings; eot (N,) positions of the end token (in CLIP-ReID
        tokenized_prompts.argmax(-1))."""
        x = prompts + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), eot] @ self.text_projection


class PromptLearner(nn.Module):
    """cls_ctx (C, n_ctx, W) learnable; token_prefix (1, P, W) and token_suffix (1, S, W): the
    frozen token embeddings of the template around the class tokens."""

    def __init__(self, num_class, n_cls_ctx, ctx_dim, prefix_len, suffix_len):
        super().__init__()
        self.cls_ctx = nn.Parameter(torch.empty(num_class, n_cls_ctx, ctx_dim).normal_(std=0.02))
        self.register_buffer("token_prefix", torch.zeros(1, prefix_len, ctx_dim))
        self.register_buffer("token_suffix", torch.zeros(1, suffix_len, ctx_dim))
        self.num_class = num_class

    def forward(self, label):
        b = label.shape[0]
        cls_ctx = self.cls_ctx[label]
        prefix = self.token_prefix.expand(b, -1, -1)
        suffix = self.token_suffix.expand(b, -1, -1)
        return torch.cat([prefix, cls_ctx, suffix], dim=1)


def weights_init_classifier(m):
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.001)


class ClipReid(nn.Module):
    """build_transformer for ViT-B-16 style models (eval path; the text side only for loading
    and encode_text)."""

    def __init__(self, arch, neck_feat="before", sie_coe=3.0):
        super().__init__()
        a = arch
        self.in_planes = a["vision_width"]
        self.in_planes_proj = a["embed_dim"]
        self.num_classes = a["num_classes"]
        self.neck_feat = neck_feat
        self.sie_coe = sie_coe

        self.classifier = nn.Linear(self.in_planes, self.num_classes, bias=False)
        self.classifier.apply(weights_init_classifier)
        self.classifier_proj = nn.Linear(self.in_planes_proj, self.num_classes, bias=False)
        self.classifier_proj.apply(weights_init_classifier)
        self.bottleneck = nn.BatchNorm1d(self.in_planes)
        self.bottleneck.bias.requires_grad_(False)
        self.bottleneck_proj = nn.BatchNorm1d(self.in_planes_proj)
        self.bottleneck_proj.bias.requires_grad_(False)

        self.image_encoder = VisionTransformer(
            a["h_resolution"], a["w_resolution"], a["patch"], a["stride"], a["vision_width"],
            a["vision_layers"], a["vision_heads"], a["embed_dim"])
        if a["cameras"] > 0:
            self.cv_embed = nn.Parameter(torch.zeros(a["cameras"], self.in_planes))
            nn.init.trunc_normal_(self.cv_embed, std=0.02)
        else:
            self.cv_embed = None
        self.prompt_learner = PromptLearner(a["num_classes"], a["n_cls_ctx"], a["text_width"],
                                            a["prefix_len"], a["suffix_len"])
        self.text_encoder = TextEncoder(a["context_length"], a["text_width"], a["text_layers"],
                                        a["text_heads"], a["text_embed_dim"])

    def forward(self, x, cam_label=None):
        """Eval features (N, vision_width + embed_dim), as CLIP-ReID's test loop gets them."""
        cv_embed = None
        if cam_label is not None:
            if self.cv_embed is None:
                raise ValueError("cam_label given but the model has no cv_embed (SIE off)")
            cv_embed = self.sie_coe * self.cv_embed[cam_label]
        image_features_last, image_features, image_features_proj = self.image_encoder(x, cv_embed)
        img_feature = image_features[:, 0]
        img_feature_proj = image_features_proj[:, 0]
        if self.neck_feat == "after":
            feat = self.bottleneck(img_feature)
            feat_proj = self.bottleneck_proj(img_feature_proj)
            return torch.cat([feat, feat_proj], dim=1)
        return torch.cat([img_feature, img_feature_proj], dim=1)

    def encode_text(self, label, eot):
        """Text features (N, text_embed_dim) of the prompts of `label`; eot: the template's
        end-token position (the state dict does not hold the template's token ids)."""
        prompts = self.prompt_learner(label)
        return self.text_encoder(prompts, torch.full_like(label, eot))


# --- weights ------------------------------------------------------------------------------------

def load(path):
    """The state dict of a torch.save file, read with the restricted (weights-only) unpickler;
    'module.' prefixes stripped as CLIP-ReID's load_param does."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: holds a {type(sd).__name__}, not a state dict")
    return OrderedDict((k.replace("module.", ""), v) for k, v in sd.items())


def _count_blocks(sd, prefix):
    ids = {int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)}
    if ids != set(range(len(ids))):
        raise ValueError(f"{prefix}N: block numbers {sorted(ids)} are not 0..n-1")
    return len(ids)


def _heads(width, given):
    if given:
        return given
    return max(1, width // 64)


def infer_arch(sd, stride, height, width, heads=None, text_heads=None):
    """The architecture of a CLIP-ReID state dict plus the values it cannot hold."""
    def need(key):
        if key not in sd:
            raise KeyError(f"state dict has no '{key}'")
        return sd[key]

    conv = need("image_encoder.conv1.weight")
    vision_width, patch = conv.shape[0], conv.shape[-1]
    # CLIP-ReID: h_resolution = (SIZE_TRAIN[0] - 16) // STRIDE_SIZE[0] + 1 (16: ViT-B/16's patch).
    h_res = (height - patch) // stride + 1
    w_res = (width - patch) // stride + 1
    pos_rows = need("image_encoder.positional_embedding").shape[0]
    if pos_rows != 1 + h_res * w_res:
        raise ValueError(
            f"image_encoder.positional_embedding has {pos_rows} rows but a {height}x{width} input "
            f"with patch {patch} and stride {stride} gives a {h_res}x{w_res} grid "
            f"({1 + h_res * w_res} rows): wrong --height/--width/--stride")
    cls_ctx = need("prompt_learner.cls_ctx")
    text_width = need("text_encoder.ln_final.weight").shape[0]
    vision_layers = _count_blocks(sd, "image_encoder.transformer.resblocks.")
    text_layers = _count_blocks(sd, "text_encoder.transformer.resblocks.")
    if vision_layers < 1 or text_layers < 1:
        raise ValueError("state dict has no transformer blocks")
    arch = dict(
        vision_width=vision_width, patch=patch, stride=stride,
        h_resolution=h_res, w_resolution=w_res,
        vision_layers=vision_layers,
        vision_heads=_heads(vision_width, heads),
        embed_dim=need("image_encoder.proj").shape[1],
        num_classes=need("classifier.weight").shape[0],
        cameras=sd["cv_embed"].shape[0] if "cv_embed" in sd else 0,
        n_cls_ctx=cls_ctx.shape[1],
        prefix_len=need("prompt_learner.token_prefix").shape[1],
        suffix_len=need("prompt_learner.token_suffix").shape[1],
        text_width=text_width,
        text_layers=text_layers,
        text_heads=_heads(text_width, text_heads),
        context_length=need("text_encoder.positional_embedding").shape[0],
        text_embed_dim=need("text_encoder.text_projection").shape[1])
    return arch


def build(sd, stride, height, width, neck_feat="before", sie_coe=3.0, heads=None,
          text_heads=None):
    """The model of state dict `sd`, loaded strictly, in eval mode (fp32)."""
    arch = infer_arch(sd, stride, height, width, heads, text_heads)
    model = ClipReid(arch, neck_feat=neck_feat, sie_coe=sie_coe)
    model.load_state_dict(sd, strict=True)
    return model.float().eval()


# --- CLIP-ReID's test transforms (datasets/make_dataloader_clipreid.py val_transforms) -----------

def _bilinear():
    return getattr(Image, "Resampling", Image).BILINEAR


def load_image(path, height, width, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    """T.Compose([T.Resize((height, width)), T.ToTensor(), T.Normalize(mean, std)]) on
    Image.open(path).convert('RGB'): torchvision's Resize of a PIL image is PIL's resize with
    BILINEAR (its default interpolation; antialiased when shrinking), to exactly height x width."""
    img = Image.open(path).convert("RGB")
    img = img.resize((width, height), _bilinear())
    x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
    x = x.view(img.size[1], img.size[0], 3).permute(2, 0, 1).contiguous()
    x = x.to(dtype=torch.get_default_dtype()).div(255)
    m = torch.as_tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return x.sub_(m).div_(s)


# --- command line ---------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--stride", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--neck", choices=("before", "after"), default="before")
    p.add_argument("--sie_coe", type=float, default=3.0)
    cams = p.add_mutually_exclusive_group()
    cams.add_argument("--camid", type=int, help="0-based camera id of every image (SIE)")
    cams.add_argument("--camids_npy", help="int (N,) 0-based camera ids, one per image (SIE)")
    p.add_argument("--heads", type=int, default=0, help="vision heads (default width // 64)")
    p.add_argument("--text_heads", type=int, default=0, help="text heads (default width // 64)")
    p.add_argument("--mean", type=float, nargs=3, default=[0.5, 0.5, 0.5])
    p.add_argument("--std", type=float, nargs=3, default=[0.5, 0.5, 0.5])
    p.add_argument("--batch", type=int, default=64)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images_npy", help="float32 (N, 3, H, W), already normalised")
    src.add_argument("--images", help="text file: one image path per line")
    p.add_argument("--out", required=True, help="float32 (N, D) features")
    args = p.parse_args(argv)

    sd = load(args.weights)
    model = build(sd, args.stride, args.height, args.width, neck_feat=args.neck,
                  sie_coe=args.sie_coe, heads=args.heads, text_heads=args.text_heads)
    print(f"loaded {len(sd)} keys strictly from {args.weights}")

    if args.images_npy:
        images = torch.from_numpy(np.load(args.images_npy).astype(np.float32, copy=False))
    else:
        with open(args.images, encoding="utf-8") as f:
            paths = [line.rstrip("\n") for line in f if line.strip()]
        images = torch.stack([load_image(q, args.height, args.width, args.mean, args.std)
                              for q in paths]) if paths else torch.zeros(0, 3, args.height,
                                                                         args.width)
    if images.dim() != 4 or images.shape[1:] != (3, args.height, args.width):
        sys.exit(f"images are {tuple(images.shape)}, expected (N, 3, {args.height}, {args.width})")
    n = images.shape[0]
    cam = None
    if args.camid is not None:
        cam = torch.full((n,), args.camid, dtype=torch.long)
    elif args.camids_npy:
        cam = torch.from_numpy(np.load(args.camids_npy).astype(np.int64)).view(-1)
        if cam.shape[0] != n:
            sys.exit(f"{args.camids_npy}: {cam.shape[0]} camera ids for {n} images")
    if model.cv_embed is not None and cam is None:
        print("warning: the model has cv_embed (SIE) but no --camid/--camids_npy was given: "
              "features without SIE, as CLIP-ReID computes them without cam_label",
              file=sys.stderr)
    feats = []
    with torch.no_grad():
        for i in range(0, n, args.batch):
            feats.append(model(images[i:i + args.batch],
                               cam_label=None if cam is None else cam[i:i + args.batch]))
    dim = model.in_planes + model.in_planes_proj
    out = torch.cat(feats) if feats else torch.zeros(0, dim)
    np.save(args.out, out.numpy().astype(np.float32))
    print(f"wrote {tuple(out.shape)} features to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
