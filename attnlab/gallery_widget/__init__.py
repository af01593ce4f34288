"""The head-scores gallery as a widget: run previous-token, duplicate-token and induction scoring from the notebook
with progress, a time estimate and Cancel, and click a head to have the kernel compute its detail.

- :mod:`attnlab.gallery_widget.controller`: :class:`GalleryController`, the plain-Python logic (tests drive it).
- :mod:`attnlab.gallery_widget.widget`: :class:`HeadGalleryWidget`, the anywidget front end over it
  (``labext/src/gallerywidget.ts``).
"""

from attnlab.gallery_widget.controller import GalleryController, GalleryRun
from attnlab.gallery_widget.widget import HeadGalleryWidget

__all__ = ["GalleryController", "GalleryRun", "HeadGalleryWidget"]
