#!/usr/bin/env bash
# Downloads what the real-data configs name in model { weights bpe_vocab }: OpenAI's CLIP ViT-B/16
# checkpoint (ViT-B-16.pt, 335 MiB) and CLIP's BPE merges file (bpe_simple_vocab_16e6.txt.gz), into
# DIR (default: pretrained/ at the repository root). Each file is checked against the SHA-256 kept
# below before it gets its name; a download that breaks off stays as NAME.part and the next run
# resumes it (curl -C -). A file already in DIR is kept when it matches, and refused (exit 2, left
# untouched) when it does not.
#
# Usage: scripts/get_clip_weights.sh [--from=SRC] [--only=weights|bpe] [DIR]
#   --from=SRC   take the files from the folder SRC (an offline copy; read through curl's file://)
#   --only=WHAT  fetch only the weights or only the merges file
# Exit status: 0 the files present and verified; 1 a download failed (run again to resume);
# 2 a usage error, or a file whose SHA-256 does not match (its .part is removed).
set -uo pipefail

# OpenAI's download URL carries the file's SHA-256 as its last folder (CLIP's own loader checks
# the file against it).
WEIGHTS_NAME=ViT-B-16.pt
WEIGHTS_SHA256=5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f
WEIGHTS_URL=https://openaipublic.azureedge.net/clip/models/$WEIGHTS_SHA256/$WEIGHTS_NAME
# The merges file of the openai/CLIP repository (clip/), SHA-256 of its contents.
BPE_NAME=bpe_simple_vocab_16e6.txt.gz
BPE_SHA256=924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a
BPE_URL=https://raw.githubusercontent.com/openai/CLIP/main/clip/$BPE_NAME

repo=$(cd "$(dirname "$0")/.." && pwd)
die() {  # die STATUS MESSAGE...: one line on stderr
  local status=$1
  shift
  echo "error: get_clip_weights: $*" >&2
  exit "$status"
}
usage() { sed -n '9,14s/^# \{0,1\}//p' "$0"; }

from="" only="" dest=""
while (($#)); do
  case $1 in
    --from=*) from=${1#--from=} ;;
    --from) (($# >= 2)) || die 2 "--from needs a folder"; from=$2; shift ;;
    --only=*) only=${1#--only=} ;;
    -h|--help) usage; exit 0 ;;
    -*) die 2 "unknown option '$1' (see --help)" ;;
    *) [[ -z $dest ]] || die 2 "more than one DIR: '$dest' and '$1'"; dest=$1 ;;
  esac
  shift
done
[[ -z $only || $only == weights || $only == bpe ]] || die 2 "--only=$only: expected weights or bpe"
dest=${dest:-$repo/pretrained}
command -v curl >/dev/null ||
  die 2 "curl not found (apt-get install curl; scripts/install-deps.sh installs it)"
if [[ -n $from ]]; then
  [[ -d $from ]] || die 2 "--from=$from: not a folder"
  from=$(cd "$from" && pwd)
fi
if [[ -e $dest && ! -d $dest ]]; then die 2 "$dest exists and is not a folder"; fi
mkdir -p "$dest" 2>/dev/null || die 2 "cannot create the folder $dest"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# fetch NAME URL SHA256: DIR/NAME verified, downloaded into DIR/NAME.part first when missing.
fetch() {
  local name=$1 url=$2 want=$3
  local file=$dest/$name part=$dest/$name.part got
  if [[ -n $from ]]; then
    local src=$from/$name
    url="file://${src// /%20}"
  fi
  if [[ -e $file || -L $file ]]; then
    [[ -f $file ]] || die 2 "$file exists and is not a regular file: move it away and run again"
    got=$(sha256_of "$file")
    [[ $got == "$want" ]] ||
      die 2 "$file exists but its SHA-256 is $got, not $want: move it away and run again"
    echo "get_clip_weights: $file present, SHA-256 verified"
    return 0
  fi
  if [[ -e $part || -L $part ]]; then
    [[ -f $part && ! -L $part ]] || die 2 "$part exists and is not a regular file: move it away"
  fi
  # A complete .part (the rename was interrupted) needs no transfer.
  if [[ ! -f $part ]] || [[ $(sha256_of "$part") != "$want" ]]; then
    if [[ -f $part ]]; then
      echo "get_clip_weights: resuming $name from byte $(stat -c %s "$part") ($url)"
    else
      echo "get_clip_weights: downloading $name ($url)"
    fi
    local progress=(--silent --show-error)
    [[ -t 2 ]] && progress=(--progress-bar)
    local attempt rc
    for attempt in 1 2; do
      curl --fail --location "${progress[@]}" --retry 3 --connect-timeout 30 -C - -o "$part" \
        "$url"
      rc=$?
      # 33 (no byte ranges) and 36 (offset past the end): the .part cannot be resumed; start over.
      if [[ $attempt == 1 && -f $part && ($rc == 33 || $rc == 36) ]]; then
        echo "get_clip_weights: cannot resume $part (curl exit $rc); downloading it again"
        rm -f "$part"
        continue
      fi
      break
    done
    if ((rc != 0)); then
      local kept=""
      [[ -f $part ]] && kept=" from $part"
      die 1 "download of $name from $url failed (curl exit $rc); run again to resume$kept"
    fi
    got=$(sha256_of "$part")
    if [[ $got != "$want" ]]; then
      rm -f "$part"
      die 2 "$name from $url has SHA-256 $got, not $want;" \
        "removed $part (run again to download it afresh)"
    fi
  fi
  { mv -n "$part" "$file" && [[ ! -e $part ]]; } || die 1 "cannot rename $part to $file"
  echo "get_clip_weights: $file written, SHA-256 verified"
}

[[ $only == weights ]] || fetch "$BPE_NAME" "$BPE_URL" "$BPE_SHA256"
[[ $only == bpe ]] || fetch "$WEIGHTS_NAME" "$WEIGHTS_URL" "$WEIGHTS_SHA256"
exit 0
