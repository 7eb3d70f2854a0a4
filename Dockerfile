# snapshotter: one image for both cron jobs; the command picks the job, e.g.
#   docker run --rm -e DATABASE_URL=... snapshotter symbol-batch
# Railway's start command (railway.json) replaces the ENTRYPOINT in exec form,
# which is why it is the full "snapshotter <job>" there.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what `pip install .` needs (pyproject names README.md as the readme).
COPY pyproject.toml README.md /src/
COPY snapshotter /src/snapshotter
RUN pip install /src \
    && rm -rf /src \
    && groupadd --system --gid 10001 snapshotter \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/snapshotter \
       --shell /usr/sbin/nologin snapshotter

# Non-root; the working directory is the user's own, so the default
# sqlite:///snapshotter.db (demos only: set DATABASE_URL in production) is writable.
USER 10001:10001
WORKDIR /home/snapshotter

# Exec form: snapshotter is PID 1 and receives SIGTERM itself (it installs a
# handler, finishes the current chunk and exits 143).
ENTRYPOINT ["snapshotter"]
CMD ["--help"]
