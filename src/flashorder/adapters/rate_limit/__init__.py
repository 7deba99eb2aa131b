"""Token-bucket rate limits (``RateLimiter``): on Redis, and their in-memory twin."""
