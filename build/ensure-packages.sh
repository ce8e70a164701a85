#!/bin/sh
# ensure-packages.sh PKG[:COMMAND]...: install the Debian packages that are missing (idempotent).
# With :COMMAND, a COMMAND already on PATH counts as the package being there (e.g. Docker's
# containerd.io provides containerd; installing Debian's would remove Docker).
set -eu
missing=""
for entry in "$@"; do
  pkg=${entry%%:*}
  cmd=${entry#*:}
  if [ "$cmd" != "$entry" ] && command -v "$cmd" >/dev/null 2>&1; then
    continue
  fi
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "ensure-packages: missing Debian packages:$missing (run as root, or install them)" >&2
  exit 1
fi
echo "ensure-packages: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
