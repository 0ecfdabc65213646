FROM python:3.11-slim
RUN useradd --system --create-home edugate
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY trust trust
COPY connectors connectors
COPY config config
RUN pip install --no-cache-dir . && mkdir -p /var/lib/edugate && chown edugate /var/lib/edugate
USER edugate
EXPOSE 8443 9100
ENTRYPOINT ["edugate"]
CMD ["serve", "--config", "/etc/edugate/node.toml", "--ops-port", "9100"]
