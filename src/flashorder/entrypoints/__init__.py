"""Entrypoints: the HTTP API, the command line, and the relay and projector workers."""
