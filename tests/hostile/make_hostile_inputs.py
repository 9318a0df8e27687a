"""Writes the crafted inputs of tests/hostile_inputs_test.sh (signals, reid-launch, regular files,
configs that validated and then aborted): FIFOs where files are expected, hostfiles outside the
grammar, and small valid feature files for `reid eval` to reach the bad ones.

Usage: /usr/bin/python3 tests/hostile/make_hostile_inputs.py OUT_DIR
Standard library only; deterministic. The shell test says what each input must produce.
"""
import os
import random
import struct
import sys


def npy_f32(path, rows):
    """A float32 (N, D) .npy file (format 1.0) of `rows`, a list of equal-length lists."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (
        len(rows), len(rows[0]))
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        for row in rows:
            f.write(struct.pack("<%df" % len(row), *row))


def write_eval_inputs(out, rng):
    """A small valid feature set (6 queries, 12 gallery items), then FIFOs in place of each file
    `reid eval` reads or writes, and a meta CSV whose image paths are FIFOs (the retrieval grid)."""
    d = os.path.join(out, "eval")
    os.makedirs(d)
    npy_f32(os.path.join(d, "q.npy"), [[rng.uniform(-1, 1) for _ in range(8)] for _ in range(6)])
    npy_f32(os.path.join(d, "g.npy"), [[rng.uniform(-1, 1) for _ in range(8)] for _ in range(12)])
    for side, n in (("q", 6), ("g", 12)):
        with open(os.path.join(d, side + ".csv"), "w") as f:
            f.write("path,pid,camid\n")
            for i in range(n):
                f.write("%s/img/%s_%d.jpg,%d,%d\n" % (d, side, i, i % 3, 0 if side == "q" else 1))
    # The grid's images: FIFOs named like JPEGs (reading one blocked forever before).
    os.makedirs(os.path.join(d, "img"))
    for side, n in (("q", 6), ("g", 12)):
        for i in range(n):
            os.mkfifo(os.path.join(d, "img", "%s_%d.jpg" % (side, i)))
    for name in ("meta_fifo.csv", "features_fifo.npy", "out_fifo.json", "grid_fifo.jpg"):
        os.mkfifo(os.path.join(d, name))
    os.makedirs(os.path.join(d, "out_dir.json"))


def write_hostfiles(out, rng):
    d = os.path.join(out, "hostfiles")
    os.makedirs(d)
    # Random bytes: accepted as one node before.
    with open(os.path.join(d, "binary"), "wb") as f:
        f.write(bytes([0x89, 0x50, 0x4E, 0x47]) + bytes(rng.randrange(256) for _ in range(4096)))
    with open(os.path.join(d, "bad_line"), "w") as f:
        f.write("# two nodes\nnode1 slots=2\nnode_2 slots=2\n")
    with open(os.path.join(d, "bad_slots"), "w") as f:
        f.write("node1 slots=2\nnode2 slots=lots\n")
    with open(os.path.join(d, "good"), "w") as f:
        f.write("# rack 1\nnode-1.example.org slots=2\r\n10.0.0.2 slots=2 # v4\nfe80::2\n")
    os.mkfifo(os.path.join(d, "fifo"))  # hung the launcher before


def write_file_fifos(out):
    """FIFOs as the config, the BPE vocabulary, the weights, the texts file, a CSV dataset's
    lists, and the run files the report reads."""
    d = os.path.join(out, "fifos")
    os.makedirs(d)
    for name in ("config.textproto", "bpe_vocab.txt.gz", "weights.pth", "texts.txt"):
        os.mkfifo(os.path.join(d, name))
    csv = os.path.join(out, "csv_dataset")
    os.makedirs(csv)
    with open(os.path.join(csv, "query.csv"), "w") as f:
        f.write("path,pid,camid\nq.jpg,1,0\n")
    with open(os.path.join(csv, "gallery.csv"), "w") as f:
        f.write("path,pid,camid\ng.jpg,1,1\n")
    os.mkfifo(os.path.join(csv, "train.csv"))
    run = os.path.join(out, "run_fifo_history")
    os.makedirs(run)
    os.mkfifo(os.path.join(run, "history.jsonl"))
    run = os.path.join(out, "run_report_dir")
    os.makedirs(os.path.join(run, "report.html"))
    with open(os.path.join(run, "history.jsonl"), "w") as f:
        f.write('{"kind":"STEP","stage":1,"step":1,"losses":{"total":1}}\n')


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(20240612)
    write_eval_inputs(out, rng)
    write_hostfiles(out, rng)
    write_file_fifos(out)


if __name__ == "__main__":
    main()
