#!/usr/bin/env bash
# The OpenID provider the SSO tests start (node-oidc-provider): installed from the committed package-lock.json into
# tests/oidc_provider/node_modules (npm registry at install time only; nothing is fetched while the tests run).
# Reinstalls only when the lockfile changed. Needs node >= 20.19 and npm.
set -euo pipefail
dir="$(cd "$(dirname "$0")/.." && pwd)/tests/oidc_provider"
stamp="$dir/node_modules/.portal-lock.sha256"
want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$dir/node_modules/oidc-provider" ]; then
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "[oidc-provider] npm is missing (install Node.js 20.19+ and npm)" >&2; exit 1; }
echo "[oidc-provider] installing the test OpenID provider from tests/oidc_provider/package-lock.json"
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
echo "$want" > "$stamp"
