"""``flashorder-bench``: the flash-sale benchmark of the full stack, and its promises.

A package of its own beside the service (a workspace member): it drives the service only
through its public faces (HTTP, the ``flashorder`` command, the documented ``FLASHORDER_*``
settings) and imports none of its modules. The parts, each in its own module:

- ``cli``: the command; ``options``: what a run is asked to do; ``settings``: the service's
  settings as the bench reads them; ``scenarios``: the products and requests of a scenario,
  derived from a seed; ``schedule``: open-loop send times and the rate ladder.
- ``loadgen`` (runs in separate processes) and ``drive`` (spawns them, shows progress,
  merges their ``samples``); ``stats``: percentiles and throughput from raw samples.
- ``stack``: the service as processes on the local MariaDB, Redis and Kafka (the harness the
  tests use too); ``procs``: those processes' memory, CPU and sockets from ``/proc``;
  ``cpu``: CPU per accepted order and connections per worker over a phase; ``client``:
  seeding, sampling and draining over HTTP; ``auth``: tokens.
- ``stores`` (read-only queries of the tables and keys), ``checks`` and ``kafka_events``: the
  promises, checked in the stores; ``report``, ``summary``, ``chart`` and
  ``results``: what a run prints and writes.
- ``run`` (one strategy) and ``main`` (the whole run).
"""
