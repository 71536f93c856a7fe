"""API gateway: the one public entry. Auth, limits, request ids, routing, job intake."""
