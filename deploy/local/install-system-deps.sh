#!/usr/bin/env bash
# Installs what Tandem needs from the system when it is missing: uv (from PyPI), Java 17+ and
# Maven (to fetch and run the Kafka broker), PostgreSQL (for the database tests), Chromium (for
# the reviewer console's end-to-end test), Prometheus and promtool (the local stack's metrics and
# the alert rules' tests).
set -euo pipefail

need_apt=()
if ! command -v java >/dev/null 2>&1; then
  need_apt+=(openjdk-17-jre-headless)
else
  major=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}' | cut -d. -f1)
  if [ "${major:-0}" -lt 17 ]; then need_apt+=(openjdk-17-jre-headless); fi
fi
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need_apt+=(prometheus)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing from Debian's packages: ${need_apt[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# The postgres user must exist for the test server (the Debian package creates it).
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
fi

if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then
  echo "installing uv from PyPI"
  # A system Python managed by Debian refuses plain pip installs (PEP 668): fall back to the user's site.
  python3 -m pip install --quiet uv 2>/dev/null \
    || python3 -m pip install --quiet --user --break-system-packages uv
fi
