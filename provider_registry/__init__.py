"""Provider registry: providers and their GPUs, heartbeats, the liveness sweep, events."""
