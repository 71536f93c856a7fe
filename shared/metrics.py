"""Metrics every service may export, and the loop that refreshes polled gauges.

Naming: ``dante_<area>_<what>_<unit>``; label values come from small fixed sets (state,
outcome, route template) or from the fleet itself (provider id, GPU index, durable name), never
from job ids or user input, so a series count stays proportional to the deployment.

HTTP RED (``dante_http_requests_total`` / ``dante_http_request_duration_seconds`` labelled by
method, route template and status) is recorded by ``shared.app.RequestContext``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from prometheus_client import Gauge

log = structlog.get_logger(__name__)

dependency_up = Gauge(
    "dante_dependency_up",
    "1 when the last use or probe of a dependency (database, nats, object_store) worked.",
    ["dependency"],
)
consumer_pending = Gauge(
    "dante_nats_consumer_pending_messages",
    "Messages in the stream not yet delivered to the durable consumer.",
    ["stream", "consumer"],
)
consumer_ack_pending = Gauge(
    "dante_nats_consumer_ack_pending_messages",
    "Messages delivered to the durable consumer and not yet acknowledged.",
    ["stream", "consumer"],
)
consumer_redelivered = Gauge(
    "dante_nats_consumer_redelivered_messages",
    "Messages delivered more than once and still unacknowledged.",
    ["stream", "consumer"],
)
stream_messages = Gauge("dante_nats_stream_messages", "Messages held by the stream.", ["stream"])
stream_bytes = Gauge("dante_nats_stream_bytes", "Bytes held by the stream.", ["stream"])


async def poll_jetstream(js: Any, streams: Iterable[str]) -> None:
    """Record lag for every durable consumer of ``streams`` (one JetStream API call each).

    A consumer that disappeared keeps its last values until the process restarts; that is
    acceptable for the dozen durables a deployment has, and avoids a clear() between the
    collection and a scrape (which would show a durable as briefly missing).
    """
    try:
        for stream in streams:
            info = await js.stream_info(stream)
            stream_messages.labels(stream).set(info.state.messages)
            stream_bytes.labels(stream).set(info.state.bytes)
            for c in await js.consumers_info(stream):
                name = c.name
                consumer_pending.labels(stream, name).set(c.num_pending or 0)
                consumer_ack_pending.labels(stream, name).set(c.num_ack_pending or 0)
                consumer_redelivered.labels(stream, name).set(c.num_redelivered or 0)
    except Exception:
        dependency_up.labels("nats").set(0)
        raise
    dependency_up.labels("nats").set(1)


_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def route_template(scope: MutableMapping[str, Any]) -> str:
    """The matched route's full template (``/api/v1/jobs/{job_id}``), never the raw path.

    FastAPI (0.16x) puts the router's own route in ``scope["route"]``, whose path lacks the
    prefix it was included under (``""`` for a router's root). The prefix is what the request
    path has before the route's own part, so it is recovered by rendering that part with the
    request's path parameters and cutting it off the path. Unmatched requests (404s) share one
    label so scanners cannot grow the series count.
    """
    route = scope.get("route")
    own = getattr(route, "path", None)
    if own is None:
        return "unmatched"
    params = scope.get("path_params") or {}
    try:
        rendered = _PARAM.sub(lambda m: str(params[m.group(1)]), own)
    except KeyError:
        return own or "/"
    path = scope.get("path", "")
    if rendered and not path.endswith(rendered):
        return own
    prefix = path[: len(path) - len(rendered)] if rendered else path
    return (prefix + own) or "/"
