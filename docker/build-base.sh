#!/bin/sh
# A Debian base image for machines that reach a Debian mirror but not Docker Hub: a minimal root
# made with debootstrap, imported into Docker as surf-dist-base:RELEASE (root needed).
#
# Usage: docker/build-base.sh [RELEASE [MIRROR]]
#   RELEASE defaults to this machine's (VERSION_CODENAME in /etc/os-release), MIRROR to the URI
#   this machine's apt is configured with for that release. Then build on top of it with
#   docker build -f docker/Dockerfile.cpu --build-arg BASE=surf-dist-base:RELEASE ...
# Does nothing when the image exists already (docker rmi it to rebuild).
# CA certificates added locally (/usr/local/share/ca-certificates/*.crt, e.g. a TLS proxy's) are
# added to the image too, and pip there is pointed at the system bundle, so that apt and pip in
# the build trust what the host trusts.
set -eu
case ${1-} in -h | --help) sed -n '2,12p' "$0"; exit 0 ;; esac

RELEASE=${1:-$(sed -n "s/^VERSION_CODENAME=//p" /etc/os-release)}
IMAGE=surf-dist-base:$RELEASE

# The first apt source that serves RELEASE: deb822 (*.sources) stanzas, then one-line (*.list).
apt_mirror() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && awk -v rel="$1" '
            /^[ \t]*$/ { if (uri != "" && (" " suites " ") ~ (" " rel " ")) { print uri; exit }
                         uri = ""; suites = ""; next }
            $1 == "URIs:" { uri = $2 }
            $1 == "Suites:" { $1 = ""; suites = $0 }
            END { if (uri != "" && (" " suites " ") ~ (" " rel " ")) print uri }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] && awk -v rel="$1" '
            $1 == "deb" { i = 2; if ($i ~ /^\[/) while ($i !~ /\]$/) i++; if ($i ~ /^\[|\]$/) i++
                          if ($(i + 1) == rel) print $i }' "$f"
    done
}
MIRROR=${2:-$(apt_mirror "$RELEASE" | head -n 1)}
[ -n "$MIRROR" ] || { echo "no apt source for $RELEASE; pass MIRROR" >&2; exit 2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE exists"
    exit 0
fi
command -v debootstrap >/dev/null || apt-get install -y --no-install-recommends debootstrap

ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase --include=ca-certificates "$RELEASE" "$ROOT" "$MIRROR"
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] && cp "$crt" "$ROOT/usr/local/share/ca-certificates/"
done
chroot "$ROOT" update-ca-certificates >/dev/null
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*

tar -C "$ROOT" -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $RELEASE" - "$IMAGE"
docker image ls "$IMAGE"
