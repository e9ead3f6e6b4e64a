#!/usr/bin/env bash
# Container entrypoint of the portal image: `web` (default), `worker`, `beat`, `manage <command>`, or any command.
set -euo pipefail
# the image's /app, or a checkout (the test suite runs this script without Docker)
APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$APP_DIR"
# scripts run by path (docker/migrate.py) import the application from here, not from their own folder
export PYTHONPATH="$APP_DIR${PYTHONPATH:+:$PYTHONPATH}"

# Secrets come as files (Docker/Kubernetes secrets): NAME_FILE=/run/secrets/x exports NAME with the file's content.
for name in SECRET_KEY PII_VAULT_KEY METRICS_TOKEN POSTGRES_PASSWORD REDIS_PASSWORD OIDC_CLIENT_SECRET; do
  file_var="${name}_FILE"
  file="${!file_var:-}"
  if [ -n "$file" ]; then
    if [ ! -r "$file" ]; then
      echo "entrypoint: ${file_var}=${file} is not readable (create it with docker/init-secrets.sh)" >&2
      exit 64
    fi
    value="$(cat "$file")"
    export "${name}=${value%$'\n'}"
  fi
done

# DATABASE_URL from its parts when not given whole (the password is URL-encoded).
if [ -z "${DATABASE_URL:-}" ] && [ -n "${POSTGRES_HOST:-}" ]; then
  password="$(python -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ.get("POSTGRES_PASSWORD", ""), safe=""))')"
  export DATABASE_URL="postgresql://${POSTGRES_USER:-portal}:${password}@${POSTGRES_HOST}:${POSTGRES_PORT:-5432}/${POSTGRES_DB:-portal}"
fi
if [ -z "${REDIS_URL:-}" ] && [ -n "${REDIS_HOST:-}" ]; then
  export REDIS_URL="redis://${REDIS_PASSWORD:+:${REDIS_PASSWORD}@}${REDIS_HOST}:${REDIS_PORT:-6379}/${REDIS_DB:-0}"
fi

# Prometheus scrapes and health probes address this container by its IP or host name: accept those hosts too.
if [ "${ALLOWED_HOSTS_ADD_SELF:-true}" = "true" ]; then
  self="$(hostname)"
  for ip in $(hostname -i 2>/dev/null || true); do self="${self},${ip}"; done
  export ALLOWED_HOSTS="${ALLOWED_HOSTS:+${ALLOWED_HOSTS},}${self}"
fi

# Every process of this container writes its metric samples here; start empty (stale files would count twice).
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete
fi

role="${1:-web}"
[ "$#" -gt 0 ] && shift
case "$role" in
  web)
    if [ "${PORTAL_MIGRATE:-true}" = "true" ]; then
      python "$APP_DIR/docker/migrate.py"
    fi
    # the ASGI app serves the static files itself (WhiteNoise): the image collects them at build time; this
    # collects only when they are missing or stale (an image built without them, a mounted checkout)
    if [ "${PORTAL_COLLECTSTATIC:-true}" = "true" ]; then
      python manage.py static_collect --verbosity 0
    fi
    exec uvicorn portal.asgi:application --host 0.0.0.0 --port "${PORT:-8000}" \
      --workers "${WEB_CONCURRENCY:-1}" --ws websockets-sansio --no-access-log \
      --proxy-headers --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}" "$@"
    ;;
  worker)
    exec celery -A portal worker -l "${LOG_LEVEL:-INFO}" --concurrency "${WORKER_CONCURRENCY:-2}" \
      -Q "${WORKER_QUEUES:-celery,ingest,agents}" -n "worker@%h" "$@"
    ;;
  beat)
    exec celery -A portal beat -l "${LOG_LEVEL:-INFO}" -s "${PORTAL_VAR_DIR:-/var/lib/portal}/celerybeat-schedule" "$@"
    ;;
  manage)
    exec python manage.py "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
