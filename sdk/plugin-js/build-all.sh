#!/usr/bin/env bash
# Builds every JavaScript and Python codec component of the repository into the directory $1:
#
#   codec_js.wasm           examples/plugins/codec-js/codec.js (the codec world written in JS)
#   alibaba_script.wasm     examples/plugins/codec-js/alibaba-script.js inside the adapter
#   chirpstack_script.wasm  examples/plugins/codec-js/chirpstack-script.js inside the adapter
#   script_runner.wasm      the adapter without a script: loads kv key `script` at run time
#   codec_python.wasm       examples/plugins/codec-python/app.py (componentize-py)
#
# Needs node (>= 20) and python3 (>= 3.10). Installs what it needs on first use: `npm ci` here,
# and componentize-py (pinned in examples/plugins/codec-python/requirements.txt) in a venv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/lotus-py. An output newer than all of its inputs is kept, so a
# second run does nothing. Concurrent runs on one OUT_DIR take turns (flock).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
# Test processes run in parallel and each may call this script: one build at a time, the others
# wait and then find the outputs up to date (two concurrent `npm ci` runs corrupt node_modules).
exec 9>"$out/.build.lock"
flock 9
wit="$root/wit/v0.1.0"
js_examples="$root/examples/plugins/codec-js"
py_example="$root/examples/plugins/codec-python"

# True when $1 is missing or older than any of the other arguments (files or directories).
stale() {
  local target=$1
  shift
  [[ -f $target ]] || return 0
  local newer
  newer=$(find "$@" -type f -newer "$target" -not -path '*/__pycache__/*' -print -quit)
  [[ -n $newer ]]
}

# Written to a temporary name and moved into place, so an interrupted build never leaves a
# truncated component that looks newer than its inputs.
build_js() {
  local target=$1
  shift
  local inputs=(
    "$wit" "$here/build.mjs" "$here/src" "$here/package-lock.json" "$here/.npmrc"
  )
  local arg
  for arg in "$@"; do
    [[ -f $arg ]] && inputs+=("$arg")
  done
  if stale "$out/$target" "${inputs[@]}"; then
    node "$here/build.mjs" "$@" --wit "$wit" --out "$out/$target.tmp"
    mv "$out/$target.tmp" "$out/$target"
  else
    echo "$out/$target: up to date"
  fi
}

js_needed=0
for t in codec_js alibaba_script chirpstack_script script_runner; do
  if stale "$out/$t.wasm" "$wit" "$here/build.mjs" "$here/src" "$here/package-lock.json" "$js_examples"; then
    js_needed=1
  fi
done
if [[ $js_needed == 1 ]]; then
  # node_modules is kept when the lock file is unchanged; `npm ci` otherwise.
  if [[ ! -d $here/node_modules/@bytecodealliance/componentize-js ]] ||
    [[ $here/package-lock.json -nt $here/node_modules/.package-lock.json ]]; then
    (cd "$here" && npm ci --no-audit --no-fund)
  fi
  build_js codec_js.wasm --module "$js_examples/codec.js"
  build_js alibaba_script.wasm --script "$js_examples/alibaba-script.js"
  build_js chirpstack_script.wasm --script "$js_examples/chirpstack-script.js"
  build_js script_runner.wasm --runner
else
  echo "$out: JavaScript components up to date"
fi

if stale "$out/codec_python.wasm" "$wit" "$py_example/app.py" "$py_example/requirements.txt"; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/lotus-py"
  requirements="$py_example/requirements.txt"
  # The venv is (re)filled when it lacks the pinned componentize-py; a stamp holding the
  # requirements it was filled from makes the check a file comparison instead of a pip call.
  if [[ ! -x $venv/bin/componentize-py ]] || ! cmp -s "$requirements" "$venv/lotus-requirements.txt"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/lotus-requirements.txt"
  fi
  started=$(date +%s%N)
  # componentize-py byte-compiles the app next to its source (whatever PYTHONDONTWRITEBYTECODE
  # says), so it builds from a copy and leaves no __pycache__ in the repository.
  src=$(mktemp -d)
  trap 'rm -rf "$src"' EXIT
  cp "$py_example/app.py" "$src/"
  # --stub-wasi: the component imports only the Lotus interfaces (log, kv, clock); any WASI call
  # (files, sockets, environment, random) traps instead of reaching the host.
  "$venv/bin/componentize-py" -d "$wit" -w codec componentize --stub-wasi \
    -p "$src" app -o "$out/codec_python.wasm.tmp" >/dev/null
  mv "$out/codec_python.wasm.tmp" "$out/codec_python.wasm"
  ms=$((($(date +%s%N) - started) / 1000000))
  size=$(stat -c %s "$out/codec_python.wasm")
  echo "$out/codec_python.wasm: $size bytes ($((size / 1048576)) MiB), built in $((ms / 1000)).$(((ms % 1000) / 100)) s"
else
  echo "$out/codec_python.wasm: up to date"
fi
