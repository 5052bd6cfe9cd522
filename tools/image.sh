#!/usr/bin/env bash
# `deno task image`: build localhost/shipshape:latest with no image registry, only apt and npm.
#
# 1. A distroless-equivalent base (localhost/shipshape-base:debian12) from Debian packages: the shared
#    libraries the deno binary loads, CA certificates, passwd/group with nonroot 65532, /tmp 1777, homes.
# 2. A local Deno image (localhost/deno:VERSION): that base plus the deno binary running this task.
# 3. The Containerfile against both: target "compiled" when a denort is available (DENORT_BIN set, or
#    dl.deno.land resolvable), else target "runtime". Prints the target, the image size and the binary size.
#
# Options: --target compiled|runtime forces a target; --rebuild-base rebuilds the two local base images (always
# done when DENORT_BIN is set).
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/engine.sh

say() { printf 'image: %s\n' "$*" >&2; }

target=""
rebuild=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target="$2"; shift 2 ;;
    --rebuild-base) rebuild=1; shift ;;
    *) say "unknown argument $1 (expected --target compiled|runtime, --rebuild-base)"; exit 2 ;;
  esac
done

deno_bin=$(readlink -f "$(command -v deno)")
deno_version=$("$deno_bin" --version | awk 'NR==1{print $2}')
app_version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' deno.json | head -n 1)
base_image=localhost/shipshape-base:debian12
deno_image=localhost/deno:$deno_version
# A given denort goes into its own tag, rebuilt every time: the plain tag never carries a stale one.
if [ -n "${DENORT_BIN:-}" ]; then
  [ -f "$DENORT_BIN" ] || { say "DENORT_BIN=$DENORT_BIN is not a file"; exit 2; }
  deno_image=localhost/deno:$deno_version-denort
  rebuild=1
fi
# SHIPSHAPE_IMAGE names the tag (the container tests read the same variable).
image=${SHIPSHAPE_IMAGE:-localhost/shipshape:latest}

# Prints the real file behind PATH inside the tree ROOT, following links (absolute ones relative to ROOT).
resolve_in() {
  local root=$1 path=$2 target hops=0
  while [ -L "$root$path" ] || [ ! -e "$root$path" ]; do
    if [ -L "$root$path" ]; then
      target=$(readlink "$root$path")
      case "$target" in /*) path=$target ;; *) path=$(dirname "$path")/$target ;; esac
    elif [ -e "$root/usr$path" ]; then
      path=/usr$path # merged /usr: /lib/x/y is /usr/lib/x/y
    else
      say "$path is not in the downloaded packages"; return 1
    fi
    hops=$((hops + 1)); [ $hops -lt 10 ] || { say "too many links at $path"; return 1; }
  done
  printf '%s\n' "$root$path"
}

build_base() {
  local work rootfs lib
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  rootfs=$work/rootfs
  mkdir -p "$work/debs" "$work/pkgs" "$rootfs"
  say "assembling $base_image from Debian packages (libc6, libgcc-s1, ca-certificates)"
  if ! (cd "$work/debs" && apt-get download libc6 libgcc-s1 ca-certificates >/dev/null 2>&1); then
    apt-get update -qq >&2
    (cd "$work/debs" && apt-get download libc6 libgcc-s1 ca-certificates >/dev/null)
  fi
  for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/pkgs"; done

  # Only the libraries the binary loads (denort has the same dependencies as deno), at the paths it asks for,
  # taken from the extracted packages (links resolved inside them, never against this machine's files).
  for lib in $(ldd "$deno_bin" | awk '/=>/ {print $3} /^[ \t]*\/lib/ {print $1}'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp "$(resolve_in "$work/pkgs" "$lib")" "$rootfs$lib"
  done

  # The CA bundle, assembled as update-ca-certificates would from the package's certificates.
  mkdir -p "$rootfs/etc/ssl/certs"
  cat "$work"/pkgs/usr/share/ca-certificates/mozilla/*.crt > "$rootfs/etc/ssl/certs/ca-certificates.crt"

  cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
  cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
GROUP
  printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
  mkdir -p "$rootfs/tmp" "$rootfs/root" "$rootfs/home/nonroot"
  chmod 1777 "$rootfs/tmp"
  chmod 0700 "$rootfs/root" "$rootfs/home/nonroot"
  chown 65532:65532 "$rootfs/home/nonroot"
  tar --numeric-owner -C "$rootfs" -cf "$work/base.tar" .
  podman import --quiet "$work/base.tar" "$base_image" >/dev/null

  # The Deno image: the same root plus the deno binary (and a denort, when one is given).
  mkdir -p "$rootfs/usr/bin"
  cp "$deno_bin" "$rootfs/usr/bin/deno"
  local change=()
  if [ -n "${DENORT_BIN:-}" ]; then
    mkdir -p "$rootfs/usr/local/bin"
    cp "$DENORT_BIN" "$rootfs/usr/local/bin/denort"
    change=(--change "ENV DENORT_BIN=/usr/local/bin/denort")
  fi
  tar --numeric-owner -C "$rootfs" -cf "$work/deno.tar" .
  podman import --quiet "${change[@]}" --change "ENV PATH=/usr/local/bin:/usr/bin:/bin" "$work/deno.tar" "$deno_image" >/dev/null
  say "built $base_image and $deno_image"
}

if [ -n "$rebuild" ] || ! podman image exists "$base_image" || ! podman image exists "$deno_image"; then
  build_base
fi

if [ -z "$target" ]; then
  if [ -n "${DENORT_BIN:-}" ] || getent hosts dl.deno.land >/dev/null 2>&1; then
    target=compiled
  else
    target=runtime
    say "no denort here (DENORT_BIN unset, dl.deno.land unreachable): building target runtime"
  fi
fi
case "$target" in compiled|runtime) ;; *) say "unknown target $target (expected compiled or runtime)"; exit 2 ;; esac

say "podman build --target $target -t $image"
podman build --quiet --format docker --target "$target" \
  --build-arg "BASE_IMAGE=$base_image" --build-arg "DENO_IMAGE=$deno_image" --build-arg "VERSION=$app_version" \
  --label "org.opencontainers.image.version=$app_version" -t "$image" -f Containerfile . >/dev/null

binary=/usr/local/bin/deno
[ "$target" = compiled ] && binary=/shipshape
image_bytes=$(podman image inspect --format '{{.Size}}' "$image")
ctr=$(podman create --quiet --no-healthcheck "$image")
binary_bytes=$(podman cp "$ctr:$binary" - | tar -tvf - | awk '{print $3}')
podman rm --force --ignore "$ctr" >/dev/null
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "built $image: target $target, image $(mib "$image_bytes") ($image_bytes bytes), $binary $(mib "$binary_bytes") ($binary_bytes bytes), image minus binary $(mib $((image_bytes - binary_bytes)))"
