"""``attnlab.Lab``: one widget that hosts every analysis of the lab as a tab, on one model.

The tabs are the lab's own widgets, each complete on its own (controls, Run with progress and Cancel that keeps
finished work, click-to-detail answered by the kernel): activation patching (:class:`~attnlab.explorer.Explorer`),
circuit search (:class:`~attnlab.circuit_search.CircuitSearch`), the head-scores gallery
(:class:`~attnlab.gallery_widget.HeadGalleryWidget`), attention patterns on any text
(:class:`~attnlab.attention_view.AttentionView`) and the recall-versus-reasoning workbench
(:class:`~attnlab.dissociation.widget.RecallReasoningWorkbench`). A tab's widget is built the first time the tab is
opened, so opening the lab costs one widget, not five.
"""

from __future__ import annotations

import importlib

import ipywidgets as widgets

from attnlab.backends.base import Backend
from attnlab.errors import AttnlabError

__all__ = ["Lab", "LAB_TABS"]

#: (name, tab title, module, class, whether it takes the task) for each tab, in display order.
LAB_TABS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("patching", "Activation patching", "attnlab.explorer", "Explorer", True),
    ("circuits", "Circuit search", "attnlab.circuit_search.widget", "CircuitSearch", True),
    ("heads", "Head scores", "attnlab.gallery_widget.widget", "HeadGalleryWidget", False),
    ("attention", "Attention", "attnlab.attention_view.widget", "AttentionView", False),
    ("dissociation", "Recall vs reasoning", "attnlab.dissociation.widget", "RecallReasoningWorkbench", False),
)

#: The attention tab's text until the user types another (an IOI prompt: name movers and induction are visible).
DEFAULT_ATTENTION_TEXT = "When Mary and John went to the store, John gave a drink to"


class Lab(widgets.Tab):
    """Every analysis of the lab on one model, one tab each.

    ``attnlab.Lab(model)`` in a notebook cell shows the tabs; the first opens at once, the others when clicked.

    Args:
        model: a loaded backend (:func:`attnlab.load_model`), local or remote.
        task: the task of the patching and circuit-search tabs (``"ioi"`` or ``"colored_objects"``).
        tabs: the names of the tabs to show, in order (default: all of :data:`LAB_TABS`).
        options: keyword arguments for a tab's widget, by tab name, e.g. ``{"patching": {"n_prompts": 8}}``.

    Attributes: :meth:`tab` returns a tab's widget (building it if needed); :attr:`explorer`,
    :attr:`circuit_search`, :attr:`gallery`, :attr:`attention`, :attr:`workbench` name them.

    Raises:
        AttnlabError: an unknown tab name, or options for a tab that is not shown (before any widget is built).
    """

    def __init__(self, model: Backend, task: str = "ioi", *, tabs=None, options: dict | None = None) -> None:
        known = {spec[0]: spec for spec in LAB_TABS}
        names = list(known) if tabs is None else list(tabs)
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise AttnlabError(f"Lab: unknown tab(s) {unknown or names!r}; choose from {list(known)}")
        options = dict(options or {})
        stray = [n for n in options if n not in names]
        if stray:
            raise AttnlabError(f"Lab: options given for tab(s) {stray} that are not shown (tabs={names})")
        self._model = model
        self._task = task
        self._specs = [known[n] for n in names]
        self._options = options
        self._built: dict[str, widgets.Widget] = {}
        placeholders = [widgets.Label(f"{spec[1]}: opening...") for spec in self._specs]
        super().__init__(children=placeholders, titles=[spec[1] for spec in self._specs])
        self.observe(self._on_select, names="selected_index")
        self.selected_index = 0
        self._on_select({"new": 0})

    def tab(self, name: str) -> widgets.Widget:
        """The widget of tab ``name`` (built on first use).

        Raises:
            AttnlabError: ``name`` is not one of this lab's tabs.
        """
        names = [spec[0] for spec in self._specs]
        if name not in names:
            raise AttnlabError(f"Lab: no tab {name!r}; this lab has {names}")
        if name not in self._built:
            index = names.index(name)
            _, title, module, cls, takes_task = self._specs[index]
            kwargs = dict(self._options.get(name, {}))
            if takes_task:
                kwargs.setdefault("task", self._task)
            if name == "attention":
                kwargs.setdefault("text", DEFAULT_ATTENTION_TEXT)
            widget = getattr(importlib.import_module(module), cls)(self._model, **kwargs)
            self._built[name] = widget
            children = list(self.children)
            children[index] = widget
            self.children = children
            self.set_title(index, title)
        return self._built[name]

    def _on_select(self, change) -> None:
        index = change["new"]
        if index is not None and 0 <= index < len(self._specs):
            self.tab(self._specs[index][0])

    @property
    def explorer(self):
        """The activation-patching tab's :class:`~attnlab.explorer.Explorer`."""
        return self.tab("patching")

    @property
    def circuit_search(self):
        """The circuit-search tab's widget."""
        return self.tab("circuits")

    @property
    def gallery(self):
        """The head-scores gallery tab's widget."""
        return self.tab("heads")

    @property
    def attention(self):
        """The attention tab's widget."""
        return self.tab("attention")

    @property
    def workbench(self):
        """The recall-versus-reasoning tab's :class:`~attnlab.dissociation.widget.RecallReasoningWorkbench`."""
        return self.tab("dissociation")

    def __repr__(self) -> str:
        return f"Lab({self._model.info.name!r}, task={self._task!r}, tabs={[s[0] for s in self._specs]})"
