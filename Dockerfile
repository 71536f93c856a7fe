# syntax=docker/dockerfile:1
# One image for every Dante service; compose picks the package with `command`.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/dante
WORKDIR /src
# README* matches nothing until the project has one; pyproject names it as the readme.
COPY pyproject.toml constraints.txt README* ./
COPY shared/ shared/
COPY auth_service/ auth_service/
COPY provider_registry/ provider_registry/
COPY scheduler/ scheduler/
COPY storage_service/ storage_service/
COPY billing_service/ billing_service/
COPY api_gateway/ api_gateway/
COPY provider_daemon/ provider_daemon/
COPY localdev/ localdev/
# A regular (non-editable) install of the runtime dependencies only: no dev extra.
RUN /opt/dante/bin/pip install -c constraints.txt . \
    && /opt/dante/bin/pip uninstall --yes pip

FROM python:3.11-slim
# A fixed uid so host-side volume permissions and the systemd unit's user can match it. A named
# volume mounted on keys/ or nats-auth/ starts with these owners and modes (Docker copies them).
RUN groupadd --system --gid 10001 dante \
    && useradd --system --uid 10001 --gid dante --home-dir /var/lib/dante \
        --shell /usr/sbin/nologin dante \
    && mkdir -p /var/lib/dante/keys /var/lib/dante/daemon /var/lib/dante/nats-auth \
    && chown -R dante:dante /var/lib/dante \
    && chmod 0700 /var/lib/dante/keys /var/lib/dante/nats-auth
COPY --from=build /opt/dante /opt/dante
COPY deploy/bootstrap_provider.py /opt/dante/share/bootstrap_provider.py
# The web console's static files, served by the gateway at / (no build step: copied as they are).
COPY console/ /opt/dante/share/console/
ENV DANTE_GATEWAY_CONSOLE_DIR=/opt/dante/share/console \
    PATH=/opt/dante/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER dante:dante
WORKDIR /var/lib/dante
EXPOSE 8080 8090 8002 8003 8082 8085
# Health checks and the bootstrap step run `python`, so nothing else (curl) is needed.
CMD ["python", "-m", "api_gateway", "serve"]
