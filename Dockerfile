# The refresh job's image (Cloud Run job: `stockcast refresh`): dbt build on BigQuery, train
# when no champion is registered, score, publish the forecast marts. See docs/deploy-gcp.md.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    STOCKCAST_HOME=/tmp/stockcast \
    STOCKCAST_TARGET=bigquery \
    TF_CPP_MIN_LOG_LEVEL=2

RUN pip install --no-cache-dir "uv>=0.5"
WORKDIR /app

# Dependencies first (cached layer), from the lockfile only.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --extra ml --extra bigquery --no-install-project

COPY ml ./ml
COPY dbt_project ./dbt_project
COPY profiles.yml ./
RUN uv sync --frozen --no-dev --extra ml --extra bigquery

ENV PATH=/app/.venv/bin:$PATH \
    DBT_PROFILES_DIR=/app
ENTRYPOINT ["stockcast"]
CMD ["refresh"]
