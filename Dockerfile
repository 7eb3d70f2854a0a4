# snapshotter: one image for both cron jobs; the command picks the job, e.g.
#   docker run --rm -e DATABASE_URL=... snapshotter symbol-batch
# Railway's start command (railway.json) replaces the ENTRYPOINT in exec form,
# which is why it is the full "snapshotter <job>" there.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# 1. The dependencies, at the versions of requirements.lock: this layer depends on
#    pyproject.toml and the lock only, so a code change does not reinstall them.
#    The runtime dependencies are read from pyproject.toml (the lock also pins the
#    test extras, which the image does not need), plus the locked build backend.
COPY pyproject.toml requirements.lock /src/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
       > /tmp/runtime.txt \
    && pip install -c /src/requirements.lock -r /tmp/runtime.txt setuptools \
    && rm /tmp/runtime.txt \
    && groupadd --system --gid 10001 snapshotter \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/snapshotter \
       --shell /usr/sbin/nologin snapshotter

# 2. The package itself: nothing more to resolve (--no-deps), built with the locked
#    setuptools (--no-build-isolation); the source is not kept. pyproject names
#    README.md as the readme.
COPY README.md /src/
COPY snapshotter /src/snapshotter
RUN pip install --no-deps --no-build-isolation /src \
    && rm -rf /src

# Non-root; the working directory is the user's own, so the default
# sqlite:///snapshotter.db (demos only: set DATABASE_URL in production) is writable.
USER 10001:10001
WORKDIR /home/snapshotter

# Exec form: snapshotter is PID 1 and receives SIGTERM itself (it installs a
# handler, finishes the current chunk and exits 143).
ENTRYPOINT ["snapshotter"]
CMD ["--help"]
