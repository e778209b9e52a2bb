#!/usr/bin/env bash
# Build the local Lambda base image for `sam local invoke --invoke-image` (no registry reachable here)
# and the moto server image the SAM test tier runs next to it.
#
#   tools/lambda-image/build.sh            # idempotent: does nothing when both images are current
#   LAMBDA_IMAGE=... MOTO_IMAGE=... tools/lambda-image/build.sh
#
# The Lambda image is a Debian bookworm root (Python 3.11) from debootstrap, with awslambdaric and
# boto3 in /var/runtime and a /var/runtime/bootstrap; SAM layers its runtime interface emulator on
# top. Its rootfs tarball is cached in $CACHE_DIR, keyed by a hash of this folder, so a restarted
# Docker engine (or a CI run with a warm cache folder) imports it instead of running debootstrap.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
LAMBDA_IMAGE="${LAMBDA_IMAGE:-dicom-lambda-python3.11:local}"
MOTO_IMAGE="${MOTO_IMAGE:-dicom-moto-server:local}"
CACHE_DIR="${LAMBDA_IMAGE_CACHE:-$HERE/../../.cache/lambda-image}"
# Versions of what goes into the images: part of the cache key.
AWSLAMBDARIC_VERSION="${AWSLAMBDARIC_VERSION:-4.2.2}"
BOTO3_VERSION="${BOTO3_VERSION:-1.44.5}"
MOTO_VERSION="${MOTO_VERSION:-5.2.5}"
SUITE=bookworm
# Any pip for CPython 3.11 on Linux x86_64 (the Makefile passes the project venv's).
read -r -a PIP <<<"${PIP:-python3 -m pip}"

log() { printf 'lambda-image: %s\n' "$*" >&2; }

mirror() {
    # The machine's own Debian mirror (deb822 sources first, then the classic list).
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)"
    fi
    echo "${DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

input_hash() {
    {
        cat "$HERE"/build.sh "$HERE"/bootstrap "$HERE"/entrypoint.sh
        echo "$SUITE $AWSLAMBDARIC_VERSION $BOTO3_VERSION $MOTO_VERSION"
    } | sha256sum | cut -c1-16
}

image_hash() {
    docker image inspect --format '{{ index .Config.Labels "dicom.build-hash" }}' "$1" 2>/dev/null || true
}

pip_target() {
    local target="$1"
    shift
    "${PIP[@]}" install --no-cache-dir --no-warn-conflicts --disable-pip-version-check --target "$target" "$@" \
        >"$CACHE_DIR/pip.log" 2>&1 || { tail -n 30 "$CACHE_DIR/pip.log" >&2; exit 1; }
}

docker info >/dev/null 2>&1 || { log "the Docker engine is not running (start dockerd first)"; exit 1; }

HASH="$(input_hash)"
ROOTFS="$CACHE_DIR/rootfs-$HASH.tar"
mkdir -p "$CACHE_DIR"

build_rootfs() {
    local work root
    work="$(mktemp -d "$CACHE_DIR/build.XXXXXX")"
    root="$work/root"
    trap 'rm -rf "$work"' RETURN
    log "debootstrap $SUITE from $(mirror) (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
        "$SUITE" "$root" "$(mirror)" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
    log "awslambdaric $AWSLAMBDARIC_VERSION and boto3 $BOTO3_VERSION into /var/runtime"
    # The host is Debian 12 with Python 3.11 too, so its pip picks wheels that fit the image.
    pip_target "$root/var/runtime" "awslambdaric==$AWSLAMBDARIC_VERSION" "boto3==$BOTO3_VERSION"
    install -m 0755 "$HERE/bootstrap" "$root/var/runtime/bootstrap"
    install -m 0755 "$HERE/entrypoint.sh" "$root/lambda-entrypoint.sh"
    mkdir -p "$root/var/task" "$root/opt"
    # Smaller image: package caches and docs are not needed at run time.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc \
        "$root"/usr/share/man "$root"/usr/share/locale
    tar -C "$root" -c . >"$ROOTFS.partial"
    mv "$ROOTFS.partial" "$ROOTFS"
    log "cached rootfs $ROOTFS ($(du -h "$ROOTFS" | cut -f1))"
}

if [ "$(image_hash "$LAMBDA_IMAGE")" != "$HASH" ]; then
    [ -f "$ROOTFS" ] || build_rootfs
    log "importing $LAMBDA_IMAGE"
    docker import \
        --change 'ENTRYPOINT ["/lambda-entrypoint.sh"]' \
        --change 'WORKDIR /var/task' \
        --change 'ENV LAMBDA_TASK_ROOT=/var/task' \
        --change 'ENV LAMBDA_RUNTIME_DIR=/var/runtime' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/var/runtime/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL dicom.build-hash=$HASH" \
        "$ROOTFS" "$LAMBDA_IMAGE" >/dev/null
else
    log "$LAMBDA_IMAGE is current ($HASH)"
fi

if [ "$(image_hash "$MOTO_IMAGE")" != "$HASH" ]; then
    log "building $MOTO_IMAGE (moto[server] $MOTO_VERSION on $LAMBDA_IMAGE)"
    context="$(mktemp -d "$CACHE_DIR/moto.XXXXXX")"
    trap 'rm -rf "$context"' EXIT
    pip_target "$context/moto" "moto[server]==$MOTO_VERSION"
    cat >"$context/Dockerfile" <<DOCKERFILE
FROM $LAMBDA_IMAGE
COPY moto /opt/moto
ENV PYTHONPATH=/opt/moto
WORKDIR /
LABEL dicom.build-hash=$HASH
EXPOSE 5000
ENTRYPOINT ["python3", "-m", "moto.server", "-H", "0.0.0.0", "-p", "5000"]
DOCKERFILE
    DOCKER_BUILDKIT=0 docker build -q -t "$MOTO_IMAGE" "$context" >/dev/null
else
    log "$MOTO_IMAGE is current ($HASH)"
fi

# Old cached roots and images replaced by a rebuild (untagged, with our label) are dead weight.
find "$CACHE_DIR" -maxdepth 1 -name 'rootfs-*.tar' ! -name "rootfs-$HASH.tar" -delete
docker image prune --force --filter label=dicom.build-hash >/dev/null
log "ready: $LAMBDA_IMAGE $MOTO_IMAGE"
