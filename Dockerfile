FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/index-ticker
COPY pyproject.toml README.md ./
COPY streaming ./streaming
COPY app ./app
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home ticker
USER ticker
# 8000: serve and api (REST, WebSocket, dashboard); 9108: the operations port of `engine`, whose
# containers check that port instead (docker-compose.yml).
EXPOSE 8000 9108
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
ENTRYPOINT ["index-ticker"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
