#!/usr/bin/env bash
# Build sglang-tuner-standin:local, a self-contained image that runs the stand-in SGLang server.
#
# No registry is reachable from CI, so nothing is pulled: the base is this machine's own Debian python3
# (interpreter, stdlib and the shared libraries it and its C modules link), imported with `docker import`.
# The stand-in is then added with a legacy-builder Dockerfile (BuildKit is not installed on bookworm),
# together with a tiny `sglang` package so the image answers the launcher's real default command,
# `python3 -m sglang.launch_server`, and `import sglang; sglang.__version__`, like a real SGLang image.
#
# Idempotent: each image carries the hash of its inputs as a label and is rebuilt only when that changes,
# so a second run takes well under a second.
set -euo pipefail

IMAGE=${IMAGE:-sglang-tuner-standin:local}
BASE=${BASE:-sglang-tuner-pybase:local}
HERE=$(cd "$(dirname "$0")" && pwd)
STANDIN=${STANDIN:-$HERE/../standin/sglang_standin.py}
# Debian's own python3 (whatever 3.x the distribution ships), not a pyenv/venv one: its libraries are system ones.
PY=$(readlink -f /usr/bin/python3 2>/dev/null || true)
PYVER=$(basename "${PY:-python3}")  # python3.11
export DOCKER_BUILDKIT=0

[ -f "$STANDIN" ] || { echo "stand-in not found: $STANDIN" >&2; exit 1; }
[ -x "$PY" ] || { echo "/usr/bin/python3 not found: apt-get install -y python3" >&2; exit 1; }

label_of() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

# --- base: host python, self-contained (no -v /usr:/usr needed at run time) ----------------------------
BASE_LAYOUT=2  # bump when the base's layout below changes
base_key=$( (sha256sum "$PY"; echo "$BASE_LAYOUT") | sha256sum | cut -c1-16)
if [ "$(label_of "$BASE" sglang-tuner.base)" != "$base_key" ]; then
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  # Debian 12 is merged-/usr: /lib -> usr/lib. Keep that layout so ldd's /lib/... paths and the
  # interpreter path /lib64/ld-linux-x86-64.so.2 resolve in the image as they do here.
  mkdir -p "$stage"/{usr/bin,usr/lib,usr/lib64,sbin,tmp,root,etc,opt}
  ln -s usr/bin "$stage/bin"; ln -s usr/lib "$stage/lib"; ln -s usr/lib64 "$stage/lib64"
  # sbin must be a real folder: docker --init bind-mounts /sbin/docker-init there.
  chmod 1777 "$stage/tmp"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$stage/etc/passwd"
  echo 'root:x:0:' >"$stage/etc/group"
  ln -s "$PYVER" "$stage/usr/bin/python3"
  ln -s "$PYVER" "$stage/usr/bin/python"  # the tuner's default command for the process launcher says python
  files=("$PY" /usr/lib64/ld-linux-x86-64.so.2)
  while read -r lib; do files+=("${lib/#\/lib\//\/usr\/lib\/}"); done < <(
    ldd "$PY" /usr/lib/"$PYVER"/lib-dynload/*.so | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
  # Each file and, when it is a symlink, what it points to (tar keeps symlinks as symlinks).
  rel=()
  for f in "${files[@]}"; do
    rel+=("${f#/}")
    real=$(readlink -f "$f")
    [ "$real" = "$f" ] || rel+=("${real#/}")
  done
  # The stdlib without what a server never imports (the static libpython alone is 25 MB).
  tar -C / --exclude="$PYVER/config-*" --exclude="$PYVER/test" --exclude="$PYVER/lib2to3" \
    --exclude="$PYVER/ensurepip" -cf - "usr/lib/$PYVER" "${rel[@]}" | tar -C "$stage" -xf -
  tar -C "$stage" -cf - . | docker import --change "LABEL sglang-tuner.base=$base_key" \
    --change 'ENV PATH=/usr/bin:/bin' - "$BASE" >/dev/null
  echo "built $BASE"
fi

# --- the stand-in on top -------------------------------------------------------------------------------
key=$( (docker image inspect -f '{{.Id}}' "$BASE"; cat "$STANDIN" "$0") | sha256sum | cut -c1-16)
if [ "$(label_of "$IMAGE" sglang-tuner.standin)" = "$key" ]; then
  exit 0
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx" ${stage:+"$stage"}' EXIT
mkdir -p "$ctx/sglang"
cp "$STANDIN" "$ctx/sglang_standin.py"
# The version is read from the stand-in's source, not by importing it: a script may start serving on import.
version=$(sed -nE 's/^(__version__|VERSION) *= *["'"'"']([^"'"'"']+)["'"'"'].*/\2/p' "$STANDIN" | head -n1)
cat >"$ctx/sglang/__init__.py" <<PY
"""Shim: the stand-in, importable as sglang."""
__version__ = "${version:-0.0.0-standin}"
PY
cat >"$ctx/sglang/launch_server.py" <<'PY'
"""Shim: python3 -m sglang.launch_server runs the stand-in with the same arguments."""
import runpy

runpy.run_path("/opt/standin/sglang_standin.py", run_name="__main__")
PY
cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $BASE
COPY sglang_standin.py /opt/standin/sglang_standin.py
COPY sglang /opt/standin/sglang
ENV PYTHONPATH=/opt/standin PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
LABEL sglang-tuner.standin=$key
CMD ["python3", "-m", "sglang.launch_server", "--help"]
DOCKERFILE
# Quiet unless it fails: the legacy builder prints a deprecation notice on every run.
if ! out=$(docker build -q -t "$IMAGE" "$ctx" 2>&1); then
  echo "$out" >&2
  exit 1
fi
# Earlier builds, now untagged, would pile up on a developer's machine.
docker image prune -f --filter label=sglang-tuner.standin >/dev/null 2>&1 || true
docker image prune -f --filter label=sglang-tuner.base >/dev/null 2>&1 || true
echo "built $IMAGE"
