#!/usr/bin/env bash
# Debian's clickhouse-server (18.16) and the libraries it needs that this machine lacks,
# extracted into DIR (not installed): DIR/root/usr/sbin/clickhouse-server. Idempotent.
set -euo pipefail
dir=${1:?usage: fetch_old_clickhouse.sh DIR}
server=$dir/root/usr/sbin/clickhouse-server
[ -x "$server" ] && exit 0
mkdir -p "$dir/debs"
cd "$dir/debs"
# A fresh machine may have no package lists yet.
apt-cache show clickhouse-server >/dev/null 2>&1 || apt-get update -qq
missing=()
for package in $(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances --no-pre-depends clickhouse-server | grep '^\w' | sort -u); do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$package")
done
apt-get download -qq "${missing[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
rm -rf "$dir/root.tmp" && mkdir "$dir/root.tmp"
for deb in ./*.deb; do dpkg-deb -x "$deb" "$dir/root.tmp"; done
rm -rf "$dir/root" && mv "$dir/root.tmp" "$dir/root"
test -x "$server"
