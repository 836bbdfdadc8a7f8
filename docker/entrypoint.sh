#!/bin/sh
# filesync container entrypoint.
#   (no args) / `filesync ...`   run that command (default: `filesync daemon`)
#   `cron`                       run /etc/filesync/crontab instead of the daemon:
#                                 - under supercronic (shipped in the image; the environment passes through);
#                                 - else under Debian cron, if a derived image installed it instead: Debian
#                                   cron starts jobs with an empty environment, so the container's settings
#                                   are first written as a dotenv file that the crontab points filesync at
#                                   (FILESYNC_ENV_FILE), readable by the filesync user only.
#   `write-env [FILE]`           write that dotenv file and exit.
#
# In the image (which sets FILESYNC_UID, FILESYNC_GID and FILESYNC_LOG_DIR) and started as root, its
# default, it only makes the log folder exist and belong to the filesync user, whatever the host did to a
# bind-mounted ./logs, then runs the command as that user (setpriv, from util-linux). Started as another
# user (Kubernetes' runAsUser, `docker run --user`), it checks that the log folder is writable and, if
# not, says so in one line and exits 2 rather than leaving the container to restart in a loop. Without
# FILESYNC_UID (a checkout, the tests) it runs the command as whoever started it.
set -eu

FILESYNC_UID=${FILESYNC_UID:-}
FILESYNC_GID=${FILESYNC_GID:-$FILESYNC_UID}
LOG_DIR=${FILESYNC_LOG_DIR:-}
CRONTAB=${FILESYNC_CRONTAB:-/etc/filesync/crontab}
CRON_ENV_FILE=${FILESYNC_CRON_ENV_FILE:-/var/lib/filesync/cron.env}
ME=filesync-entrypoint

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

give_log_dir_to_filesync() {
    # Only the folder and the files directly in it: never a recursive walk over a large log history.
    [ -n "$LOG_DIR" ] || return 0
    mkdir -p "$LOG_DIR" 2>/dev/null || return 0
    chown "$FILESYNC_UID:$FILESYNC_GID" "$LOG_DIR" 2>/dev/null || return 0
    chmod u+rwx "$LOG_DIR" 2>/dev/null || true
    find "$LOG_DIR" -mindepth 1 -maxdepth 1 -type f ! -user "$FILESYNC_UID" \
        -exec chown "$FILESYNC_UID:$FILESYNC_GID" {} + 2>/dev/null || true
}

check_log_dir() {
    [ -n "$LOG_DIR" ] || return 0
    if [ -d "$LOG_DIR" ] && [ -w "$LOG_DIR" ] && [ -x "$LOG_DIR" ]; then
        return 0
    fi
    if [ ! -e "$LOG_DIR" ] && mkdir -p "$LOG_DIR" 2>/dev/null; then
        return 0
    fi
    owner=$(stat -c 'is owned by %u:%g, mode %a' "$LOG_DIR" 2>/dev/null || echo "cannot be created")
    echo "$ME: cannot write the log folder $LOG_DIR as uid $(id -u) (it $owner): start the container as root" \
         "(the image's default) so the entrypoint can take it, or run" \
         "'sudo chown ${FILESYNC_UID:-$(id -u)}:${FILESYNC_GID:-$(id -g)}' on the folder mounted there" >&2
    exit 2
}

if [ "$(id -u)" = "0" ] && [ -n "$FILESYNC_UID" ]; then
    give_log_dir_to_filesync
    if [ "${1:-}" = "cron" ] && ! command -v supercronic >/dev/null 2>&1 && command -v cron >/dev/null 2>&1; then
        # Debian cron in a derived image: the cron daemon itself stays root; its jobs run as filesync.
        shift
        write_env_file "$CRON_ENV_FILE"
        chown "$FILESYNC_UID:$FILESYNC_GID" "$CRON_ENV_FILE"
        crontab -u filesync "$CRONTAB"
        exec cron -f
    fi
    if [ "${HOME:-/root}" = "/root" ]; then
        HOME=${FILESYNC_HOME:-/var/lib/filesync}
        export HOME
    fi
    exec setpriv --reuid="$FILESYNC_UID" --regid="$FILESYNC_GID" --clear-groups -- /bin/sh "$0" "$@"
fi

if [ "$(id -u)" != "0" ]; then
    check_log_dir
fi

if [ "${1:-}" = "cron" ]; then
    shift
    if command -v supercronic >/dev/null 2>&1; then
        exec supercronic "$@" "$CRONTAB"
    fi
    if command -v cron >/dev/null 2>&1; then
        echo "$ME: Debian cron must start as root (docker compose run --user root ...)" >&2
        exit 2
    fi
    echo "$ME: neither supercronic nor cron is installed; see docs/operations.md" >&2
    exit 2
fi

if [ "${1:-}" = "write-env" ]; then
    write_env_file "${2:-$CRON_ENV_FILE}"
    exit 0
fi

exec "$@"
