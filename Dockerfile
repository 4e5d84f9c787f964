# offsite gateway image: `docker compose up` builds it (see docker-compose.yml).
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --system --uid 10001 offsite
USER offsite
EXPOSE 8080
# HTTPS when OFFSITE_HTTP_TLS_CERT_FILE is set; a liveness probe on loopback, so the
# certificate's names are not what is checked here.
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import os,ssl,sys,urllib.request; s='https' if os.environ.get('OFFSITE_HTTP_TLS_CERT_FILE') else 'http'; sys.exit(urllib.request.urlopen(s + '://127.0.0.1:8080/healthz', context=ssl._create_unverified_context()).status != 200)"
ENTRYPOINT ["offsite"]
CMD ["run"]
