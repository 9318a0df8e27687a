#!/usr/bin/env bash
# `reid report` opened in a real browser (Debian's headless Chromium): a run directory with a
# history of both stages (plus hostile and broken lines), metrics.json, the config and a real JPEG
# as the retrieval grid; the report must load with no console message at all (no script error, no
# blocked fetch: the page's Content-Security-Policy allows nothing external), its script must count
# the plots it drew (document.title in the dumped DOM), hostile strings must stay text, and the
# screenshot must show the plot lines (pixels of the plot colours).
# Usage: tests/report_browser_test.sh PATH/TO/reid (from the repository root); exit 77 without
# chromium.
set -u
reid=$1
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [[ -z $browser ]]; then
  echo "SKIP: chromium is missing (apt-get install chromium)"; exit 77
fi
tmp=$(mktemp -d)
trap '[[ -n ${KEEP:-} ]] && echo "kept $tmp" || rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
run=$tmp/run
mkdir -p "$run"

# --- the run directory ----------------------------------------------------------------------
/usr/bin/python3 - "$run/history.jsonl" <<'PY'
import json, math, sys
out, step, t = [], 0, 1.7e9
for stage, epochs in ((1, 6), (2, 8)):
    for epoch in range(1, epochs + 1):
        for _ in range(3):
            step += 10; t += 4
            if stage == 1:
                losses = {'total': 3 * math.exp(-step / 150) + 0.2}
                losses['supcon'] = losses['total']
            else:
                i, tr, i2t = (1.5 * math.exp(-(step - 180) / 200) + 0.1, 0.6 * math.exp(-(step - 180) / 150),
                              0.4 * math.exp(-(step - 180) / 180) + 0.1)
                losses = {'total': i + tr + i2t, 'id': i, 'triplet': tr, 'i2t': i2t}
            out.append(json.dumps({'kind': 'STEP', 'time': t, 'stage': stage, 'epoch': epoch,
                                   'step': step, 'losses': losses,
                                   'lr': (3.5e-4 if stage == 1 else 5e-6) * min(1, epoch / 2),
                                   'imagesPerS': 300 + 20 * math.sin(step), 'dataWaitFraction': 0.03,
                                   'map': 0, 'cmc': []}))
        if stage == 2 and epoch % 2 == 0:
            m = 0.8 - 0.4 * math.exp(-epoch / 3)
            out.append(json.dumps({'kind': 'EVAL', 'time': t, 'stage': 2, 'epoch': epoch, 'step': step,
                                   'map': m, 'cmc': [min(1, m + 0.1 + 0.01 * k) for k in range(10)]}))
# hostile and broken lines: markup in a loss name, a NaN loss, garbage, a cut-off record
out.insert(5, json.dumps({'kind': 'STEP', 'stage': 1, 'epoch': 1, 'step': 15,
                          'losses': {'<img src=x onerror=alert(1)>': 1.0, 'total': 'NaN'}}))
out.insert(9, 'this is not json')
out.insert(12, '{"kind":"STEP","step":')
open(sys.argv[1], 'w').write('\n'.join(out) + '\n')
PY
printf '{"mAP":0.7,"cmc":[0.8,0.85,0.88,0.9,0.91,0.92,0.93,0.94,0.95,0.96],"num_valid_queries":64,"num_query":64,"num_gallery":320,"stage":2,"epoch":8}\n' >"$run/metrics.json"
cp configs/synthetic_tiny.textproto "$run/config.textproto"
printf 'name: "</pre><script>document.title=\\"pwned\\"</script>"\n' >>"$run/config.textproto"
"$reid" synth --output_dir="$tmp/synth" --ids=2 --images_per_id=2 --cameras=2 >/dev/null 2>&1 &&
  cp "$(find "$tmp/synth" -name '*.jpg' | head -1)" "$run/retrieval_grid.jpg"
[[ -f $run/retrieval_grid.jpg ]] && ok "retrieval grid JPEG from reid synth" || bad "reid synth"

# --- reid report --------------------------------------------------------------------------------
"$reid" report --run_dir="$run" >"$tmp/report.out" 2>&1
rc=$?
cat "$tmp/report.out"
[[ $rc -eq 0 && -s $run/report.html ]] && ok "reid report exit 0" || bad "reid report exit $rc"
grep -q "history.jsonl:10: not a HistoryRecord" "$tmp/report.out" && ok "bad line reported by number" ||
  bad "no warning for line 10"
"$reid" report --run_dir="$tmp/missing" >"$tmp/missing.out" 2>&1
rc=$?
[[ $rc -eq 2 ]] && grep -q "no such directory" "$tmp/missing.out" && ok "missing dir: exit 2" ||
  bad "missing dir: exit $rc"
mkdir -p "$tmp/empty_run"
"$reid" report --run_dir="$tmp/empty_run" >"$tmp/nohist.out" 2>&1
rc=$?
[[ $rc -eq 2 ]] && grep -q "history.jsonl: not found" "$tmp/nohist.out" && ok "no history: exit 2" ||
  bad "no history: exit $rc"

# --- the browser --------------------------------------------------------------------------------
chrome() {  # chrome OUT ARGS...: headless Chromium on the report, its stderr (console) in OUT.log
  local out=$1; shift
  timeout 90 "$browser" --headless --no-sandbox --disable-gpu --no-first-run \
    --user-data-dir="$tmp/profile" --enable-logging=stderr --v=0 "$@" \
    "file://$run/report.html" >"$out" 2>"$out.log"
}
chrome "$tmp/dom.html" --dump-dom
rc=$?
[[ $rc -eq 0 && -s $tmp/dom.html ]] && ok "chromium --dump-dom" || bad "chromium --dump-dom exit $rc"
if grep -E ':CONSOLE|Uncaught' "$tmp/dom.html.log"; then bad "console messages"; else
  ok "no console message"; fi
title=$(grep -o '<title>[^<]*</title>' "$tmp/dom.html" | head -1)
echo "     $title"
plots=$(sed -nE 's/.*: ([0-9]+) plots, ([0-9]+) lines, ([0-9]+) points.*/\1/p' <<<"$title")
lines=$(sed -nE 's/.*: ([0-9]+) plots, ([0-9]+) lines, ([0-9]+) points.*/\2/p' <<<"$title")
[[ $plots == 6 ]] && ok "script counted 6 plots" || bad "plots: '$plots' (want 6)"
[[ ${lines:-0} -ge 13 ]] && ok "script counted $lines polylines" || bad "polylines: '$lines' (want >= 13)"
grep -q '&lt;img src=x onerror=alert' "$tmp/dom.html" && ! grep -q '<img src="x"' "$tmp/dom.html" &&
  ok "hostile loss name is text" || bad "hostile loss name became markup"
grep -q 'pwned' <<<"$title" && bad "config text ran as script" || ok "config text is not markup"
[[ $(grep -c '<img class="grid"' "$tmp/dom.html") == 1 ]] && ok "retrieval grid embedded" ||
  bad "no grid image"

chrome "$tmp/shot.out" --screenshot="$tmp/shot.png" --window-size=1280,2200 --hide-scrollbars
rc=$?
[[ $rc -eq 0 && -s $tmp/shot.png ]] && ok "chromium --screenshot" || bad "chromium --screenshot exit $rc"
if [[ -s $tmp/shot.png ]]; then
  # The first two palette colours (the first two series of every plot) and white.
  stats=$(/usr/bin/python3 tests/png_pixels.py "$tmp/shot.png" '#1f77b4' '#ff7f0e')
  echo "     $stats"
  /usr/bin/python3 - "$stats" <<'PY' && ok "screenshot shows the plots" || bad "screenshot looks blank"
import json, sys
s = json.loads(sys.argv[1])
ok = (s['non_white'] > 0.03 * s['pixels'] and s['non_white'] < 0.9 * s['pixels'] and
      min(s['near'].values()) > 1000)
sys.exit(0 if ok else 1)
PY
fi
echo "$fail failed"
((fail == 0))
