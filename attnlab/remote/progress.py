"""Progress of remote work in a notebook or terminal: a bar over jobs (chunks) and a status line for the current one.

The bar is tqdm's (a widget in JupyterLab, text in a terminal); its postfix is the status line, e.g.
``job 3f2a9c1e RUNNING · 96 passes``. Every status change is also recorded in :attr:`JobProgress.events`.
"""

import time

from attnlab.remote.keys import redact

__all__ = ["JobProgress"]


class JobProgress:
    """Progress over ``n_jobs`` remote jobs.

    Args:
        n_jobs: jobs (chunks) this piece of work is split into.
        desc: the bar's label.
        enabled: show the bar (events are recorded either way).
    """

    def __init__(self, n_jobs: int, desc: str, enabled: bool = True) -> None:
        from attnlab.progress import progress_bar

        self.events: list[tuple[float, str | None, str]] = []
        self.bar = progress_bar(total=n_jobs, desc=desc, disable=not enabled)
        self.bar.unit = "job"
        self._job = ""

    def start_job(self, index: int, n_passes: int) -> None:
        self._job = f"chunk {index + 1}/{self.bar.total} · {n_passes} passes"
        self.bar.set_postfix_str(f"{self._job} · sending", refresh=True)

    def status(self, job_id: str | None, status: str, description: str = "") -> None:
        """Record and show one status update (RECEIVED, QUEUED, RUNNING, COMPLETED, ERROR, LOG ...)."""
        self.events.append((time.time(), job_id, status))
        short = (job_id or "")[:8]
        line = f"{self._job} · job {short} {status}"
        if status == "LOG" and description:
            line += f": {redact(description)[:60]}"
        self.bar.set_postfix_str(line, refresh=True)

    def job_done(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
