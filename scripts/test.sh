#!/usr/bin/env bash
# Run the whole sbx test suite on a fresh Debian/Ubuntu machine: `sudo scripts/test.sh`.
#
# As root it: installs the Debian packages the tests and benchmarks need, copies this checkout to a
# world-readable work dir, builds and installs sbx into a venv made with Debian's /usr/bin/python3,
# creates two unprivileged users (sbxsub with /etc/subuid+/etc/subgid ranges, sbxnosub without), and
# runs the suite as each of them, then as root (tests marked `root` run only there), then benches/
# once as sbxsub with --benchmark-disable. Exits non-zero if any run failed.
#
# Environment knobs (all optional):
#   SBX_TEST_DIR    work dir (default /var/tmp/sbx-test; deleted and recreated on every run)
#   SBX_TEST_ARGS   extra pytest arguments for every run, quoted as in a shell (e.g. '-x -k "idmap or tty"')
#   SBX_TEST_RUNS   which runs to do, space separated (default "sbxsub sbxnosub root benches")
#   SBX_TEST_JOBS   how many runs go at once (default 2; each user has its own home, store and
#                   runtime directory, so runs share nothing). A run's output is printed whole when
#                   it ends, so the log reads as if they had run one after the other.
set -euo pipefail
umask 022
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: run as root (sudo scripts/test.sh): it installs packages and creates test users" >&2
    exit 2
fi

src=$(cd "$(dirname "$0")/.." && pwd)
work=${SBX_TEST_DIR:-/var/tmp/sbx-test}
runs=${SBX_TEST_RUNS:-"sbxsub sbxnosub root benches"}
# Split as the shell would, so quoted words stay whole: SBX_TEST_ARGS='-k "idmap or network"'.
eval "extra_args=(${SBX_TEST_ARGS:-})"
jobs=${SBX_TEST_JOBS:-2}
per_run_timeout=1500   # one user run, sharing the machine with another; CI as a whole must stay under 30 minutes
python=/usr/bin/python3   # not a pyenv/other python under /root: unprivileged users must be able to run it

log() { printf '\n=== %s\n' "$*"; }

# --- 1. Debian packages -------------------------------------------------------------------------
# Build: python3-venv python3-dev gcc libc6-dev libseccomp-dev. Tests: busybox-static (test root filesystem), uidmap
# (newuidmap/newgidmap), fuse-overlayfs (overlay fallback). Benchmarks: bubblewrap crun hyperfine passt.
# Image tests: docker-registry skopeo umoci apache2-utils (htpasswd) openssl; podman (podman load, benchmarks);
# buildah (build comparison and benchmarks). cgroup v2 tests: qemu-system-x86 (a TCG VM, tests/vm/).
# Networking: slirp4netns and passt (pasta); iptables (iptables-nft: NAT for user-defined networks). OCI runtime interoperability: runc (the reference), containerd.
# Docker API clients: docker.io (the docker CLI; its daemon is never started), docker-compose.
# Throughput benchmarks: iperf3. A real Debian base for build fidelity: mmdebstrap (from the configured mirror).
packages=(python3-venv python3-dev gcc libc6-dev libseccomp-dev busybox-static uidmap bubblewrap crun passt
          fuse-overlayfs docker-registry skopeo umoci apache2-utils openssl hyperfine podman buildah qemu-system-x86
          slirp4netns iptables runc containerd docker.io docker-compose iperf3 mmdebstrap)
missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -q
    # docker-registry's postinst starts a registry service on :5000 where an init system runs;
    # the image tests start their own registries, so keep package scripts from starting services.
    policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    rc=0
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null || rc=$?
    [ -z "$made_policy" ] || rm -f "$policy"
    [ "$rc" = 0 ] || { echo "scripts/test.sh: apt-get install failed" >&2; exit "$rc"; }
fi

# --- 2. A world-readable copy of the checkout ---------------------------------------------------
# CI clones into places other users cannot read (e.g. under /root, mode 0700), and a build must
# not write into the checkout, so everything happens in a fresh copy.
log "copying $src to $work/src"
rm -rf "$work"
mkdir -p "$work/src"
chmod 755 "$work"
if git -C "$src" -c safe.directory='*' rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and untracked-but-not-ignored files that exist (a deleted tracked file is skipped).
    git -C "$src" -c safe.directory='*' ls-files -z --cached --others --exclude-standard |
        (cd "$src" && while IFS= read -r -d '' f; do
             if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
         done) |
        tar -C "$src" --null --no-recursion -T - -cf - | tar -C "$work/src" -xf -
else
    tar -C "$src" --exclude=./.git --exclude=./build --exclude=./dist --exclude='./*.egg-info' \
        --exclude=./.venv --exclude=./venv --exclude='__pycache__' -cf - . | tar -C "$work/src" -xf -
fi
chmod -R a+rX "$work/src"

# --- 3. Build and install into a venv made with Debian's python ---------------------------------
log "building and installing sbx into $work/venv"
"$python" -m venv "$work/venv"
venv=$work/venv
# The test extra (pyproject.toml): pytest, pytest-benchmark, and pytest-timeout, so that a hung test
# fails after 300 s with a stack dump instead of stalling the run.
"$venv/bin/pip" install -q --disable-pip-version-check --no-input "$work/src[test]"
chmod -R a+rX "$venv"
"$venv/bin/python" -c 'import sandbox' || { echo "scripts/test.sh: 'import sandbox' fails after install" >&2; exit 1; }

# --- 4. Test users -------------------------------------------------------------------------------
# sbxsub: a subordinate uid and gid range of 65536 ids. sbxnosub: no range at all (useradd may add
# one on its own when /etc/subuid exists, so remove any after creating the user).
ensure_user() {
    id -u "$1" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$1"
    mkdir -p "/home/$1"
    chown "$1:" "/home/$1"
}
# Print a start for a new 65536-id range that overlaps no existing range in the given file.
free_range_start() {
    awk -F: -v want=200000 'NF >= 3 { end = $2 + $3; if (end > max) max = end }
        END { print (max > want ? max : want) }' "$@"
}
ensure_subids() {  # user
    local user=$1 uid f ok start
    uid=$(id -u "$user")
    for f in /etc/subuid /etc/subgid; do
        touch "$f"
        ok=$(awk -F: -v u="$user" -v n="$uid" '($1 == u || $1 == n) && $3 >= 65536 { print "yes"; exit }' "$f")
        if [ "$ok" != yes ]; then
            sed -i -e "/^$user:/d" -e "/^$uid:/d" "$f"
            start=$(free_range_start /etc/subuid /etc/subgid)
            echo "$user:$start:65536" >>"$f"
        fi
    done
}
drop_subids() {  # user
    local user=$1 uid f
    uid=$(id -u "$user")
    for f in /etc/subuid /etc/subgid; do
        [ -e "$f" ] && sed -i -e "/^$user:/d" -e "/^$uid:/d" "$f"
    done
    return 0
}
log "test users"
ensure_user sbxsub
ensure_user sbxnosub
ensure_subids sbxsub
drop_subids sbxnosub
chmod 644 /etc/subuid /etc/subgid
grep -H -E '^(sbxsub|sbxnosub|'"$(id -u sbxsub)"'|'"$(id -u sbxnosub)"'):' /etc/subuid /etc/subgid || true

# Unprivileged user namespaces must work for the unprivileged runs. Where a distribution turns them
# off (Debian's kernel.unprivileged_userns_clone=0, Ubuntu 24.04's AppArmor restriction), allow them
# for the duration of the run and put the setting back afterwards.
restore_sysctls=()
restore() {
    local kv
    for kv in ${restore_sysctls[@]+"${restore_sysctls[@]}"}; do echo "${kv#*=}" >"${kv%%=*}" || true; done
}
trap restore EXIT
allow_userns() {  # sysctl-name wanted-value
    local f=/proc/sys/${1//.//} old
    [ -w "$f" ] || return 0
    old=$(cat "$f")
    if [ "$old" != "$2" ]; then
        log "setting $1=$2 for this run (was $old; restored on exit)"
        echo "$2" >"$f"
        restore_sysctls+=("$f=$old")
    fi
}
allow_userns kernel.unprivileged_userns_clone 1
allow_userns kernel.apparmor_restrict_unprivileged_userns 0

# Rootless networking (slirp4netns, pasta) opens /dev/net/tun in the user's namespace. udev makes it
# 0666 on desktops; a machine without udev leaves it 0600 root, so do what udev does.
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
    log "chmod 0666 /dev/net/tun (as udev does; it was $(stat -c %a /dev/net/tun))"
    chmod 0666 /dev/net/tun
fi

# A real Debian base and a loopback apt repository for the build tests and benches (issue 9): made once per machine.
debian=$(bash "$work/src/scripts/debian-base.sh") || { echo "scripts/test.sh: scripts/debian-base.sh failed" >&2; debian=; }

# --- 5/6. The runs ------------------------------------------------------------------------------
declare -a summary=()
failed=0
record() {  # name rc
    local verdict=PASS
    # 5 = no tests collected: a run that tested nothing is a failure too.
    [ "$2" = 0 ] || { verdict=FAIL; failed=1; }
    summary+=("$(printf '%-10s %s (pytest exit %s)' "$1" "$verdict" "$2")")
}
run_as() {  # name user target [pytest args...]
    local name=$1 user=$2 target=$3 home rundir xdg rc
    shift 3
    rundir=$work/run-$name
    mkdir -p "$rundir"
    if [ "$user" = root ]; then home=/root; else home=/home/$user; chown "$user:" "$rundir"; fi
    # The user's own runtime directory, as a login session would have: without XDG_RUNTIME_DIR,
    # skopeo and podman look for /run/containers/UID/auth.json, and once root has used podman
    # /run/containers is mode 0700, so they stop on "permission denied".  (Not REGISTRY_AUTH_FILE:
    # docker-registry reads REGISTRY_* variables as configuration and would refuse to start.)
    xdg=$rundir/xdg-runtime
    mkdir -p -m 0700 "$xdg"
    chmod 0700 "$xdg"
    chown "$user:" "$xdg"
    log "pytest $target as $user"
    local cmd=(env -i "HOME=$home" "USER=$user" "LOGNAME=$user" "PATH=$venv/bin:/usr/bin:/bin:/usr/sbin:/sbin"
               "LANG=C.UTF-8" "CI=${CI:-}" "XDG_RUNTIME_DIR=$xdg" "SBX_TEST_DEBIAN=$debian"
               timeout --kill-after=30 "$per_run_timeout"
               "$venv/bin/python" -m pytest -p no:cacheprovider --timeout 300 --durations=15 --basetemp "$rundir/tmp"
               -rfEs "$@" "${extra_args[@]}" "$work/src/$target")
    set +e
    if [ "$user" = root ]; then
        (cd "$rundir" && "${cmd[@]}" </dev/null)
    else
        (cd "$rundir" && runuser -u "$user" -- "${cmd[@]}" </dev/null)
    fi
    rc=$?
    set -e
    record "$name" "$rc"
}

one_run() {  # name
    case $1 in
        sbxsub|sbxnosub) run_as "$1" "$1" tests ;;
        root) run_as root root tests ;;
        benches)
            if [ -d "$work/src/benches" ]; then
                run_as benches sbxsub benches --benchmark-disable
            else
                summary+=("$(printf '%-10s %s' benches 'SKIP (no benches/ directory)')")
            fi ;;
    esac
}
for r in $runs; do
    case $r in
        sbxsub|sbxnosub|root|benches) ;;
        *) echo "scripts/test.sh: unknown run '$r'" >&2; exit 2 ;;
    esac
done
# Up to $jobs runs at once, each in a subshell writing its output and its summary line to files;
# a run's output is printed as one block when it ends.
declare -A running=()
finish_one() {
    local pid name
    wait -n -p pid "${!running[@]}" || true
    name=${running[$pid]}
    unset "running[$pid]"
    cat "$work/out-$name"
    if [ -s "$work/summary-$name" ]; then
        mapfile -t -O "${#summary[@]}" summary <"$work/summary-$name"
        grep -q ' FAIL ' "$work/summary-$name" && failed=1
    else  # the run's shell itself failed before recording a result
        summary+=("$(printf '%-10s %s' "$name" 'FAIL (the run ended without a result)')")
        failed=1
    fi
    return 0
}
for r in $runs; do
    while [ "${#running[@]}" -ge "$jobs" ]; do finish_one; done
    ( summary=(); failed=0; one_run "$r"; printf '%s\n' "${summary[@]}" >"$work/summary-$r" ) >"$work/out-$r" 2>&1 &
    running[$!]=$r
done
while [ "${#running[@]}" -gt 0 ]; do finish_one; done

log "summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
