"""The waiting rooms of queued sales (``QueueStore``): on Redis, and their in-memory twin."""
