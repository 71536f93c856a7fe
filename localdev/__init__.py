"""The local cluster behind ``make dev``: every service as a real process, no Docker."""
