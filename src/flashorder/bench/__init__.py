"""``flashorder bench``: the flash-sale benchmark of the full stack, and its promises.

The parts, each in its own module:

- ``options``: what a run is asked to do; ``scenarios``: the products and requests of a
  scenario, derived from a seed; ``schedule``: open-loop send times and the rate ladder.
- ``loadgen`` (runs in separate processes) and ``drive`` (spawns them, shows progress,
  merges their ``samples``); ``stats``: percentiles and throughput from raw samples.
- ``stack``: the service as processes on the local MariaDB, Redis and Kafka; ``procs``: their
  memory; ``client``: seeding, sampling and draining over HTTP; ``auth``: tokens.
- ``checks`` and ``kafka_events``: the promises of docs/design.md, checked in the stores;
  ``report``, ``chart`` and ``results``: what a run prints and writes.
- ``run`` (one strategy), ``main`` (the whole run) and ``inprocess`` (the command pipeline
  without HTTP, for profiling).
"""
