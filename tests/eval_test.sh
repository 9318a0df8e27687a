#!/usr/bin/env bash
# `reid eval` in feature-file mode against the reference's eval_func and re_ranking
# (tests/eval_reference.py: mAP/CMC to 1e-6, re-ranked to 1e-3; also under exact ties: all
# features identical, duplicated rows; mAP and CMC in [0, 1]), identical results for 1 and 4
# threads and for 1 and 2 ranks, and every bad input exits 2 with one line naming the file.
# Usage: eval_test.sh PATH/TO/reid MPIEXEC   (run from the repository root)
set -u
reid=$1 mpiexec=$2
py=/usr/bin/python3
source "$(dirname "$0")/cli_lib.sh"
source "$(dirname "$0")/../scripts/mpi_env.sh"
export OMP_NUM_THREADS=1
if ! "$py" -c 'import numpy, torch' 2>/dev/null; then
  echo "SKIP: $py has no numpy/torch for the reference"; exit 77
fi
"$py" tests/eval_reference.py "$tmp/cases" || { echo "FAIL: the reference script"; exit 1; }

run_case() {  # run_case CASE OUT_JSON [extra args...]: reid eval on a case's files
  local c="$tmp/cases/$1" out=$2; shift 2
  local args=()
  while IFS= read -r a; do args+=("$a"); done <"$c/args"
  "$reid" eval --query_features="$c/q.npy" --gallery_features="$c/g.npy" --query_meta="$c/q.csv" \
    --gallery_meta="$c/g.csv" "${args[@]}" --out_json="$out" "$@"
}
compare() {  # compare GOT WANT TOLERANCE: same keys, counts equal, mAP and CMC within TOLERANCE
  "$py" - "$@" <<'EOF'
import json, sys
got, want, tol = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3])
for k in ("num_valid_queries", "num_query", "num_gallery", "rerank"):
    assert got[k] == want[k], (k, got[k], want[k])
assert len(got["cmc"]) == len(want["cmc"]), (len(got["cmc"]), len(want["cmc"]))
assert 0 <= got["mAP"] <= 1 and all(0 <= c <= 1 for c in got["cmc"]), got["mAP"]
diff = max([abs(got["mAP"] - want["mAP"])] + [abs(a - b) for a, b in zip(got["cmc"], want["cmc"])])
print("     max |diff| %.2e (mAP %.6f vs %.6f)" % (diff, got["mAP"], want["mAP"]))
assert diff <= tol, diff
EOF
}

for dir in "$tmp"/cases/*/; do
  c=$(basename "$dir")
  tol=1e-6; [[ $c == rerank* ]] && tol=1e-3
  run_case "$c" "$tmp/$c.json" >"$tmp/$c.log" 2>&1
  check_status=$?
  if [[ $check_status -eq 0 ]] && compare "$tmp/$c.json" "$dir/expected.json" $tol; then
    echo "ok   reference-$c"
  else
    echo "FAIL reference-$c"; sed 's/^/  | /' "$tmp/$c.log" | tail -5; fail=$((fail + 1))
  fi
done

same() { cmp "$1" "$2" && echo identical; }
# Identical (byte for byte) for 1 and 4 threads and for 1 and 2 ranks, plain and re-ranked.
for c in distractors rerank_default; do
  run_case $c "$tmp/t1.json" --set='dist { intra_op_threads: 1 }' >/dev/null 2>&1
  run_case $c "$tmp/t4.json" --set='dist { intra_op_threads: 4 } eval { chunk_rows: 7 }' \
    >/dev/null 2>&1
  expect "threads-1-vs-4-$c" 0 'identical' -- same "$tmp/t1.json" "$tmp/t4.json"
  k="$tmp/cases/$c"
  args=(); while IFS= read -r a; do args+=("$a"); done <"$k/args"
  "$mpiexec" -np 2 "$reid" eval --query_features="$k/q.npy" --gallery_features="$k/g.npy" \
    --query_meta="$k/q.csv" --gallery_meta="$k/g.csv" "${args[@]}" --out_json="$tmp/r2.json" \
    --set='dist { intra_op_threads: 1 timeout_s: 60 }' >"$tmp/r2.log" 2>&1
  expect "ranks-1-vs-2-$c" 0 'identical' -- same "$tmp/t1.json" "$tmp/r2.json"
done

# The retrieval grid of the 9 test vector (query 3 has no valid match): decoded back, its size
# and the border colours of every cell follow the known ranking (junk removed).
t="$tmp/cases/test_vector"
expect "grid-written" 0 "retrieval grid: .*grid.jpg \(2 queries, 12 images unreadable" -- \
  "$reid" eval --query_features="$t/q.npy" --gallery_features="$t/g.npy" --query_meta="$t/q.csv" \
  --gallery_meta="$t/g.csv" --set='eval { max_rank: 5 feat_norm: false }' --visualize=3 \
  --visualize_out="$tmp/grid.jpg"
expect "grid-cells" 0 "^grid ok" -- "$py" - "$tmp/grid.jpg" <<'EOF2'
import sys
from PIL import Image
img = Image.open(sys.argv[1]).convert("RGB")
cell_h, cell_w, gap = 128 + 2 * 4 + 9, 64 + 2 * 4, 4
assert img.size == (gap + 6 * (cell_w + gap), gap + 2 * (cell_h + gap)), img.size
want = ["QRGRGR", "QGRRRR"]  # Q: the query's blue border; G/R: correct/wrong match
for r, row in enumerate(want):
    for c, kind in enumerate(row):
        p = img.getpixel((gap + c * (cell_w + gap) + 2, gap + r * (cell_h + gap) + 70))
        got = "Q" if p[2] > 150 and p[0] < 120 else "G" if p[1] > 120 and p[0] < 100 else \
            "R" if p[0] > 150 and p[1] < 100 else "?"
        assert got == kind, (r, c, p, kind)
print("grid ok")
EOF2
expect "grid-bad-query-index" 2 "visualize_queries: '9' is not a query index in \[0, 3\)" -- \
  "$reid" eval --query_features="$t/q.npy" --gallery_features="$t/g.npy" --query_meta="$t/q.csv" \
  --gallery_meta="$t/g.csv" --visualize_queries=0,9 --visualize_out="$tmp/grid2.jpg"

# Bad input: exit 2, one line naming the file (and the line).
b="$tmp/cases/basic"
good=(--query_features="$b/q.npy" --gallery_features="$b/g.npy" --query_meta="$b/q.csv"
  --gallery_meta="$b/g.csv")
head -n 20 "$b/q.csv" >"$tmp/short.csv"
expect "rows-differ" 2 "q.npy: 60 rows, but .*short.csv describes 19" -- \
  "$reid" eval "${good[@]}" --query_meta="$tmp/short.csv"
"$py" -c "import numpy as np; np.save('$tmp/narrow.npy', np.load('$b/g.npy')[:, :5])"
expect "widths-differ" 2 "feature widths differ" -- "$reid" eval "${good[@]}" \
  --gallery_features="$tmp/narrow.npy"
"$py" -c "import numpy as np; a = np.load('$b/q.npy'); a[7, 3] = np.nan; np.save('$tmp/nan.npy', a)"
expect "nan-feature" 2 "nan.npy: row 7 has a NaN" -- "$reid" eval "${good[@]}" \
  --query_features="$tmp/nan.npy"
echo "path,pid,camid" >"$tmp/empty.csv"
"$py" -c "import numpy as np; np.save('$tmp/empty.npy', np.zeros((0, 32), np.float32))"
expect "empty-query-set" 2 "empty.csv: no rows \(an empty query set\)" -- "$reid" eval "${good[@]}" \
  --query_meta="$tmp/empty.csv" --query_features="$tmp/empty.npy"
sed '5s/.*/img\/q_3.jpg,seven,1/' "$b/q.csv" >"$tmp/badline.csv"
expect "csv-bad-line" 2 "badline.csv:5: expected 'path,pid,camid'" -- "$reid" eval "${good[@]}" \
  --query_meta="$tmp/badline.csv"
sed '1s/.*/path,id,cam/' "$b/q.csv" >"$tmp/badheader.csv"
expect "csv-bad-header" 2 "badheader.csv:1: expected the header" -- "$reid" eval "${good[@]}" \
  --query_meta="$tmp/badheader.csv"
echo "not an array" >"$tmp/text.npy"
expect "not-npy" 2 "text.npy" -- "$reid" eval "${good[@]}" --gallery_features="$tmp/text.npy"
"$py" -c "import numpy as np; np.save('$tmp/int.npy', np.zeros((240, 32), np.int32))"
expect "int-features" 2 "int.npy: expected float32 features" -- "$reid" eval "${good[@]}" \
  --gallery_features="$tmp/int.npy"
expect "missing-meta" 2 "gallery_meta are both required" -- "$reid" eval "${good[@]}" --gallery_meta=
expect "rerank-memory-refused" 2 "re-ranking 60 queries x 240 gallery items .* more than the 1 MiB" -- \
  "$reid" eval "${good[@]}" --rerank --set='eval { rerank_max_memory_mb: 1 }'
# One line on stderr for a bad input.
"$reid" eval "${good[@]}" --query_meta="$tmp/badline.csv" >/dev/null 2>"$tmp/err"
expect "one-error-line" 0 '^1 ' -- wc -l "$tmp/err"
cli_finish
