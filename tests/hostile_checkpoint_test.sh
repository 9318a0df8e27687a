#!/usr/bin/env bash
# Hostile checkpoints: trains a tiny model (seconds), then tests/hostile/make_hostile_checkpoints.py
# crafts damaged copies of its checkpoints. Each case must end as stated within its time limit,
# with short output naming the file, and (for the memory cases) within a memory bound measured by
# GNU time; in every case the run directory's complete checkpoints stay intact and readable.
#   1. loading runs no code: a TorchScript archive as model.pt / optimizer.pt / rng.pt is refused
#      (torch::jit::load would run its never-ending __setstate__); format-1 checkpoints refused
#   2. bounded work and memory: a pickle string length of 0xe5000017, a zip record claiming
#      3.8 GB, sparse model.pt files of 16 GiB and 3 GiB with fitted size and CRC, a FIFO and a
#      link to /dev/zero named model.pt
#   3. meta.pb naming model.pt 20,000 times; an empty meta.pb; garbage optimizer.pt and rng.pt
#   4. order by the position in meta.pb (s2-e10000 after s2-e9999), folders not ours left alone
#   5. leftovers of a killed write removed; a second run in the same directory refused (also under
#      mpirun), a killed run's lock taken over
#   6. a 2-rank checkpoint resumed on 1 rank warns once
# `ckpt verify` reports a damaged checkpoint with exit 1 and one FAILED line (its documented
# verdict); every other command exits 2 with one line naming the file.
# Usage: hostile_checkpoint_test.sh PATH/TO/reid MPIEXEC   (run from the repository root)
set -u
reid=$1 mpiexec=${2:-}
py=/usr/bin/python3
source "$(dirname "$0")/cli_lib.sh"
source "$(dirname "$0")/../scripts/mpi_env.sh"
export OMP_NUM_THREADS=1
if ! $py -c 'import torch' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 with torch is missing (it crafts the checkpoints)"; exit 77
fi
if [[ ! -x /usr/bin/time ]]; then echo "SKIP: GNU time (/usr/bin/time) is missing"; exit 77; fi

data=$tmp/data
"$reid" synth --output_dir="$data" --ids=12 --cameras=3 --images_per_id=6 --seed=5 --height=64 \
  --width=32 >/dev/null || { echo "FAIL: reid synth"; exit 1; }
cfg=(--config=configs/synthetic_tiny.textproto --data_root="$data"
  --set='data { num_workers: 1 }' --set='dist { intra_op_threads: 1 timeout_s: 60 }'
  --set='monitoring { metrics_port_base: 0 }'
  --set='stage1 { max_epochs: 1 ims_per_batch: 24 checkpoint_period: 1 }'
  --set='stage2 { max_epochs: 2 ids_per_batch: 6 ims_per_batch: 24 eval_period: 2 checkpoint_period: 1 }')
run=$tmp/run
start=$SECONDS
"$reid" train "${cfg[@]}" --output_dir="$run" >"$tmp/train.log" 2>&1 ||
  { echo "FAIL: reid train"; tail "$tmp/train.log"; exit 1; }
echo "     trained in $((SECONDS - start))s"
cases=$tmp/cases
$py tests/hostile/make_hostile_checkpoints.py "$run" "$cases" ||
  { echo "FAIL: make_hostile_checkpoints.py"; exit 1; }
ck=$cases/ckpt
newest=$(ls -d "$run"/checkpoints/s2-* | sort | tail -1)

# crafted NAME STATUS SECONDS MAX_MB PATTERN -- command...: exits STATUS within SECONDS, its
# largest resident set (GNU time, the command and its children) at most MAX_MB, at most 6 lines
# (${lines_max:-6}: `ckpt show` prints the metadata) and 1,000 bytes of output matching PATTERN (an
# extended regular expression).
crafted() {
  local name=$1 want=$2 limit=$3 max_mb=$4 pattern=$5; shift 6
  local start=$SECONDS
  /usr/bin/time -f '%M' -o "$tmp/rss" timeout -s KILL "$limit" "$@" >"$tmp/out" 2>&1 </dev/null
  local got=$? took=$((SECONDS - start)) lines bytes mb
  mb=$(($(tail -1 "$tmp/rss" | tr -dc 0-9) / 1024))
  lines=$(wc -l <"$tmp/out"); bytes=$(wc -c <"$tmp/out")
  if [[ $got -ne $want ]] || ! grep -qE -- "$pattern" "$tmp/out" ||
      ((lines > ${lines_max:-6} || (bytes > 1000 && ${lines_max:-6} == 6))) ||
      ((mb > max_mb)); then
    echo "FAIL $name: status $got (want $want) after ${took}s, ${mb} MB (max $max_mb), $lines lines, pattern '$pattern'"
    head -c 800 "$tmp/out" | sed 's/^/  | /'
    fail=$((fail + 1))
  else
    echo "ok   $name (${took}s, ${mb} MB)"
  fi
}
# The commands on checkpoint $1, as scripts (timeout runs programs, not shell functions): verify,
# show, diff against the real newest, resume, eval.
wrap() {  # wrap NAME WORDS...: $tmp/NAME runs WORDS with the checkpoint (@CK@) in place
  local name=$1; shift
  printf '#!/usr/bin/env bash\nexec' >"$tmp/$name"
  for w in "$@"; do
    if [[ $w == *@CK@* ]]; then printf ' %q"$1"%q' "${w%%@CK@*}" "${w#*@CK@}"; else printf ' %q' "$w"; fi
  done >>"$tmp/$name"
  echo >>"$tmp/$name"
  chmod +x "$tmp/$name"
}
wrap verify "$reid" ckpt verify @CK@
wrap show "$reid" ckpt show @CK@
wrap diff_ "$reid" ckpt diff @CK@ "$newest"
wrap resume "$reid" train "${cfg[@]}" --output_dir="$tmp/resumed" --resume=@CK@
wrap eval_ "$reid" eval "${cfg[@]}" --checkpoint=@CK@
for c in verify show diff_ resume eval_; do eval "$c=$tmp/$c"; done

# 1. No code runs: the looping __setstate__ would never return under torch::jit::load.
for f in model optimizer rng; do
  crafted "code-in-$f-resume" 2 30 1000 "code-in-$f/$f.pt: not a checkpoint tensor file" -- \
    "$resume" "$ck-code-in-$f"
done
crafted code-in-model-diff 2 30 1000 "code-in-model/model.pt: not a checkpoint tensor file" -- \
  "$diff_" "$ck-code-in-model"
crafted code-in-model-eval 2 30 1000 "code-in-model/model.pt: not a checkpoint tensor file" -- \
  "$eval_" "$ck-code-in-model"
for cmd in verify show diff_ resume eval_; do
  crafted "format1-${cmd%_}" 2 30 1000 "meta.pb: format_version 1, written by an earlier build: .*TorchScript loader" -- \
    "${!cmd}" "$ck-format1"
done
loaders=$(grep -nE 'jit::load|InputArchive|OutputArchive|optimizer_->(save|load)' trainer/checkpoint.cc \
  trainer/trainer.cc trainer/stage1.cc trainer/stage2.cc cli/cmd_ckpt.cc cli/cmd_import.cc \
  trainer/eval/inference_model.cc trainer/optimizer_state.cc formats/torch_save_reader.cc)
if [[ -z $loaders ]]; then echo "ok   no-torchscript-loader-on-checkpoint-paths"
else echo "FAIL no-torchscript-loader-on-checkpoint-paths:"; echo "$loaders"; fail=$((fail + 1)); fi

# 2. Bounded work and memory.
for cmd in diff_ resume; do
  crafted "pickle-length-${cmd%_}" 2 30 1000 "pickle-length/model.pt: not a checkpoint tensor file \(truncated pickle\)" -- \
    "${!cmd}" "$ck-pickle-length"
  crafted "zip-record-size-${cmd%_}" 2 30 1000 "zip-record-size/model.pt: .*claims 3841982487 bytes but the file holds" -- \
    "${!cmd}" "$ck-zip-record-size"
done
crafted sparse-16g-verify 1 30 200 "^FAILED .*sparse-16g/model.pt: 17 GB is more than the 4 GiB limit for model.pt" -- \
  "$verify" "$ck-sparse-16g"
lines_max=100 crafted sparse-16g-show 0 30 200 "# not valid: .*sparse-16g/model.pt: 17 GB is more than the 4 GiB limit" -- \
  "$show" "$ck-sparse-16g"
for cmd in diff_ resume eval_; do
  crafted "sparse-16g-${cmd%_}" 2 30 1000 "sparse-16g/model.pt: 17 GB is more than the 4 GiB limit for model.pt" -- \
    "${!cmd}" "$ck-sparse-16g"
done
# 3 GiB is within the 4 GiB a model.pt may hold: verify reads it in 4 MiB pieces (size and CRC
# fit, so it is OK); resume knows the model it built and refuses it before reading.
crafted sparse-3g-verify 0 60 200 "^OK .*sparse-3g" -- "$verify" "$ck-sparse-3g"
crafted sparse-3g-resume 2 60 1000 "sparse-3g/model.pt: 3.2 GB \(3221225472 bytes\) is more than the [0-9]+ [A-Za-z]+ limit for model.pt \(the model of this config holds [0-9.]+ [kM]B\)" -- \
  "$resume" "$ck-sparse-3g"
for kind in "fifo:a FIFO" "dev-zero:a character device"; do
  c=${kind%%:*} what=${kind#*:}
  crafted "$c-verify" 1 30 200 "^FAILED .*$c/model.pt: not a regular file \($what\)" -- "$verify" "$ck-$c"
  for cmd in diff_ resume; do
    crafted "$c-${cmd%_}" 2 30 1000 "$c/model.pt: not a regular file \($what\)" -- "${!cmd}" "$ck-$c"
  done
done

# 3. meta.pb: 20,000 entries, an empty one, garbage tensor files with fitted CRCs.
crafted meta-20000-verify 1 10 200 "^FAILED .*meta-20000/meta.pb: lists 2000[0-9] files \(a checkpoint has at most 16\)" -- \
  "$verify" "$ck-meta-20000"
for cmd in show diff_ resume; do
  crafted "meta-20000-${cmd%_}" 2 10 1000 "meta-20000/meta.pb: lists 2000[0-9] files" -- "${!cmd}" "$ck-meta-20000"
done
for f in optimizer rng; do
  crafted "garbage-$f-resume" 2 30 1000 "garbage-$f/$f.pt: not a checkpoint tensor file \(" -- \
    "$resume" "$ck-garbage-$f"
done
r=$cases/run-empty-meta
empty=$(ls -d "$r"/checkpoints/s2-* | sort | tail -1)
crafted empty-meta-verify 1 10 200 "^FAILED .*meta.pb: lists no model.pt \(0 files\)" -- "$verify" "$empty"
"$reid" train "${cfg[@]}" --output_dir="$r" --resume=auto >"$tmp/empty.log" 2>&1
check() {  # check NAME CONDITION [log]
  if eval "$2"; then echo "ok   $1"; else
    echo "FAIL $1"; [[ -n ${3:-} ]] && tail -20 "$3" | sed 's/^/  | /'; fail=$((fail + 1)); fi
}
check empty-meta-resume-auto-skips "[[ \$? -eq 0 ]] && grep -q 'skipping damaged checkpoint: .*meta.pb: lists no model.pt' '$tmp/empty.log' && grep -q '^resuming from .*/s2-e0002-i000000' '$tmp/empty.log'" "$tmp/empty.log"

# 4. Order by position: s2-e9999 is newer than s2-e0003 and older than s2-e10000 (which sorts
# before it by name); sz-... and s9-... (copies under other names) are not ours.
r=$cases/run-order
lines_max=100 crafted order-show 0 30 1000 "^checkpoint .*/s2-e9999-i000000$" -- "$show" "$r"
"$reid" train "${cfg[@]}" --output_dir="$r" --resume=auto \
  --set='stage2 { max_epochs: 10000 eval_period: 10000 }' --set='checkpoint { keep_last_n: 1 }' \
  >"$tmp/order.log" 2>&1
check order-resume-auto-takes-e9999 "[[ \$? -eq 0 ]] && grep -q '^resuming from .*/s2-e9999-i000000 ' '$tmp/order.log'" "$tmp/order.log"
check order-newest-kept "[[ -f $r/checkpoints/s2-e10001-i000000/meta.pb ]] && grep -q 'latest: \"s2-e10001-i000000\"' $r/checkpoints/index.txtpb"
check order-e10000-pruned-not-e10001 "[[ ! -e $r/checkpoints/s2-e10000-i000000 ]]"
check order-not-ours-left-alone "[[ -d $r/checkpoints/sz-e9999-i000000 && -d $r/checkpoints/s9-e0001-i000000 ]]"
check order-warns-not-ours "grep -q 'ignoring .*s9-e0001-i000000: its meta.pb records the position s2-e9999-i000000' '$tmp/order.log'"
lines_max=100 crafted order-show-after 0 30 1000 "^checkpoint .*/s2-e10001-i000000$" -- "$show" "$r"

# 5. Leftovers of a killed write; concurrent runs; a killed run's lock.
r=$cases/run-leftovers
"$reid" train "${cfg[@]}" --output_dir="$r" --resume=auto >"$tmp/leftovers.log" 2>&1
check leftovers-removed "[[ \$? -eq 0 && ! -e $r/checkpoints/.tmp-s2-e0009-i000000 ]] && grep -q '^removed .*/.tmp-s2-e0009-i000000 (left by a run stopped while writing it)' '$tmp/leftovers.log'" "$tmp/leftovers.log"
busy=$tmp/busy
long=(--set='stage2 { max_epochs: 400 checkpoint_period: 1 eval_period: 400 }')
"$reid" train "${cfg[@]}" "${long[@]}" --output_dir="$busy" >"$tmp/busy.log" 2>&1 &
holder=$!
for _ in $(seq 1 600); do
  grep -q "^checkpoint .*/s2-" "$tmp/busy.log" 2>/dev/null && break; sleep 0.1
done
crafted concurrent-second-run 2 30 1000 "output_dir=$busy is in use by another reid train \(pid $holder on host $(hostname); lock file $busy/train.lock\)" -- \
  "$reid" train "${cfg[@]}" "${long[@]}" --output_dir="$busy"
if [[ -n $mpiexec ]]; then
  start=$SECONDS
  timeout -s KILL 60 "$mpiexec" -np 2 "$reid" train "${cfg[@]}" "${long[@]}" --output_dir="$busy" \
    >"$tmp/mpi.log" 2>&1
  got=$?
  check concurrent-second-run-mpirun "[[ $got -eq 2 ]] && [[ \$(grep -c 'is in use by another reid train (pid $holder' '$tmp/mpi.log') -eq 1 ]]" "$tmp/mpi.log"
  echo "     (mpirun: status $got after $((SECONDS - start))s)"
fi
kill -KILL $holder; wait $holder 2>/dev/null
bad=0
for c in "$busy"/checkpoints/s*; do "$reid" ckpt verify "$c" >/dev/null || bad=$((bad + 1)); done
check killed-run-checkpoints-intact "[[ $bad -eq 0 ]]"
"$reid" train "${cfg[@]}" --output_dir="$busy" --resume=auto \
  --set='stage2 { max_epochs: 2 checkpoint_period: 1 eval_period: 2 }' >"$tmp/takeover.log" 2>&1
check stale-lock-taken-over "[[ \$? -eq 0 ]] && grep -q 'taken over from pid $holder on host' '$busy/logs/rank0.log'" "$tmp/takeover.log"

# 6. A 2-rank checkpoint resumed on 1 rank: one warning naming both world sizes.
if [[ -n $mpiexec ]]; then
  "$mpiexec" -np 2 "$reid" train "${cfg[@]}" --output_dir="$tmp/r2" >"$tmp/r2.log" 2>&1 ||
    { echo "FAIL: 2-rank training"; tail "$tmp/r2.log"; fail=$((fail + 1)); }
  "$reid" train "${cfg[@]}" --output_dir="$tmp/r2to1" \
    --resume="$tmp/r2/checkpoints/s2-e0002-i000000" >"$tmp/r2to1.log" 2>&1
  check world-size-change-warns "[[ \$? -eq 0 ]] && [[ \$(grep -c 'was written by 2 rank(s), this run has 1: not exact from here on: the RNG streams of rank 1 are dropped' '$tmp/r2to1.log') -eq 1 ]]" "$tmp/r2to1.log"
fi

# Nothing lost: every checkpoint of the run (which the cases copied) still verifies and loads.
bad=0
for c in "$run"/checkpoints/s*; do
  "$reid" ckpt verify "$c" >/dev/null && "$reid" ckpt diff "$c" "$c" >/dev/null || bad=$((bad + 1))
done
check run-checkpoints-intact "[[ $bad -eq 0 ]]"
cli_finish
