"""Ctrl-C during a long analysis: keep what finished, and let the user's interrupt go on.

A sweep that Ctrl-C (or the notebook's stop button) interrupts returns its partial result, marked
``result.complete == False``: nothing computed is lost. The interrupt itself is not swallowed. The next sweep started
*in the same notebook cell or the same script run* raises :class:`KeyboardInterrupt` before doing any work, so a loop
of sweeps stops where the user stopped it instead of running on. A sweep run from a later cell starts normally.

Sweeps call :func:`note_interrupt` when they keep a partial result and :func:`raise_pending` before they start.
"""

import warnings

__all__ = ["clear", "note_interrupt", "raise_pending"]

_pending: tuple | None = None  # (where the interrupt happened, what it interrupted)


def _where():
    """The current notebook cell's execution count under IPython; one constant for a plain script."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the lab extra
        return "script"
    shell = get_ipython()
    return "script" if shell is None else ("cell", getattr(shell, "execution_count", None))


def note_interrupt(what: str, done: int, total: int, *, unit: str = "passes") -> None:
    """Record that ``what`` was interrupted after ``done`` of ``total`` ``unit`` and returned a partial result; warn.

    Args:
        what: the analysis, for messages (``"the heads sweep"``, ``"EAP-IG"``).
        done, total: passes (or prompts) finished and planned.
        unit: ``"passes"`` (a sweep: the cells not run are NaN) or ``"prompts"`` (edge scores: the mean over the
            prompts scored).
    """
    global _pending
    _pending = (_where(), what)
    rest = ("the cells not run are NaN" if unit == "passes"
            else "the scores are the mean over the prompts scored")
    warnings.warn(f"{what} was interrupted after {done} of {total} {unit}: returning the partial result "
                  f"(result.complete is False; {rest}). A further sweep started in this cell or "
                  "script raises KeyboardInterrupt", RuntimeWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside attnlab (the user's line)."""
    import sys

    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("attnlab"):
        frame, level = frame.f_back, level + 1
    return level


def raise_pending(what: str) -> None:
    """Raise :class:`KeyboardInterrupt` if an earlier sweep in this same cell or script run was interrupted (once:
    the interrupt is then consumed).

    Raises:
        KeyboardInterrupt: an interrupt is pending here; its message names the interrupted analysis.
    """
    global _pending
    if _pending is None:
        return
    where, earlier = _pending
    _pending = None
    if where == _where():
        raise KeyboardInterrupt(f"{what} not started: {earlier} was interrupted earlier in this "
                                f"{'cell' if where != 'script' else 'script'} (its partial result was returned)")


def clear() -> None:
    """Forget a pending interrupt (its caller has handled it: the CLI after exiting with the partial result)."""
    global _pending
    _pending = None
