#!/usr/bin/env bash
# reid-launch end to end (2 CPU ranks through mpirun): a rank killed with SIGKILL mid-run makes the
# launcher restart the whole job with --resume=auto, which finishes with the same parameters as a
# clean run; SIGTERM to the launcher reaches the ranks as SIGUSR1 (checkpoint, exit 75, no restart)
# and the run resumes to the same parameters; user errors exit 2 with one clear line.
# Usage: launch_test.sh PATH/TO/reid PATH/TO/reid-launch   (run from the repository root)
set -u
reid=$(realpath "$1") launch=$(realpath "$2")
source "$(dirname "$0")/cli_lib.sh"
source "$(dirname "$0")/../scripts/mpi_env.sh"
export OMP_NUM_THREADS=1
unset CUDA_VISIBLE_DEVICES  # CPU ranks here: no GPU limits --nproc_per_node

data="$tmp/data"
"$reid" synth --output_dir="$data" --ids=18 --cameras=3 --images_per_id=6 --seed=3 --height=64 \
  --width=32 >/dev/null || { echo "FAIL: reid synth"; exit 1; }
train=("$reid" train --config=configs/synthetic_tiny.textproto --data_root="$data"
  --set='stage1 { max_epochs: 2 ims_per_batch: 24 log_period: 1 checkpoint_period: 1 }'
  --set='stage2 { max_epochs: 4 ids_per_batch: 6 ims_per_batch: 24 eval_period: 2 checkpoint_period: 1 log_period: 1 }'
  --set='data { num_workers: 1 }' --set='dist { intra_op_threads: 1 timeout_s: 60 }')

final() { ls -d "$1"/checkpoints/s2-* 2>/dev/null | sort | tail -1; }
check() {  # check NAME CONDITION [log]
  if eval "$2"; then echo "ok   $1"; else
    echo "FAIL $1"; [[ -n ${3:-} ]] && tail -25 "$3" | sed 's/^/  | /'; fail=$((fail + 1)); fi
}
secs() { echo $(( $(date +%s) - $1 )); }
ranks_of() {  # the trainer processes (not the launcher or mpirun) writing to run dir $1
  for p in $(pgrep -f -- "--output_dir=$1( |$)"); do
    [[ $(readlink "/proc/$p/exe") == "$reid" ]] && echo "$p"
  done
}
wait_for() {  # wait_for CONDITION: up to 120 s
  for _ in $(seq 1 1200); do eval "$1" && return 0; sleep 0.1; done
  return 1
}
same='max_abs_diff=0.000000e+00 max_rel_diff=0.000000e+00'

# The reference: an uninterrupted 2-rank run through the launcher.
t=$(date +%s)
"$launch" --nproc_per_node=2 -- "${train[@]}" --output_dir="$tmp/clean" >"$tmp/clean.log" 2>&1
check "clean-run ($(secs $t) s)" '[[ $? -eq 0 && -n $(final "$tmp/clean") ]]' "$tmp/clean.log"

# SIGKILL to one trainer once stage 2 has written its first checkpoint: mpirun ends the job, the
# launcher restarts it with --resume=auto, the restart resumes from the newest valid checkpoint.
out="$tmp/killed"
t=$(date +%s)
"$launch" --nproc_per_node=2 --max_restarts=1 --restart_delay_s=1 -- "${train[@]}" \
  --output_dir="$out" >"$out.log" 2>&1 &
job=$!
wait_for '[[ -d $out/checkpoints/s2-e0002-i000000 ]]'
victim=$(ranks_of "$out" | tail -1)
check "found-a-rank-to-kill" '[[ -n $victim ]]' "$out.log"
kill -KILL $victim
wait $job; rc=$?
echo "     killed rank $victim: launcher exit status $rc after $(secs $t) s"
grep "reid-launch: job failed" "$out.log" | sed 's/^/     /'
check "killed-rank-restarted" '[[ $rc -eq 0 ]] && grep -q "job failed with exit status [1-9][0-9]* on attempt 1; restart 1/1 in 1 s with --resume=auto" "$out.log"' "$out.log"
check "restart-has-resume-auto" 'grep -q "attempt 2/2: .* --resume=auto$" "$out.log" && grep -q "resuming from" "$out.log"' "$out.log"
line=$("$reid" ckpt diff "$(final "$tmp/clean")" "$(final "$out")" | tail -1)
echo "     killed + restarted vs clean: $line"
check "restarted-run-same-parameters" '[[ $line == "$same" ]]'

# SIGTERM to the launcher: the ranks get SIGUSR1, checkpoint at the same step and exit 75; the
# launcher does not restart (preemption) and exits 75; --resume=auto then finishes the run.
out="$tmp/preempted"
"$launch" --nproc_per_node=2 --max_restarts=1 --restart_delay_s=1 -- "${train[@]}" \
  --output_dir="$out" >"$out.log" 2>&1 &
job=$!
wait_for 'grep -q "^stage 2 epoch" "$out.log"'
kill -TERM $job
wait $job; rc=$?
check "sigterm-checkpoints-and-exits-75" '[[ $rc -eq 75 ]] && grep -q "stopped by a signal after writing a checkpoint (exit status 75)" "$out.log"' "$out.log"
check "sigterm-not-restarted" 'grep -q "preempted: checkpoint written); not restarting" "$out.log" && ! grep -q "attempt 2/" "$out.log"' "$out.log"
"$launch" --nproc_per_node=2 -- "${train[@]}" --output_dir="$out" --resume=auto >"$out.2.log" 2>&1
check "preempted-run-resumes" '[[ $? -eq 0 ]] && grep -q "resuming from" "$out.2.log"' "$out.2.log"
line=$("$reid" ckpt diff "$(final "$tmp/clean")" "$(final "$out")" | tail -1)
echo "     SIGTERM + resume vs clean: $line"
check "preempted-run-same-parameters" '[[ $line == "$same" ]]'

# User errors: exit 2, one line naming what is wrong.
expect no-command 2 'no command' -- "$launch" --nproc_per_node=2
expect mpirun-missing 2 'mpirun=/nonexistent/mpirun: no such executable; install Open MPI \(Debian package openmpi-bin\)' -- \
  "$launch" --mpirun=/nonexistent/mpirun -- "$reid" version
expect mpirun-not-on-path 2 'mpirun=mpirun: not found on PATH' -- env PATH=/nonexistent "$launch" -- "$reid" version
expect command-not-found 2 "command 'no-such-trainer' not found on PATH" -- "$launch" -- no-such-trainer train
expect too-many-ranks 2 'nproc_per_node=2: only 1 GPU\(s\) visible' -- \
  env CUDA_VISIBLE_DEVICES=0 "$launch" --nproc_per_node=2 -- "$reid" version
expect bad-flag 2 'unknown flag --nprocs' -- "$launch" --nprocs=2 -- "$reid" version
expect job-status 3 'no restarts left' -- "$launch" -- /bin/sh -c 'exit 3'

cli_finish
