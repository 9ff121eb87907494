#!/bin/bash
# A real Debian base image and a loopback apt repository for the build tests and benchmarks (issue 9),
# made once per machine as root and cached: `scripts/debian-base.sh [CACHE_DIR]` prints CACHE_DIR.
#
#   CACHE_DIR/base.tar      `mmdebstrap --variant=minbase bookworm` from this machine's configured Debian
#                           mirror, as a tar (SOURCE_DATE_EPOCH fixed: the same mirror state gives the same
#                           bytes); sbx imports it as an image.
#   CACHE_DIR/oci/          the same image as an OCI layout (one gzip layer, ref.name bookworm).
#   CACHE_DIR/repo/         a flat apt repository (Packages, Release, *.deb) of the packages the test
#                           Dockerfiles install, with every dependency the base lacks, resolved by apt inside
#                           that base: served on the host by the tests (`deb [trusted=yes] http://ADDR:PORT/ ./`),
#                           so builds install packages without the network.
#   CACHE_DIR/stamp         the recipe it was made from: a changed recipe makes it again, else it is reused.
#
# Everything is world-readable: the unprivileged test users read it. The packages: hello (plain), netbase
# (conffiles), iputils-ping (its postinst gives /bin/ping a file capability with setcap), uuid-runtime
# (its postinst adds a system user and group with adduser).
set -eu
umask 022
cache=${1:-/var/cache/sbx-test/debian}
suite=bookworm
packages="hello netbase iputils-ping uuid-runtime"
recipe="4 $suite minbase $packages"

if [ -f "$cache/stamp" ] && [ "$(cat "$cache/stamp")" = "$recipe" ] && [ -f "$cache/base.tar" ] &&
   [ -f "$cache/oci/index.json" ] && [ -f "$cache/repo/Packages" ]; then
    echo "$cache"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "scripts/debian-base.sh: run as root (it runs mmdebstrap in root mode)" >&2
    exit 2
fi

# The machine's configured Debian mirror: the first deb URI of apt's sources that serves $suite.
mirror=$(
    { grep -h -E '^(URIs|Suites):' /etc/apt/sources.list.d/*.sources 2>/dev/null |
          awk '/^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "'$suite'") print uri }'
      grep -h -E '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
          sed -E 's/\[[^]]*\]//' | awk '$3 == "'$suite'" { print $2 }'
    } | grep -v -e security -e '^$' | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$(dirname "$cache")"
chmod 755 "$(dirname "$cache")"
new=$(mktemp -d "$cache.new.XXXXXX")
trap 'rm -rf "$new"' EXIT
mkdir "$new/repo"
export SOURCE_DATE_EPOCH=1700000000
echo "scripts/debian-base.sh: mmdebstrap --variant=minbase $suite from $mirror (once per machine)" >&2
# The customize hooks run inside the finished base, before mmdebstrap's cleanup: the test packages
# downloaded (only what the base lacks: its own cache is emptied first) and copied out, then the
# host's files (resolv.conf, hostname) taken out, so the tar does not depend on the host.
mmdebstrap --mode=root --variant=minbase --format=tar --quiet \
    --customize-hook='chroot "$1" apt-get clean' \
    --customize-hook="chroot \"\$1\" apt-get install -y -q --download-only --no-install-recommends $packages" \
    --customize-hook="cp \"\$1\"/var/cache/apt/archives/*.deb \"$new/repo/\"" \
    --customize-hook='rm -f "$1/etc/resolv.conf"; : > "$1/etc/hostname"' \
    "$suite" "$new/base.tar" "deb $mirror $suite main" >&2   # stdout: the cache directory only

# No device nodes: an image's /dev is empty (the runtime mounts one), and unprivileged users cannot make them.
tar --delete -f "$new/base.tar" $(tar -tvf "$new/base.tar" | awk '/^[cb]/ { print $NF }')
# The repository's index, as dpkg-scanpackages writes it (dpkg-deb is in every Debian; dpkg-dev is not).
# Files are renamed NAME_ARCH.deb: an epoch's ':' is '%3a' in apt's file names, which a URL would decode.
(
    cd "$new/repo"
    for deb in *.deb; do
        mv "$deb" "$(dpkg-deb -f "$deb" Package)_$(dpkg-deb -f "$deb" Architecture).deb"
    done
    for deb in *.deb; do
        dpkg-deb -f "$deb"
        printf 'Filename: ./%s\nSize: %s\nSHA256: %s\n\n' "$deb" "$(stat -c %s "$deb")" \
            "$(sha256sum "$deb" | cut -d' ' -f1)"
    done >Packages
    printf 'Date: %s\nSHA256:\n %s %s Packages\n' "$(date -u -R -d "@$SOURCE_DATE_EPOCH")" \
        "$(sha256sum Packages | cut -d' ' -f1)" "$(stat -c %s Packages)" >Release
)

# The base as an OCI image layout too (ref.name bookworm), loaded by `sbx load` and `buildah pull oci:`
# without compressing 170 MB again in every test run: one gzip layer (gzip -n: no name or time, so the
# same tar gives the same digest) and a config like Docker's debian:bookworm (PATH, CMD bash).
oci=$new/oci
mkdir -p "$oci/blobs/sha256"
blob() {  # file -> moved to blobs/sha256/DIGEST; sets $digest and $size
    digest=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$oci/blobs/sha256/$digest"
}
diff_id=$(sha256sum "$new/base.tar" | cut -d' ' -f1)
gzip -n -6 -c "$new/base.tar" >"$oci/layer"
blob "$oci/layer"
layer=$digest layer_size=$size
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
printf '{"architecture":"%s","config":{"Cmd":["bash"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},"created":"%s","history":[{"created":"%s","created_by":"mmdebstrap --variant=minbase %s"}],"os":"linux","rootfs":{"diff_ids":["sha256:%s"],"type":"layers"}}' \
    "$(dpkg --print-architecture)" "$created" "$created" "$suite" "$diff_id" >"$oci/config"
blob "$oci/config"
printf '{"config":{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.config.v1+json","size":%s},"layers":[{"digest":"sha256:%s","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":%s}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}' \
    "$digest" "$size" "$layer" "$layer_size" >"$oci/manifest"
blob "$oci/manifest"
printf '{"manifests":[{"annotations":{"org.opencontainers.image.ref.name":"%s"},"digest":"sha256:%s","mediaType":"application/vnd.oci.image.manifest.v1+json","size":%s}],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}' \
    "$suite" "$digest" "$size" >"$oci/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$oci/oci-layout"

echo "$recipe" >"$new/stamp"
chmod -R a+rX "$new"
chmod 755 "$new"
rm -rf "$cache.old"
[ ! -e "$cache" ] || mv "$cache" "$cache.old"
mv "$new" "$cache"
rm -rf "$cache.old"
trap - EXIT
echo "$cache"
