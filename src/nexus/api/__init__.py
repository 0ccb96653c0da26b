"""The HTTP API: app factory, router composition, error mapping, health and metrics."""
