#!/usr/bin/python3
"""Reference for bench_eval: CLIP-ReID's evaluation (tests/eval_reference.py, transcribed from
utils/metrics.py and utils/reranking.py) on features written by bench_eval.

  ref_eval.py DIR THREADS MODE [QUERIES]
  DIR holds q.npy, g.npy (float32 features) and q_meta.npy, g_meta.npy (int64 (N, 2): pid, camid).
  MODE eval: torch distance matrix + numpy eval_func; rerank: re_ranking + eval_func.
  QUERIES > 0 evaluates only the first QUERIES queries against the whole gallery.
  Prints one line: distance_s ranking_s mAP cmc1 peak_rss_mb
"""
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from eval_reference import euclidean_distance, eval_func, re_ranking  # noqa: E402


def main(d, threads, mode, queries):
    torch.set_num_threads(threads)
    qf, gf = torch.from_numpy(np.load(d + "/q.npy")), torch.from_numpy(np.load(d + "/g.npy"))
    qm, gm = np.load(d + "/q_meta.npy"), np.load(d + "/g_meta.npy")
    if queries > 0:
        qf, qm = qf[:queries], qm[:queries]
    start = time.perf_counter()
    feats = torch.nn.functional.normalize(torch.cat([qf, gf], dim=0), dim=1, p=2)
    qf, gf = feats[:qf.shape[0]], feats[qf.shape[0]:]
    if mode == "rerank":
        distmat = re_ranking(qf, gf, k1=20, k2=6, lambda_value=0.3)
    else:
        distmat = euclidean_distance(qf, gf)
    middle = time.perf_counter()
    cmc, mAP, _ = eval_func(distmat, qm[:, 0], gm[:, 0], qm[:, 1], gm[:, 1], 50)
    end = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("%.4f %.4f %.8f %.8f %.0f" % (middle - start, end - middle, mAP, cmc[0], peak_mb))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
