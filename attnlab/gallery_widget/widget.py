"""``attnlab.HeadGalleryWidget``: the head-scores gallery run from a Jupyter widget (anywidget).

The front end is TypeScript in ``labext/src/gallerywidget.ts`` (it reuses labext's gallery view,
``labext/src/gallery.ts``), bundled by labext's build into ``attnlab/gallery_widget/static/gallery.js`` and shipped
through anywidget's ``_esm`` trait, so it runs wherever Jupyter widgets run. Front ends that cannot show widgets show
the ``text/html`` part: a one-line note and, once a run has finished, the gallery's static tables.

Synced state (Python <-> browser): ``controls``, ``limits``, ``model_name``, ``status``, ``message``, ``progress``,
``eta``, ``elapsed``, ``payload`` (the gallery payload of the run on display), ``selected_head`` and
``detail_payload`` (the kernel's answer to a click). Actions arrive as custom messages
``{"type": "run" | "cancel" | "select" | "controls", ...}``.
"""

import html
import threading

import anywidget
import traitlets as t

from attnlab.backends.base import Backend
from attnlab.errors import AttnlabError
from attnlab.gallery_widget.controller import GalleryController, GalleryRun
from attnlab.widget_support import front_end, json_safe

__all__ = ["HeadGalleryWidget"]

FALLBACK_NOTE = ("attnlab head gallery: this front end cannot run Jupyter widgets, so a static copy is shown; open "
                 "the notebook in JupyterLab (pip install attnlab) to run and click through it.")


def _front_end() -> str:
    return front_end("attnlab.gallery_widget", "gallery.js", "the head gallery")


class HeadGalleryWidget(anywidget.AnyWidget):
    """Find previous-token, duplicate-token and induction heads from a widget: choose, run, watch, click.

    ``attnlab.HeadGalleryWidget(model)`` in a notebook cell shows the controls (tokens per repeat, number of
    sequences, seed), Run with a progress bar and a time estimate, Cancel (the blocks already scored are kept; the
    other heads show as "not computed"), and the head gallery (a layer x head grid per score kind with its colour bar,
    SVG/PNG export). The grid fills in block by block as the run goes. Clicking a head asks the kernel for its detail:
    its attention pattern on the first sequence and the increase of the second-repeat loss when it is zero- or
    mean-ablated (Olsson et al. 2022; see :mod:`attnlab.gallery_widget.controller`).

    Args:
        model: a loaded backend (:func:`attnlab.load_model`, :func:`attnlab.tiny_model` ...).
        seq_len, n_sequences, seed: the initial controls (see :class:`GalleryController`).

    Python API: :meth:`run` (blocking; ``wait=False`` runs in the background), :meth:`cancel`, :meth:`wait`,
    :attr:`result` (the :class:`~attnlab.heads.results.HeadScores` on display), :attr:`selected` (get, or set with
    ``(layer, head)`` / ``"L3H2"`` / None), :attr:`detail`, :meth:`set_control`; the plain-Python logic is
    :attr:`controller`.

    Raises:
        ExplorerError: invalid initial settings.
        AttnlabError: the front-end bundle is missing (a source checkout that was never built).
    """

    _esm = t.Unicode("").tag(sync=True)
    controls = t.Dict(help="the control values: seq_len, n_sequences, seed").tag(sync=True)
    limits = t.Dict(help="[min, max] of each control (max None: unbounded)").tag(sync=True)
    model_name = t.Unicode("", help="the model's name").tag(sync=True)
    status = t.Unicode("idle", help="idle | running | done | cancelled | error").tag(sync=True)
    message = t.Unicode("", help="what the last action did, or its error").tag(sync=True)
    progress = t.List([0, 0], help="[passes done, passes planned]").tag(sync=True)
    eta = t.Float(-1.0, help="estimated seconds left in the run; -1 when unknown or idle").tag(sync=True)
    elapsed = t.Float(0.0, help="seconds the run has taken so far").tag(sync=True)
    payload = t.Dict(help="the gallery payload of the run on display (HeadGalleryPayload)").tag(sync=True)
    selected_head = t.List([], help="[layer, head] of the selected head, [] for none").tag(sync=True)
    detail_payload = t.Dict(help="the kernel's detail of the selected head (GalleryController.head_detail)").tag(
        sync=True)

    def __init__(self, model: Backend, *, seq_len: int = 10, n_sequences: int = 8, seed: int = 0) -> None:
        esm = _front_end()
        self.controller = GalleryController(model, seq_len=seq_len, n_sequences=n_sequences, seed=seed)
        super().__init__(_esm=esm)  # the front end must be there when the comm opens
        self._thread: threading.Thread | None = None
        c = self.controller
        self.controls = dict(c.controls)
        self.limits = c.limits()
        self.model_name = model.info.name
        c.on_change(self._sync)
        self.on_msg(self._on_message)

    # -- Python API -----------------------------------------------------------------------------------------------
    def run(self, *, wait: bool = True) -> "GalleryRun | threading.Thread":
        """Score every head on the sequences of the current controls.

        Args:
            wait: block until done and return the :class:`~attnlab.gallery_widget.controller.GalleryRun`; False
                starts it in the background (Cancel and clicks work meanwhile) and returns the thread.

        Raises:
            ExplorerError: a run is already in progress.
        """
        if wait:
            return self.controller.run()
        self._thread = self.controller.run_in_background()
        return self._thread

    def cancel(self) -> None:
        """Stop a background run after its current pass; the blocks already scored are kept."""
        self.controller.cancel()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background run to finish."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def result(self):
        """The :class:`~attnlab.heads.results.HeadScores` on display (NaN for heads not computed), or None."""
        return self.controller.result

    @property
    def selected(self) -> tuple[int, int] | None:
        """The selected ``(layer, head)`` (None for none); set it (``(3, 2)``, ``"L3H2"``, None) to select a head:
        the kernel computes its detail and the view follows."""
        return self.controller.selected

    @selected.setter
    def selected(self, target) -> None:
        self.controller.select(target)

    @property
    def detail(self) -> dict | None:
        """The detail of the selected head (:meth:`GalleryController.head_detail`; None when nothing is selected)."""
        return self.controller.detail

    def set_control(self, name: str, value) -> None:
        """Set a control from Python (validated; see :meth:`GalleryController.set_control`)."""
        self.controller.set_control(name, value)

    # -- state -> browser -----------------------------------------------------------------------------------------
    def _sync(self, what: str) -> None:
        c = self.controller
        with self.hold_sync():
            if what == "controls":
                self.controls = dict(c.controls)
            elif what == "status":
                self.status, self.message = c.status, c.message
            elif what == "progress":
                self.progress = list(c.progress)
                self.eta = -1.0 if c.eta is None else float(c.eta)
                self.elapsed = float(c.elapsed)
            elif what == "result":
                self.payload = {} if c.result is None else json_safe(self._payload())
            elif what == "selected":
                self.selected_head = [] if c.selected is None else list(c.selected)
            elif what == "detail":
                self.detail_payload = {} if c.detail is None else json_safe(c.detail)

    def _payload(self) -> dict:
        """The gallery payload of the run on display, without the per-head patterns (a click asks for them)."""
        from attnlab.render.gallery import head_gallery

        result = self.controller.result
        payload = head_gallery(_without_patterns(result))
        run = self.controller.current
        n_l = result.n_layers
        done = len(run.layers_done)
        payload["subtitle"] = payload["subtitle"].replace(
            "click a head for its pattern, ablation effect and prefix-length curve",
            "click a head: the kernel computes its pattern and ablation effect")
        if done < n_l:
            state = "running" if self.controller.in_progress else "cancelled"
            payload["subtitle"] += f" · {state}: {done} of {n_l} blocks scored, the other heads not computed"
        best = _best_head(result)
        payload["selected"] = None if best is None else list(best)
        return payload

    # -- browser -> Python ----------------------------------------------------------------------------------------
    def _on_message(self, _widget, content, _buffers) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        c = self.controller
        try:
            if kind == "run":
                if content.get("controls"):
                    self._apply_controls(content["controls"])
                self._thread = c.run_in_background()
            elif kind == "cancel":
                c.cancel()
            elif kind == "controls":
                self._apply_controls(content.get("controls", {}))
            elif kind == "select":
                target = content.get("head")
                c.select(None if target is None else tuple(target))
        except AttnlabError as exc:
            self.message = f"{type(exc).__name__}: {exc}"
            if kind == "run":
                self.status = "error"
            self.controls = dict(c.controls)  # undo a rejected control in the view
        except Exception as exc:  # never let a click kill the comm; show what happened
            self.status, self.message = "error", f"{type(exc).__name__}: {exc}"

    def _apply_controls(self, new: dict) -> None:
        c = self.controller
        for name in GalleryController.CONTROLS:
            if name in new and new[name] != c.controls.get(name):
                c.set_control(name, new[name])

    # -- display --------------------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        data, meta = super()._repr_mimebundle_(**kwargs)
        data["text/html"] = self._fallback_html()
        return data, meta

    def _fallback_html(self) -> str:
        note = f'<p style="font-style:italic">{html.escape(FALLBACK_NOTE)}</p>'
        if self.controller.result is None:
            return note + "<p>(no run yet)</p>"
        from attnlab.render.gallery import static_gallery_html

        return note + static_gallery_html(self._payload())

    def __repr__(self) -> str:
        c = self.controller
        return (f"<attnlab.HeadGalleryWidget {c.model.info.name!r} seq_len={c.controls['seq_len']} "
                f"n_sequences={c.controls['n_sequences']} seed={c.controls['seed']} runs={len(c.runs)} "
                f"status={c.status!r}>")


def _without_patterns(result):
    from dataclasses import replace

    return replace(result, example_patterns=None)


def _best_head(result) -> tuple[int, int] | None:
    """The head with the highest finite induction score (the first kind's when there is none), or None."""
    import torch

    kind = "induction" if "induction" in result.kinds else result.kinds[0]
    s = result.score(kind)
    finite = torch.isfinite(s)
    if not finite.any():
        return None
    flat = torch.where(finite, s, torch.tensor(float("-inf"))).reshape(-1)
    return divmod(int(torch.argmax(flat)), result.n_heads)
