"""Prometheus metrics over a registry the service owns (never the global one)."""
