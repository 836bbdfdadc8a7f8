# filesync: the scheduled sync daemon. Build: `docker compose build`; run: `docker compose up -d`.
# See docs/operations.md for the workflow and for what was verified where.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FILESYNC_LOG_FILE=/var/log/filesync/filesync.log \
    FILESYNC_HTTP_HOST=0.0.0.0 \
    FILESYNC_HTTP_PORT=9090 \
    FILESYNC_HOME=/var/lib/filesync \
    FILESYNC_UID=10001 \
    FILESYNC_GID=10001 \
    FILESYNC_LOG_DIR=/var/log/filesync

# A fixed, unprivileged uid so files on the mounted ./logs are owned predictably on the host. The
# container starts as root only for the entrypoint to hand the log folder to this user; every command
# then runs as this user (docker/entrypoint.sh, with setpriv from util-linux: checked here, since the
# entrypoint cannot work without it).
RUN groupadd --system --gid 10001 filesync \
 && useradd --system --uid 10001 --gid filesync --home-dir /var/lib/filesync --no-create-home \
        --shell /usr/sbin/nologin filesync \
 && mkdir -p /var/log/filesync /var/lib/filesync /etc/filesync \
 && chown filesync:filesync /var/log/filesync /var/lib/filesync \
 && setpriv --version

# supercronic runs the crontab for `filesync-entrypoint cron`: a pinned release, checked against the
# SHA-1 sums published with it; a download that does not match fails the build.
ARG TARGETARCH=amd64
ARG SUPERCRONIC_VERSION=v0.2.33
ADD --chmod=0755 https://github.com/aptible/supercronic/releases/download/${SUPERCRONIC_VERSION}/supercronic-linux-${TARGETARCH} /usr/local/bin/supercronic
RUN case "${TARGETARCH}" in \
        amd64) sum=71b0d58cc53f6bd72cf2f293e09e294b79c666d8 ;; \
        arm64) sum=e0f0c06ebc5627e43b25475711e694450489ab00 ;; \
        *) echo "no supercronic checksum for ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
 && echo "${sum}  /usr/local/bin/supercronic" > /tmp/supercronic.sha1 \
 && sha1sum -c /tmp/supercronic.sha1 \
 && rm /tmp/supercronic.sha1

WORKDIR /opt/filesync
# The dependencies, read from pyproject.toml alone, so this layer is rebuilt only when pyproject.toml
# changes, not when the code does.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Then the package itself, on top of those dependencies (README.md is its `readme` metadata).
COPY README.md ./
COPY filesync ./filesync
RUN pip install --no-cache-dir --no-deps . \
 && filesync --version

COPY crontab /etc/filesync/crontab
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/filesync-entrypoint

VOLUME ["/var/log/filesync"]
EXPOSE 9090

# 503 (database down, scheduler dead) makes urlopen raise, so the check fails; no curl needed.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FILESYNC_HTTP_PORT', '9090'), timeout=8)"]

ENTRYPOINT ["filesync-entrypoint"]
CMD ["filesync", "daemon"]
