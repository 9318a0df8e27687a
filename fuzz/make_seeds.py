"""Writes the fuzz seed corpora (fuzz/corpus/<target>/) from the project's test fixtures.

Usage: /usr/bin/python3 fuzz/make_seeds.py   (from the repository root; deterministic)
"""
import collections
import glob
import io
import os
import shutil
import struct
import sys
import zipfile
import zlib

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "hostile"))
import make_hostile  # noqa: E402  (the crafted .pth/.npy writers)

OUT = os.path.join(os.path.dirname(__file__), "corpus")


def put(target, name, data):
    os.makedirs(os.path.join(OUT, target), exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(os.path.join(OUT, target, name), mode) as f:
        f.write(data)


def main():
    # Files are overwritten, never removed: inputs that found bugs (regress_*) stay in the corpus.
    # Tokenizer: the texts of the CLIP fixtures and the shared OpenAI cases.
    texts = ["A photo of a X X X X person.", "a man in a red jacket!", "hello   world 42",
             "&amp;lt; caf\u00e9 &#x41; <|startoftext|> it's", "\u00dcBER \u0395\u03bb\u03bb\u03b7"]
    for k, t in enumerate(texts):
        put("fuzz_tokenizer", f"text{k}", t.encode("utf-8"))
    # Config: the shipped configs, one with a --set part after a NUL.
    for path in sorted(glob.glob("configs/*.textproto")):
        put("fuzz_config", os.path.basename(path), open(path, "rb").read())
    put("fuzz_config", "with_set", b"stage2 { max_epochs: 3 }\0prompt { n_ctx: 6 }")
    # Dataset lists: train \0 query \0 gallery \0 val, valid for CSV and for MSMT17.
    put("fuzz_dataset_lists", "csv", b"path,pid,camid\nimgs/a.jpg,17,0\nimgs/b.jpg,5,2\n\0"
        b"q.jpg,5,1\n\0g.jpg,0,0\ng2.jpg,5,3\n\0")
    put("fuzz_dataset_lists", "msmt", b"0000/0000_000_01_0303morning_0015_0.jpg 0\n\0"
        b"0000/0000_000_01_0303morning_0008_0.jpg 0\n\0"
        b"0003/0003_001_13_0303noon_0101_2.jpg 3\n\0"
        b"0000/0000_010_15_0303afternoon_0581_1.jpg 0\r\n")
    # reid-launch's hostfile: nodes with slots, comments and repeats, and one naming no node.
    put("fuzz_hostfile", "two_nodes", b"node1 slots=8\nnode2 slots=8\n")
    put("fuzz_hostfile", "comments_repeats",
        b"# cluster\nnode1 slots=4 # first\n\n  node1\nnode3\tslots=2\r\n")
    put("fuzz_hostfile", "no_node", b"#only a comment\n\n   \n")
    # JPEG: the decoder fixtures, and one PNG (the decoder's dispatch on the signature).
    for path in sorted(glob.glob("data/testdata/*.jpg")):
        put("fuzz_jpeg", os.path.basename(path), open(path, "rb").read())
    put("fuzz_jpeg", "rgb8.png", _png(7, 5, 8, 2))
    # PNG: every colour type and bit depth, interlaced or not, palettes with tRNS, a text chunk,
    # and a truncated file.
    for depth in (1, 2, 4, 8, 16):
        put("fuzz_png", f"gray{depth}.png", _png(9, 7, depth, 0))
    for depth in (1, 2, 4, 8):
        put("fuzz_png", f"palette{depth}_trns.png", _png(10, 6, depth, 3, trns=True))
    for ctype, name in ((2, "rgb"), (4, "gray_alpha"), (6, "rgba")):
        for depth in (8, 16):
            put("fuzz_png", f"{name}{depth}.png", _png(11, 5, depth, ctype))
    put("fuzz_png", "rgb8_adam7.png", _png(13, 11, 8, 2, interlace=True))
    put("fuzz_png", "gray1_adam7.png", _png(17, 9, 1, 0, interlace=True))
    put("fuzz_png", "palette4_adam7.png", _png(9, 9, 4, 3, interlace=True, trns=True))
    put("fuzz_png", "rgba16_adam7_text.png", _png(6, 10, 16, 6, interlace=True, text=True))
    put("fuzz_png", "truncated.png", _png(16, 16, 8, 2)[:-40])
    # Image lists of `reid embed`: paths, comments, blank and CRLF lines, a byte-order mark.
    put("fuzz_image_list", "list", b"# crops\nimgs/a.jpg\n\n/abs/b.png\nsub/c d.jpeg\n")
    put("fuzz_image_list", "crlf_bom", b"\xef\xbb\xbfa.jpg\r\n\r\n  \t\r\n#x\r\nb.JPG")
    put("fuzz_image_list", "comments_only", b"# nothing\n\n")
    # .npy: small valid arrays of each dtype, and the crafted headers of the hostile test.
    for dtype in ("<f4", "<f8", "<i4", "<i8"):
        buf = io.BytesIO()
        np.save(buf, np.arange(6, dtype=dtype).reshape(2, 3))
        put("fuzz_npy", "valid" + dtype[1:], buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.float32(3.5))
    put("fuzz_npy", "scalar", buf.getvalue())
    tmp = os.path.join(OUT, "tmp")
    os.makedirs(tmp, exist_ok=True)
    make_hostile.write_npy_cases(tmp)
    for path in sorted(glob.glob(os.path.join(tmp, "npy_*.npy"))):
        put("fuzz_npy", os.path.basename(path), open(path, "rb").read())
    # torch.save: data.pkl of the crafted views (storage "0" is 16 bytes in the fuzz target too)
    # and of a small state dict with two tensors, parameters and an OrderedDict.
    make_hostile.write_pth_cases(tmp)
    for name in ("ok_view", "oob_offset_segv", "oob_stride", "negative_size", "memo_missing"):
        with zipfile.ZipFile(os.path.join(tmp, name + ".pth")) as z:
            put("fuzz_torch_save", name, z.read("archive/data.pkl"))
    s0 = make_hostile.StorageRef("0", 4)
    s1 = make_hostile.StorageRef("1", 16)
    sd = collections.OrderedDict([
        ("module.a.weight", make_hostile.TensorRef(s0, 0, [2, 2], [2, 1])),
        ("module.b", make_hostile.TensorRef(s1, 4, [3, 4], [4, 1])),
        ("epoch", 3)])
    put("fuzz_torch_save", "state_dict", make_hostile.pickle_bytes(sd))
    put("fuzz_torch_save", "nested", make_hostile.pickle_bytes({"state_dict": sd, "x": [1.5]}))
    # STACK_GLOBAL fed its own results doubled the name every step (an OOM the fuzzer found).
    put("fuzz_torch_save", "regress_stack_global_doubling",
        b"\x80\x02X\x01\x00\x00\x00a" + b"2\x93" * 40 + b".")
    shutil.rmtree(tmp)
    # Checkpoint: meta.pb (format_version 2, stage 2, sampler epoch 1, one FileEntry for model.pt)
    # \0 model.pt's bytes: a torch.save zip of one tensor. No varint of meta.pb is 0 (a NUL ends
    # it). Variants: a flipped byte, format 1, model.pt listed twice, a zip record claiming
    # 0xe5000017 bytes.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # fixed times: deterministic bytes
        for name, data in (
                ("archive/data.pkl", make_hostile.pickle_bytes(collections.OrderedDict(
                    [("w", make_hostile.TensorRef(make_hostile.StorageRef("0", 4), 0, [2, 2],
                                                  [2, 1]))]))),
                ("archive/data/0", np.arange(4, dtype=np.float32).tobytes()),
                ("archive/version", b"3\n")):
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    content = buf.getvalue()

    def meta_for(data, version=2, entries=1):
        entry = (b"\x0a" + _varint(8) + b"model.pt" + b"\x10" + _varint(len(data)) + b"\x18" +
                 _varint(zlib.crc32(data)))
        sampler = _tag(2, 0) + _varint(1)
        return (_tag(FORMAT_VERSION_FIELD, 0) + _varint(version) + _tag(2, 0) + _varint(2) +
                _tag(6, 2) + _varint(len(sampler)) + sampler +
                (_tag(9, 2) + _varint(len(entry)) + entry) * entries)

    put("fuzz_checkpoint", "valid", meta_for(content) + b"\0" + content)
    flipped = content[:40] + bytes([content[40] ^ 1]) + content[41:]
    put("fuzz_checkpoint", "bad_crc", meta_for(content) + b"\0" + flipped)
    put("fuzz_checkpoint", "format1", meta_for(content, version=1) + b"\0" + content)
    put("fuzz_checkpoint", "listed_twice", meta_for(content, entries=2) + b"\0" + content)
    cd = content.index(b"PK\x01\x02", content.index(b"archive/data/0"))
    huge = content[:cd + 24] + struct.pack("<I", 0xE5000017) + content[cd + 28:]
    put("fuzz_checkpoint", "zip_record_huge", meta_for(huge) + b"\0" + huge)
    # Run report: history.jsonl of both stages with evaluations, hostile values, a metrics.json.
    put("fuzz_history", "both_stages", _history_seed())
    put("fuzz_history", "hostile",
        '{"kind":"STEP","step":1,"losses":{"total":"NaN","<b>":"Infinity"},"lr":"-Infinity"}\n'
        'not json\n{"kind":"EVAL","map":1e308,"cmc":[-1e308,5e-324]}\n'
        '{"kind":"STEP","step":"9223372036854775807"}\n')
    put("fuzz_history", "metrics_json",
        '{"mAP":0.75,"cmc":[0.85,0.9,0.92],"num_valid_queries":64,"num_query":64,'
        '"num_gallery":320,"stage":2,"epoch":12}\n')


def _png(width, height, depth, ctype, interlace=False, trns=False, text=False):
    """A PNG of deterministic samples, written with zlib and struct only (Adam7 when
    `interlace`): colour type `ctype` (0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    colours = min(1 << depth, 6)
    top = colours if ctype == 3 else 1 << depth

    def sample(x, y, c):
        return (x * 37 + y * 101 + c * 59 + x * y) % top

    def scanline(xs, y):
        vals = [sample(x, y, c) for x in xs for c in range(channels)]
        if depth == 16:
            return b"".join(struct.pack(">H", v) for v in vals)
        if depth == 8:
            return bytes(vals)
        per, out = 8 // depth, bytearray()
        for i in range(0, len(vals), per):
            b = 0
            for k, v in enumerate(vals[i:i + per]):
                b |= v << (8 - depth * (k + 1))
            out.append(b)
        return bytes(out)

    passes = ([(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
               (1, 0, 2, 2), (0, 1, 1, 2)] if interlace else [(0, 0, 1, 1)])
    raw = b""
    for x0, y0, dx, dy in passes:
        xs = list(range(x0, width, dx))
        if not xs:
            continue
        for y in range(y0, height, dy):
            raw += b"\0" + scanline(xs, y)  # filter type None

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", width, height, depth, ctype, 0, 0, 1 if interlace else 0))
    if ctype == 3:
        out += chunk(b"PLTE", bytes((40 * i) % 256 for i in range(3 * colours)))
        if trns:
            out += chunk(b"tRNS", bytes([0, 128][:colours]))
    if text:
        out += chunk(b"tEXt", b"Comment\0seed")
    return out + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _history_seed():
    lines = []
    for k in range(12):
        stage, step = 1 + k // 6, 10 * (k + 1)
        losses = ({"total": 3.0 - 0.1 * k, "supcon": 3.0 - 0.1 * k} if stage == 1 else
                  {"total": 2.0, "id": 1.0, "triplet": 0.6, "i2t": 0.4})
        lines.append('{"kind":"STEP","time":%d,"stage":%d,"epoch":%d,"step":%d,"losses":{%s},'
                     '"lr":1e-4,"imagesPerS":300,"dataWaitFraction":0.02}' % (
                         1700000000 + k, stage, k % 6 + 1, step,
                         ",".join('"%s":%g' % kv for kv in losses.items())))
        if stage == 2 and k % 2:
            lines.append('{"kind":"EVAL","stage":2,"epoch":%d,"step":%d,"map":0.5,'
                         '"cmc":[0.6,0.7,0.8]}' % (k % 6 + 1, step))
    return "\n".join(lines) + "\n"


FORMAT_VERSION_FIELD = 1  # proto/checkpoint.proto: CheckpointMeta.format_version


def _varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _tag(field, wire_type):
    return _varint(field << 3 | wire_type)


if __name__ == "__main__":
    main()
