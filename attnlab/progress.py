"""Progress bars: tqdm.auto, so they render as widgets in notebooks and as text in terminals.

Two pieces:

- :func:`progress_bar`: one tqdm bar over a known number of steps (forward passes, chunks, jobs ...), for a loop that
  knows its total up front.
- :class:`Progress`: a count of passes that a *composite* analysis shares between its steps (e.g.
  :func:`attnlab.heads.induction_analysis`: scoring, ablation, prefix curves, copying), shown as one bar and,
  optionally, reported to a callback ``on_progress(done, total)`` (a widget's progress line, a test). Each step adds
  its own passes to the total when it knows them (:meth:`Progress.add`) and ticks once per pass
  (:meth:`Progress.update`), so the bar's rate and time estimate cover the whole call.

Functions that take ``progress: bool | Progress`` accept ``True`` (their own bar), ``False`` (silent) or a
:class:`Progress` to tick (:func:`step_progress` resolves the three).

A widget that runs an analysis in a background thread (:class:`attnlab.CircuitSearch`) shows its own progress bar
instead: inside :func:`observe_progress`, every bar the analyses open *in that thread* reports each step to a
callback, draws nothing, and can stop the analysis cooperatively (its ``update`` raises :class:`KeyboardInterrupt`
when ``should_stop()`` is true, which the analyses treat as Ctrl-C: see :mod:`attnlab.interrupts`).
"""

import threading
from collections.abc import Callable
from contextlib import contextmanager

from tqdm.auto import tqdm

__all__ = ["Progress", "ProgressCallback", "observe_progress", "progress_bar", "step_progress"]

#: ``on_progress(done, total)``: passes finished so far and passes known so far (the total can grow)
ProgressCallback = Callable[[int, int], None]

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
        on_update(self._done, self.total or self._total, self._desc)
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


class Progress:
    """Passes done out of passes known, shown as one tqdm bar and reported to an optional callback.

    Args:
        desc: the bar's label (what is running, e.g. ``"induction analysis"``).
        total: passes known at the start (steps can :meth:`add` more later).
        bar: show a tqdm bar (False: count silently, e.g. for the callback alone).
        on_progress: called as ``on_progress(done, total)`` after every :meth:`update` and :meth:`add`.
        unit: the unit the bar shows (``"pass"``).

    Use it as a context manager, or call :meth:`close` when done (a closed bar stays on screen).

    Example:
        >>> seen = []
        >>> with Progress("demo", total=2, bar=False, on_progress=lambda d, t: seen.append((d, t))) as p:
        ...     p.update(); p.add(1); p.update(2)
        >>> seen
        [(1, 2), (1, 3), (3, 3)]
    """

    def __init__(self, desc: str, *, total: int = 0, bar: bool = True, on_progress: ProgressCallback | None = None,
                 unit: str = "pass") -> None:
        self.desc = desc
        self.done = 0
        self.total = int(total)
        self.on_progress = on_progress
        self._show, self._unit = bar, unit
        self._bar: tqdm | None = None  # made when the first total is known (a notebook bar cannot start without one)
        self._postfix = ""
        if self.total:
            self._make_bar()

    def _make_bar(self) -> tqdm:
        if self._bar is None:
            observer = getattr(_local, "observer", None)  # a widget's thread (observe_progress): report, do not draw
            if observer is not None:
                self._bar = _ObservedBar(total=self.total, desc=self.desc, observer=observer)
            else:
                self._bar = tqdm(total=self.total, desc=self.desc, disable=not self._show, leave=True,
                                 unit=self._unit)
            if self.done:
                self._bar.update(self.done)
            if self._postfix:
                self._bar.set_postfix_str(self._postfix)
        return self._bar

    def _set_total(self) -> None:
        bar = self._make_bar()
        bar.total = self.total
        container = getattr(bar, "container", None)  # tqdm.notebook: an ipywidgets box [label, IntProgress, text]
        if container is not None:
            try:
                container.children[1].max = self.total
            except (AttributeError, IndexError):
                pass
        bar.refresh()

    def add(self, n: int) -> None:
        """Add ``n`` passes to the total (a step that now knows how many it will run)."""
        if n <= 0:
            return
        self.total += int(n)
        self._set_total()
        self._report()

    def update(self, n: int = 1) -> None:
        """Count ``n`` finished passes."""
        self.done += int(n)
        if self.done > self.total:  # a step ran more passes than it announced: keep done <= total
            self.total = self.done
            self._set_total()
        self._make_bar().update(n)
        self._report()

    def set_postfix(self, text: str) -> None:
        """Show ``text`` after the bar (the current step, e.g. ``"ablating heads"``)."""
        self._postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        """Close the bar (it stays on screen)."""
        if self._bar is not None:
            self._bar.close()

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Progress {self.desc!r} {self.done}/{self.total}>"


def step_progress(progress: "bool | Progress", *, total: int, desc: str) -> tuple[Progress, bool]:
    """The :class:`Progress` one step of an analysis ticks, and whether the step owns it (and must close it).

    Args:
        progress: ``True`` (a bar of the step's own), ``False`` (silent) or a shared :class:`Progress`, to which
            ``total`` is added.
        total: the step's passes.
        desc: the label of the step's own bar (a shared bar shows it as its postfix).

    Returns:
        ``(progress, owned)``.
    """
    if isinstance(progress, Progress):
        progress.add(total)
        progress.set_postfix(desc)
        return progress, False
    return Progress(desc, total=total, bar=bool(progress)), True
