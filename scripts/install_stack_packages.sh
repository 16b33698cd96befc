#!/usr/bin/env bash
# The Debian packages `make stack-test` runs: PostgreSQL (initdb, postgres) and redis-server.
# Idempotent and quiet; does nothing when they are already there.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/"$1" >/dev/null 2>&1; }
if have initdb && have postgres && have redis-server; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql redis-server >/dev/null
