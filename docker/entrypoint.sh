#!/bin/sh
# filesync container entrypoint.
#   (no args) / `filesync ...`   run that command (default: `filesync daemon`)
#   `cron`                       run /etc/filesync/crontab instead of the daemon:
#                                 - under supercronic when it is installed (the environment passes through);
#                                 - else under Debian cron (needs root and the `cron` package): Debian cron
#                                   starts jobs with an empty environment, so the container's settings are
#                                   first written as a dotenv file that the crontab points filesync at
#                                   (FILESYNC_ENV_FILE), readable by the filesync user only.
set -eu

CRONTAB=${FILESYNC_CRONTAB:-/etc/filesync/crontab}
CRON_ENV_FILE=${FILESYNC_CRON_ENV_FILE:-/var/lib/filesync/cron.env}

write_env_file() {
    # Double-quoted dotenv values with \ and " escaped: python-dotenv reads them back unchanged.
    umask 077
    python - "$1" <<'PY'
import os, sys
skip = {"HOME", "PWD", "SHLVL", "OLDPWD", "_", "HOSTNAME", "TERM"}
with open(sys.argv[1], "w", encoding="utf-8") as out:
    for key in sorted(os.environ):
        if key in skip or not key.replace("_", "").isalnum():
            continue
        value = os.environ[key].replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        out.write(f'{key}="{value}"\n')
PY
}

if [ "${1:-}" = "cron" ]; then
    shift
    if command -v supercronic >/dev/null 2>&1; then
        exec supercronic "$@" "$CRONTAB"
    fi
    if command -v cron >/dev/null 2>&1; then
        if [ "$(id -u)" != "0" ]; then
            echo "filesync-entrypoint: Debian cron must start as root (docker compose run --user root ...)" >&2
            exit 2
        fi
        write_env_file "$CRON_ENV_FILE"
        chown filesync:filesync "$CRON_ENV_FILE"
        crontab -u filesync "$CRONTAB"
        exec cron -f
    fi
    echo "filesync-entrypoint: neither supercronic nor cron is installed; see docs/operations.md" >&2
    exit 2
fi

if [ "${1:-}" = "write-env" ]; then
    write_env_file "${2:-$CRON_ENV_FILE}"
    exit 0
fi

exec "$@"
