"""Attention for any text: every head's attention pattern on a prompt, as a CircuitsVis-like view (Cooney & Nanda,
CircuitsVis, ``attention_heads``), offline.

- :func:`read_attention` (Python API): the patterns ``[layer, head, query, key]`` of a text or of token ids, read
  through the backend (both backends), as an :class:`AttentionPatterns`.
- :class:`AttentionView` (``attnlab.AttentionView(model, text)``): the Jupyter widget: layers x heads thumbnails,
  hover a token to see where it attends (its row) and what attends to it (its column), click a head to enlarge it.
"""

from attnlab.attention_view.patterns import DEFAULT_MAX_TOKENS, AttentionPatterns, read_attention

__all__ = ["DEFAULT_MAX_TOKENS", "AttentionPatterns", "AttentionView", "read_attention"]


def __getattr__(name: str):
    if name == "AttentionView":  # imports anywidget: only when the widget is asked for
        from attnlab.attention_view.widget import AttentionView

        return AttentionView
    raise AttributeError(f"module 'attnlab.attention_view' has no attribute {name!r}")
