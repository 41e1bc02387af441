# Build: the dependencies exactly as uv.lock pins them (hashes checked), then the project, into
# /opt/venv with the pinned uv. The runtime stage copies the environment and nothing else.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN pip install uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-install-project
COPY streaming ./streaming
COPY app ./app
RUN uv sync --locked --no-editable

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --no-create-home ticker
WORKDIR /srv/index-ticker
USER ticker
# 8000: serve and api (REST, WebSocket, dashboard); 9108: the operations port of `engine`, whose
# containers check that port instead (docker-compose.yml).
EXPOSE 8000 9108
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
ENTRYPOINT ["index-ticker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
