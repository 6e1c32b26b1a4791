"""Webhooks: pure rules (validation, payload, signature, backoff) and the delivery service."""
