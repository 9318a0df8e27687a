#!/usr/bin/python3
"""Self-test of tests/clipreid_model.py on tiny random CLIP-ReID state dicts written out key by
key (the names CLIP-ReID's build_transformer has): strict loading, feature shapes, an independent
float64 forward written with plain tensor ops (no nn.MultiheadAttention), SIE with the OLP stride,
both necks, the weights-only loader, the test transforms against torchvision's and the command
line. Exit 0 when every check passes, 1 otherwise, 77 (skipped) without torch, numpy or PIL.
"""
import math
import os
import subprocess
import sys
import tempfile
import traceback
from collections import OrderedDict

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
except ImportError as e:
    print(f"SKIP: {sys.executable} lacks {e.name} (Debian: python3-torch python3-numpy python3-pil)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import clipreid_model as cm  # noqa: E402

SCRIPT = os.path.join(HERE, "clipreid_model.py")

# The tiny shape: vision width 64, 2 blocks, patch 16, input 128x64; text width 32, 2 blocks,
# context 77; 5 classes; template "<sot> a photo of a X X X X person . <eot>" (prefix 5, 4 context
# tokens, suffix 68).
TINY = dict(vision_width=64, vision_layers=2, patch=16, embed_dim=32, text_width=32,
            text_layers=2, context_length=77, classes=5, n_ctx=4, prefix=5, height=128, width=64)


def grid(height, width, patch, stride):
    return (height - patch) // stride + 1, (width - patch) // stride + 1


def block_keys(sd, prefix, d, gen, scale):
    def r(*shape, std):
        return torch.randn(*shape, generator=gen) * std
    sd[prefix + "attn.in_proj_weight"] = r(3 * d, d, std=d ** -0.5)
    sd[prefix + "attn.in_proj_bias"] = r(3 * d, std=0.02)
    sd[prefix + "attn.out_proj.weight"] = r(d, d, std=scale)
    sd[prefix + "attn.out_proj.bias"] = r(d, std=0.02)
    sd[prefix + "ln_1.weight"] = 1 + r(d, std=0.1)
    sd[prefix + "ln_1.bias"] = r(d, std=0.1)
    sd[prefix + "mlp.c_fc.weight"] = r(4 * d, d, std=(2 * d) ** -0.5)
    sd[prefix + "mlp.c_fc.bias"] = r(4 * d, std=0.02)
    sd[prefix + "mlp.c_proj.weight"] = r(d, 4 * d, std=scale)
    sd[prefix + "mlp.c_proj.bias"] = r(d, std=0.02)
    sd[prefix + "ln_2.weight"] = 1 + r(d, std=0.1)
    sd[prefix + "ln_2.bias"] = r(d, std=0.1)


def tiny_state_dict(stride=16, cameras=0, seed=0, t=TINY):
    """A CLIP-ReID state dict (ViT layout) of the tiny shape with random values."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.02):
        return torch.randn(*shape, generator=gen) * std
    vw, ew, tw, c = t["vision_width"], t["embed_dim"], t["text_width"], t["classes"]
    gh, gw = grid(t["height"], t["width"], t["patch"], stride)
    sd = OrderedDict()
    sd["classifier.weight"] = r(c, vw, std=0.001)
    sd["classifier_proj.weight"] = r(c, ew, std=0.001)
    for name, d in (("bottleneck", vw), ("bottleneck_proj", ew)):
        sd[name + ".weight"] = 1 + r(d, std=0.1)
        sd[name + ".bias"] = r(d, std=0.1)
        sd[name + ".running_mean"] = r(d, std=0.5)
        sd[name + ".running_var"] = 0.5 + torch.rand(d, generator=gen)
        sd[name + ".num_batches_tracked"] = torch.tensor(17)
    scale = vw ** -0.5
    sd["image_encoder.class_embedding"] = r(vw, std=scale)
    sd["image_encoder.positional_embedding"] = r(1 + gh * gw, vw, std=scale)
    sd["image_encoder.proj"] = r(vw, ew, std=scale)
    sd["image_encoder.conv1.weight"] = r(vw, 3, t["patch"], t["patch"], std=0.05)
    for ln in ("ln_pre", "ln_post"):
        sd[f"image_encoder.{ln}.weight"] = 1 + r(vw, std=0.1)
        sd[f"image_encoder.{ln}.bias"] = r(vw, std=0.1)
    for i in range(t["vision_layers"]):
        block_keys(sd, f"image_encoder.transformer.resblocks.{i}.", vw, gen,
                   scale * (2 * t["vision_layers"]) ** -0.5)
    sd["prompt_learner.cls_ctx"] = r(c, t["n_ctx"], tw)
    sd["prompt_learner.token_prefix"] = r(1, t["prefix"], tw)
    sd["prompt_learner.token_suffix"] = r(1, t["context_length"] - t["prefix"] - t["n_ctx"], tw)
    sd["text_encoder.positional_embedding"] = r(t["context_length"], tw, std=0.01)
    sd["text_encoder.text_projection"] = r(tw, ew, std=tw ** -0.5)
    sd["text_encoder.ln_final.weight"] = 1 + r(tw, std=0.1)
    sd["text_encoder.ln_final.bias"] = r(tw, std=0.1)
    for i in range(t["text_layers"]):
        block_keys(sd, f"text_encoder.transformer.resblocks.{i}.", tw, gen,
                   tw ** -0.5 * (2 * t["text_layers"]) ** -0.5)
    if cameras:
        sd["cv_embed"] = r(cameras, vw, std=0.02)
    return sd


def reference_features(sd, x, stride, heads, neck="before", cams=None, sie_coe=3.0):
    """CLIP-ReID's eval feature in float64 from the state dict, written out with tensor ops."""
    def p(k):
        return sd[k].double()

    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], p(name + ".weight"), p(name + ".bias"), 1e-5)
    x = x.double()
    t = F.conv2d(x, p("image_encoder.conv1.weight"), stride=stride)  # (N, W, h, w)
    n, w = t.shape[:2]
    t = t.flatten(2).transpose(1, 2)
    cls = p("image_encoder.class_embedding").expand(n, 1, w)
    if cams is not None:
        cls = cls + sie_coe * p("cv_embed")[cams].unsqueeze(1)
    t = torch.cat([cls, t], 1) + p("image_encoder.positional_embedding")
    t = ln(t, "image_encoder.ln_pre")
    hd = w // heads
    layers = len({k.split(".")[3] for k in sd if k.startswith("image_encoder.transformer.")})
    for i in range(layers):
        b = f"image_encoder.transformer.resblocks.{i}."
        h = ln(t, b + "ln_1")
        q, k, v = (h @ p(b + "attn.in_proj_weight").t() + p(b + "attn.in_proj_bias")).chunk(3, -1)
        q, k, v = (z.reshape(n, -1, heads, hd).transpose(1, 2) for z in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), -1) @ v
        a = a.transpose(1, 2).reshape(n, -1, w)
        t = t + a @ p(b + "attn.out_proj.weight").t() + p(b + "attn.out_proj.bias")
        h = ln(t, b + "ln_2") @ p(b + "mlp.c_fc.weight").t() + p(b + "mlp.c_fc.bias")
        h = h * torch.sigmoid(1.702 * h)
        t = t + h @ p(b + "mlp.c_proj.weight").t() + p(b + "mlp.c_proj.bias")
    feat = ln(t[:, 0], "image_encoder.ln_post")
    proj = feat @ p("image_encoder.proj")
    if neck == "after":
        def bn(z, name):
            return ((z - p(name + ".running_mean")) / torch.sqrt(p(name + ".running_var") + 1e-5)
                    * p(name + ".weight") + p(name + ".bias"))
        feat, proj = bn(feat, "bottleneck"), bn(proj, "bottleneck_proj")
    return torch.cat([feat, proj], 1)


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def images(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, TINY["height"], TINY["width"], generator=g) * 2 - 1


# --- checks ---------------------------------------------------------------------------------------

def check_strict_load_shape_and_forward(tmp):
    sd = tiny_state_dict()
    path = os.path.join(tmp, "tiny.pth")
    torch.save(sd, path)
    loaded = cm.load(path)
    assert list(loaded) == list(sd), "key order changed"
    model = cm.build(loaded, stride=16, height=128, width=64)
    assert set(model.state_dict()) == set(sd), set(model.state_dict()) ^ set(sd)
    for k, v in model.state_dict().items():
        assert v.shape == sd[k].shape and torch.equal(v.to(sd[k].dtype), sd[k]), k
    x = images(3)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 64 + 32) and out.dtype == torch.float32, out.shape
    err = rel_err(out, reference_features(sd, x, 16, heads=1))
    assert err < 1e-5, f"neck before: relative error {err}"
    # Heads from the argument (width 64 -> 2 heads of 32).
    model2 = cm.build(loaded, stride=16, height=128, width=64, heads=2)
    with torch.no_grad():
        err2 = rel_err(model2(x), reference_features(sd, x, 16, heads=2))
    assert err2 < 1e-5, f"2 heads: relative error {err2}"
    with torch.no_grad():
        assert rel_err(model2(x), model(x)) > 1e-3, "heads make no difference"
    # The text side runs too (prompts of classes 0 and 4; the template's end token at 11).
    with torch.no_grad():
        text = model.encode_text(torch.tensor([0, 4]), eot=11)
    assert text.shape == (2, 32), text.shape


def check_neck_after(tmp):
    sd = tiny_state_dict(seed=3)
    model = cm.build(sd, stride=16, height=128, width=64, neck_feat="after")
    x = images(2, seed=4)
    with torch.no_grad():
        out = model(x)
    err = rel_err(out, reference_features(sd, x, 16, heads=1, neck="after"))
    assert err < 1e-5, f"neck after: relative error {err}"
    with torch.no_grad():
        out_before = cm.build(sd, stride=16, height=128, width=64)(x)
    assert rel_err(out, out_before) > 1e-2, "BN neck has no effect"


def check_sie_with_overlapping_stride(tmp):
    sd = tiny_state_dict(stride=12, cameras=3, seed=5)
    assert sd["image_encoder.positional_embedding"].shape[0] == 1 + 10 * 5
    model = cm.build(sd, stride=12, height=128, width=64, sie_coe=1.0)
    assert model.cv_embed is not None and model.cv_embed.shape == (3, 64)
    x = images(3, seed=6)
    cams = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = model(x, cam_label=cams)
        plain = model(x)
    err = rel_err(out, reference_features(sd, x, 12, heads=1, cams=cams, sie_coe=1.0))
    assert err < 1e-5, f"SIE: relative error {err}"
    assert rel_err(out, plain) > 1e-4, "SIE has no effect"
    err_plain = rel_err(plain, reference_features(sd, x, 12, heads=1))
    assert err_plain < 1e-5, f"SIE model without cam_label: relative error {err_plain}"


def check_strictness_and_errors(tmp):
    sd = tiny_state_dict()
    for mutate, text in (
            (lambda d: d.pop("image_encoder.ln_post.bias"), "Missing key"),
            (lambda d: d.__setitem__("bogus.weight", torch.zeros(1)), "Unexpected key"),
            (lambda d: d.__setitem__("bottleneck.running_var", torch.ones(65)), "size mismatch")):
        d = OrderedDict(sd)
        mutate(d)
        try:
            cm.build(d, stride=16, height=128, width=64)
        except RuntimeError as e:
            assert text in str(e), str(e)
        else:
            raise AssertionError(f"no error for {text}")
    try:
        cm.build(sd, stride=16, height=256, width=128)
    except ValueError as e:
        assert "positional_embedding has 33 rows" in str(e), str(e)
    else:
        raise AssertionError("a wrong input size was accepted")
    # load(): weights_only (a pickled module is refused) and 'module.' prefixes stripped.
    bad = os.path.join(tmp, "module.pth")
    torch.save({"m": torch.nn.Identity()}, bad)
    try:
        cm.load(bad)
    except Exception as e:  # noqa: BLE001 (UnpicklingError or RuntimeError, by torch version)
        assert "Identity" in str(e) or "Unsupported" in str(e) or "weights" in str(e), str(e)
    else:
        raise AssertionError("load() unpickled a module: weights_only is not in effect")
    prefixed = os.path.join(tmp, "prefixed.pth")
    torch.save(OrderedDict(("module." + k, v) for k, v in sd.items()), prefixed)
    assert list(cm.load(prefixed)) == list(sd)


def check_transforms(tmp):
    g = np.random.default_rng(9)
    sizes = ((23, 50), (300, 97), (64, 128))  # (w, h): shrink, shrink, exact size
    for w, h in sizes:
        path = os.path.join(tmp, f"img_{w}x{h}.png")
        Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        ours = cm.load_image(path, 128, 64)
        assert ours.shape == (3, 128, 64) and ours.dtype == torch.float32
        assert ours.min() >= -1 and ours.max() <= 1
        try:
            import torchvision.transforms as T
        except ImportError:
            continue
        ref = T.Compose([T.Resize((128, 64)), T.ToTensor(),
                         T.Normalize(mean=[0.5] * 3, std=[0.5] * 3)])(
            Image.open(path).convert("RGB"))
        assert torch.equal(ours, ref), f"{w}x{h}: differs from torchvision's val_transforms"
    # A grey image stays grey and its pixels map through (v / 255 - 0.5) / 0.5.
    path = os.path.join(tmp, "grey.png")
    Image.fromarray(np.full((40, 20), 51, dtype=np.uint8), mode="L").save(path)
    grey = cm.load_image(path, 128, 64)
    assert torch.allclose(grey, torch.full_like(grey, (51 / 255 - 0.5) / 0.5), atol=1e-6)


def check_command_line(tmp):
    sd = tiny_state_dict(cameras=2, seed=7)
    weights = os.path.join(tmp, "cli.pth")
    torch.save(sd, weights)
    x = images(5, seed=8)
    x_npy = os.path.join(tmp, "x.npy")
    np.save(x_npy, x.numpy())
    out_npy = os.path.join(tmp, "y.npy")
    base = [sys.executable, SCRIPT, "--weights", weights, "--stride", "16", "--height", "128",
            "--width", "64"]
    run = subprocess.run(base + ["--images_npy", x_npy, "--out", out_npy, "--neck", "after",
                                 "--sie_coe", "2.5", "--camid", "1", "--batch", "2"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"loaded {len(sd)} keys strictly" in run.stdout, run.stdout
    y = np.load(out_npy)
    assert y.dtype == np.float32 and y.shape == (5, 96), (y.dtype, y.shape)
    ref = reference_features(sd, x, 16, heads=1, neck="after", cams=torch.full((5,), 1),
                             sie_coe=2.5)
    err = rel_err(torch.from_numpy(y), ref)
    assert err < 1e-5, f"CLI features: relative error {err}"

    # --images: the transforms then the same model; equal to transforming in-process.
    paths = []
    g = np.random.default_rng(10)
    for i in range(3):
        p = os.path.join(tmp, f"person_{i}.jpg")
        Image.fromarray(g.integers(0, 256, (90 + 7 * i, 41 + 3 * i, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    listing = os.path.join(tmp, "list.txt")
    with open(listing, "w") as f:
        f.write("\n".join(paths) + "\n")
    cams_npy = os.path.join(tmp, "cams.npy")
    np.save(cams_npy, np.array([0, 1, 0], dtype=np.int64))
    run = subprocess.run(base + ["--images", listing, "--camids_npy", cams_npy, "--out", out_npy],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    y = torch.from_numpy(np.load(out_npy))
    model = cm.build(cm.load(weights), stride=16, height=128, width=64)
    with torch.no_grad():
        want = model(torch.stack([cm.load_image(p, 128, 64) for p in paths]),
                     cam_label=torch.tensor([0, 1, 0]))
    assert torch.equal(y, want), f"--images: max difference {(y - want).abs().max()}"

    # A wrong input size is an error that names the positional embedding.
    run = subprocess.run(base[:-4] + ["--height", "256", "--width", "128", "--images_npy", x_npy,
                                      "--out", out_npy], capture_output=True, text=True)
    assert run.returncode != 0 and "positional_embedding" in run.stderr, run.stderr


def main():
    torch.manual_seed(0)
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    checks = [check_strict_load_shape_and_forward, check_neck_after,
              check_sie_with_overlapping_stride, check_strictness_and_errors, check_transforms,
              check_command_line]
    failed = 0
    print(f"torch {torch.__version__}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory(prefix="clipreid_model_selftest_") as tmp:
        for check in checks:
            try:
                check(tmp)
                print(f"ok    {check.__name__}")
            except Exception:  # noqa: BLE001
                failed += 1
                print(f"FAIL  {check.__name__}\n{traceback.format_exc()}")
    print(f"{len(checks) - failed}/{len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
