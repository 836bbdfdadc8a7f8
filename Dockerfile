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
    FILESYNC_HOME=/var/lib/filesync

# A fixed, unprivileged uid so files on the mounted ./logs are owned predictably on the host.
RUN groupadd --system --gid 10001 filesync \
 && useradd --system --uid 10001 --gid filesync --home-dir /var/lib/filesync --no-create-home \
        --shell /usr/sbin/nologin filesync \
 && mkdir -p /var/log/filesync /var/lib/filesync /etc/filesync \
 && chown filesync:filesync /var/log/filesync /var/lib/filesync

WORKDIR /opt/filesync
# Metadata first so the dependency layer is cached until pyproject.toml changes.
COPY pyproject.toml README.md ./
COPY filesync ./filesync
RUN pip install --no-cache-dir . \
 && filesync --version

COPY crontab /etc/filesync/crontab
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/filesync-entrypoint

USER 10001:10001
VOLUME ["/var/log/filesync"]
EXPOSE 9090

# 503 (database down, scheduler dead) makes urlopen raise, so the check fails; no curl needed.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FILESYNC_HTTP_PORT', '9090'), timeout=8)"]

ENTRYPOINT ["filesync-entrypoint"]
CMD ["filesync", "daemon"]
