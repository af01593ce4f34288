"""Progress bars: tqdm.auto, so they render as widgets in notebooks and as text in terminals."""

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(*, total: int, desc: str, disable: bool = False) -> tqdm:
    """A progress bar over ``total`` steps (forward passes, chunks ...)."""
    return tqdm(total=total, desc=desc, disable=disable, leave=True, unit="pass")
