#!/usr/bin/env bash
# Create the secret files docker/compose.yaml mounts (random values; existing files are kept).
# The directory is private to you (0700); the files are readable inside the containers, whose users differ (0444).
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
chmod 0700 "$dir"
make_secret() {  # name, bytes
  local file="$dir/$1"
  if [ -s "$file" ]; then
    echo "kept    $file"
  else
    python3 -c "import secrets, sys; print(secrets.token_urlsafe(int(sys.argv[1])))" "$2" > "$file"
    chmod 0444 "$file"
    echo "created $file"
  fi
}
make_secret secret_key 64
make_secret pii_vault_key 48
make_secret metrics_token 32
make_secret postgres_password 32
make_secret grafana_admin_password 24
make_secret engine_api_key 32
echo "Keep docker/secrets/ out of version control and back it up: PII vaults cannot be read without pii_vault_key."
