"""The stock gate (``StockGate``): on Redis, and its in-memory twin."""
