"""Writes crafted hostile inputs for tests/hostile_test.sh (issue 12) and the fuzz seed corpora.

Usage: /usr/bin/python3 tests/hostile/make_hostile.py OUT_DIR
Each file is tiny and deterministic; the shell test says what each one must produce.
"""
import collections
import io
import os
import pickle
import struct
import sys
import zipfile

import numpy as np
import torch


# --- torch.save zips written by hand: data.pkl from our own pickler, storages as given ----------

class StorageRef:
    def __init__(self, key, numel, dtype="FloatStorage"):
        self.key, self.numel, self.dtype = key, numel, dtype


class TensorRef:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", getattr(torch, obj.dtype), obj.key, "cpu", obj.numel)
        return None


def pickle_bytes(obj):
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_zip(path, pkl, storages=None):
    """A torch.save-layout zip: archive/data.pkl, archive/data/KEY, archive/version."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        for key, data in (storages or {}).items():
            z.writestr("archive/data/" + key, data)
        z.writestr("archive/version", "3\n")


def write_pth_cases(out):
    s16 = {"0": np.arange(4, dtype=np.float32).tobytes()}  # a 16-byte storage of 4 floats
    st = StorageRef("0", 4)

    def tensor_case(name, offset, size, stride):
        write_zip(os.path.join(out, name), pickle_bytes(
            collections.OrderedDict([("w", TensorRef(st, offset, size, stride))])), s16)

    tensor_case("ok_view.pth", 1, [3], [1])  # a valid view: the fuzz seed and a sanity case
    tensor_case("oob_offset_segv.pth", 2**62 - 2**30, [4], [1])  # issue: SIGSEGV
    tensor_case("oob_offset_heap.pth", 2**62 - 4096, [4], [1])  # issue: copies 16 KB of heap
    tensor_case("oob_size.pth", 0, [5], [1])
    tensor_case("oob_stride.pth", 0, [2, 2], [3, 1])
    tensor_case("overflow_stride.pth", 0, [2, 2], [2**62, 1])
    tensor_case("negative_size.pth", 0, [-1], [1])
    tensor_case("zero_stride_huge.pth", 0, [2**40], [0])  # would materialise 4 TB
    # Deep nesting: 200,000 lists / tuples / dicts, each inside the previous one.
    n = 200_000
    write_zip(os.path.join(out, "deep_lists.pth"), b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b".")
    write_zip(os.path.join(out, "deep_tuples.pth"), b"\x80\x02" + b"(" * n + b"t" * n + b".")
    write_zip(os.path.join(out, "deep_dicts.pth"), deep_dicts_pickle(n))
    # Many objects in one flat list (each MARK..APPENDS adds 1,000 ints).
    flat = b"\x80\x02]" + (b"(" + b"K\x01" * 1000 + b"e") * 5000 + b"."
    write_zip(os.path.join(out, "five_million_items.pth"), flat)
    # A BINUNICODE8 string whose length would overflow a pointer.
    write_zip(os.path.join(out, "huge_string.pth"), b"\x80\x04\x8e" + struct.pack("<Q", 2**64 - 8)
              + b"abc.")
    write_zip(os.path.join(out, "memo_missing.pth"), b"\x80\x02h\x07.")
    # LONG1 of 9 bytes (found by fuzz_torch_save: a signed shift overflow).
    write_zip(os.path.join(out, "long1_wide.pth"), b"\x80\x02\x8a\x09" + b"\x7f" * 9 + b".")


def deep_dicts_pickle(n):
    # d0 K1 d1 K1 d2 ... K1 d(n-1) then n-1 SETITEMs: each sets d(i)[1] = d(i+1).
    return b"\x80\x02" + b"}" + b"K\x01}" * (n - 1) + b"s" * (n - 1) + b"."


def write_tiny_clip_variants(fx, out):
    """From tests/clip_reference.py's clip_state.pth: malformed keys and a patch larger than the
    32x32 fixture images."""
    sd = torch.load(os.path.join(fx, "clip_state.pth"))
    key = "module.visual.conv1.weight"
    variants = {
        "conv_0d.pth": {key: torch.tensor(1.0)},
        "conv_kernel_0x0.pth": {key: torch.zeros(128, 3, 0, 0)},
        "ln_final_empty.pth": {"module.ln_final.weight": torch.zeros(0)},
        "patch_40.pth": {key: torch.zeros(128, 3, 40, 40)},
        "width_huge.pth": {key: torch.zeros(65536, 3, 1, 1),
                           "module.ln_final.weight": torch.zeros(65536)},
    }
    for name, change in variants.items():
        d = collections.OrderedDict(sd)
        d.update(change)
        torch.save(d, os.path.join(out, name))
    # Deterministic mutations of the TorchScript archive's code and pickles, rewritten as valid
    # zips (CRCs recomputed, so that LibTorch's parsers see the bytes): its loader must not leak
    # exceptions other than c10::Error past us, nor crash.
    with zipfile.ZipFile(os.path.join(fx, "clip_jit.pt")) as z:
        members = [(i, z.read(i.filename)) for i in z.infolist()]
    targets = [k for k, (i, _) in enumerate(members) if "/data/" not in i.filename]
    rng = np.random.default_rng(12)
    os.makedirs(os.path.join(out, "jit_mutants"), exist_ok=True)
    for k in range(60):
        t = targets[int(rng.integers(0, len(targets)))]
        b = bytearray(members[t][1])
        for _ in range(int(rng.integers(1, 4))):
            if b:
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        with zipfile.ZipFile(os.path.join(out, "jit_mutants", f"m{k:02d}.pt"), "w",
                             zipfile.ZIP_STORED) as z:
            for j, (info, data) in enumerate(members):
                z.writestr(info.filename, bytes(b) if j == t else data)


def npy_bytes(header, data=b"", version=1, header_len=None):
    h = header.encode("latin1")
    n = len(h) if header_len is None else header_len
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", n) + h + data
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", n) + h + data


def write_npy_cases(out):
    def hdr(shape, descr="<f4"):
        return "{'descr': '%s', 'fortran_order': False, 'shape': %s, }\n" % (descr, shape)

    cases = {
        "npy_header_4gb.npy": npy_bytes(hdr("(2,)"), version=2, header_len=0xFFFFFFF0),
        "npy_negative.npy": npy_bytes(hdr("(-1, 3)")),
        "npy_absurd.npy": npy_bytes(hdr("(100000000000, 100000000000)")),
        "npy_overflow.npy": npy_bytes(hdr("(99999999999999999999,)")),
        "npy_overflow_product.npy": npy_bytes(hdr("(4294967296, 4294967296, 4)")),
        "npy_shape_junk.npy": npy_bytes(hdr("(1,3,3a2,32)"), b"\0" * 4 * 9),
        "npy_truncated.npy": npy_bytes(hdr("(1, 3, 32, 32)"), b"\0" * 100),
        "npy_no_shape.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, }\n"),
    }
    for name, b in cases.items():
        open(os.path.join(out, name), "wb").write(b)
    for h, w in [(32, 4), (4, 32), (0, 0)]:
        np.save(os.path.join(out, f"images_{h}x{w}.npy"), np.zeros((1, 3, h, w), np.float32))
    np.save(os.path.join(out, "images_32x32.npy"), np.zeros((1, 3, 32, 32), np.float32))


def write_text_cases(out):
    """Tokenizer and config inputs that took minutes or gigabytes before."""
    words = ["person", "red", "jacket", "a", "walking", "42", "!!", "\u00e9t\u00e9"]
    rng = np.random.default_rng(4)
    line = " ".join(words[int(i)] for i in rng.integers(0, len(words), 200_000))
    with open(os.path.join(out, "line_1mb.txt"), "w", encoding="utf-8") as f:
        f.write(line[:1_000_000] + "\n")
    with open(os.path.join(out, "word_1mb.txt"), "w") as f:
        f.write("".join(chr(97 + int(i)) for i in rng.integers(0, 26, 1_000_000)) + "\n")
    with open(os.path.join(out, "config_long_line.textproto"), "w") as f:
        f.write("stage2 { max_epochs: 3 }\n" + "x" * 10_000_000 + "\n")
    with open(os.path.join(out, "config_many_steps.textproto"), "w") as f:
        f.write("stage2 { steps: [" + ", ".join(["5"] * 1_000_000) + "] }\n")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    write_pth_cases(out)
    write_npy_cases(out)
    write_text_cases(out)
    if len(sys.argv) > 2:  # the tiny CLIP fixtures of tests/clip_reference.py
        write_tiny_clip_variants(sys.argv[2], out)


if __name__ == "__main__":
    main()
