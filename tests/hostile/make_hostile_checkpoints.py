"""Writes crafted damaged checkpoints for tests/hostile_checkpoint_test.sh from a trained run.

Usage: /usr/bin/python3 tests/hostile/make_hostile_checkpoints.py RUN_DIR OUT_DIR
RUN_DIR is a finished `reid train` run whose checkpoints/ holds a stage-1 and at least two
stage-2 checkpoints. OUT_DIR receives one folder per case: ckpt-NAME, a copy of the run's newest
checkpoint with one thing changed and meta.pb refitted (the listed size and CRC-32 of what
changed, so that only the change itself can be caught), or run-NAME, a copy of the whole run for
the cases that need its other checkpoints. The shell test says what each case must do.
Nothing is downloaded and nothing opaque is committed: every case is made here from the run.
"""
import os
import shutil
import struct
import sys
import zipfile
import zlib

import torch


# --- meta.pb (proto::CheckpointMeta) at the wire level: no protobuf module needed ---------------

def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _read_varint(b, i):
    shift = value = 0
    while True:
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def parse(b):
    """[(field, wire_type, value)]: value an int (varint, fixed) or bytes (length-delimited)."""
    fields, i = [], 0
    while i < len(b):
        key, i = _read_varint(b, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(b, i)
        elif wire == 2:
            n, i = _read_varint(b, i)
            value, i = b[i:i + n], i + n
        elif wire == 1:
            value, i = struct.unpack_from("<Q", b, i)[0], i + 8
        elif wire == 5:
            value, i = struct.unpack_from("<I", b, i)[0], i + 4
        else:
            raise ValueError("wire type %d" % wire)
        fields.append((field, wire, value))
    return fields


def serialize(fields):
    out = bytearray()
    for field, wire, value in fields:
        out += _varint(field << 3 | wire)
        if wire == 0:
            out += _varint(value)
        elif wire == 2:
            out += _varint(len(value)) + value
        elif wire == 1:
            out += struct.pack("<Q", value)
        else:
            out += struct.pack("<I", value)
    return bytes(out)


def get(fields, number, default=None):
    for f, _, v in fields:
        if f == number:
            return v
    return default


def put(fields, number, wire, value):
    """Replaces field `number` (or appends it)."""
    out = [(f, w, v) for f, w, v in fields if f != number]
    out.append((number, wire, value))
    return out


META_FORMAT, META_STAGE, META_EPOCH, META_SAMPLER, META_FILES, META_CREATED = 1, 2, 3, 6, 9, 11
SAMPLER_EPOCH, SAMPLER_STEP = 2, 3
ENTRY_PATH, ENTRY_SIZE, ENTRY_CRC = 1, 2, 3


def read_meta(ckpt):
    with open(os.path.join(ckpt, "meta.pb"), "rb") as f:
        return parse(f.read())


def write_meta(ckpt, fields):
    with open(os.path.join(ckpt, "meta.pb"), "wb") as f:
        f.write(serialize(fields))


def crc32_of_zeros(n):
    """zlib.crc32(bytes(n)) without the bytes: the CRC register's operator for one zero bit,
    raised to the 8n-th power by squaring (the method of zlib's crc32_combine)."""
    def times(mat, vec):
        s, i = 0, 0
        while vec:
            if vec & 1:
                s ^= mat[i]
            vec >>= 1
            i += 1
        return s

    def square(mat):
        return [times(mat, mat[k]) for k in range(32)]

    op = [0xEDB88320] + [1 << k for k in range(31)]  # one zero bit
    reg, bits = 0xFFFFFFFF, 8 * n
    while bits:
        if bits & 1:
            reg = times(op, reg)
        op = square(op)
        bits >>= 1
    return reg ^ 0xFFFFFFFF


def refit(ckpt, name, size=None, crc=None):
    """Sets meta.pb's size and CRC-32 of file `name` to what the file holds (or the given values,
    for a sparse file whose content is known)."""
    path = os.path.join(ckpt, name)
    if size is None:
        with open(path, "rb") as f:
            data = f.read()
        size, crc = len(data), zlib.crc32(data)
    fields = read_meta(ckpt)
    out = []
    for f, w, v in fields:
        if f == META_FILES and get(parse(v), ENTRY_PATH) == name.encode():
            entry = put(put(parse(v), ENTRY_SIZE, 0, size), ENTRY_CRC, 0, crc)
            v = serialize(sorted(entry, key=lambda x: x[0]))
        out.append((f, w, v))
    write_meta(ckpt, out)


def position(ckpt):
    fields = read_meta(ckpt)
    sampler = parse(get(fields, META_SAMPLER, b""))
    return (get(fields, META_STAGE, 0), get(sampler, SAMPLER_EPOCH, 0),
            get(sampler, SAMPLER_STEP, 0), get(fields, META_CREATED, 0))


def set_position(ckpt, epoch):
    """Moves a stage-2 checkpoint to the start of `epoch` (last completed: epoch - 1)."""
    fields = read_meta(ckpt)
    sampler = put(parse(get(fields, META_SAMPLER, b"")), SAMPLER_EPOCH, 0, epoch)
    fields = put(fields, META_SAMPLER, 2, serialize(sorted(sampler, key=lambda x: x[0])))
    fields = put(fields, META_EPOCH, 0, epoch - 1)
    write_meta(ckpt, sorted(fields, key=lambda x: x[0]))


# --- tensor files ---------------------------------------------------------------------------------

def rezip(path, edit):
    """Rewrites the zip at `path` with record contents passed through edit(name, data) -> data,
    stored uncompressed with valid zip CRCs (so only the edit itself is wrong)."""
    with zipfile.ZipFile(path) as z:
        records = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in records:
            z.writestr(name, edit(name, data))


def mutate_first_string_length(data):
    """data.pkl with the length of its first BINUNICODE (the first tensor name) set to 0xe5000017:
    the 3-byte mutation that made LibTorch's unpickler take 3.9 GB."""
    i = data.index(b"X")
    return data[:i + 1] + struct.pack("<I", 0xE5000017) + data[i + 5:]


def claim_huge_record(path):
    """Sets the uncompressed size of the zip's first data/ record, in the central directory, to
    0xe5000017 (the zip reader allocated a record's declared size before reading it)."""
    with open(path, "rb") as f:
        b = bytearray(f.read())
    pos = 0
    while True:
        pos = b.index(b"PK\x01\x02", pos)
        name_len = struct.unpack_from("<H", b, pos + 28)[0]
        if b"/data/" in bytes(b[pos + 46:pos + 46 + name_len]):
            struct.pack_into("<I", b, pos + 24, 0xE5000017)
            break
        pos += 4
    with open(path, "wb") as f:
        f.write(bytes(b))


class Looping(torch.nn.Module):
    """A module whose TorchScript __setstate__ never returns: torch::jit::load (what LibTorch's
    InputArchive uses) runs it while loading; our reader must not."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))

    @torch.jit.export
    def __getstate__(self):
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]):
        self.w = state[0]
        self.training = state[1]
        i = 0
        while i >= 0:
            i = (i + 1) % 1000

    def forward(self, x):
        return x + self.w


def write_torchscript(path):
    torch.jit.save(torch.jit.script(Looping()), path)


# --- the cases -----------------------------------------------------------------------------------

def checkpoints(run):
    """The run's checkpoint folders, oldest first by position."""
    root = os.path.join(run, "checkpoints")
    found = [os.path.join(root, n) for n in os.listdir(root)
             if n.startswith("s") and os.path.isfile(os.path.join(root, n, "meta.pb"))]
    return sorted(found, key=position)


def main():
    run, out = sys.argv[1], sys.argv[2]
    for n in (0, 1, 7, 1000, 4097, 123457):
        assert crc32_of_zeros(n) == zlib.crc32(bytes(n)), n
    os.makedirs(out, exist_ok=True)
    found = checkpoints(run)
    newest = found[-1]

    def ckpt(name):
        dst = os.path.join(out, "ckpt-" + name)
        shutil.copytree(newest, dst)
        return dst

    # Row 1: code in a tensor file (a TorchScript archive whose __setstate__ loops forever).
    for name in ("model.pt", "optimizer.pt", "rng.pt"):
        c = ckpt("code-in-" + name.replace(".pt", ""))
        write_torchscript(os.path.join(c, name))
        refit(c, name)
    # Row 1: a format-1 checkpoint (meta.pb without format_version, as the earlier build wrote).
    c = ckpt("format1")
    write_meta(c, [f for f in read_meta(c) if f[0] != META_FORMAT])
    # Row 2: the 3-byte length mutation in model.pt's data.pkl; a zip record claiming 3.8 GB.
    c = ckpt("pickle-length")
    rezip(os.path.join(c, "model.pt"),
          lambda n, d: mutate_first_string_length(d) if n.endswith("data.pkl") else d)
    refit(c, "model.pt")
    c = ckpt("zip-record-size")
    claim_huge_record(os.path.join(c, "model.pt"))
    refit(c, "model.pt")
    # Row 2: sparse model.pt of 16 GiB and 3 GiB (zeros), size and CRC-32 fitted.
    for name, size in (("sparse-16g", 16 << 30), ("sparse-3g", 3 << 30)):
        c = ckpt(name)
        with open(os.path.join(c, "model.pt"), "wb") as f:
            f.truncate(size)
        refit(c, "model.pt", size, crc32_of_zeros(size))
    # Row 2: a FIFO and a link to /dev/zero named model.pt (the listed size kept).
    c = ckpt("fifo")
    os.remove(os.path.join(c, "model.pt"))
    os.mkfifo(os.path.join(c, "model.pt"))
    c = ckpt("dev-zero")
    os.remove(os.path.join(c, "model.pt"))
    os.symlink("/dev/zero", os.path.join(c, "model.pt"))
    # Row 3: meta.pb naming model.pt 20,000 times (460 KB); garbage optimizer.pt and rng.pt.
    c = ckpt("meta-20000")
    fields = read_meta(c)
    model = [f for f in fields if f[0] == META_FILES and
             get(parse(f[2]), ENTRY_PATH) == b"model.pt"][0]
    write_meta(c, fields + [model] * 20000)
    for name in ("optimizer.pt", "rng.pt"):
        c = ckpt("garbage-" + name.replace(".pt", ""))
        with open(os.path.join(c, name), "wb") as f:
            f.write(bytes((k * 37 + 11) % 256 for k in range(5000)))
        refit(c, name)
    # Row 3: an empty meta.pb in the run's newest checkpoint: --resume=auto skips it.
    r = os.path.join(out, "run-empty-meta")
    shutil.copytree(run, r)
    open(os.path.join(checkpoints(r)[-1], "meta.pb"), "wb").close()
    # Row 4: the newest stage-2 checkpoint moved to epoch 9999 (s2-e9999-i000000), and copies of
    # a real checkpoint under names that are not their position (sz-..., s9-...).
    r = os.path.join(out, "run-order")
    shutil.copytree(run, r)
    root = os.path.join(r, "checkpoints")
    late = os.path.join(root, "s2-e9999-i000000")
    shutil.copytree(checkpoints(r)[-1], late)
    set_position(late, 9999)
    for name in ("sz-e9999-i000000", "s9-e0001-i000000"):
        shutil.copytree(late, os.path.join(root, name))
    # Row 5: what a run killed while writing a checkpoint leaves: .tmp-NAME with part of a write.
    r = os.path.join(out, "run-leftovers")
    shutil.copytree(run, r)
    tmp = os.path.join(r, "checkpoints", ".tmp-s2-e0009-i000000")
    os.makedirs(tmp)
    with open(os.path.join(tmp, "model.pt"), "wb") as f:
        f.write(b"PK\x03\x04 part of a write")
    print("wrote", len(os.listdir(out)), "cases in", out)


if __name__ == "__main__":
    main()
