"""Adapters: the real services (MariaDB or SQLite, Redis, Kafka) and their in-memory twins."""
