#!/usr/bin/env bash
# Print the directory of CPython 3.13's source tree, unpacked from Debian's
# `python3.13` source package (the trixie suite), fetching it on first use.
#
# Two CI steps rest on it: .ci/platforms.sh takes every target's CPython
# headers from it (PC/pyconfig.h for Windows included), and .ci/freethreaded.sh
# builds a free-threaded interpreter from it.  The tree is cached outside the
# clone, under ${LEAKY_CI_CACHE:-~/.cache/leaky-ci}, so a second run costs
# nothing; a lock keeps two runs from unpacking it at once.
#
# The deb-src entry reuses the URI of the machine's own Debian entry (no host
# is written here); apt-get, dpkg-source and the keyring are on any Debian.
set -euo pipefail

cache=${LEAKY_CI_CACHE:-$HOME/.cache/leaky-ci}
tree=$cache/cpython-3.13-src
mkdir -p "$cache"
exec 9>"$cache/cpython-source.lock"
flock 9

if [ ! -f "$tree/Include/Python.h" ]; then
    if ! command -v dpkg-source >/dev/null; then
        apt-get update -qq && apt-get install -y -qq dpkg-dev >/dev/null
    fi
    # The first deb entry for the main archive (not -security), deb822 or
    # one-line style.
    uri=$(grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -v -- '-security' | head -n1 | awk '{print $2}' || true)
    if [ -z "$uri" ]; then
        uri=$(grep -h -E '^deb ' /etc/apt/sources.list 2>/dev/null |
            grep -v -- '-security' | head -n1 | awk '{print $2}' || true)
    fi
    if [ -z "$uri" ]; then
        echo "cpython-source.sh: no Debian archive entry found in the apt sources" >&2
        exit 1
    fi
    # A private apt configuration: the machine's own lists are left alone.
    apt_dir=$cache/apt
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uri" >"$apt_dir/trixie-src.sources"
    # Root runs it, and the private lists are root's: no _apt sandbox.
    apt_opts=(-o "APT::Sandbox::User=root"
        -o "Dir::Etc::SourceList=/dev/null"
        -o "Dir::Etc::SourceParts=$apt_dir"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache::Archives=$apt_dir/archives")
    apt-get "${apt_opts[@]}" update -qq
    work=$(mktemp -d "$cache/fetch.XXXXXX")
    (cd "$work" && apt-get "${apt_opts[@]}" source -qq python3.13 >/dev/null)
    unpacked=$(find "$work" -maxdepth 1 -type d -name 'python3.13-*' | head -n1)
    if [ -z "$unpacked" ] || [ ! -f "$unpacked/Include/Python.h" ]; then
        echo "cpython-source.sh: apt-get source python3.13 gave no CPython tree" >&2
        exit 1
    fi
    rm -rf "$tree"
    mv "$unpacked" "$tree"
    # Which release this is, from the package's changelog.
    head -n1 "$tree/debian/changelog" | sed -E 's/.*\((.*)\).*/\1/' >"$tree/.debian-version"
    rm -rf "$work"
fi
echo "$tree"
