#!/usr/bin/python3
"""Writes loss_fixtures.txt: inputs and outputs of CLIP-ReID's loss classes (loss/supcontrast.py,
loss/softmax_loss.py CrossEntropyLabelSmooth, loss/triplet_loss.py TripletLoss with
hard_example_mining), re-stated here from the reference code, on seeded random PK batches.
Format, one tensor per line: "<case> <name> <d0>x<d1> v v v ..." (float64 values, %.17g).
Run from the repository root (needs python3-torch):
    /usr/bin/python3 trainer/testdata/make_loss_fixtures.py > trainer/testdata/loss_fixtures.txt
"""
import torch
import torch.nn.functional as F


def supcon(a, b, la, lb, t=1.0):  # SupConLoss.forward
    mask = torch.eq(la.unsqueeze(1).expand(a.shape[0], b.shape[0]),
                    lb.unsqueeze(0).expand(a.shape[0], b.shape[0])).float().double()
    logits = torch.div(torch.matmul(a, b.T), t)
    logits_max, _ = torch.max(logits, dim=1, keepdim=True)
    logits = logits - logits_max.detach()
    exp_logits = torch.exp(logits)
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return -mean_log_prob_pos.mean()


def ce_ls(x, y, eps=0.1):  # CrossEntropyLabelSmooth.forward
    log_probs = F.log_softmax(x, dim=1)
    targets = torch.zeros(log_probs.size(), dtype=x.dtype).scatter_(1, y.unsqueeze(1), 1)
    targets = (1 - eps) * targets + eps / x.shape[1]
    return (-targets * log_probs).mean(0).sum()


def euclidean_dist(x, y):
    m, n = x.size(0), y.size(0)
    xx = torch.pow(x, 2).sum(1, keepdim=True).expand(m, n)
    yy = torch.pow(y, 2).sum(1, keepdim=True).expand(n, m).t()
    dist = xx + yy - 2 * x @ y.t()
    return dist.clamp(min=1e-12).sqrt()


def triplet(x, y, margin=0.3, normalize=False):  # TripletLoss.__call__ + hard_example_mining
    if normalize:
        x = 1. * x / (torch.norm(x, 2, -1, keepdim=True).expand_as(x) + 1e-12)
    dist = euclidean_dist(x, x)
    n = dist.size(0)
    is_pos = y.expand(n, n).eq(y.expand(n, n).t())
    is_neg = y.expand(n, n).ne(y.expand(n, n).t())
    dist_ap, _ = torch.max(dist[is_pos].contiguous().view(n, -1), 1, keepdim=True)
    dist_an, _ = torch.min(dist[is_neg].contiguous().view(n, -1), 1, keepdim=True)
    dist_ap, dist_an = dist_ap.squeeze(1), dist_an.squeeze(1)
    ones = torch.ones_like(dist_an)
    if margin is not None:
        return torch.nn.MarginRankingLoss(margin=margin)(dist_an, dist_ap, ones)
    return torch.nn.SoftMarginLoss()(dist_an - dist_ap, ones)


def emit(case, name, t):
    t = t.double().reshape(t.shape[0] if t.dim() else 1, -1) if t.dim() != 1 else t.double().reshape(-1, 1)
    vals = " ".join("%.17g" % v for v in t.reshape(-1).tolist())
    print("%s %s %dx%d %s" % (case, name, t.shape[0], t.shape[1], vals))


def main():
    g = torch.Generator().manual_seed(20261201)
    for case, (p, k, d, c) in enumerate([(4, 4, 16, 10), (8, 2, 32, 12), (3, 5, 8, 7)]):
        name = "c%d" % case
        labels = torch.randperm(c, generator=g)[:p].repeat_interleave(k)
        a = torch.randn(p * k, d, generator=g, dtype=torch.float64)
        b = torch.randn(p * k, d, generator=g, dtype=torch.float64)
        logits = torch.randn(p * k, c, generator=g, dtype=torch.float64) * 3
        emit(name, "labels", labels)
        emit(name, "a", a)
        emit(name, "b", b)
        emit(name, "logits", logits)
        emit(name, "supcon_ab", supcon(a, b, labels, labels).reshape(1))
        emit(name, "supcon_ba_t05", supcon(b, a, labels, labels, 0.5).reshape(1))
        emit(name, "ce_ls", ce_ls(logits, labels).reshape(1))
        emit(name, "ce_ls_eps0", ce_ls(logits, labels, 0.0).reshape(1))
        emit(name, "triplet", triplet(a, labels).reshape(1))
        emit(name, "triplet_soft", triplet(a, labels, None).reshape(1))
        emit(name, "triplet_norm", triplet(a, labels, 0.3, True).reshape(1))


if __name__ == "__main__":
    main()
