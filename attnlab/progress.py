"""Progress bars: tqdm.auto, so they render as widgets in notebooks and as text in terminals.

A widget that runs an analysis in a background thread (:class:`attnlab.CircuitSearch`) shows its own progress bar
instead: inside :func:`observe_progress`, every bar the analyses open *in that thread* reports each step to a
callback, draws nothing, and can stop the analysis cooperatively (its ``update`` raises :class:`KeyboardInterrupt`
when ``should_stop()`` is true, which the analyses treat as Ctrl-C: see :mod:`attnlab.interrupts`).
"""

import threading
from collections.abc import Callable
from contextlib import contextmanager

from tqdm.auto import tqdm

__all__ = ["observe_progress", "progress_bar"]

_local = threading.local()


class _ObservedBar(tqdm):
    """A silent tqdm that reports ``(done, total, desc)`` to an observer on every update."""

    def __init__(self, *, total: int, desc: str, observer) -> None:
        super().__init__(total=total, desc=desc, disable=True)
        self._observer = observer
        self._done = 0
        self._total = total
        self._desc = desc

    def update(self, n=1):
        self._done += n
        on_update, should_stop = self._observer
        on_update(self._done, self._total, self._desc)
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt(f"{self._desc}: stopped after {self._done} of {self._total} passes")


def progress_bar(*, total: int, desc: str, disable: bool = False) -> tqdm:
    """A progress bar over ``total`` steps (forward passes, chunks ...); an observed one inside
    :func:`observe_progress` (in the same thread), whatever ``disable`` says."""
    observer = getattr(_local, "observer", None)
    if observer is not None:
        return _ObservedBar(total=total, desc=desc, observer=observer)
    return tqdm(total=total, desc=desc, disable=disable, leave=True, unit="pass")


@contextmanager
def observe_progress(on_update: Callable[[int, int, str], None], should_stop: Callable[[], bool] | None = None):
    """Within this block, progress bars opened by analyses in the current thread call ``on_update(done, total,
    desc)`` on each step instead of drawing, and stop the analysis (``KeyboardInterrupt``) once ``should_stop()`` is
    true. Blocks nest; other threads are not affected."""
    previous = getattr(_local, "observer", None)
    _local.observer = (on_update, should_stop)
    try:
        yield
    finally:
        _local.observer = previous
