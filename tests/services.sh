#!/usr/bin/env bash
# Installs and starts what the tests talk to for real: a Docker engine with the stand-in image, a PostgreSQL
# server, and Chromium for the dashboard/report tests. Idempotent: a second run takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

bash tests/docker/start_dockerd.sh
bash tests/docker/build_image.sh

# PostgreSQL: the cluster Debian's package made, a superuser role and a database for the tests.
cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
if ! pg_lsclusters -h | awk 'NR==1 {exit $4 != "online"}'; then
  pg_ctlcluster $cluster start
fi
for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 && break; sleep 0.2; done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='tuner'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE tuner LOGIN SUPERUSER PASSWORD 'tuner'\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='tuner'\"" | grep -q 1 ||
  su postgres -c "psql -qc 'CREATE DATABASE tuner OWNER tuner'"
echo "services ready: dockerd, image sglang-tuner-standin:local, postgresql://tuner@127.0.0.1/tuner, chromium"
