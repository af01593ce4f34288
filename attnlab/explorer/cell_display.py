"""Showing a widget in the notebook cell that runs it, once.

A cell that calls ``explorer.run()`` blocks until the sweep is done. Without help, the widget (and its progress bar)
appears only when the cell ends with ``explorer``, i.e. after the sweep: minutes without feedback. The widgets' blocking
``run()`` methods therefore display the widget first, in the cell that runs them, unless the widget was already
displayed in that cell. A cell is identified by IPython's execution count, which stays the same while one cell runs.

Used by :meth:`attnlab.Explorer.run <attnlab.explorer.widget.Explorer.run>` and
:meth:`attnlab.RecallReasoningWorkbench.run <attnlab.dissociation.widget.RecallReasoningWorkbench.run>`.
"""

__all__ = ["current_cell", "mark_displayed", "refresh_in_cell", "show_in_cell", "shown_by_run"]


def current_cell() -> int | None:
    """The execution count of the cell running now in a Jupyter kernel; None outside a kernel (a script, a test,
    a terminal IPython, where displaying a widget would only print its repr)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    return getattr(shell, "execution_count", None)


def mark_displayed(widget) -> None:
    """Record that ``widget`` is being displayed in the current cell (call from its ``_repr_mimebundle_``)."""
    widget._attnlab_displayed_in = current_cell()


def shown_by_run(widget) -> bool:
    """True when :func:`show_in_cell` already displayed ``widget`` in the current cell (so a trailing ``widget``
    expression need not show a second copy)."""
    cell = current_cell()
    return cell is not None and getattr(widget, "_attnlab_run_displayed_in", None) == cell


def show_in_cell(widget) -> bool:
    """Display ``widget`` in the current cell unless it was displayed there already.

    Returns:
        True when it was displayed now; False outside a kernel or when the cell already shows it.
    """
    cell = current_cell()
    if cell is None or getattr(widget, "_attnlab_displayed_in", None) == cell:
        return False
    from IPython.display import display

    widget._attnlab_handle = display(widget, display_id=True)
    widget._attnlab_run_displayed_in = cell
    return True


def refresh_in_cell(widget) -> None:
    """Send the display that :func:`show_in_cell` made in the current cell again, once the run is over: the live
    widget is the same, but the bundle's static ``text/html`` copy (for front ends without widgets, and the saved
    notebook) then shows the finished result instead of the state before the run."""
    handle = getattr(widget, "_attnlab_handle", None)
    if handle is None or not shown_by_run(widget):
        return
    cell = widget._attnlab_run_displayed_in
    widget._attnlab_run_displayed_in = None  # the full bundle, not the one-line text of a second display
    try:
        handle.update(widget)
    finally:
        widget._attnlab_run_displayed_in = cell
