#!/bin/sh
# demo.sh: run examples/echo through create/state/start/state/delete, then `run`.
set -eu
cd "$(dirname "$0")/.."
RUNPROC_STATE_DIR=$(mktemp -d)
export RUNPROC_STATE_DIR
trap 'rm -rf "$RUNPROC_STATE_DIR"' EXIT
bundle=$(pwd)/examples/echo
set -x
./dist/runproc create --pid-file "$RUNPROC_STATE_DIR/pid" demo "$bundle"
./dist/runproc state demo
./dist/runproc start demo
sleep 0.2
./dist/runproc state demo
./dist/runproc delete demo
./dist/runproc run demo2 "$bundle"
