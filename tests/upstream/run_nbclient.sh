#!/usr/bin/env bash
# Run nbclient's own test suite: `baseline` (its default AsyncKernelManager) or `swapped` (ConKernelManager).
#   bash tests/upstream/run_nbclient.sh baseline|swapped [extra pytest args, e.g. -k notebooks]
# Env: OUT (results dir, default /tmp/ckc_upstream), TIMEOUT (per test, default 30 s), BUDGET (whole run,
# default 3600 s), CKC_SRC (a dir holding a `conkernelclient` package to test instead of the installed one).
# Writes $OUT/<mode>.log and $OUT/<mode>.xml; then `python tests/upstream/compare.py` compares the two.
set -u
mode=${1:?usage: run_nbclient.sh baseline|swapped [pytest args]}; shift
case $mode in baseline) swap=0 ;; swapped) swap=1 ;; *) echo "mode must be baseline or swapped" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
py=$root/.venv/bin/python
out=${OUT:-/tmp/ckc_upstream}; mkdir -p "$out"
src=$(timeout 300 "$py" "$here/fetch.py" nbclient 0.11.0 | tail -1) || { echo "fetch failed" >&2; exit 2; }
cd "$src" || exit 2
start=$(date +%s)
# PATH: test_cli runs the `jupyter-execute` script of the venv. The -o: nbclient turns warnings into errors,
# and pytest-asyncio>=1.4 warns when this option is unset.
PATH="$root/.venv/bin:$PATH" PYTHONPATH="${CKC_SRC:+$CKC_SRC:}$here" CKC_SWAP=$swap \
  timeout -k 10 "${BUDGET:-3600}" "$py" -m pytest -p swap_manager -p no:cacheprovider \
    -o asyncio_default_fixture_loop_scope=function --timeout "${TIMEOUT:-30}" --color=no -rfE \
    --junitxml="$out/$mode.xml" "$@" tests > "$out/$mode.log" 2>&1
rc=$?
echo "$mode: pytest exit $rc, wall $(( $(date +%s) - start ))s; log $out/$mode.log, junit $out/$mode.xml"
grep -E '^swap_manager:|^=+ .*(passed|failed|error).* =+$|tests built a NotebookClient' "$out/$mode.log"
exit $rc
