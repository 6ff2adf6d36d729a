#!/usr/bin/env bash
# The whole suite on Linux arm64: an arm64 Debian (bookworm, made once with
# debootstrap and cached), run through qemu-user's binfmt_misc handler, so
# that its programs, the subprocesses the suite starts included, run as if
# native.  leaky is built there natively (gcc, Debian's python3) from a copy
# of this clone, its test dependencies installed from wheels (NumPy's
# aarch64 wheel among them), and the suite run twice: on the NEON kernels
# and on the portable loops (LEAKY_KERNELS).
#
#   bash .ci/arm64.sh                 # both paths, the whole suite
#   bash .ci/arm64.sh -k threads      # extra arguments go to pytest
#   LEAKY_ARM64_KERNELS=neon bash .ci/arm64.sh
#
# This is the only place the real module runs on arm64 here: the NEON loops
# inside leaky._leaky, the pool, the fork handling and the CPU count on an
# arm64 kernel ABI (.ci/kernel_paths.sh runs the NEON loops alone, in C).
# Emulated, so nothing is timed.
#
# The root is cached under ${LEAKY_CI_CACHE:-~/.cache/leaky-ci}, keyed by the
# suite and a hash of the recipe below (the packages and the debootstrap
# options), outside the clone; a second run only makes the venv.  The
# archive is the machine's own Debian mirror, read from its apt sources at
# run time.  Runs as root (debootstrap, chroot, binfmt_misc); under CI=true
# it installs debootstrap and qemu-user-static itself.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { echo "== arm64.sh [$((SECONDS - started))s] $*"; }

SUITE=bookworm
# python3-dev and gcc: leaky is compiled there; python3-venv: pip in a venv
PACKAGES=python3,python3-venv,python3-dev,gcc,libc6-dev
# Bump on any change to how the root is made: a new cache key.
RECIPE="r1 $SUITE minbase $PACKAGES"
key=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)
cache=${LEAKY_CI_CACHE:-$HOME/.cache/leaky-ci}
root=$cache/arm64-$SUITE-$key
mkdir -p "$cache"

if [ "$(id -u)" != 0 ]; then
    echo "arm64.sh: needs root (debootstrap, chroot, binfmt_misc)" >&2
    exit 1
fi
if [ "${CI:-}" = true ] &&
    { ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null; }; then
    # with debootstrap's recommends: arch-test tells it that the root's
    # programs can run here, so it does both stages at once
    apt-get update -qq && apt-get install -y -qq debootstrap qemu-user-static >/dev/null
fi
for tool in debootstrap qemu-aarch64-static unshare; do
    command -v "$tool" >/dev/null || {
        echo "arm64.sh: $tool missing (apt-get install debootstrap qemu-user-static)" >&2
        exit 1
    }
done

# ---- binfmt_misc: arm64 ELF files run through qemu-aarch64-static ----
# Registered only if no handler is: another one (qemu-user-binfmt's, a
# container host's) is left as it is.  The F flag in Debian's line makes
# the kernel open the interpreter now, so it need not exist in the root.
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
    mount -t binfmt_misc binfmt_misc "$binfmt"
fi
if [ ! -e "$binfmt/qemu-aarch64" ]; then
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$conf" ] || { echo "arm64.sh: no $conf (qemu-user-static)" >&2; exit 1; }
    grep -v -e '^#' -e '^$' "$conf" >"$binfmt/register"
    step "registered binfmt_misc handler qemu-aarch64"
fi
grep -qx enabled "$binfmt/qemu-aarch64" || {
    echo "arm64.sh: the qemu-aarch64 binfmt_misc handler is disabled" >&2
    exit 1
}

# ---- the root, made once per recipe ----
exec 9>"$cache/arm64-$SUITE.lock"
flock 9
if [ ! -f "$root/.complete" ]; then
    # The first deb entry for the main archive (not -security), deb822 or
    # one-line style, as .ci/cpython-source.sh reads it.
    uri=$(grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -v -- '-security' | head -n1 | awk '{print $2}' || true)
    if [ -z "$uri" ]; then
        uri=$(grep -h -E '^deb ' /etc/apt/sources.list 2>/dev/null |
            grep -v -- '-security' | head -n1 | awk '{print $2}' || true)
    fi
    [ -n "$uri" ] || { echo "arm64.sh: no Debian archive entry in the apt sources" >&2; exit 1; }
    step "debootstrap --arch=arm64 $SUITE (minutes, once per recipe)"
    # nothing is mounted under a root being made, so removing a failed one is safe
    rm -rf "$root"
    partial=$root.partial
    rm -rf "$partial"
    debootstrap --arch=arm64 --variant=minbase --include="$PACKAGES" \
        "$SUITE" "$partial" "$uri" >"$cache/arm64-debootstrap.log" 2>&1 || {
        tail -n 30 "$cache/arm64-debootstrap.log"
        exit 1
    }
    rm -rf "$partial/var/cache/apt/archives/"*.deb
    mv "$partial" "$root"
    touch "$root/.complete"
    step "root made: $(du -sh "$root" | cut -f1)"
fi
flock -u 9

# ---- this run: a copy of the clone, the CA bundle, a venv, the suite ----
run=$(mktemp -d "$root/tmp/leaky-run.XXXXXX")
trap 'rm -rf "$run"' EXIT
inner=/tmp/$(basename "$run")
# tracked and untracked-but-not-ignored files: what a fresh clone plus the
# change under test holds, without this checkout's venvs and builds
git ls-files -z --cached --others --exclude-standard |
    tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$run"
# TLS as the host has it: its CA bundle, never verification turned off
mkdir -p "$root/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$root/etc/resolv.conf"

kernels=${LEAKY_ARM64_KERNELS:-neon portable}
cat >"$run/.arm64-run.sh" <<EOF
set -euo pipefail
cd $inner
# everything a run writes (pip's and pytest's temporary files) goes with it
export TMPDIR=$inner/tmp
mkdir -p "\$TMPDIR"
echo "arm64: \$(uname -m), \$(python3 --version)"
python3 -m venv $inner/venv
. $inner/venv/bin/activate
python -m pip install -qq --upgrade pip
# the test extra, every dependency a wheel (leaky itself is built here)
python -m pip install -qq --only-binary :all: ".[test]"
python -c 'import leaky._leaky as e, numpy
assert e._supported_kernels == ("neon", "portable"), e._supported_kernels
print("arm64: leaky", e.__file__, "kernels", e._supported_kernels, "NumPy", numpy.__version__)'
echo "== arm64.sh: the venv, its wheels and leaky's build took \$SECONDS s"
status=0
for k in $kernels; do
    echo "== arm64.sh: the suite with LEAKY_KERNELS=\$k"
    start=\$SECONDS
    LEAKY_KERNELS=\$k python -m pytest -q -p no:cacheprovider "\$@" || status=1
    echo "== arm64.sh: LEAKY_KERNELS=\$k took \$((SECONDS - start)) s"
done
exit \$status
EOF

step "venv, leaky built, the suite on: $kernels"
# A private mount namespace: /proc, /dev and the host's pip configuration
# are bound for this run only and vanish with it, so no mount is ever left
# under the cached root.
pip_binds=""
for conf in /etc/pip.conf "$HOME/.config/pip"; do
    [ -e "$conf" ] || continue
    mkdir -p "$root$(dirname "$conf")"
    if [ -d "$conf" ]; then
        mkdir -p "$root$conf"
    else
        touch "$root$conf"
    fi
    pip_binds+="mount --bind -o ro '$conf' '$root$conf'; "
done
unshare --mount --propagation private bash -c "
    set -e
    mount -t proc proc '$root/proc'
    mount --rbind /dev '$root/dev'
    $pip_binds
    exec chroot '$root' /usr/bin/env -u VIRTUAL_ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        /bin/bash '$inner/.arm64-run.sh' \"\$@\"
" arm64 "$@"
step "done"
