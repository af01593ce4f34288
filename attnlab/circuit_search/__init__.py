"""Circuit search from a widget: EAP, EAP-IG or ACDC on a task, a size slider with the faithfulness curve, the head
panel of a clicked node, and the overlap with another task's circuit.

- :class:`CircuitSearch` (``attnlab.CircuitSearch``): the Jupyter widget.
- :class:`CircuitSearchController`: the same logic in plain Python (what the widget's buttons call; what tests
  drive).
"""

from attnlab.circuit_search.controller import METHODS, CircuitSearchController, SearchRun, offered_sizes

__all__ = ["METHODS", "CircuitSearch", "CircuitSearchController", "SearchRun", "offered_sizes"]


def __getattr__(name: str):
    if name == "CircuitSearch":  # imports anywidget: only when the widget is asked for
        from attnlab.circuit_search.widget import CircuitSearch

        return CircuitSearch
    raise AttributeError(f"module 'attnlab.circuit_search' has no attribute {name!r}")
