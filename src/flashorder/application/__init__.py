"""Use cases: handlers for commands, the query side, and the ports they need."""
