"""The objects a service makes at start (modules, pydantic schemas, models, the policy) live as
long as it does. Python's cyclic collector would still walk all of them, about 130,000, every
time its oldest generation is collected: a pause of up to 100 ms in the middle of a batch, and
half of scoring's time per task. Frozen once start-up is done, they are left out of every
collection; what is made later is collected as before."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect what start-up left behind, then keep every surviving object out of later
    collections."""
    gc.collect()
    gc.freeze()


def thaw() -> None:
    """Give the frozen objects back to the collector (a stopped service in a process that goes
    on, as in tests)."""
    gc.unfreeze()
