#!/bin/sh
# demo.sh: run examples/echo through create/state/start/state/delete, then `run`.
set -eu
cd "$(dirname "$0")/.."
RUNPROC_STATE_DIR=$(mktemp -d)
export RUNPROC_STATE_DIR
trap 'rm -rf "$RUNPROC_STATE_DIR"' EXIT
bundle=$(pwd)/examples/echo
set -x
./runproc create --pid-file "$RUNPROC_STATE_DIR/pid" demo "$bundle"
./runproc state demo
./runproc start demo
sleep 0.2
./runproc state demo
./runproc delete demo
./runproc run demo2 "$bundle"
