#!/bin/sh
# make-static.sh IN OUT
#
# Turn a PyInstaller build of runproc into the release binary: one ELF file
# that needs nothing from the host but the kernel (it carries its own ld.so,
# libc, libz, libpython, ...) and that runs where /tmp and /run are noexec.
#
#   IN   a PyInstaller onedir build: dist/runproc (directory) or
#        dist/runproc/runproc (recommended: one extraction per call), or
#        a PyInstaller onefile binary (works, ~5x slower start-up: it unpacks
#        twice per call)
#   OUT  the release binary to write (replaced atomically)
#
# Route (see README.md): staticx 0.14.2 built from its sdist with
# staticx-0.14.2-runproc.patch (bootloader execs a verified, read-only cached
# unpack keyed by the build id that sxbundle.py embeds; else it picks an
# exec-capable temp dir, locks it, sweeps stale ones, extracts with sendfile,
# kills the app with its bootloader), driven by sxbundle.py, which also stores
# the onedir tree.
#
# Idempotent. Run as root on Debian 12 or 13: installs missing apt packages,
# creates build/static/.venv (gitignored) and rebuilds staticx only when
# requirements.txt or the patch change.
# Env: PYTHON (default /usr/bin/python3), STATIC_VENV, SXBUNDLE_ARGS (extra
# args, e.g. --compress), MAKE_STATIC_NO_SMOKE=1 (skip `OUT --version` check).
set -eu

usage() { echo "usage: $0 IN OUT" >&2; exit 2; }
[ $# -eq 2 ] || usage
in=$1
out=$2
[ -e "$in" ] || { echo "make-static: $in does not exist" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
venv=${STATIC_VENV:-$here/.venv}
work=$here/.work
python=${PYTHON:-/usr/bin/python3}

STATICX_VERSION=0.14.2
STATICX_SHA256=bf7d5d35d5777a72b2d4c408eb25f9c61049b28b94a388a012122dba00fffa93
patchfile=$here/staticx-$STATICX_VERSION-runproc.patch

log() { echo "make-static: $*" >&2; }

# --- 1. system packages (gcc + static libc for the bootloader, objcopy/strip,
#        ldd, patch, venv) ---------------------------------------------------
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
need=""
for p in gcc libc6-dev binutils libc-bin patch python3-venv ${pyver:+python$pyver-venv}; do
    dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
    [ "$(id -u)" = 0 ] || { log "missing packages:$need (run as root or install them)"; exit 1; }
    log "apt-get install$need"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 # word splitting intended
    apt-get install -y -qq $need >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq $need >/dev/null; }
fi
[ -x "$python" ] || { log "no $python"; exit 1; }

# --- 2. venv with pinned tooling + patched staticx ------------------------------
stamp=$(cat "$here/requirements.txt" "$patchfile" | sha256sum | cut -c1-16)-$("$python" -c 'import sys; print(sys.version.split()[0])')
if [ "$(cat "$venv/.make-static-stamp" 2>/dev/null || true)" != "$stamp" ]; then
    log "creating $venv"
    rm -rf "$venv" "$work"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
    mkdir -p "$work"
    "$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        -d "$work" "staticx==$STATICX_VERSION"
    sdist=$work/staticx-$STATICX_VERSION.tar.gz
    echo "$STATICX_SHA256  $sdist" | sha256sum -c --quiet - || { log "staticx sdist checksum mismatch"; exit 1; }
    tar -xzf "$sdist" -C "$work"
    (cd "$work/staticx-$STATICX_VERSION" && patch -p1 --quiet < "$patchfile")
    log "building patched staticx $STATICX_VERSION (bootloader: gcc -static)"
    (cd "$work/staticx-$STATICX_VERSION" &&
        PATH="$venv/bin:$PATH" "$venv/bin/python" -m pip install -q --disable-pip-version-check \
            --no-build-isolation --no-deps . >"$work/staticx-build.log" 2>&1) ||
        { cat "$work/staticx-build.log" >&2; exit 1; }
    bl=$("$venv/bin/python" -c 'import staticx, os; print(os.path.join(os.path.dirname(staticx.__file__), "assets/release/bootloader"))')
    grep -q "staticx-lk-" "$bl" && grep -q "STATICX_LOCK_FD" "$bl" ||
        { log "built bootloader is not the patched one"; exit 1; }
    echo "$stamp" > "$venv/.make-static-stamp"
fi

# --- 3. wrap --------------------------------------------------------------------
mkdir -p "$(dirname "$out")"
# shellcheck disable=SC2086
PATH="$venv/bin:$PATH" "$venv/bin/python" "$here/sxbundle.py" ${SXBUNDLE_ARGS:-} "$in" "$out"

if [ "${MAKE_STATIC_NO_SMOKE:-}" != 1 ]; then
    case $out in */*) run_out=$out ;; *) run_out=./$out ;; esac
    # per-call mode, then the cache (as root: /var/lib/<name>/cache)
    v=$(env -u TMPDIR STATICX_NO_CACHE=1 "$run_out" --version 2>&1) ||
        { log "smoke test failed: STATICX_NO_CACHE=1 $out --version: $v"; exit 1; }
    v=$(env -u TMPDIR "$run_out" --version 2>&1) || { log "smoke test failed: $out --version: $v"; exit 1; }
    log "ok: $(echo "$v" | head -n1)"
fi
