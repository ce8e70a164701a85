#!/bin/sh
# make-rootfs.sh DIR: a minimal busybox root filesystem in DIR, made from Debian's
# busybox-static (a static binary, so the rootfs needs no libraries). Idempotent.
set -eu
dir=${1:?usage: make-rootfs.sh DIR}
bb=/bin/busybox
# busybox (dynamic) and busybox-static both install /bin/busybox; we need the static one.
"$(dirname "$0")/ensure-packages.sh" busybox-static
mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc" "$dir/proc" "$dir/dev" "$dir/root"
chmod 1777 "$dir/tmp"
cp -f "$bb" "$dir/bin/busybox"
for applet in $("$dir/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
done
[ -e "$dir/sbin" ] || ln -s bin "$dir/sbin"
[ -e "$dir/usr" ] || { mkdir -p "$dir/usr"; ln -s ../bin "$dir/usr/bin"; ln -s ../bin "$dir/usr/sbin"; }
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$dir/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$dir/etc/group"
