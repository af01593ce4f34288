"""The circuit Explorer: click a cell of a patching heatmap and the kernel answers with that component's behaviour.

- :class:`Explorer` (``attnlab.Explorer``): the Jupyter widget.
- :class:`ExplorerController`: the same logic in plain Python (what the widget's buttons call; what tests drive).
- :func:`register_task`: add a task to the Explorer's task menu.
"""

from attnlab.explorer.controller import ExplorerController, ExplorerError, ExplorerRun, Selection
from attnlab.explorer.tasks import ExplorerTask, TaskError, get_task, register_task, registered_tasks

__all__ = ["Explorer", "ExplorerController", "ExplorerError", "ExplorerRun", "ExplorerTask", "Selection",
           "TaskError", "get_task", "register_task", "registered_tasks"]


def __getattr__(name: str):
    if name == "Explorer":  # imports anywidget: only when the widget is asked for
        from attnlab.explorer.widget import Explorer

        return Explorer
    raise AttributeError(f"module 'attnlab.explorer' has no attribute {name!r}")
