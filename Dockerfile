# One image per service: docker build --build-arg SERVICE=tandem-router -t tandem/router .
# Dependencies sit in their own layer, so a code change rebuilds only the last one.
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /bin/uv
ARG SERVICE
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/scoring/pyproject.toml services/scoring/
COPY services/router/pyproject.toml services/router/
COPY services/review-api/pyproject.toml services/review-api/
COPY services/audit-sink/pyproject.toml services/audit-sink/
COPY cli/pyproject.toml cli/
RUN uv sync --frozen --no-dev --no-install-workspace --package "$SERVICE"
COPY shared shared
COPY services services
RUN uv sync --frozen --no-dev --no-editable --package "$SERVICE"

FROM python:3.11-slim
ARG SERVICE
ARG MODULE
RUN useradd --system --uid 10001 --no-create-home tandem
COPY --from=build /app/.venv /app/.venv
COPY models /app/models
COPY deploy/local/policy.yaml /app/policy.yaml
ENV PATH=/app/.venv/bin:$PATH \
    TANDEM_SCORING_MODELS_DIR=/app/models \
    TANDEM_ROUTER_POLICY_FILE=/app/policy.yaml \
    TANDEM_LOG_JSON=true \
    SERVICE_MODULE=$MODULE
USER 10001
WORKDIR /app
CMD ["sh", "-c", "exec python -m $SERVICE_MODULE"]
