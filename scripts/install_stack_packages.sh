#!/usr/bin/env bash
# The Debian packages `make stack-test` runs: PostgreSQL (initdb, postgres) and redis-server.
# Idempotent and quiet; does nothing when they are already there. Needs root or sudo, as
# scripts/install_chromium.sh (CI runs as root). The packages' own services are not started:
# the stack test runs its own servers on free 127.0.0.1 ports and nothing else may be left running.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/"$1" >/dev/null 2>&1; }
if have initdb && have postgres && have redis-server; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Debian's way to keep maintainer scripts from starting services (as in container images):
# a policy-rc.d that denies every start, only for this install, only if none is there.
policy=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  ours=1
fi
status=0
$SUDO apt-get install -y -qq --no-install-recommends postgresql redis-server >/dev/null || status=$?
if [ "$ours" = 1 ]; then $SUDO rm -f "$policy"; fi
exit "$status"
