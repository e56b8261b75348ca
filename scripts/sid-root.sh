#!/usr/bin/env bash
# sid-root.sh -- a cached Debian unstable root with CPython 3.14/3.15, and commands run inside it.
#
#   scripts/sid-root.sh ensure          make or update the root (idempotent; fast when cached)
#   scripts/sid-root.sh run CMD [ARG..]  run CMD inside the root, in the current directory
#   scripts/sid-root.sh shell            an interactive shell inside the root
#
# Debian 12 ships no python3.14/3.15 and serves no source packages of them; Debian unstable
# ships both as binary packages. debootstrap makes a minimal unstable root once, under
# $SID_ROOT (default /var/cache/apiprof-sid: one copy per machine, shared by every clone and
# worktree, and kept by `make clean`); apt then installs the interpreters and the tools the
# tests call. A command runs in a private mount namespace (unshare), so the bind mounts of
# /proc, /dev, /dev/pts, /dev/shm, /sys and of the current directory's checkout (at the
# same path, so paths match on both sides) vanish with it, and parallel runs do not
# interfere. Needs root, debootstrap, unshare, and access to a Debian mirror.
set -euo pipefail

SID_ROOT=${SID_ROOT:-/var/cache/apiprof-sid}
# Everything the build and the tests need inside the root. A change of this list (or of
# SID_EXTRA_PACKAGES) reinstalls on the next run.
PACKAGES="python3.14 python3.14-dev python3.14-venv python3.15 python3.15-dev python3.15-venv
  gcc libc6-dev make ninja-build pkg-config zlib1g-dev ca-certificates
  chromium fonts-dejavu-core golang-go graphviz valgrind wrk prometheus postgresql ${SID_EXTRA_PACKAGES:-}"

die() { echo "sid-root.sh: $*" >&2; exit 1; }

# The mirror the host's apt already uses (the first .../debian URI), else deb.debian.org.
mirror() {
    if [ -n "${SID_MIRROR:-}" ]; then echo "$SID_MIRROR"; return; fi
    local m
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
          2>/dev/null | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 |
          tr -d ' ' || true)
    echo "${m:-http://deb.debian.org/debian}"
}

# Run ARGS inside the root with the binds listed above; the working directory is kept.
in_root() {
    local top
    top=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
    cp -L /etc/resolv.conf "$SID_ROOT/etc/resolv.conf" 2>/dev/null || true
    SID_ROOT="$SID_ROOT" TOP="$top" CWD="$PWD" unshare --mount --propagation private -- \
        bash -c '
        set -e
        r=$SID_ROOT
        for d in /proc /sys /dev /dev/pts /dev/shm; do
            mkdir -p "$r$d" && mount --rbind "$d" "$r$d"
        done
        if [ "$TOP" != / ]; then mkdir -p "$r$TOP" && mount --bind "$TOP" "$r$TOP"; fi
        exec chroot "$r" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            APIPROF_IN_SID=1 \
            /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$CWD" "$@"
        ' bash "$@"
}

# A killed debootstrap may leave its /proc (or more) mounted in the partial root: unmount
# those before removing it, so that nothing of the host is deleted through them.
unmount_under() {
    local m
    for m in $(findmnt -rn -o TARGET | grep -F "$1/" | sort -r || true); do umount -l "$m"; done
}

ensure() {
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount)"
    mkdir -p "$(dirname "$SID_ROOT")"
    exec 9>"$SID_ROOT.lock"
    flock 9
    if [ ! -e "$SID_ROOT/.apiprof-base" ]; then
        command -v debootstrap >/dev/null || {
            apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; }
        local tmp="$SID_ROOT.partial" m
        m=$(mirror)
        echo "sid-root.sh: debootstrap unstable from $m into $SID_ROOT (once per machine)" >&2
        unmount_under "$tmp"
        rm -rf --one-file-system "$tmp"
        debootstrap --variant=minbase unstable "$tmp" "$m" >"$SID_ROOT.log" 2>&1 ||
            { tail -n 30 "$SID_ROOT.log" >&2; die "debootstrap failed (log: $SID_ROOT.log)"; }
        # No daemons start inside the root when packages are installed.
        printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
        chmod +x "$tmp/usr/sbin/policy-rc.d"
        # A mirror that is a frozen copy serves a Release whose Valid-Until has passed.
        echo 'Acquire::Check-Valid-Until "false";' >"$tmp/etc/apt/apt.conf.d/99apiprof"
        unmount_under "$SID_ROOT"
        rm -rf --one-file-system "$SID_ROOT"
        mv "$tmp" "$SID_ROOT"
        touch "$SID_ROOT/.apiprof-base"
    fi
    local want have
    want=$(echo $PACKAGES | tr ' ' '\n' | sort -u | tr '\n' ' ')
    have=$(cat "$SID_ROOT/.apiprof-packages" 2>/dev/null || true)
    if [ "$want" != "$have" ]; then
        echo "sid-root.sh: installing in $SID_ROOT: $want" >&2
        # shellcheck disable=SC2086
        in_root sh -c "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends $want >/dev/null && apt-get clean" ||
            die "apt-get install failed inside $SID_ROOT"
        echo "$want" >"$SID_ROOT/.apiprof-packages"
    fi
    # The host's site-local CAs (Debian's place for them; e.g. a TLS-inspecting proxy's),
    # so that pip inside the root reaches PyPI the way the host does.
    want=$(cat /usr/local/share/ca-certificates/* 2>/dev/null | md5sum)
    have=$(cat "$SID_ROOT/.apiprof-cas" 2>/dev/null || true)
    if [ "$want" != "$have" ]; then
        rm -rf "$SID_ROOT/usr/local/share/ca-certificates"
        mkdir -p "$SID_ROOT/usr/local/share/ca-certificates"
        cp -rL /usr/local/share/ca-certificates/. "$SID_ROOT/usr/local/share/ca-certificates/" \
            2>/dev/null || true
        in_root update-ca-certificates --fresh >/dev/null || die "update-ca-certificates failed"
        echo "$want" >"$SID_ROOT/.apiprof-cas"
    fi
    exec 9>&-
}

case "${1:-}" in
    ensure) ensure ;;
    run) shift; [ $# -gt 0 ] || die "run needs a command"; ensure; in_root "$@" ;;
    shell) ensure; in_root bash ;;
    *) echo "usage: $0 ensure | run CMD [ARG...] | shell" >&2; exit 2 ;;
esac
