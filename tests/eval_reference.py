#!/usr/bin/python3
"""The reference evaluation (CLIP-ReID utils/metrics.py eval_func + euclidean_distance,
utils/reranking.py re_ranking; docs/design.md 10) on generated cases, for `reid eval`.

Usage: eval_reference.py OUT_DIR
Writes, per case, OUT_DIR/CASE/{q.npy,g.npy,q.csv,g.csv,args,expected.json}: features, meta, the
extra `reid eval` arguments (one per line) and the reference's result. Needs numpy and torch.
The functions below are transcribed from the reference as they are (numpy and torch, float16 V
and Jaccard, numpy's argsort); only the deprecated addmm_(1, -2, ...) call is spelled with
keywords, and prints are dropped. The tied cases (tied_cases) run them with a stable argsort:
see StableArgsort.
"""
import contextlib
import json
import os
import sys

import numpy as np
import torch


def euclidean_distance(qf, gf):
    m = qf.shape[0]
    n = gf.shape[0]
    dist_mat = torch.pow(qf, 2).sum(dim=1, keepdim=True).expand(m, n) + \
        torch.pow(gf, 2).sum(dim=1, keepdim=True).expand(n, m).t()
    dist_mat.addmm_(qf, gf.t(), beta=1, alpha=-2)
    return dist_mat.cpu().numpy()


def eval_func(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        max_rank = num_g
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc = []
    all_AP = []
    num_valid_q = 0.
    for q_idx in range(num_q):
        q_pid = q_pids[q_idx]
        q_camid = q_camids[q_idx]
        order = indices[q_idx]
        remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
        keep = np.invert(remove)
        orig_cmc = matches[q_idx][keep]
        if not np.any(orig_cmc):
            continue
        cmc = orig_cmc.cumsum()
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.
        num_rel = orig_cmc.sum()
        tmp_cmc = orig_cmc.cumsum()
        y = np.arange(1, tmp_cmc.shape[0] + 1) * 1.0
        tmp_cmc = tmp_cmc / y
        tmp_cmc = np.asarray(tmp_cmc) * orig_cmc
        AP = tmp_cmc.sum() / num_rel
        all_AP.append(AP)
    assert num_valid_q > 0, "Error: all query identities do not appear in gallery"
    all_cmc = np.asarray(all_cmc).astype(np.float32)
    all_cmc = all_cmc.sum(0) / num_valid_q
    mAP = np.mean(all_AP)
    return all_cmc, mAP, int(num_valid_q)


def re_ranking(probFea, galFea, k1, k2, lambda_value, local_distmat=None, only_local=False):
    query_num = probFea.size(0)
    all_num = query_num + galFea.size(0)
    if only_local:
        original_dist = local_distmat
    else:
        feat = torch.cat([probFea, galFea])
        distmat = torch.pow(feat, 2).sum(dim=1, keepdim=True).expand(all_num, all_num) + \
            torch.pow(feat, 2).sum(dim=1, keepdim=True).expand(all_num, all_num).t()
        distmat.addmm_(feat, feat.t(), beta=1, alpha=-2)
        original_dist = distmat.cpu().numpy()
        del feat
        if local_distmat is not None:
            original_dist = original_dist + local_distmat
    gallery_num = original_dist.shape[0]
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float16)
    initial_rank = np.argsort(original_dist).astype(np.int32)

    for i in range(all_num):
        # k-reciprocal neighbors
        forward_k_neigh_index = initial_rank[i, :k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            candidate_forward_k_neigh_index = initial_rank[candidate, :int(np.around(k1 / 2)) + 1]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index,
                                                            :int(np.around(k1 / 2)) + 1]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > 2 / 3 * len(
                    candidate_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index,
                                                         candidate_k_reciprocal_index)

        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float16)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank
    invIndex = []
    for i in range(gallery_num):
        invIndex.append(np.where(V[:, i] != 0)[0])

    jaccard_dist = np.zeros_like(original_dist, dtype=np.float16)

    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float16)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]])
        jaccard_dist[i] = 1 - temp_min / (2 - temp_min)

    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    del original_dist
    del V
    del jaccard_dist
    final_dist = final_dist[:query_num, query_num:]
    return final_dist


# --- R1_mAP_eval.compute(), with the re-ranking parameters given rather than hard-coded.
def compute(qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank, feat_norm, rerank):
    feats = torch.cat([qf, gf], dim=0)
    if feat_norm:
        feats = torch.nn.functional.normalize(feats, dim=1, p=2)
    qf, gf = feats[:qf.shape[0]], feats[qf.shape[0]:]
    if rerank:
        distmat = re_ranking(qf, gf, k1=rerank[0], k2=rerank[1], lambda_value=rerank[2])
    else:
        distmat = euclidean_distance(qf, gf)
    return eval_func(distmat, q_pids, g_pids, q_cams, g_cams, max_rank)


# --- The cases.
def identity_features(rng, pids, cams, centers, spread):
    f = centers[pids] + spread * rng.standard_normal((len(pids), centers.shape[1]))
    return f.astype(np.float32)


class StableArgsort:
    """Runs the reference with numpy's argsort made stable. numpy's default (introsort) orders
    equal values arbitrarily: np.argsort(np.zeros(17)) starts 0, 14, 13, ..., so under exact ties
    the reference's ranking is an accident of the sort. `reid eval` ranks ties by index, which is
    what a stable argsort gives; without ties the two argsorts agree, so only the tied cases use
    this. The transcribed functions are unchanged: np.argsort is swapped while they run."""

    def __enter__(self):
        self.argsort = np.argsort
        np.argsort = lambda a, axis=-1, kind=None, order=None: self.argsort(
            a, axis=axis, kind="stable", order=order)

    def __exit__(self, *exc):
        np.argsort = self.argsort


def write_case(out, name, qf, gf, q, g, max_rank=50, feat_norm=True, rerank=None, stable=False):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "q.npy"), np.ascontiguousarray(qf))
    np.save(os.path.join(d, "g.npy"), np.ascontiguousarray(gf))
    for side, (pids, cams) in (("q", q), ("g", g)):
        with open(os.path.join(d, side + ".csv"), "w") as f:
            f.write("path,pid,camid\n")
            for i, (p, c) in enumerate(zip(pids, cams)):
                f.write("img/%s_%d,x.jpg,%d,%d\n" % (side, i, p, c))  # a comma in the path
    sets = ["eval { max_rank: %d feat_norm: %s }" % (max_rank, "true" if feat_norm else "false")]
    if rerank:
        sets.append("eval { rerank_k1: %d rerank_k2: %d rerank_lambda: %g }" % rerank)
    with open(os.path.join(d, "args"), "w") as f:
        for s in sets:
            f.write("--set=%s\n" % s)
        if rerank:
            f.write("--rerank\n")
    with StableArgsort() if stable else contextlib.nullcontext():
        with np.errstate(invalid="ignore"):  # the reference's 0/0 under all-equal distances
            cmc, mAP, valid = compute(torch.from_numpy(qf), torch.from_numpy(gf), np.asarray(q[0]),
                                      np.asarray(g[0]), np.asarray(q[1]), np.asarray(g[1]),
                                      max_rank, feat_norm, rerank)
    assert 0 <= mAP <= 1, (name, mAP)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"mAP": float(mAP), "cmc": [float(c) for c in cmc], "num_valid_queries": valid,
                   "num_query": len(qf), "num_gallery": len(gf), "rerank": bool(rerank)}, f)
    return cmc, mAP


def random_case(rng, nq, ng, dim, ids, cams, spread, distractors=0, unmatched=0,
                disjoint_cams=False):
    centers = rng.standard_normal((ids + 1, dim))
    q_pids = rng.integers(1, ids + 1, nq)
    q_pids[:unmatched] = ids + 1000  # identities absent from the gallery: skipped
    g_pids = np.concatenate([rng.integers(1, ids + 1, ng - distractors),
                             np.zeros(distractors, dtype=np.int64)])  # pid 0: distractors
    q_cams, g_cams = rng.integers(0, cams, nq), rng.integers(0, cams, ng)
    if disjoint_cams:  # no junk: every query keeps the whole gallery
        g_cams += cams
    qf = identity_features(rng, np.minimum(q_pids, ids), q_cams, centers, spread)
    gf = identity_features(rng, g_pids, g_cams, centers, spread)
    return qf, gf, (q_pids.tolist(), q_cams.tolist()), (g_pids.tolist(), g_cams.tolist())


def tied_cases(out, rng):
    """Exact ties, run with a stable argsort (see StableArgsort). All features identical: every
    distance is 0, the re-ranking's scaling by the row maximum is 0/0 in the reference (NaN rows,
    which rank in index order when sorted stably) and gave `reid eval --rerank` an mAP of 300%.
    A few duplicated rows, with integer features and no normalisation so that every distance
    is exact in both implementations: duplicates tie with each other everywhere."""
    nq, ng = 30, 120
    q_pids, g_pids = rng.integers(1, 16, nq), rng.integers(1, 16, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    meta = ((q_pids.tolist(), q_cams.tolist()), (g_pids.tolist(), g_cams.tolist()))
    # One vector everywhere. A one-hot row stays exact through the normalisation, so every
    # distance is exactly 0 in both implementations; so is an all-zero row (a dead model's
    # output). A random row leaves float rounding in the distances (equal for all pairs here).
    one_hot = np.zeros(32, np.float32)
    one_hot[3] = 2
    for tag, f in (("", one_hot), ("_zero", np.zeros(32, np.float32)),
                   ("_random", rng.standard_normal(32).astype(np.float32))):
        same_q, same_g = np.tile(f, (nq, 1)), np.tile(f, (ng, 1))
        write_case(out, "tied_identical" + tag, same_q, same_g, *meta, stable=True)
        write_case(out, "rerank_tied_identical" + tag, same_q, same_g, *meta,
                   rerank=(20, 6, 0.3), stable=True)
        write_case(out, "rerank_tied_identical%s_k2_1" % tag, same_q, same_g, *meta,
                   rerank=(7, 1, 0.3), stable=True)
    qf = rng.integers(-3, 4, (nq, 12)).astype(np.float32)
    gf = rng.integers(-3, 4, (ng, 12)).astype(np.float32)
    gf[10:16] = gf[0]  # six copies of one gallery row
    gf[40:43] = qf[2]  # three gallery rows equal to a query
    qf[5] = qf[4]      # two equal queries
    write_case(out, "rerank_tied_duplicates", qf, gf, *meta, feat_norm=False,
               rerank=(20, 6, 0.3), stable=True)


def test_vector(out):
    """docs/design.md 10.1: the distmat realised by features (q_i = e_i, g_j . q_i = -d_ij/2,
    equal gallery norms), evaluated without normalisation; the expected CMC/mAP are the page's."""
    distmat = np.array([[.4, .1, .2, .9, .3, .7], [.8, .2, .4, .1, .6, .3],
                        [.5, .4, .3, .2, .1, .6]], dtype=np.float32)
    g = -distmat.T / 2
    norms = (g ** 2).sum(1)
    gf = np.concatenate([g, np.sqrt(norms.max() - norms + 1e-3)[:, None]], 1).astype(np.float32)
    qf = np.concatenate([np.eye(3), np.zeros((3, 1))], 1).astype(np.float32)
    cmc, mAP = write_case(out, "test_vector", qf, gf, ([1, 2, 3], [0, 0, 1]),
                          ([1, 2, 1, 2, 3, 1], [0, 1, 1, 0, 1, 2]), max_rank=5, feat_norm=False)
    direct = eval_func(distmat, np.array([1, 2, 3]), np.array([1, 2, 1, 2, 3, 1]),
                       np.array([0, 0, 1]), np.array([0, 1, 1, 0, 1, 2]), 5)
    assert np.allclose(cmc, [0.5, 1, 1, 1, 1]) and abs(mAP - 0.75) < 1e-12, (cmc, mAP)
    assert np.allclose(direct[0], cmc) and direct[1] == mAP


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(20240601)
    test_vector(out)
    write_case(out, "basic", *random_case(rng, 60, 240, 32, 30, 4, 1.2))
    write_case(out, "no_match", *random_case(rng, 50, 200, 16, 25, 3, 1.0, unmatched=12))
    # The reference fails (a ragged all_cmc) when junk removal leaves a valid query fewer than
    # max_rank gallery items, so its small gallery has no junk.
    write_case(out, "small_gallery", *random_case(rng, 20, 9, 8, 4, 2, 0.8, disjoint_cams=True),
               max_rank=50)
    write_case(out, "distractors", *random_case(rng, 40, 300, 24, 20, 5, 1.0, distractors=120))
    write_case(out, "unnormalised", *random_case(rng, 30, 120, 12, 15, 3, 1.0), max_rank=20,
               feat_norm=False)
    write_case(out, "rerank_default", *random_case(rng, 60, 240, 32, 30, 4, 1.2),
               rerank=(20, 6, 0.3))
    write_case(out, "rerank_distractors",
               *random_case(rng, 50, 260, 24, 20, 5, 1.0, distractors=80, unmatched=5),
               rerank=(11, 3, 0.5))
    write_case(out, "rerank_k2_1", *random_case(rng, 30, 150, 16, 15, 3, 1.1), rerank=(5, 1, 0.3))
    tied_cases(out, np.random.default_rng(7))


if __name__ == "__main__":
    main()
