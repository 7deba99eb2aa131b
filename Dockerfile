# The flashorder service image: API (`flashorder serve`), outbox relay
# (`flashorder relay`), read-model projector (`flashorder projector`) and the
# expirer of unpaid orders (`flashorder expirer`) are the same image with a
# different command (see docker-compose.yml).
#
#   docker build -t flashorder:local .
#   docker run --rm -p 8000:8000 -e FLASHORDER_JWT_SECRET=$(openssl rand -hex 32) \
#       -e FLASHORDER_PAYMENT_WEBHOOK_SECRET=$(openssl rand -hex 32) \
#       flashorder:local                                    # embedded mode
#
# The image listens on 0.0.0.0, so it needs secrets of its own: with the documented
# development secrets (anyone could mint admin tokens, or mark orders paid) `flashorder
# serve` refuses to start and says so. Or configure an identity provider
# (FLASHORDER_JWT_JWKS_URL and FLASHORDER_JWT_ALGORITHMS without HS*); the webhook's secret is
# the one your payment provider signs with.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer (rebuilt only when the lock changes),
# at exactly the versions in uv.lock: uv only exports the pinned list, pip
# installs it (every dependency ships manylinux wheels for CPython 3.11, so
# no compiler is needed in the slim image).
COPY pyproject.toml uv.lock ./
RUN pip install "uv==0.13.8" \
 && uv export --frozen --no-dev --no-emit-project --format requirements-txt -o /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && pip uninstall -y uv \
 && rm /tmp/requirements.txt

# The project itself.
COPY README.md ./
COPY src ./src
RUN pip install --no-deps . && rm -rf /app/src

# Run unprivileged; the data dir holds SQLite in embedded mode and the
# prometheus multiprocess folder with --workers > 1; /app/secrets the generated signing
# secret under compose (a new named volume takes the folder's owner).
RUN useradd --create-home --uid 10001 flashorder \
 && mkdir -p /app/.data /app/secrets && chown flashorder:flashorder /app/.data /app/secrets
USER flashorder
ENV FLASHORDER_DATA_DIR=/app/.data

EXPOSE 8000
CMD ["flashorder", "serve", "--host", "0.0.0.0"]
