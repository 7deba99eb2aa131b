"""Named locks (``Locks``): on Redis, and their in-memory twin."""
