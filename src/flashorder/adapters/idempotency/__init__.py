"""The idempotency cache (``IdempotencyCache``): on Redis, and its in-memory twin."""
