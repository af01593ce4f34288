"""The render contract between the kernel and labext: versioned MIME types and their JSON payloads.

Mirrored in TypeScript by ``labext/src/contract.ts``; a change here is a change there, and a new version of a payload
gets a new MIME type (``...v2+json``) rather than a silent change of meaning.
"""

from typing import Literal, TypedDict

__all__ = ["HEATMAP_MIME", "HeatmapPayload"]

#: MIME type of a heatmap payload, rendered by labext's heatmap view.
HEATMAP_MIME = "application/vnd.attnlab.heatmap.v1+json"


class HeatmapPayload(TypedDict):
    """A labelled matrix drawn with a diverging colour scale centred at zero.

    Keys:
        kind: always ``"heatmap"``.
        version: always 1.
        title: heading shown above the plot.
        subtitle: one line under the title (baselines, direction ...).
        values: [n_rows][n_cols] numbers; ``null`` marks a cell not computed (e.g. an interrupted sweep).
        row_labels: n_rows labels (``"L0"`` ... or ``"L9H9"``).
        col_labels: n_cols labels (``"H0"`` ... or position labels such as ``"S2"``, ``"END"``).
        col_tokens: n_cols token strings shown under the column labels, or null. Plain text, never HTML.
        row_title: axis title of the rows (``"layer"``).
        col_title: axis title of the columns (``"head"``, ``"position"``).
        row_groups: row indices at which a new group starts (a separator line is drawn), or null.
        value_label: what a cell's number means, with its unit (``"normalised logit difference"``).
        zmax: colour-scale limit: -zmax is full blue, 0 white, +zmax full red.
    """

    kind: Literal["heatmap"]
    version: Literal[1]
    title: str
    subtitle: str
    values: list[list[float | None]]
    row_labels: list[str]
    col_labels: list[str]
    col_tokens: list[str] | None
    row_title: str
    col_title: str
    row_groups: list[int] | None
    value_label: str
    zmax: float
