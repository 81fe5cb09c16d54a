#!/usr/bin/env bash
# The bash completion loads in a non-interactive bash, registers for storemove and completes
# subcommands, options and option values from the real program's --help.
# Usage: completion_test.sh STOREMOVE_BIN COMPLETION_FILE
set -euo pipefail
bin=$1
# shellcheck source=/dev/null
source "$2"
complete -p storemove | grep -q -- '-F _storemove' || { echo "not registered for storemove"; exit 1; }

fail=0
# expect "WANTED" WORD...: completing the last word offers WANTED (and, with "only", nothing else).
expect() {
  local wanted=$1 only=$2; shift 2
  COMP_WORDS=("$bin" "$@")
  COMP_CWORD=$(($# ))
  COMPREPLY=()
  _storemove
  local got=" ${COMPREPLY[*]} "
  if [[ $got != *" $wanted "* ]] || { [[ $only == only ]] && [[ ${#COMPREPLY[@]} -ne 1 ]]; }; then
    echo "completing '$*': wanted '$wanted'${only:+ ($only)}, got:$got"
    fail=1
  fi
}
expect restore only res
expect moveuser only mov
expect serve "" s
expect --version only --vers
expect --keep-status only restore --keep
expect --max-handshakes-per-address only serve --max-handshakes-p
expect --json "" verify --store /tmp --j
expect maildir only export --format mai
expect y "" restore -c ""
# a FILE value: the files in the current directory
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
touch "$tmp/serve.log"
expect "$tmp/serve.log" only serve --log "$tmp/se"
expect "$tmp" "" backup --store "$tmp"
# storemove-local (beside storemove in the build tree) completes from its own --help.
local_bin=$(dirname "$bin")/storemove-local
complete -p storemove-local | grep -q -- '-F _storemove' || { echo "not registered for storemove-local"; fail=1; }
if [ -x "$local_bin" ]; then
  bin=$local_bin
  expect import only im
  expect --create only deliver --crea
else
  echo "completion: no $local_bin"; fail=1
fi
[ $fail = 0 ] && echo "completion: all cases complete"
exit $fail
