#!/usr/bin/python3
"""One training step of each stage of the improved CLIP-ReID in Python PyTorch, following
CLIP-ReID's processor_clipreid_stage{1,2}.py, make_loss.py, make_optimizer_prompt.py and
scheduler_factory.py (docs/design.md 5-7) plus the paper's context adjustment network g and
cross-modal attention (docs/design.md 4.4, 4.5), checked against `reid train`'s checkpoints.

  train_step_reference.py check --config=EFFECTIVE.textproto --data_root=DIR --before=CKPT
      --after_stage1=CKPT --after_stage2=CKPT [--tol=1e-5]

EFFECTIVE.textproto is `reid print-config` output (every field present). The run must be one step
per stage: stage 1 with ims_per_batch >= the train images, stage 2 with P x K = the train images
(each identity exactly K images), max_epochs 1 for both, flip/padding/erasing off. BEFORE holds
the weights before the stage-1 step; stage 1 is checked from them, stage 2 from AFTER_STAGE1 (the
same weights as ours, so that each stage is checked on its own). Exit 0 when every tensor matches
to TOL relative (max|ours - reference| / max|reference| per tensor), 1 otherwise. Two refinements,
both printed: where Adam's first step is ill-conditioned (|gradient| < 100 eps) the gradients
recovered from the step are compared instead of the parameters; and a tensor's tolerance is at
least 10x the reference's own float32 noise (its largest difference from reruns with the batch
reversed and rotated,
which the losses do not see in exact arithmetic), as for sums whose terms cancel in theory.

The model and the stage-2 step are also what bench/ref_train_step.py times.
"""
import argparse
import glob
import math
import os
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_reference import (LayerNorm, Transformer, VisionTransformer,  # noqa: E402
                            byte_level_tokenize)


# --- config: the text format of `reid print-config` (scalars, enums, strings, nested messages)

def parse_textproto(text):
    """Nested dicts; a repeated field becomes a list (only when it appears more than once)."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"]+', re.sub(r"#[^\n]*", "", text))
    pos = 0

    def message():
        nonlocal pos
        out = {}
        while pos < len(tokens) and tokens[pos] != "}":
            name = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            if tokens[pos] == "{":
                pos += 1
                value = message()
                pos += 1  # "}"
            else:
                value = scalar(tokens[pos])
                pos += 1
            if name in out:
                out[name] = (out[name] if isinstance(out[name], list) else [out[name]]) + [value]
            else:
                out[name] = value
        return out

    def scalar(tok):
        if tok.startswith('"'):
            return tok[1:-1].encode().decode("unicode_escape")
        for kind in (int, float):
            try:
                return kind(tok)
            except ValueError:
                pass
        return {"true": True, "false": False}.get(tok, tok)

    return message()


def as_list(v):
    return v if isinstance(v, list) else ([] if v is None else [v])


# --- the model (CLIP-ReID's build_transformer + the paper's modules), our parameter names

class PromptLearner(nn.Module):
    """CLIP-ReID's PromptLearner; `adjust` (the paper's M) is added to every context token."""

    def __init__(self, num_classes, n_ctx, width, n_prefix, n_suffix):
        super().__init__()
        self.cls_ctx = nn.Parameter(torch.zeros(num_classes, n_ctx, width))
        self.register_buffer("token_prefix", torch.zeros(1, n_prefix, width))
        self.register_buffer("token_suffix", torch.zeros(1, n_suffix, width))

    def forward(self, label, adjust=None):
        ctx = self.cls_ctx[label]
        if adjust is not None:
            ctx = ctx + adjust.unsqueeze(1)  # C_k = Y_k + M (paper 2.2)
        b = label.shape[0]
        return torch.cat([self.token_prefix.expand(b, -1, -1), ctx,
                          self.token_suffix.expand(b, -1, -1)], dim=1)


class TextEncoder(nn.Module):
    """CLIP-ReID's TextEncoder: prompts + positions -> causal transformer -> ln_final -> EOT row."""

    def __init__(self, context_length, width, layers, heads, embed_dim):
        super().__init__()
        mask = torch.empty(context_length, context_length).fill_(float("-inf")).triu_(1)
        self.transformer = Transformer(width, layers, heads, mask)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.zeros(width, embed_dim))

    def forward(self, prompts, tokenized_prompts):
        x = prompts + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection


class ContextAdjust(nn.Module):
    """The paper's g (2.2): M = W2 ReLU(W1 f + b1) + b2."""

    def __init__(self, embed_dim, hidden_dim, token_width):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, token_width)

    def forward(self, f):
        return self.fc2(F.relu(self.fc1(f)))


class CrossModalAttention(nn.Module):
    """The paper's eq. 1 over the set of images (B, D) and texts (K, D):
    O = W_o(softmax(P_i P_t^T * scale) P_t + P_i) + b_o with P = W SelfAttn(.)."""

    def __init__(self, embed_dim, heads, hidden_dim, literal_unscaled):
        super().__init__()
        self.image_attn = nn.MultiheadAttention(embed_dim, heads)
        self.text_attn = nn.MultiheadAttention(embed_dim, heads)
        self.w_i = nn.Linear(embed_dim, hidden_dim, bias=False)
        self.w_t = nn.Linear(embed_dim, hidden_dim, bias=False)
        self.w_o = nn.Linear(hidden_dim, embed_dim)
        self.scale = 1.0 if literal_unscaled else embed_dim ** -0.5

    def forward(self, image, text):
        a_i = self.image_attn(image[:, None], image[:, None], image[:, None],
                              need_weights=False)[0][:, 0]  # the set as one sequence
        a_t = self.text_attn(text[:, None], text[:, None], text[:, None],
                             need_weights=False)[0][:, 0]
        p_i, p_t = self.w_i(a_i), self.w_t(a_t)
        s = torch.softmax(p_i @ p_t.t() * self.scale, dim=-1)  # (B, K)
        return self.w_o(s @ p_t + p_i)


class ReidModel(nn.Module):
    def __init__(self, cfg, num_classes, num_cameras=0):
        super().__init__()
        m, p = cfg["model"], cfg["prompt"]
        h, w = cfg["input"]["size_train"]["height"], cfg["input"]["size_train"]["width"]
        patch, stride = m["vision_patch_size"], m["stride_size"]
        gh, gw = (h - patch) // stride + 1, (w - patch) // stride + 1
        width, embed = m["vision_width"], m["embed_dim"]
        heads = m["vision_heads"] or width // 64
        self.image_encoder = VisionTransformer(gh, gw, patch, stride, width, m["vision_layers"],
                                               heads, embed)
        self.tokenized_prompts, ctx_start = tokenize_template(cfg)
        tw = m["transformer_width"]
        n_ctx = p["n_ctx"]
        self.text_encoder = TextEncoder(m["context_length"], tw, m["transformer_layers"],
                                        m["transformer_heads"], embed)
        self.prompt_learner = PromptLearner(num_classes, n_ctx, tw, ctx_start,
                                            m["context_length"] - ctx_start - n_ctx)
        self.bottleneck = nn.BatchNorm1d(width)
        self.bottleneck.bias.requires_grad_(False)
        self.bottleneck_proj = nn.BatchNorm1d(embed)
        self.bottleneck_proj.bias.requires_grad_(False)
        self.classifier = nn.Linear(width, num_classes, bias=False)
        self.classifier_proj = nn.Linear(embed, num_classes, bias=False)
        self.sie_coe = m["sie_coe"]
        if m["sie_camera"]:
            self.cv_embed = nn.Parameter(torch.zeros(num_cameras, width))
        ca, xa = cfg["context_adjust"], cfg["cross_attention"]
        self.context_adjust = (ContextAdjust(embed, ca["hidden_dim"] or 2 * embed, tw)
                               if ca["enabled"] else None)
        self.cross_attention = (CrossModalAttention(embed, xa["num_heads"],
                                                    xa["hidden_dim"] or embed,
                                                    xa["literal_unscaled"])
                                if xa["enabled"] else None)

    def encode_text(self, label, image_features=None):
        adjust = self.context_adjust(image_features) if self.context_adjust is not None else None
        prompts = self.prompt_learner(label, adjust)
        return self.text_encoder(prompts, self.tokenized_prompts.expand(label.shape[0], -1))

    def forward_train(self, x, cams=None):
        cv = self.sie_coe * self.cv_embed[cams] if hasattr(self, "cv_embed") else None
        x11, x12, xproj = self.image_encoder(x, cv)
        img_feature_last, img_feature, img_feature_proj = x11[:, 0], x12[:, 0], xproj[:, 0]
        feat, feat_proj = self.bottleneck(img_feature), self.bottleneck_proj(img_feature_proj)
        return ([self.classifier(feat), self.classifier_proj(feat_proj)],
                [img_feature_last, img_feature, img_feature_proj], img_feature_proj)

    def image_text_logits(self, image_features, text_features):
        if self.cross_attention is not None:
            image_features = self.cross_attention(image_features, text_features)
        return image_features @ text_features.t()


def tokenize_template(cfg):
    """(1, L) ids of the prompt template with {ctx} -> n_ctx "X" words (byte-level tokenizer) and
    the position of the first context token."""
    if cfg["model"]["bpe_vocab"]:
        sys.exit("train_step_reference.py: only the byte-level tokenizer (no bpe_vocab) is "
                 "supported")
    tmpl, n = cfg["prompt"]["template"], cfg["prompt"]["n_ctx"]
    ctx_len = cfg["model"]["context_length"]
    before = tmpl[:tmpl.index("{ctx}")]
    full = byte_level_tokenize([tmpl.replace("{ctx}", " ".join(["X"] * n))], ctx_len)
    prefix = byte_level_tokenize([before], ctx_len)
    return torch.from_numpy(full), int((prefix[0] != 0).sum()) - 1  # SOT + the prefix words


# --- CLIP-ReID's losses (loss/supcontrast.py, softmax_loss.py, triplet_loss.py, make_loss.py)

def supcon(features, features_other, labels, labels_other, temperature):
    mask = torch.eq(labels.unsqueeze(1), labels_other.unsqueeze(0)).float()
    logits = torch.div(features @ features_other.T, temperature)
    logits_max, _ = torch.max(logits, dim=1, keepdim=True)
    logits = logits - logits_max.detach()
    log_prob = logits - torch.log(torch.exp(logits).sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return -mean_log_prob_pos.mean()


def cross_entropy_label_smooth(inputs, targets, epsilon):
    log_probs = F.log_softmax(inputs, dim=1)
    onehot = torch.zeros_like(log_probs).scatter_(1, targets.unsqueeze(1), 1)
    onehot = (1 - epsilon) * onehot + epsilon / inputs.shape[1]
    return (-onehot * log_probs).mean(0).sum()


def triplet(global_feat, labels, margin, soft):
    n = global_feat.size(0)
    xx = torch.pow(global_feat, 2).sum(1, keepdim=True).expand(n, n)
    dist = (xx + xx.t()).addmm(global_feat, global_feat.t(), beta=1, alpha=-2)
    dist = dist.clamp(min=1e-12).sqrt()
    is_pos = labels.expand(n, n).eq(labels.expand(n, n).t())
    dist_ap, _ = torch.max(dist[is_pos].contiguous().view(n, -1), 1, keepdim=True)
    dist_an, _ = torch.min(dist[~is_pos].contiguous().view(n, -1), 1, keepdim=True)
    dist_ap, dist_an = dist_ap.squeeze(1), dist_an.squeeze(1)
    y = torch.ones_like(dist_an)
    if soft:
        return F.soft_margin_loss(dist_an - dist_ap, y)
    return F.margin_ranking_loss(dist_an, dist_ap, y, margin=margin)


def stage2_loss(loss_cfg, score, feat, target, logits):
    eps = loss_cfg["label_smoothing"]
    id_loss = sum(cross_entropy_label_smooth(s, target, eps) for s in score)
    tri_loss = sum(triplet(f, target, loss_cfg["triplet_margin"], loss_cfg["soft_triplet"])
                   for f in feat)
    i2t_loss = cross_entropy_label_smooth(logits, target, eps)
    return (loss_cfg["i2t_weight"] * i2t_loss + loss_cfg["id_weight"] * id_loss
            + loss_cfg["triplet_weight"] * tri_loss)


# --- schedules (timm CosineLRScheduler; CLIP-ReID's WarmupMultiStepLR), stepped at epoch start

def stage1_lr(s1, epoch):
    base, init, warm = s1["base_lr"], s1["warmup_lr_init"], s1["warmup_epochs"]
    if epoch < warm:
        return init + epoch * (base - init) / warm
    t_initial, lr_min = s1["max_epochs"], s1["lr_min"]
    i = math.floor(epoch / t_initial)
    if i >= 1:
        return lr_min
    t = epoch - t_initial * i
    return lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi * t / t_initial))


def stage2_factor(s2, epoch):
    warm = 1.0
    if epoch < s2["warmup_epochs"]:
        if s2["warmup_method"] == "CONSTANT":
            warm = s2["warmup_factor"]
        else:
            alpha = epoch / s2["warmup_epochs"]
            warm = s2["warmup_factor"] * (1 - alpha) + alpha
    milestones = as_list(s2.get("steps")) or [30, 50]
    return warm * s2["gamma"] ** sum(1 for m in milestones if m <= epoch)


def make_optimizer(stage_cfg, groups):
    if stage_cfg["optimizer"] == "ADAMW":
        return torch.optim.AdamW(groups)
    if stage_cfg["optimizer"] == "SGD":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=stage_cfg["momentum"])
    return torch.optim.Adam(groups)


def stage2_optimizer(model, s2, epoch):
    """make_optimizer_2stage: one group per tensor; "bias" in the name -> bias lr / decay; the
    text side (text_encoder, prompt_learner, and g, which only feeds the text bank) frozen."""
    factor = stage2_factor(s2, epoch)
    groups = []
    for key, value in model.named_parameters():
        if any(k in key for k in ("text_encoder", "prompt_learner", "context_adjust")):
            value.requires_grad_(False)
        if not value.requires_grad:
            continue
        lr, wd = s2["base_lr"], s2["weight_decay"]
        if "bias" in key:
            lr, wd = s2["base_lr"] * s2["bias_lr_factor"], s2["weight_decay_bias"]
        groups.append({"params": [value], "lr": lr * factor, "weight_decay": wd, "name": key})
    return make_optimizer(s2, groups)


# --- data (datasets/market1501.py, the val and train transforms without augmentation)

def market_train(root):
    paths = sorted(glob.glob(os.path.join(root, "bounding_box_train", "*.jpg")))
    items = []
    for p in paths:
        pid, cam = map(int, re.search(r"([-\d]+)_c(\d)", os.path.basename(p)).groups())
        if pid != -1:
            items.append((p, pid, cam - 1))
    pid2label = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
    cams = sorted({c for _, _, c in items})
    return [(p, pid2label[pid], cam) for p, pid, cam in items], len(pid2label), len(cams)


def load_images(paths, size, resample, cfg):
    from PIL import Image
    mean = torch.tensor(as_list(cfg["input"]["pixel_mean"]), dtype=torch.float32)[:, None, None]
    std = torch.tensor(as_list(cfg["input"]["pixel_std"]), dtype=torch.float32)[:, None, None]
    out = []
    for p in paths:
        img = Image.open(p).convert("RGB").resize((size["width"], size["height"]), resample)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        out.append((x.float().div(255) - mean) / std)  # ToTensor + Normalize
    return torch.stack(out)


# --- the steps

def stage1_step(model, cfg, features, labels):
    """processor_clipreid_stage1.py for one batch of cached features (epoch 1, step 1)."""
    s1 = cfg["stage1"]
    groups = []
    for key, value in model.named_parameters():  # make_optimizer_1stage + g (paper)
        if "prompt_learner" in key or "context_adjust" in key:
            groups.append({"params": [value], "lr": s1["base_lr"],
                           "weight_decay": s1["weight_decay"], "name": key})
        else:
            value.requires_grad_(False)
    for g in groups:
        g["lr"] = stage1_lr(s1, 1)
    optimizer = make_optimizer(s1, groups)
    text_features = model.encode_text(labels, features)
    t = s1["temperature"]
    loss = supcon(features, text_features, labels, labels, t) + \
        supcon(text_features, features, labels, labels, t)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return optimizer, loss.item()


def text_bank(model, num_classes, centers):
    with torch.no_grad():
        parts = []
        for b in range(0, num_classes, 64):
            label = torch.arange(b, min(b + 64, num_classes))
            parts.append(model.encode_text(label, centers[label] if centers is not None else None))
        return torch.cat(parts)


def stage2_step(model, optimizer, cfg, images, target, cams, text_features):
    """processor_clipreid_stage2.py for one batch (train mode, BN necks on batch statistics)."""
    score, feat, image_features = model.forward_train(images, cams)
    logits = model.image_text_logits(image_features, text_features)
    loss = stage2_loss(cfg["loss"], score, feat, target, logits)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


# --- the check against `reid train`

def load_checkpoint(path):
    """model.pt: a torch.save zip of every parameter and buffer by name (no code runs)."""
    sd = torch.load(os.path.join(path, "model.pt"), map_location="cpu", weights_only=True)
    return {k: v.detach().clone() for k, v in sd.items()}


ADAM_EPS = 1e-8  # torch.optim.Adam's and LibTorch's default
ILL_CONDITIONED = 100 * ADAM_EPS
# Tolerance floor = this x the reference's own float32 noise. Reordering the batch changes only
# the order of the reference's sums, not how its kernels compose, so it underestimates how far an
# independent implementation's rounding may drift on a cancelling sum: measured, Adam's step on
# cross_attention.text_attn.out_proj.bias differed by 1.1e-4 (relative) against a reordering
# noise of 1.8e-5 (6x) on the synthetic images of the current generator, and within 3x on the
# previous generator's. A real error in such a tensor (a missing or doubled term) is O(1).
NOISE_MARGIN = 10.0


def adam_input(optimizer, before):
    """{name: (the gradient Adam's first step saw, lr, decoupled weight decay)} for Adam/AdamW."""
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return {}
    decoupled = isinstance(optimizer, torch.optim.AdamW)
    out = {}
    for group in optimizer.param_groups:  # one tensor per group, named
        name, p = group["name"], group["params"][0]
        g = p.grad.double() + (0 if decoupled else group["weight_decay"] * before[name].double())
        out[name] = (g, group["lr"], group["weight_decay"] if decoupled else 0.0)
    return out


def differences(ref, grads, other, before):
    """{name: (parameter rel diff, gradient rel diff, rel diff of all elements as parameters)}.

    Parameters: max|other - ref| / max|ref|. Adam's first step moves an element by
    lr * g / (|g| + eps): where the reference's |g| < 100 eps the step is a steep function of
    gradient noise at the float32 rounding level (the key biases' gradients are zero in theory, as
    softmax ignores a per-query constant), so there `other` is compared on the gradient recovered
    from its step instead: max|g_other - g_ref| / max|g_ref| over the tensor."""
    out = {}
    for name, r in ref.items():
        r, o, b = r.double(), other[name].double(), before[name].double()
        scale = r.abs().max().item() if r.numel() else 0.0
        diff = (o - r).abs()

        def rel(d):
            return d.max().item() / scale if scale > 0 else (0.0 if d.sum() == 0 else math.inf)

        raw = rel(diff) if r.numel() else 0.0
        param, grad = raw, 0.0
        if name in grads:
            g_ref, lr, wd = grads[name]
            ill = g_ref.abs() < ILL_CONDITIONED
            param = rel(diff[~ill]) if (~ill).any() else 0.0
            if ill.any():
                u = -(o - b * (1 - lr * wd)) / lr  # = g / (|g| + eps) for Adam's first step
                g_other = ADAM_EPS * u / (1 - u.abs()).clamp(min=1e-12)
                grad = (g_other - g_ref)[ill].abs().max().item() / g_ref.abs().max().item()
        out[name] = (param, grad, raw)
    return out


def compare(stage, ref, grads, ours, noises, before, tol):
    """Ours vs the reference per tensor, each within max(tol, NOISE_MARGIN x the reference's own
    largest difference under the reordered batches `noises`): float32 sums whose terms cancel in theory (the LayerNorm
    bias before the BN necks: BN and the triplet distances ignore a shift of the whole batch) carry
    rounding noise near 1e-5 of their small totals, measured rather than assumed."""
    missing = sorted(set(ref) ^ set(ours))
    if missing:
        print(f"stage {stage}: tensors only on one side: {missing}")
        return False
    d_ours = differences(ref, grads, ours, before)
    d_runs = [differences(ref, grads, noise, before) for noise in noises]
    d_noise = {name: [max(d[name][i] for d in d_runs) for i in range(3)] for name in d_ours}
    floored, rows = [], []
    for name, (param, grad, raw) in d_ours.items():
        limit = max(tol, NOISE_MARGIN * max(d_noise[name][:2]))
        if limit > tol:
            floored.append(f"{name} (noise {max(d_noise[name][:2]):.1e})")
        rows.append((max(param, grad) / limit, name, param, grad, raw, limit))
    rows.sort(reverse=True)
    for _, name, param, grad, raw, limit in rows[:3]:
        print(f"  stage {stage} {name}: parameters {param:.3e}, gradients where |g| < 100 eps "
              f"{grad:.3e} (all as parameters {raw:.3e}; tolerance {limit:.1e})")
    ok = rows[0][0] <= 1
    worst = max((max(r[2], r[3]), r[1]) for r in rows if r[5] <= tol)
    n_ill = sum(int((g.abs() < ILL_CONDITIONED).sum()) for g, _, _ in grads.values())
    print(f"stage {stage}: {'ok' if ok else 'FAIL'} max_rel_diff={worst[0]:.3e} ({worst[1]}) at "
          f"tolerance {tol:g}; worst against its tolerance: {rows[0][1]} "
          f"({max(rows[0][2], rows[0][3]):.3e} of {rows[0][5]:.1e}); {n_ill} elements with "
          f"|g| < 100 eps compared on gradients"
          + (f"; tolerance raised to {NOISE_MARGIN:g} x the reference's own noise for "
             f"{', '.join(floored)}" if floored else ""))
    return ok


def stage1_reference(cfg, state, num_cameras, features, labels, order):
    model = ReidModel(cfg, int(labels.max()) + 1, num_cameras)
    model.load_state_dict(state)
    optimizer, loss = stage1_step(model, cfg, features[order], labels[order])
    return model, optimizer, loss


def stage2_reference(cfg, state, num_cameras, images, labels, cams, bank, order):
    model = ReidModel(cfg, int(labels.max()) + 1, num_cameras)
    model.load_state_dict(state)
    model.train()
    optimizer = stage2_optimizer(model, cfg["stage2"], 1)
    loss = stage2_step(model, optimizer, cfg, images[order], labels[order],
                       cams[order] if hasattr(model, "cv_embed") else None, bank)
    return model, optimizer, loss.item()


def check(args):
    from PIL import Image
    torch.set_num_threads(1)
    cfg = parse_textproto(open(args.config).read())
    inp = cfg["input"]
    if inp["flip_prob"] != 0 or inp["padding"] != 0 or inp["erasing_prob"] != 0:
        sys.exit("error: augmentation must be off (flip_prob 0, padding 0, erasing_prob 0)")
    if inp["jpeg_dct_scaling"]:
        sys.exit("error: input.jpeg_dct_scaling must be false (PIL decodes at full size)")
    items, num_classes, num_cameras = market_train(args.data_root)
    n = len(items)
    s1, s2 = cfg["stage1"], cfg["stage2"]
    if s1["ims_per_batch"] < n or s2["ids_per_batch"] * s2["num_instances"] != n:
        sys.exit(f"error: {n} train images must be one stage-1 batch and one P x K stage-2 batch")
    paths = [p for p, _, _ in items]
    labels = torch.tensor([lab for _, lab, _ in items])
    cams = torch.tensor([c for _, _, c in items])
    before, after1, after2 = (load_checkpoint(p) for p in
                              (args.before, args.after_stage1, args.after_stage2))
    # The noise runs: the batch reversed, and rotated by half (two other summation orders; one
    # order alone underestimated the spread of a cancelling bias by 2x or more).
    forward = torch.arange(n)
    reorders = [torch.arange(n - 1, -1, -1), torch.roll(forward, n // 2)]

    # Stage 1: the feature cache (val transforms, no SIE), then one step on the whole set.
    model = ReidModel(cfg, num_classes, num_cameras)
    model.load_state_dict(before)
    model.eval()
    with torch.no_grad():
        features = model.image_encoder(load_images(paths, inp["size_test"], Image.BILINEAR, cfg))
        features = features[2][:, 0]
    ref, optimizer, loss = stage1_reference(cfg, before, num_cameras, features, labels, forward)
    noise = [stage1_reference(cfg, before, num_cameras, features, labels, o)[0].state_dict()
             for o in reorders]
    print(f"stage 1 reference loss {loss:.6f}")
    ok1 = compare(1, ref.state_dict(), adam_input(optimizer, before), after1, noise, before,
                  args.tol)

    # Stage 2 from our stage-1 result: class centres (g's input), text bank, one PK step.
    model.load_state_dict(after1)
    centers = None
    if model.context_adjust is not None:
        sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64)
        sums.index_add_(0, labels, features.double())
        centers = (sums / torch.bincount(labels, minlength=num_classes)[:, None]).float()
    bank = text_bank(model, num_classes, centers)
    images = load_images(paths, inp["size_train"], Image.BICUBIC, cfg)
    ref, optimizer, loss = stage2_reference(cfg, after1, num_cameras, images, labels, cams, bank,
                                            forward)
    noise = [stage2_reference(cfg, after1, num_cameras, images, labels, cams, bank,
                              o)[0].state_dict() for o in reorders]
    print(f"stage 2 reference loss {loss:.6f}")
    ok2 = compare(2, ref.state_dict(), adam_input(optimizer, after1), after2, noise, after1,
                  args.tol)
    print("PASS" if ok1 and ok2 else "FAIL: a tensor differs by more than its tolerance")
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["check"])
    parser.add_argument("--config", required=True)
    parser.add_argument("--data_root", required=True)
    parser.add_argument("--before", required=True)
    parser.add_argument("--after_stage1", required=True)
    parser.add_argument("--after_stage2", required=True)
    parser.add_argument("--tol", type=float, default=1e-5)
    sys.exit(check(parser.parse_args()))
