#!/usr/bin/env bash
# Start a Docker engine for the tests if none answers; a no-op when one already does.
# CI installs docker.io (Debian 12: dockerd 20.10) but nothing starts it, and a plain dockerd is ready in ~0.5 s.
set -euo pipefail

if docker version >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo "dockerd not found: apt-get install -y docker.io" >&2
  exit 1
fi
nohup dockerd >/tmp/dockerd.log 2>&1 &
for _ in $(seq 1 150); do
  if docker version >/dev/null 2>&1; then
    echo "dockerd ready (log: /tmp/dockerd.log)"
    exit 0
  fi
  sleep 0.2
done
echo "dockerd did not answer within 30 s; last lines of /tmp/dockerd.log:" >&2
tail -n 20 /tmp/dockerd.log >&2 || true
exit 1
