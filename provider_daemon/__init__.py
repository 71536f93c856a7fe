"""Provider daemon: the agent on a GPU host. Inventory, registration, heartbeats, tasks."""
