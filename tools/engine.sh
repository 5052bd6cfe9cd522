# Container engine setup, sourced by tools/image.sh and tools/test.sh: `. tools/engine.sh`.
#
# Leaves podman on PATH and CONTAINERS_CONF set when this machine needs it. On a Debian machine as root
# with no podman, installs podman and runc from apt first. Never edits /etc. Says what it does on stderr.

engine_say() { printf 'engine: %s\n' "$*" >&2; }

if ! command -v podman >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    engine_say "no podman on this machine: installing podman and runc from apt"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >&2
  else
    engine_say "no podman on this machine, and no way to install it (needs root and apt-get): install podman"
    return 1 2>/dev/null || exit 1
  fi
fi

# Two quirks of these machines (README, "Containers"): crun fails on a hybrid cgroup hierarchy, and the
# sandbox cannot raise rlimits past the hard limits. tools/containers.conf selects runc and lower ulimits.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  engine_needs_conf=""
  [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ] || engine_needs_conf="cgroups are not unified v2 (crun fails): runtime runc"
  if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt 1048576 ]; then
    engine_needs_conf="${engine_needs_conf:+$engine_needs_conf; }hard nofile limit $(ulimit -Hn) (default ulimits fail): lower ulimits"
  fi
  if [ -n "$engine_needs_conf" ]; then
    if ! command -v runc >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      engine_say "installing runc from apt"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc >&2
    fi
    CONTAINERS_CONF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/containers.conf"
    export CONTAINERS_CONF
    engine_say "using CONTAINERS_CONF=$CONTAINERS_CONF ($engine_needs_conf)"
  fi
  unset engine_needs_conf
fi
