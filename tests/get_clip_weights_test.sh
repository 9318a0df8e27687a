#!/usr/bin/env bash
# scripts/get_clip_weights.sh without network: files come from local folders (--from, curl's
# file://). Checks that wrong files are refused (exit 2, nothing left at the destination, a user's
# own file untouched), and, with the real merges file from $REID_CLIP_FILES (default
# /work/shared/clip), that it passes, that a partial .part is resumed rather than downloaded again,
# and that a .part with wrong bytes is removed. Without that copy the checks that need it are
# skipped and the test reports Skipped (exit 77), never Passed. Usage: get_clip_weights_test.sh
# (run from the repository root).
set -u
source "$(dirname "$0")/cli_lib.sh"
script=$(cd "$(dirname "$0")/.." && pwd)/scripts/get_clip_weights.sh
real_dir=${REID_CLIP_FILES:-/work/shared/clip}
bpe=bpe_simple_vocab_16e6.txt.gz
bpe_sha=924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a

# check NAME CONDITION: a condition on the files after the last command.
check() {
  if eval "$2"; then
    echo "ok   $1"
  else
    echo "FAIL $1: $2"
    fail=$((fail + 1))
  fi
}

mkdir -p "$tmp/wrong"
echo "not CLIP's merges file" >"$tmp/wrong/$bpe"
echo "not CLIP's weights" >"$tmp/wrong/ViT-B-16.pt"

expect usage-unknown-option 2 "unknown option '--frm=x'" -- bash "$script" --frm=x "$tmp/dest"
expect usage-only 2 'only=all: expected weights or bpe' -- bash "$script" --only=all "$tmp/dest"
expect usage-from-missing 2 'not a folder' -- bash "$script" --from="$tmp/nowhere" "$tmp/dest"

expect wrong-bpe-refused 2 "$bpe from file://.* has SHA-256 .*, not $bpe_sha; removed" -- \
  bash "$script" --only=bpe --from="$tmp/wrong" "$tmp/dest"
check wrong-bpe-leaves-nothing '[[ -z $(ls -A "$tmp/dest") ]]'
expect wrong-weights-refused 2 'ViT-B-16.pt from file://.* has SHA-256 .*, not 5806e77c' -- \
  bash "$script" --only=weights --from="$tmp/wrong" "$tmp/dest"
check wrong-weights-leaves-nothing '[[ -z $(ls -A "$tmp/dest") ]]'

# A source without the file: a failed transfer (exit 1), nothing to keep.
mkdir -p "$tmp/empty"
expect missing-source-fails 1 "download of $bpe from file://.* failed \\(curl exit 37\\); run again" -- \
  bash "$script" --only=bpe --from="$tmp/empty" "$tmp/dest"
check missing-source-leaves-nothing '[[ -z $(ls -A "$tmp/dest") ]]'

# A file of the user's own under the name is refused and kept as it is.
mkdir -p "$tmp/user"
echo "my own notes" >"$tmp/user/$bpe"
expect user-file-refused 2 "user/$bpe exists but its SHA-256 is .*: move it away" -- \
  bash "$script" --only=bpe --from="$tmp/wrong" "$tmp/user"
check user-file-kept '[[ $(cat "$tmp/user/$bpe") == "my own notes" && ! -e $tmp/user/$bpe.part ]]'

if [[ ! -f $real_dir/$bpe ]]; then
  echo "SKIP: no real merges file at $real_dir/$bpe (set REID_CLIP_FILES): the right-file and" \
    "resume checks did not run"
  cli_finish || exit 1
  exit 77
fi

expect right-bpe-passes 0 "$bpe written, SHA-256 verified" -- \
  bash "$script" --only=bpe --from="$real_dir" "$tmp/dest"
check right-bpe-in-place '[[ $(sha256sum <"$tmp/dest/$bpe" | cut -d" " -f1) == "$bpe_sha" && ! -e $tmp/dest/$bpe.part ]]'
expect right-bpe-again 0 "$bpe present, SHA-256 verified" -- \
  bash "$script" --only=bpe --from="$tmp/wrong" "$tmp/dest"

# Resume: the .part holds the real first 500000 bytes; the source differs from the real file in
# exactly those bytes, so only a resumed transfer (not a fresh one) ends with the right SHA-256.
mkdir -p "$tmp/resume" "$tmp/src"
head -c 500000 "$real_dir/$bpe" >"$tmp/resume/$bpe.part"
{ head -c 500000 /dev/zero; tail -c +500001 "$real_dir/$bpe"; } >"$tmp/src/$bpe"
expect part-resumed 0 "resuming $bpe from byte 500000" -- \
  bash "$script" --only=bpe --from="$tmp/src" "$tmp/resume"
check part-resumed-right '[[ $(sha256sum <"$tmp/resume/$bpe" | cut -d" " -f1) == "$bpe_sha" && ! -e $tmp/resume/$bpe.part ]]'

# A .part whose bytes are wrong gives a wrong file: refused, the .part removed.
mkdir -p "$tmp/badpart"
head -c 500000 /dev/zero >"$tmp/badpart/$bpe.part"
expect bad-part-refused 2 "has SHA-256 .*removed .*$bpe.part" -- \
  bash "$script" --only=bpe --from="$real_dir" "$tmp/badpart"
check bad-part-removed '[[ -z $(ls -A "$tmp/badpart") ]]'

# A .part longer than the file cannot be resumed: downloaded again.
mkdir -p "$tmp/long"
head -c 2000000 /dev/zero >"$tmp/long/$bpe.part"
expect long-part-restarted 0 "cannot resume .*downloading it again" -- \
  bash "$script" --only=bpe --from="$real_dir" "$tmp/long"
check long-part-right '[[ $(sha256sum <"$tmp/long/$bpe" | cut -d" " -f1) == "$bpe_sha" ]]'

cli_finish
