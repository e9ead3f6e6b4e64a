#!/usr/bin/env bash
# System packages the test suite needs: Debian's chromium (browser tests; never a downloaded browser),
# docker-compose 1.29 (validates the compose files without a Docker engine), xmlsec1 (SAML signatures, used by
# pysaml2 at run time too) and npm (installs the test OpenID provider).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v xmlsec1 >/dev/null 2>&1 || need+=(xmlsec1)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ ${#need[@]} -eq 0 ] && exit 0
echo "[system-deps] installing ${need[*]} from Debian"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
