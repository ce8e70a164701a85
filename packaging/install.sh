#!/bin/sh
# install.sh: put the runproc binary on a Kubernetes node and register it in containerd's CRI
# config as the runtime handler "runproc" (what a RuntimeClass with `handler: runproc` selects).
# POSIX sh on purpose: the same script runs on the host and, copied in, inside Kind nodes.
set -eu

prog=install.sh
here=$(cd "$(dirname "$0")" && pwd)
self="$here/$(basename "$0")"
snippet_dir="$here/containerd"
# The managed block is delimited by these lines; a re-run replaces it, so it is idempotent.
BEGIN_MARK='# >>> runproc runtime (managed by runproc packaging/install.sh; edits inside are overwritten) >>>'
END_MARK='# <<< runproc runtime <<<'
# A table header naming runtimes.<name> under the CRI plugin of config version 2 or 3/4.
HDR_PREFIX='^[[:space:]]*\[[[:space:]]*plugins\.["'"'"']io\.containerd\.(grpc\.v1\.cri|cri\.v1\.runtime)["'"'"']\.containerd\.runtimes\.'

usage() {
	cat <<EOF
Usage: $prog --binary FILE [TARGET] [OPTIONS]

Installs a runproc binary on a node and registers it as containerd CRI runtime handler
"runproc" (runtime_type io.containerd.runc.v2 with BinaryName pointing at it, Pod annotation
runproc.host passed through), then restarts containerd. Running it again replaces its own
block in the config, so the config keeps exactly one runproc runtime.

Targets (default: this machine, as root):
  --kind-node NAME      a Kind node container (repeatable); uses docker/podman cp + exec
  --kind-cluster NAME   every node container of Kind cluster NAME
  --root DIR            a directory layout: DIR/usr/local/bin/runproc and
                        DIR/etc/containerd/config.toml; containerd is not restarted
                        unless --restart-cmd is given

Options:
  --binary FILE         the runproc binary to install (required)
  --engine NAME         docker or podman for Kind targets (default: docker if found, else podman)
  --dest PATH           binary path on the node, also written as BinaryName
                        (default /usr/local/bin/runproc)
  --config PATH         containerd config on the node (default /etc/containerd/config.toml)
  --config-version N    2 (containerd 1.x) or 3 (containerd 2.x); needed only when the config
                        file does not exist yet and containerd is not installed, otherwise
                        detected from the file's version line or from 'containerd --version'
  --systemd-cgroup V    auto|true|false: set SystemdCgroup in runproc's options
                        (auto: true when the existing config sets SystemdCgroup = true)
  --restart-cmd CMD     command that restarts containerd (default: systemctl restart containerd)
  --no-restart          do not restart containerd
  --no-validate         do not check the merged config with 'containerd config dump'
  -h, --help            show this help

Examples:
  $prog --binary dist/runproc-1.0.0-linux-amd64 --kind-cluster kind
  sudo $prog --binary dist/runproc
  $prog --binary dist/runproc --root /tmp/node --config-version 2
EOF
}

die() {
	printf '%s: error: %s\n' "$prog" "$*" >&2
	exit 1
}
usage_error() {
	printf '%s: %s (see --help)\n' "$prog" "$*" >&2
	exit 2
}
say() { printf '%s: %s\n' "$prog" "$*"; }
warn() { printf '%s: warning: %s\n' "$prog" "$*" >&2; }
# Single-quote an argument so that `eval "set -- $list"` gives it back unchanged.
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

binary='' root='' config='' config_version='' dest=/usr/local/bin/runproc systemd=auto
restart_cmd='' no_restart=0 validate=1 engine='' kind_nodes='' kind_cluster='' target_set=''
fwd=''  # options forwarded to the copy of this script that runs inside a Kind node

while [ $# -gt 0 ]; do
	case $1 in
	--*=*)
		opt=${1%%=*} val=${1#*=}
		shift
		set -- "$opt" "$val" "$@"
		continue
		;;
	esac
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--no-restart | --no-validate)
		[ "$1" = --no-restart ] && no_restart=1 || validate=0
		fwd="$fwd $1"
		shift
		continue
		;;
	--binary | --root | --kind-node | --kind-cluster | --engine | --dest | --config | --config-version | --systemd-cgroup | --restart-cmd)
		[ $# -ge 2 ] || usage_error "option $1 needs a value"
		;;
	-*) usage_error "unknown option '$1'" ;;
	*) usage_error "unexpected argument '$1'" ;;
	esac
	case $1 in
	--binary) binary=$2 ;;
	--root) root=$2 target_set="$target_set root" ;;
	--kind-node) kind_nodes="$kind_nodes $(quote "$2")" target_set="$target_set kind" ;;
	--kind-cluster) kind_cluster=$2 target_set="$target_set kind" ;;
	--engine) engine=$2 ;;
	--dest) dest=$2 fwd="$fwd --dest $(quote "$2")" ;;
	--config) config=$2 fwd="$fwd --config $(quote "$2")" ;;
	--config-version) config_version=$2 fwd="$fwd --config-version $(quote "$2")" ;;
	--systemd-cgroup) systemd=$2 fwd="$fwd --systemd-cgroup $(quote "$2")" ;;
	--restart-cmd) restart_cmd=$2 fwd="$fwd --restart-cmd $(quote "$2")" ;;
	esac
	shift 2
done

[ -n "$binary" ] || usage_error "missing --binary FILE"
case $target_set in *root*kind* | *kind*root*) usage_error "--root cannot be combined with --kind-node/--kind-cluster" ;; esac
case $config_version in '' | 2 | 3) ;; *) usage_error "--config-version must be 2 or 3, not '$config_version'" ;; esac
case $systemd in auto | true | false) ;; *) usage_error "--systemd-cgroup must be auto, true or false, not '$systemd'" ;; esac
# dest is substituted into sed expressions and TOML strings: keep it to plain path characters.
case $dest in
/*[!A-Za-z0-9._/+-]* | /*/) usage_error "--dest must be a plain absolute file path, not '$dest'" ;;
/?*) ;;
*) usage_error "--dest must be an absolute path, not '$dest'" ;;
esac
case $config in '' | /*) ;; *) usage_error "--config must be an absolute path, not '$config'" ;; esac
[ -f "$binary" ] || die "binary '$binary' not found (or not a regular file)"
[ -r "$binary" ] || die "binary '$binary' is not readable"
if [ -n "$root" ]; then
	[ -d "$root" ] || die "--root '$root' is not a directory"
fi

# ---------------------------------------------------------------- Kind targets
# shellcheck disable=SC2120 # positional parameters are set inside with eval "set -- ..."
install_kind() {
	if [ -z "$engine" ]; then
		if command -v docker >/dev/null 2>&1; then engine=docker
		elif command -v podman >/dev/null 2>&1; then engine=podman
		else die "neither docker nor podman found: Kind targets need one (or pass --engine)"
		fi
	fi
	command -v "$engine" >/dev/null 2>&1 || die "container engine '$engine' not found"
	if [ -n "$kind_cluster" ]; then
		# Kind labels every node container with the cluster name; no kind binary needed.
		found=$("$engine" ps --filter "label=io.x-k8s.kind.cluster=$kind_cluster" --format '{{.Names}}') ||
			die "'$engine ps' failed"
		[ -n "$found" ] || die "no running node containers for Kind cluster '$kind_cluster'"
		for n in $found; do kind_nodes="$kind_nodes $(quote "$n")"; done
	fi
	eval "set -- $kind_nodes"
	for node in "$@"; do
		running=$("$engine" inspect --format '{{.State.Running}}' "$node" 2>/dev/null) || running=''
		[ "$running" = true ] || die "Kind node container '$node' is not running"
		say "installing into Kind node $node ($engine)"
		tmpd=/tmp/runproc-install
		"$engine" exec "$node" sh -c "rm -rf $tmpd && mkdir -p $tmpd"
		"$engine" cp "$binary" "$node:$tmpd/runproc"
		"$engine" cp "$self" "$node:$tmpd/install.sh"
		"$engine" cp "$snippet_dir" "$node:$tmpd/containerd"
		eval "set -- $fwd"
		rc=0
		"$engine" exec "$node" sh "$tmpd/install.sh" --binary "$tmpd/runproc" "$@" || rc=$?
		"$engine" exec "$node" rm -rf "$tmpd" || true
		[ "$rc" -eq 0 ] || die "install inside Kind node '$node' failed (exit $rc)"
	done
}

# ---------------------------------------------------------------- this machine / --root
containerd_major() {
	# 'containerd --version' prints e.g. "containerd github.com/containerd/containerd 1.6.20~ds1 ..."
	# or "containerd github.com/containerd/containerd/v2 v2.0.2 <commit>".
	command -v containerd >/dev/null 2>&1 || return 0
	for f in $(containerd --version 2>/dev/null); do
		case $f in
		v[0-9]*.* | [0-9]*.*)
			f=${f#v}
			printf '%s\n' "${f%%.*}"
			return 0
			;;
		esac
	done
}

# Prints the runproc block for config version $1 (2, or 3 for 3/4) to stdout.
render_block() {
	style=$1 body=$2 want_systemd=$3
	snippet="$snippet_dir/runproc-v$style.toml"
	[ -f "$snippet" ] || die "snippet $snippet is missing (install.sh needs the containerd/ folder beside it)"
	printf '%s\n' "$BEGIN_MARK"
	# The snippet without its explanatory comments, with our BinaryName (and SystemdCgroup).
	if [ "$want_systemd" = true ]; then
		sed -e '/^[[:space:]]*#/d' -e "s|^\([[:space:]]*\)BinaryName[[:space:]]*=.*|\1BinaryName = \"$dest\"|" \
			-e '/^[[:space:]]*BinaryName[[:space:]]*=/a\
  SystemdCgroup = true' "$snippet"
	else
		sed -e '/^[[:space:]]*#/d' -e "s|^\([[:space:]]*\)BinaryName[[:space:]]*=.*|\1BinaryName = \"$dest\"|" "$snippet"
	fi
	# containerd 1.x replaces its built-in runtime list with the file's, so without a runc table
	# its CRI plugin fails to load ("no corresponding runtime configured ... default_runtime_name").
	# containerd 2.x merges the lists; the same table changes nothing there.
	default_rt=$(sed -n "s/^[[:space:]]*default_runtime_name[[:space:]]*=[[:space:]]*[\"']\([^\"']*\)[\"'].*/\1/p" "$body" | head -n 1)
	if [ "${default_rt:-runc}" = runc ] && ! grep -Eq "${HDR_PREFIX}[\"']?runc[\"']?[[:space:]]*[].]" "$body"; then
		if [ "$style" = 2 ]; then
			plugin='"io.containerd.grpc.v1.cri"'
		else
			plugin="'io.containerd.cri.v1.runtime'"
		fi
		printf '# containerd 1.x replaces its built-in runtime list with this file'"'"'s: keep the default "runc".\n'
		printf '[plugins.%s.containerd.runtimes.runc]\n  runtime_type = "io.containerd.runc.v2"\n' "$plugin"
		if [ "$want_systemd" = true ]; then
			printf '[plugins.%s.containerd.runtimes.runc.options]\n  SystemdCgroup = true\n' "$plugin"
		fi
	fi
	printf '%s\n' "$END_MARK"
}

restart_containerd() {
	if [ "$no_restart" = 1 ]; then
		say "not restarting containerd (--no-restart): restart it to load the runtime"
		return 0
	fi
	if [ -n "$restart_cmd" ]; then
		say "restarting containerd: $restart_cmd"
		sh -c "$restart_cmd" || die "restart command failed: $restart_cmd (binary and config are installed)"
		return 0 # a custom set-up: its containerd may not listen where ctr looks by default
	elif [ -n "$root" ]; then
		say "directory layout target: containerd not restarted (pass --restart-cmd to run one)"
		return 0
	else
		say "restarting containerd: systemctl restart containerd"
		# systemd refuses a 6th start of a unit within 10 s (StartLimitBurst), and containerd
		# started at boot plus a few runs of this script reach that on a fresh Kind node;
		# reset-failed clears the counter (and a failed state we are about to replace anyway).
		systemctl reset-failed containerd >/dev/null 2>&1 || true
		systemctl restart containerd || die "'systemctl restart containerd' failed (binary and config are installed)"
	fi
	command -v ctr >/dev/null 2>&1 || return 0
	i=0
	until ctr version >/dev/null 2>&1; do
		i=$((i + 1))
		[ "$i" -lt 60 ] || die "containerd did not answer within 60 s after the restart (see: journalctl -u containerd)"
		sleep 1
	done
	# A config containerd parses can still make the CRI plugin fail to load; kubelet then breaks.
	bad=$(ctr plugins ls 2>/dev/null | while read -r ptype pid rest; do
		case "$ptype $pid" in
		"io.containerd.grpc.v1 cri" | io.containerd.cri.v1\ *) [ "${rest##* }" != error ] || printf '%s/%s ' "$ptype" "$pid" ;;
		esac
	done)
	[ -z "$bad" ] || die "containerd restarted but its CRI plugin failed to load ($bad); see: journalctl -u containerd"
	say "containerd is up with the CRI plugin loaded"
}

install_here() {
	if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
		die "installing on this machine needs root (run with sudo), or use --root DIR / --kind-node NAME"
	fi
	if [ -z "$root" ] && [ "$no_restart" = 0 ] && [ -z "$restart_cmd" ] && ! command -v systemctl >/dev/null 2>&1; then
		die "systemctl not found: pass --restart-cmd CMD or --no-restart"
	fi
	prefix=${root%/}
	cfg="$prefix${config:-/etc/containerd/config.toml}"
	bin_target="$prefix$dest"

	# 1. the merged config, built and checked before anything on the node changes
	work=$(mktemp -d "${TMPDIR:-/tmp}/runproc-install.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	body="$work/body" new="$work/config.toml"
	existing=0
	if [ -e "$cfg" ]; then
		[ -f "$cfg" ] || die "$cfg exists but is not a regular file"
		existing=1
		begins=$(grep -c -F -x "$BEGIN_MARK" "$cfg" || true)
		ends=$(grep -c -F -x "$END_MARK" "$cfg" || true)
		if [ "$begins" != "$ends" ] || [ "$begins" -gt 1 ]; then
			die "$cfg has a damaged runproc block ($begins begin / $ends end marker lines): fix it by hand"
		fi
		# The file without our previous block; a re-run appends a fresh one.
		if [ "$begins" = 1 ]; then
			b=$(grep -n -F -x "$BEGIN_MARK" "$cfg" | cut -d: -f1)
			e=$(grep -n -F -x "$END_MARK" "$cfg" | cut -d: -f1)
			[ "$b" -lt "$e" ] || die "$cfg has the runproc block's end marker before its begin marker: fix it by hand"
			sed -e "${b},${e}d" "$cfg" >"$body"
		else
			cp "$cfg" "$body"
		fi
	else
		: >"$body"
	fi

	file_version=$(sed -n -e '/^[[:space:]]*\[/q' -e 's/^[[:space:]]*version[[:space:]]*=[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$body")
	installed_major=$(containerd_major)
	prepend_version=''
	if [ -n "$file_version" ]; then
		if [ -n "$config_version" ] && [ "$config_version" != "$file_version" ]; then
			die "$cfg has version = $file_version but --config-version $config_version was given"
		fi
	elif grep -Eq '^[[:space:]]*[^#[:space:]]' "$body"; then
		die "$cfg has no 'version = N' line, so containerd reads it as a version 1 config, which install.sh does not edit: convert it to version 2 (containerd 1.x) or 3 (containerd 2.x) first, e.g. from 'containerd config default'"
	else
		# No config (or only comments): choose the version the node's containerd expects.
		file_version=$config_version
		if [ -z "$file_version" ]; then
			case $installed_major in
			1) file_version=2 ;;
			'') die "no containerd config at $cfg and containerd is not installed here: pass --config-version 2 (containerd 1.x) or 3 (containerd 2.x)" ;;
			*) file_version=3 ;;
			esac
		fi
		prepend_version=$file_version
	fi
	case $file_version in
	2) style=2 ;;
	3 | 4) style=3 ;; # containerd 2.3's version 4 keeps the CRI plugin tables of version 3
	*) die "$cfg has config version $file_version, which install.sh does not know (supported: 2, 3, 4)" ;;
	esac

	if grep -Eq "${HDR_PREFIX}[\"']?runproc[\"']?[[:space:]]*[].]" "$body"; then
		die "$cfg already configures runtime 'runproc' outside the block install.sh manages: remove those tables and run again"
	fi
	want_systemd=$systemd
	if [ "$systemd" = auto ]; then
		if grep -Eq '^[[:space:]]*SystemdCgroup[[:space:]]*=[[:space:]]*true' "$body"; then
			want_systemd=true
		else
			want_systemd=false
		fi
	fi
	# Pods still run when the binary lacks the systemd cgroup driver, but outside their slice.
	if [ "$want_systemd" = true ]; then
		features=$("$binary" features 2>/dev/null) || features=''
		if printf '%s\n' "$features" | grep -Eq '"systemd"[[:space:]]*:[[:space:]]*false'; then
			warn "SystemdCgroup = true (the node uses the systemd cgroup driver), but this runproc does not implement it yet ('runproc features': cgroup.systemd false): Pods run, but their containers stay in containerd's cgroup instead of their Pod's slice (no resource limits, no accounting)"
		fi
	fi

	{
		[ -z "$prepend_version" ] || printf 'version = %s\n\n' "$prepend_version"
		cat "$body"
		# Keep the previous last line intact if the file did not end with a newline, and put one
		# blank line before the block (only if there is none, so that a re-run changes nothing).
		if [ -s "$body" ] && [ -n "$(tail -c 1 "$body")" ]; then echo; fi
		if [ -n "$(tail -n 1 "$body" | tr -d ' \t')" ]; then echo; fi
		render_block "$style" "$body" "$want_systemd"
	} >"$new"

	if [ "$validate" = 1 ]; then
		# containerd 1.x cannot read version 3/4, so validate only what the local one understands.
		if [ -z "$installed_major" ]; then
			say "containerd not installed here: merged config not validated"
		elif [ "$installed_major" = 1 ] && [ "$style" = 3 ]; then
			say "local containerd 1.x cannot read config version $file_version: merged config not validated"
		else
			containerd --config "$new" config dump >"$work/dump" 2>"$work/err" ||
				die "containerd rejects the merged config, $cfg left unchanged: $(grep -v '^[[:space:]]*$' "$work/err" | tail -n 1)"
			grep -q 'runtimes\.runproc\]' "$work/dump" ||
				die "containerd does not see runtime 'runproc' in the merged config, $cfg left unchanged"
		fi
	fi

	# 2. the binary: copy beside the target and rename, so a running runproc is never
	#    overwritten in place ("text file busy") and a reader never sees half a file.
	mkdir -p "$(dirname "$bin_target")"
	cp "$binary" "$bin_target.new.$$"
	chmod 0755 "$bin_target.new.$$"
	mv -f "$bin_target.new.$$" "$bin_target"
	say "installed $bin_target"

	# 3. the config
	mkdir -p "$(dirname "$cfg")"
	if [ "$existing" = 1 ] && cmp -s "$new" "$cfg"; then
		say "$cfg already up to date (config version $file_version)"
	else
		if [ "$existing" = 1 ]; then
			cp -p "$cfg" "$cfg.runproc-backup"
			cp -p "$cfg" "$cfg.runproc-tmp.$$" # keeps owner and mode
			cat "$new" >"$cfg.runproc-tmp.$$"
		else
			cp "$new" "$cfg.runproc-tmp.$$"
			chmod 0644 "$cfg.runproc-tmp.$$"
		fi
		mv -f "$cfg.runproc-tmp.$$" "$cfg"
		say "registered runtime 'runproc' in $cfg (config version $file_version, SystemdCgroup=$want_systemd)"
	fi

	restart_containerd
}

case $target_set in
*kind*) install_kind ;;
*) install_here ;;
esac
