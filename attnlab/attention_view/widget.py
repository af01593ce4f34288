"""``attnlab.AttentionView``: every head's attention pattern on a text, as a Jupyter widget (anywidget).

The front end is TypeScript in ``labext/src/attention.ts``, bundled by labext's build into
``attnlab/attention_view/static/attention.js`` and sent as the widget's ``_esm``. The patterns travel once, as binary
(``weights``: 16-bit integers, see :mod:`attnlab.attention_view.patterns`); hovering and clicking are answered in the
browser. The enlarged head is a synced trait (``selected``: [layer, head]), so Python can read and set it.

Synced state: ``meta`` (model, text, tokens, dimensions, encoding), ``weights`` (bytes), ``selected`` ([layer, head]),
``scale`` (``"unit"``: the enlarged head's colours span 0..1; ``"max"``: 0..that head's largest weight off token 0,
which attends only to itself and is where attention sinks put their weight; larger weights show as the darkest).
"""

import html

import anywidget
import traitlets as t

from attnlab.attention_view.patterns import DEFAULT_MAX_TOKENS, AttentionPatterns, read_attention
from attnlab.errors import ArgumentError
from attnlab.widget_support import front_end

__all__ = ["AttentionView"]

FALLBACK_NOTE = ("attnlab AttentionView: this front end cannot run Jupyter widgets; open the notebook in JupyterLab "
                 "to see every head's attention pattern.")


def _front_end() -> str:
    return front_end("attnlab.attention_view", "attention.js", "the attention view")


class AttentionView(anywidget.AnyWidget):
    """Every head's attention pattern on a text, CircuitsVis-style, offline.

    ``attnlab.AttentionView(model, "When Mary and John went to the store, John gave a drink to")`` shows:

    - the text as tokens; hovering a token highlights where it attends (its row of the patterns) and what attends
      to it (its column), in every thumbnail and in the enlarged head, whose weights are listed under the text;
    - a layers x heads grid of thumbnails, each head's pattern as a small matrix (query down, key across), on one
      colour scale from 0 to 1 with its colour bar;
    - the selected head enlarged (click a thumbnail): the full matrix with every token labelled on both axes (long
      tokens shortened, the full text in a tooltip), a colour bar with its range (0 to 1, or 0 to the head's largest
      weight off token 0), and SVG/PNG export buttons.

    Args:
        model: a loaded model (:func:`attnlab.load_model`; either backend).
        text: the text, or token ids Int[pos] for a model without a tokenizer.
        max_tokens: the longest text taken (default 128 tokens; at most 512): every head's n x n pattern is sent to
            the browser.
        layer, head: the head shown enlarged first.

    Python API: :attr:`patterns` (Float[layer, head_index, query, key]), :attr:`tokens`, :attr:`attention` (the
    :class:`~attnlab.attention_view.patterns.AttentionPatterns`), :meth:`select`, :meth:`show`.

    Raises:
        ArgumentTypeError, ArgumentError: as :func:`~attnlab.attention_view.patterns.read_attention` (a text longer
            than ``max_tokens`` says how long it is and what the payload would be), before the model runs.
        SiteError: ``layer`` or ``head`` outside the model.
        AttnlabError: the front-end bundle is missing (a source checkout that was never built).
    """

    _esm = t.Unicode("").tag(sync=True)
    meta = t.Dict(help="model, text, tokens, n_layers, n_heads, n_tokens, encoding, scale").tag(sync=True)
    weights = t.Bytes(help="every head's pattern as little-endian uint16 round(w * 65535) (see meta.encoding)"
                      ).tag(sync=True)
    selected = t.List(t.Int(), default_value=[0, 0], minlen=2, maxlen=2,
                      help="the enlarged head: [layer, head]").tag(sync=True)
    scale = t.Unicode("unit", help="the enlarged head's colour range: 'unit' (0..1) or 'max' (0..its largest weight "
                                   "off token 0)").tag(sync=True)

    def __init__(self, model, text, *, max_tokens: int = DEFAULT_MAX_TOKENS, layer: int = 0, head: int = 0) -> None:
        esm = _front_end()
        attention = read_attention(model, text, max_tokens=max_tokens)
        attention.head(layer, head)  # SiteError before anything is shown
        self._attention = attention
        super().__init__(_esm=esm, meta=attention.meta(), weights=attention.encoded(), selected=[layer, head])

    @t.validate("selected")
    def _check_selected(self, proposal):
        layer, head = proposal["value"]
        self._attention.head(layer, head)
        return [layer, head]

    @t.validate("scale")
    def _check_scale(self, proposal):
        if proposal["value"] not in ("unit", "max"):
            raise ArgumentError(f"'scale' must be 'unit' (0..1) or 'max' (0..the head's largest weight) "
                            f"(got {proposal['value']!r})")
        return proposal["value"]

    # -- Python API -----------------------------------------------------------------------------------------------
    @property
    def attention(self) -> AttentionPatterns:
        """The patterns, tokens and text shown."""
        return self._attention

    @property
    def patterns(self):
        """Float[layer, head_index, query, key]: the attention of each query position to each key position."""
        return self._attention.patterns

    @property
    def tokens(self) -> list[str]:
        """The tokens' texts (BOS included where the model prepends one)."""
        return list(self._attention.tokens)

    def select(self, layer: int, head: int) -> None:
        """Enlarge head ``(layer, head)``.

        Raises:
            SiteError: outside the model.
        """
        self.selected = [layer, head]

    def show(self) -> None:
        """Display the view (in a notebook; the same as leaving it as a cell's last expression)."""
        from IPython.display import display

        display(self)

    # -- display --------------------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        data, meta = super()._repr_mimebundle_(**kwargs)
        tokens = " ".join(repr(s) for s in self._attention.tokens)
        data["text/html"] = (f'<p style="font-style:italic">{html.escape(FALLBACK_NOTE)}</p>'
                             f"<p>{html.escape(self._summary())}: {html.escape(tokens)}</p>")
        data["text/plain"] = repr(self)
        return data, meta

    def _summary(self) -> str:
        a = self._attention
        return f"attention of {a.n_layers} layers x {a.n_heads} heads of {a.model_name} on {a.n_tokens} tokens"

    def __repr__(self) -> str:
        layer, head = self.selected
        return f"<attnlab.AttentionView: {self._summary()}; enlarged L{layer}H{head}>"
