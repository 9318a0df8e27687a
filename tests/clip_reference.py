#!/usr/bin/python3
"""Reference CLIP (a re-implementation of OpenAI's clip/model.py with CLIP-ReID's image-side
changes) that writes tiny random checkpoints in both formats plus golden outputs for the C++
parity tests (bench/ref_clip.py times its ViT-B/16 for bench_clip).

  clip_reference.py fixtures OUT_DIR     checkpoints, inputs and golden .npy files
"""
import copy
import math
import os
import re
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d, h, attn_mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, h)
        self.ln_1 = LayerNorm(d)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(d, 4 * d)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * d, d))]))
        self.ln_2 = LayerNorm(d)
        self.attn_mask = attn_mask

    def forward(self, x):
        mask = self.attn_mask.to(dtype=x.dtype) if self.attn_mask is not None else None
        x = x + self.attn(self.ln_1(x), self.ln_1(x), self.ln_1(x), need_weights=False,
                          attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, attn_mask=None):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask)
                                         for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """CLIP-ReID's version: stride, h x w grid, cv_emb on CLS, three outputs (all tokens)."""

    def __init__(self, h_res, w_res, patch, stride, width, layers, heads, output_dim):
        super().__init__()
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, patch, stride, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(h_res * w_res + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x, cv_emb=None):
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], device=x.device)
        x = torch.cat([cls, x], dim=1)
        if cv_emb is not None:
            x[:, 0] = x[:, 0] + cv_emb
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)
        x11 = self.transformer.resblocks[:-1](x)
        x12 = self.transformer.resblocks[-1](x11)
        x11, x12 = x11.permute(1, 0, 2), x12.permute(1, 0, 2)
        x12 = self.ln_post(x12)
        return x11, x12, x12 @ self.proj


class CLIP(nn.Module):
    def __init__(self, embed_dim, grid, patch, vision_width, vision_layers, context_length,
                 vocab_size, width, layers, stride=None, h_res=None, w_res=None):
        super().__init__()
        self.context_length = context_length
        self.visual = VisionTransformer(h_res or grid, w_res or grid, patch, stride or patch,
                                        vision_width, vision_layers, vision_width // 64, embed_dim)
        mask = torch.empty(context_length, context_length).fill_(float("-inf")).triu_(1)
        self.transformer = Transformer(width, layers, width // 64, mask)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, embed_dim) * width ** -0.5)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def encode_image(self, image):
        return self.visual(image)[2][:, 0]

    def encode_text(self, text):
        x = self.token_embedding(text) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

    def forward(self, image, text):
        i = self.encode_image(image)
        t = self.encode_text(text)
        i = i / i.norm(dim=1, keepdim=True)
        t = t / t.norm(dim=1, keepdim=True)
        return self.logit_scale.exp() * i @ t.t()


def resize_pos_embed(posemb, old_h, old_w, h, w):
    tok, grid = posemb[:1], posemb[1:]
    grid = grid.reshape(1, old_h, old_w, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bilinear")
    grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
    return torch.cat([tok, grid.squeeze(0)], dim=0)


def byte_level_tokenize(texts, context_length):
    """CLIP's tokenizer without merges (514 ids), for ASCII text."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    order = bs + [b for b in range(256) if b not in bs]
    index = {b: i for i, b in enumerate(order)}
    pat = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|"
                     r"[^\sa-z0-9]+", re.IGNORECASE)
    out = np.zeros((len(texts), context_length), dtype=np.int64)
    for n, text in enumerate(texts):
        ids = [512]
        for tok in pat.findall(re.sub(r"\s+", " ", text).strip().lower()):
            if tok in ("<|startoftext|>", "<|endoftext|>"):
                ids.append(512 if "start" in tok else 513)
                continue
            b = tok.encode("utf-8")
            ids += [index[c] for c in b[:-1]] + [256 + index[b[-1]]]
        ids.append(513)
        out[n, :len(ids)] = ids
    return out


TINY = dict(embed_dim=64, grid=4, patch=8, vision_width=128, vision_layers=2, context_length=77,
            vocab_size=514, width=128, layers=2)
TEXTS = ["A photo of a X X X X person.", "a man in a red jacket!", "x", "hello   world 42"]


def write_fixtures(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = CLIP(**TINY).eval()
    with torch.no_grad():
        for p in model.parameters():  # as stored in OpenAI's fp16 archive
            p.copy_(p.half().float())
    images = torch.randn(3, 3, 32, 32)
    tokens = torch.from_numpy(byte_level_tokenize(TEXTS, TINY["context_length"]))
    traced = torch.jit.trace(copy.deepcopy(model), (images, tokens), check_trace=False)
    traced.half()
    traced.save(os.path.join(out, "clip_jit.pt"))
    sd = OrderedDict(("module." + k, v) for k, v in model.state_dict().items())
    torch.save(sd, os.path.join(out, "clip_state.pth"))
    with torch.no_grad():
        np.save(os.path.join(out, "images.npy"), images.numpy())
        np.save(os.path.join(out, "tokens.npy"), tokens.numpy())
        np.save(os.path.join(out, "image_features.npy"), model.encode_image(images).numpy())
        np.save(os.path.join(out, "text_features.npy"), model.encode_text(tokens).numpy())
        # Non-square ReID grid (48x32 -> 6x4), positional embedding resized as CLIP-ReID does.
        write_reid_case(model, out, "48x32", 48, 32, stride=8, cams=False)
        # Overlapping stride 6 (48x32 -> 7x5) with SIE camera embeddings.
        write_reid_case(model, out, "48x32_s6_sie", 48, 32, stride=6, cams=True)
    with open(os.path.join(out, "texts.txt"), "w") as f:
        f.write("\n".join(TEXTS) + "\n")


def write_reid_case(model, out, name, h, w, stride, cams):
    gh, gw = (h - 8) // stride + 1, (w - 8) // stride + 1
    vis = VisionTransformer(gh, gw, 8, stride, 128, 2, 2, 64).eval()
    sd = {k[len("visual."):]: v for k, v in model.state_dict().items() if k.startswith("visual.")}
    sd["positional_embedding"] = resize_pos_embed(sd["positional_embedding"], 4, 4, gh, gw)
    vis.load_state_dict(sd)
    images = torch.randn(2, 3, h, w)
    cv = 3.0 * torch.randn(2, 128) if cams else None
    x11, x12, xproj = vis(images, cv)
    np.save(os.path.join(out, f"images_{name}.npy"), images.numpy())
    if cams:
        np.save(os.path.join(out, f"cv_{name}.npy"), cv.numpy())
    np.save(os.path.join(out, f"cls_last_{name}.npy"), x11[:, 0].numpy())
    np.save(os.path.join(out, f"cls_{name}.npy"), x12[:, 0].numpy())
    np.save(os.path.join(out, f"cls_proj_{name}.npy"), xproj[:, 0].numpy())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "fixtures":
        write_fixtures(sys.argv[2])
    else:
        sys.exit(__doc__)
