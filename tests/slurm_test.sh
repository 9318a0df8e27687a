#!/usr/bin/env bash
# slurm/train.sbatch on a real single-node SLURM cluster (munge, slurmctld, slurmd on 127.0.0.1,
# started and stopped here): 2 tasks of the shrunk synthetic config run to completion, the
# shrinking overrides given as a fragment file (REID_SET_FILE: a data root with a space) and a
# --set with spaces and quotes after the script name, both reaching the trainer intact; a second
# job gets the preemption signal as SLURM's --signal=USR1@N sends it (to every srun task, not to
# the batch script: `scancel --signal=USR1 JOB`), checkpoints, exits 75, requeues itself,
# restarts with SLURM_RESTART_COUNT=1, resumes and finishes with the same parameters as the first
# job. An array job of 2 tasks takes one fragment each of a REID_SET_FILE glob, srun gets
# --cpus-per-task and each task's file_sd targets file exists while it runs (a stand-in REID_BIN
# prints what it is given); REID_ARGS is refused (exit 2).
# MODE batch: the same with --nodes=1 on the sbatch line and the signal sent as
# --signal=B:USR1@N sends it (to the batch script only: `scancel --signal=USR1 --batch JOB`),
# which the script must trap and forward to srun.
# With PATH/TO/reid-launch: reid-launch inside an allocation starts its ranks through srun.
# Exit 77 (skipped) without munge / SLURM / PMIx.
# Usage: slurm_test.sh PATH/TO/reid [step|batch] [PATH/TO/reid-launch]   (from the repository root)
set -u
reid=$(realpath "$1") mode=${2:-step} launch=${3:+$(realpath "$3")}
if [[ $mode == batch ]]; then
  template=(--nodes=1 slurm/train.sbatch) signal=(--signal=USR1 --batch)
else
  template=(slurm/train.sbatch) signal=(--signal=USR1)
fi
source "$(dirname "$0")/slurm_lib.sh"
slurm_requirements || exit 77
source "$(dirname "$0")/cli_lib.sh"
source "$(dirname "$0")/../scripts/mpi_env.sh"  # exported into the jobs (sbatch --export=ALL)
export OMP_NUM_THREADS=1
trap 'slurm_stop; rm -rf "$tmp"' EXIT
t0=$(date +%s)
slurm_start || exit 1
srun --mpi=list 2>&1 | grep -q pmix || { echo "SKIP: srun has no PMIx plugin"; exit 77; }
echo "     cluster up in $(( $(date +%s) - t0 )) s"

check() {  # check NAME CONDITION [log]
  if eval "$2"; then echo "ok   $1"; else
    echo "FAIL $1"; [[ -n ${3:-} ]] && tail -30 "$3" | sed 's/^/  | /'; fail=$((fail + 1)); fi
}
final() { ls -d "$1"/checkpoints/s2-* 2>/dev/null | sort | tail -1; }

# The synthetic config shrunk to ~20 s for 2 ranks on 2 cores, as a config fragment (REID_SET_FILE)
# over configs/synthetic_tiny.textproto, with its data in a folder whose name has a space; the
# run's name (a --set after the script name) has spaces and both kinds of quotes.
data="$tmp/data dir"
"$reid" synth --output_dir="$data" --ids=18 --cameras=3 --images_per_id=6 --seed=3 --height=64 \
  --width=32 >/dev/null || { echo "FAIL: reid synth"; exit 1; }
cat >"$tmp/shrink.textproto" <<EOF
data { root: "$data" num_workers: 1 }
stage1 { max_epochs: 2 ims_per_batch: 24 log_period: 1 checkpoint_period: 1 }
stage2 { max_epochs: 4 ids_per_batch: 6 ims_per_batch: 24 eval_period: 2 checkpoint_period: 1 log_period: 1 }
dist { intra_op_threads: 1 timeout_s: 60 }
monitoring { metrics_port_base: 0 }
EOF
name_set="--set=name: 'it\\'s a \"quoted\" run'"
want_name=$("$reid" print-config "$name_set" | grep '^name: ')
submit() {  # submit NAME: sbatch the template for 2 tasks on this GPU-less node; prints the id
  REID_BIN="$reid" REID_CONFIG=configs/synthetic_tiny.textproto REID_SET_FILE="$tmp/shrink.textproto" \
    REID_OUTPUT_DIR="$tmp/$1" sbatch --parsable --job-name="$1" --ntasks-per-node=2 \
    --gpus-per-node=0 --cpus-per-task=1 --output="$tmp/%x-%j.out" "${template[@]}" "$name_set"
}
echo "     ${template[*]}, preemption signal: scancel ${signal[*]}"

# 0. reid-launch inside an allocation starts its 2 tasks through srun (PMIx).
if [[ -n $launch ]]; then
  id=$(sbatch --parsable --job-name=launch --ntasks-per-node=2 --cpus-per-task=1 \
    --output="$tmp/%x-%j.out" --wrap "$launch --nproc_per_node=2 -- $reid version")
  state=$(slurm_wait_job "$id" 60)
  log="$tmp/launch-$id.out"
  check "reid-launch-uses-srun" '[[ $state == COMPLETED ]] && grep -q "through srun" "$log" && grep -q "attempt 1/1: .*srun --mpi=pmix --kill-on-bad-exit=1 --nodes=1 --ntasks=2 --ntasks-per-node=2 " "$log" && [[ $(grep -c "^reid-train " "$log") -eq 2 ]]' "$log"
fi

# 1. An uninterrupted job.
t=$(date +%s)
id=$(submit clean)
state=$(slurm_wait_job "$id" 240)
log="$tmp/clean-$id.out"
echo "     job $id: $state after $(( $(date +%s) - t )) s"
check "sbatch-train-completes" '[[ $state == COMPLETED ]] && grep -q "^done: mAP" "$log"' "$log"
check "sbatch-two-ranks" 'grep -q "run it_s_a__quoted__run on 2 rank(s)" "$log" && grep -q "SLURM_RESTART_COUNT=0" "$log"' "$log"
check "override-with-quotes-intact" '[[ -n $want_name ]] && grep -qxF "$want_name" "$tmp/clean/config.textproto" && grep -qF "root: \"$data\"" "$tmp/clean/config.textproto"' "$log"

# 2. A job preempted in stage 2: SIGUSR1 as --signal=USR1@N (or B:USR1@N) delivers it.
t=$(date +%s)
id=$(submit preempted)
log="$tmp/preempted-$id.out"
for _ in $(seq 1 1200); do
  [[ -d $tmp/preempted/checkpoints/s2-e0002-i000000 ]] && break; sleep 0.1
done
scancel "${signal[@]}" "$id"
for _ in $(seq 1 600); do  # requeued: Restarts=1 (then PENDING until cred_expire has passed)
  [[ $(slurm_job_field "$id" Restarts) -ge 1 ]] && break; sleep 0.1
done
echo "     job $id requeued after $(( $(date +%s) - t )) s"
state=$(slurm_wait_job "$id" 240)
echo "     job $id: $state after $(( $(date +%s) - t )) s (Restarts=$(slurm_job_field "$id" Restarts))"
check "preempted-checkpoints-and-exits-75" 'grep -q "stopped by a signal after writing a checkpoint (exit status 75)" "$log" && grep -q "srun exit status 75," "$log"' "$log"
[[ $mode == batch ]] && check "batch-script-forwards-usr1" 'grep -q "batch script: SIGUSR1, forwarded to srun" "$log"' "$log"
check "preempted-requeues-itself" 'grep -q "stopped after a checkpoint: requeueing job $id (restart 1)" "$log"' "$log"
check "requeued-job-restarts" 'grep -q "SLURM_RESTART_COUNT=1" "$log" && grep -q "resuming from" "$log"' "$log"
check "requeued-job-completes" '[[ $state == COMPLETED ]] && grep -q "^done: mAP" "$log"' "$log"
line=$("$reid" ckpt diff "$(final "$tmp/clean")" "$(final "$tmp/preempted")" | tail -1)
echo "     preempted + requeued vs uninterrupted: $line"
check "preempted-run-same-parameters" '[[ $line == "max_abs_diff=0.000000e+00 max_rel_diff=0.000000e+00" ]]'
[[ $fail -eq 0 && ${SLURM_TEST_SHOW_LOG:-0} != 1 ]] || cat "$tmp"/preempted-*.out

# 3. An array job over a glob of fragments, with a stand-in for reid that prints its arguments;
#    and REID_ARGS, which is refused.
mkdir -p "$tmp/frag"
printf 'name: "t_a"\nprompt { template: "A photo of {ctx}." }\n' >"$tmp/frag/a.textproto"
printf 'name: "t_b"\n' >"$tmp/frag/b.textproto"
printf '#!/bin/bash\necho "cpus-per-task=${SLURM_CPUS_PER_TASK:-unset}"\nprintf "arg<%%s>\\n" "$@"\n%s\n' \
  'for f in "$REID_PROM_TARGETS_DIR"/*.json; do echo "target file $(basename "$f"): $(cat "$f")"; done' \
  >"$tmp/echo_reid"
mkdir -p "$tmp/targets"
chmod +x "$tmp/echo_reid"
id=$(REID_BIN="$tmp/echo_reid" REID_SET_FILE="$tmp/frag/*.textproto" REID_PROM_TARGETS_DIR="$tmp/targets" sbatch --parsable \
  --job-name=array --array=0-1 --ntasks-per-node=1 --gpus-per-node=0 --cpus-per-task=1 \
  --output="$tmp/%x-%A_%a.out" slurm/train.sbatch "--set=a b 'c'")
s0=$(slurm_wait_job "${id}_0" 60) s1=$(slurm_wait_job "${id}_1" 60)
a=$tmp/array-${id}_0.out b=$tmp/array-${id}_1.out
check "array-tasks-take-their-fragment" '[[ $s0 == COMPLETED && $s1 == COMPLETED ]] &&
  grep -qxF "arg<--set=name: \"t_a\"" "$a" && grep -qxF "prompt { template: \"A photo of {ctx}.\" }>" "$a" &&
  grep -qxF "arg<--set=name: \"t_b\">" "$b" && grep -qxF "arg<--set=a b '"'"'c'"'"'>" "$b" &&
  grep -qF "arg<--output_dir=runs/array-${id}_1>" "$b"' "$a"
check "srun-gets-cpus-per-task" 'grep -qx "cpus-per-task=1" "$a"' "$a"
check "file-sd-targets-while-running" 'grep -qF "target file reid-${id}_0.json: [{\"targets\": [\"localhost:19400\"], \"labels\": {}}]" "$a" &&
  grep -qxF "arg<--set=monitoring { metrics_port_base: 19400 metrics_bind: \"0.0.0.0\" }>" "$a" &&
  [[ -z $(ls "$tmp/targets") ]]' "$a"
id=$(REID_BIN="$tmp/echo_reid" REID_ARGS="--set=x" sbatch --parsable --job-name=args \
  --ntasks-per-node=1 --gpus-per-node=0 --cpus-per-task=1 --output="$tmp/%x-%j.out" slurm/train.sbatch)
state=$(slurm_wait_job "$id" 60)
check "reid-args-refused" '[[ $state == FAILED && $(slurm_job_field "$id" ExitCode) == 2:0 ]] &&
  grep -q "REID_ARGS is no longer read" "$tmp/args-$id.out"' "$tmp/args-$id.out"
cli_finish
