"""The startup heap, out of the garbage collector's way.

A full collection walks every object the collector tracks. A process of the service starts
with about 120,000 of them (modules, functions, classes, type annotations, compiled
statements), and walking them took 130-140 ms on the development machine: a pause of every
request in the process, every few seconds under load (docs/benchmarks.md, "Pauses of the
garbage collector"). None of them ever becomes garbage. So once a process has built what it
keeps, it moves them out of the collector's generations (``gc.freeze``), and later
collections walk only what was made since (7-11 ms in a busy API worker).

Then it makes the young collection wait for 10,000 new container objects instead of 700.
A young collection runs when the objects made and not yet freed pass the threshold; under a
sale, 64 requests in flight each hold dozens of them, so 700 was passed again and again by
objects that reference counting would free a moment later. Timed with ``gc.callbacks`` in a
15,000-order sale, each worker ran about 900 young, 80 middle and 7 full collections, 9-12% of
its CPU; at 10,000, three such sales in a row ran 9-10 young collections and nothing else,
0.5% of it, and the workers' memory stayed within the bench's leak check (126 to 132 and
127 to 136 MiB after the three sales; 129 to 133 and 131 to 135 with the defaults)
(docs/benchmarks.md, "The garbage collector, again"). A threshold of 50,000 ran none at all,
but let cyclic garbage reach the older generations and stay: a worker grew 15% over three
sales, and the leak check failed.
"""

from __future__ import annotations

import gc

#: The collector's thresholds for a serving process (see the module): young, middle, full.
THRESHOLDS = (10_000, 10, 10)


def freeze_startup_heap() -> int:
    """Collect what is already garbage, then exempt every surviving object from later
    collections. Returns how many objects are now exempt. Call once, after startup."""
    # First a full collection: a garbage cycle frozen now would never be freed.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return gc.get_freeze_count()
