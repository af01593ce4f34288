"""Remote jobs: many passes per job, a deadline on every call, errors that say what to do, nothing computed lost.

A sweep's patched passes (:class:`~attnlab.backends.base.RunSpec`) are grouped into chunks whose request and result
bytes stay under ``RemoteOptions.job_budget_mb``; each chunk is one nnsight session, i.e. one remote job, holding one
trace per pass. Baseline runs (:meth:`Backend.run`) are one job each.

Resuming: every finished pass is kept in memory under a fingerprint of what it computes (tokens, interventions,
recorded sites). When a job fails, the error says how many passes are kept; running the same analysis again with
the same model object sends only the passes that are missing. The kept passes are dropped when an analysis's passes
have all been delivered.

Deadline: nnsight's client waits on its websocket forever; :class:`DeadlineRemoteBackend` runs the same protocol
(nnsight's own serialisation, ``POST /request``, ``/subscribe`` status frames, result download, non-blocking
``GET /response/{id}`` polling) with a deadline of ``RemoteOptions.timeout_s`` per job.
"""

import dataclasses
import hashlib
import time
from dataclasses import dataclass

from attnlab.backends.nnsight_adapter import NNsightRemoteError, RemoteBackend, Status, http_timeouts, remote_env

from attnlab.errors import AttnlabError
from attnlab.remote.errors import (
    ModelNotDeployedError,
    RemoteAuthError,
    RemoteConnectionError,
    RemoteError,
    RemoteExecutionError,
    RemoteServerError,
    RemoteTimeoutError,
    RemoteVersionError,
)
from attnlab.remote.keys import api_key, looks_like_a_key, redact, remember_secret
from attnlab.remote.progress import JobProgress
from attnlab.remote.deployments import resolve_host

__all__ = ["DeadlineRemoteBackend", "JobRunner", "RemoteOptions"]


@dataclass
class RemoteOptions:
    """How attnlab talks to a remote server. Pass one as ``load_model(..., remote=RemoteOptions(...))``.

    Attributes:
        host: server URL; None: ``NDIF_HOST``, else nnsight's configured host (NDIF).
        timeout_s: deadline of each remote call (one job, from upload to result), in seconds.
        blocking: True: follow each job's status over a websocket; False: submit over HTTP and poll.
        poll_interval_s: seconds between polls when not blocking.
        job_budget_mb: request plus result size of one job, in MiB; larger work is split into chunks.
        progress: show a progress bar and status line.
        allow_insecure_http: accept a plain ``http://`` host that is not this machine. The server can run code in
            this process (nnsight unpickles its answers), so without TLS so can anyone on the network path; off by
            default (see :func:`attnlab.remote.deployments.resolve_host`).
    """

    host: str | None = None
    timeout_s: float = 1800.0
    blocking: bool = True
    poll_interval_s: float = 2.0
    job_budget_mb: float = 256.0
    progress: bool = True
    allow_insecure_http: bool = False

    def __post_init__(self) -> None:
        for name in ("timeout_s", "poll_interval_s", "job_budget_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise AttnlabError(f"RemoteOptions.{name} must be a positive number (got {_shown(value)})")
        for name in ("blocking", "progress", "allow_insecure_http"):
            if not isinstance(getattr(self, name), bool):
                raise AttnlabError(f"RemoteOptions.{name} must be True or False (got {_shown(getattr(self, name))})")
        if self.host is not None:
            resolve_host(self.host, allow_insecure_http=self.allow_insecure_http)  # refuse a bad host now

    @classmethod
    def from_argument(cls, remote) -> "RemoteOptions":
        """The options meant by ``load_model``'s ``remote=``: True, a host URL, or RemoteOptions."""
        if isinstance(remote, RemoteOptions):
            return remote
        if remote is True:
            return cls()
        if isinstance(remote, str) and remote.startswith(("http://", "https://")):
            return cls(host=remote)
        raise AttnlabError(f"'remote' must be False, True, 'local', a host URL or RemoteOptions (got "
                           f"{_shown(remote)}); an API key belongs in NDIF_API_KEY")


def _shown(value) -> str:
    """How an option's bad value appears in an error: a string that could be a key is described, never shown (and
    is redacted from then on)."""
    if looks_like_a_key(value):
        remember_secret(value)
        return f"a string of {len(value)} characters, not shown: it may be a key"
    return redact(repr(value))


class DeadlineRemoteBackend(RemoteBackend):
    """nnsight's :class:`RemoteBackend` with a deadline, status forwarding and no display of its own.

    Args:
        deadline: ``time.monotonic()`` value after which the job is abandoned (RemoteTimeoutError).
        on_status: ``(job_id, status, description)`` callback for every status update.
    """

    def __init__(self, *args, deadline: float, on_status=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline
        self.on_status = on_status
        self.display.enabled = False  # attnlab's JobProgress shows status instead

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _check_deadline(self, doing: str) -> None:
        if self.remaining() <= 0:
            raise RemoteTimeoutError(f"deadline passed while {doing}", job_id=self.job_id)

    def _http_deadline(self):
        """Bound nnsight's HTTP timeouts (module constants it reads per call) by the time left."""
        return http_timeouts(self.remaining())

    def note(self, response) -> bool:
        if response.id and self.job_id is None:
            self.job_id = response.id
        if self.on_status is not None:
            self.on_status(response.id or self.job_id, response.status.value, response.description or "")
        return super().note(response)

    def _post(self, request, blob):
        self._check_deadline("sending the request")
        with self._http_deadline():
            return super()._post(request, blob)

    def download_result(self, url):
        with self._http_deadline():
            return super().download_result(url)

    def poll(self, tracer=None):
        self._check_deadline("waiting for the job")
        with self._http_deadline():
            return super().poll(tracer)

    def request(self, request, tracer):
        """nnsight's blocking protocol (subscribe, POST, status frames until COMPLETED), with a deadline."""
        import json

        import websocket

        blob = self._serialize(tracer)
        self._check_deadline("connecting")
        connection = websocket.create_connection(
            f"{self.ws_host}/subscribe", header={"ndif-api-key": self.api_key} if self.api_key else None,
            timeout=max(0.1, min(30.0, self.remaining())))
        try:
            request.session_id = json.loads(connection.recv())["session_id"]
            self.send(request, blob)
            while True:
                connection.settimeout(max(0.05, min(1.0, self.remaining())))
                try:
                    message = connection.recv()
                except websocket.WebSocketTimeoutException:
                    self._check_deadline("waiting for the job")
                    continue
                if not message:
                    raise websocket.WebSocketConnectionClosedException("the server closed the status connection")
                response = self.parse(message)
                result = self.handle(response)
                if response.status == Status.COMPLETED:
                    return result
        finally:
            connection.close()


def fingerprint(pass_) -> str:
    """A digest of everything that determines a pass's output: its wire form (tokens, interventions, sites, start,
    stop ...) and the sites its recordings map to. ``pass_`` is a :class:`~attnlab.backends.nnsight.PlannedPass`."""
    import torch

    h = hashlib.blake2b(digest_size=20)

    def feed(x) -> None:
        if isinstance(x, torch.Tensor):
            h.update(f"T{tuple(x.shape)}{x.dtype}".encode())
            h.update(x.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                feed(k)
                feed(x[k])
            h.update(b"}")
        elif isinstance(x, tuple) and hasattr(x, "_fields"):  # the wire form's named tuples: field names count
            feed(dict(zip(x._fields, x)))
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for item in x:
                feed(item)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    feed(pass_.wire)
    feed([(s.kind.value, s.layer, s.head, s.position) for s in pass_.sites])
    return h.hexdigest()


def _pass_bytes(pass_, info, shared: set | None = None) -> int:
    """Request plus result bytes of one pass (a :class:`~attnlab.backends.nnsight.PlannedPass`; float32).

    ``shared`` holds the ids of tensors already counted in the same job: a tensor that many passes of a job read
    (the clean reference distribution of a reduced metric) is serialised once per job, so it is counted once."""
    p = pass_.wire
    rows, pos = p.tokens.shape
    n = p.tokens.numel() * 8
    for ops in p.patches.values():
        n += sum(op.values.numel() * 4 + op.rows.numel() * 24 for op in ops)
    if p.resid is not None:
        n += p.resid.numel() * 4
    if p.kv is not None:  # the recorded prefix: the same tensors in every pass of a sweep, serialised once a job
        for t in (*p.kv[0], *p.kv[1]):
            if shared is None or id(t) not in shared:
                n += t.numel() * 4
                if shared is not None:
                    shared.add(id(t))
    if p.record_kv:
        n += 2 * info.n_layers * rows * pos * info.n_kv_heads * info.d_head * 4
    if p.metric is not None:
        n += rows * 4 + p.metric.answers.numel() * 8
        reference = p.metric.reference
        if reference is not None and (shared is None or id(reference) not in shared):
            n += reference.numel() * 4
            if shared is not None:
                shared.add(id(reference))
    elif p.stop is None:
        n += rows * info.d_vocab * 4 * (1 if p.logits_at is not None else pos)
    else:
        n += rows * pos * info.d_model * 4
    for records in p.records.values():
        n += len(records) * rows * pos * max(info.d_model, info.n_heads * info.d_head, info.n_heads * pos) * 4
    return n


class JobRunner:
    """Sends a backend's passes to a remote server as jobs and keeps what finished (see the module docstring)."""

    def __init__(self, backend, options: RemoteOptions) -> None:
        self.backend = backend
        self.options = options
        #: finished passes by fingerprint: kept until an analysis has received all of its passes
        self.kept: dict[str, object] = {}
        #: job ids of every job sent, in order
        self.job_ids: list[str] = []
        #: the :class:`JobProgress` of the last piece of work (its ``events`` list every status update)
        self.progress: JobProgress | None = None

    # -- public -------------------------------------------------------------------------------------------------
    def run_one(self, pass_):
        """One pass (a baseline run) as one job, or from the kept passes."""
        fp = fingerprint(pass_)
        if fp not in self.kept:
            self.progress = JobProgress(1, f"remote run on {self.backend.info.name}", self.options.progress)
            try:
                self._job([(None, pass_, fp)], 0)
            finally:
                self.progress.close()
        return self.kept[fp]

    def run_many(self, specs):
        """Yield ``(key, RunOutput)`` for every spec: kept passes at once, the rest chunk by chunk."""
        items = []
        for spec in specs:
            kwargs = spec.run_kwargs(use_start_layer=False)
            if kwargs.get("prefix") is not None:  # planned from block 0 here; starting_at moves its first block
                kwargs["prefix"] = dataclasses.replace(kwargs["prefix"], start_layer=0)
            p = self.backend._plan(**kwargs)
            if spec.start_layer > 0 and spec.resid is not None:
                # skip the blocks before start_layer: ship the base residual once, the server repeats it
                p = p.starting_at(spec.start_layer, spec.resid, spec.repeat)
            items.append((spec.key, p, fingerprint(p)))
        budget = self.options.job_budget_mb * 2**20
        chunks, chunk, size, shared = [], [], 0, set()
        for item in items:
            if item[2] in self.kept:
                continue
            b = _pass_bytes(item[1], self.backend.info, shared)
            if chunk and size + b > budget:
                chunks.append(chunk)
                shared = set()
                chunk, size = [], 0
                b = _pass_bytes(item[1], self.backend.info, shared)
            chunk.append(item)
            size += b
        if chunk:
            chunks.append(chunk)
        for key, _, fp in items:  # resumed: these passes finished in an earlier, failed attempt
            if fp in self.kept:
                yield key, self.kept[fp]
        self.progress = JobProgress(len(chunks), f"remote jobs on {self.backend.info.name}", self.options.progress)
        try:
            for i, chunk in enumerate(chunks):
                self._job(chunk, i, total=len(items))
                for key, _, fp in chunk:
                    yield key, self.kept[fp]
        finally:
            self.progress.close()
        self.kept.clear()  # every pass delivered: nothing left to resume

    def run_session(self, execute, description: str):
        """One piece of work that is a whole session (an edge-level program: EAP-IG, faithfulness) as one job.

        Args:
            execute: ``execute(nn_backend) -> result``, running the session with nnsight backend ``nn_backend``.
            description: what the job does, for the progress display.

        Returns:
            The session's result.

        Raises:
            RemoteError: the job failed (a subclass says how; nothing is kept: the job is the whole analysis).
        """
        self.progress = JobProgress(1, description, self.options.progress)
        try:
            return self._submit(execute, 0, 1)
        finally:
            self.progress.close()

    # -- internals ----------------------------------------------------------------------------------------------
    def _job(self, chunk: list, index: int, total: int | None = None) -> None:
        """Run one chunk of passes as one remote job and keep its outputs; on failure raise a RemoteError subclass."""
        backend = self.backend
        passes = [p for _, p, _ in chunk]
        raw = self._submit(lambda nn_backend: backend._execute(passes, backend=nn_backend), index, len(passes), total)
        for (_, p, fp), out in zip(chunk, backend._outputs(passes, raw)):
            self.kept[fp] = out

    def _submit(self, execute, index: int, n_passes: int, total: int | None = None):
        """Run ``execute(nn_backend)`` as one remote job under the deadline; return its raw result."""
        backend, opts = self.backend, self.options
        host = resolve_host(opts.host, allow_insecure_http=opts.allow_insecure_http)
        self.progress.start_job(index, n_passes)
        nn_backend = DeadlineRemoteBackend(
            backend.nn.to_model_key(), host=host, api_key=api_key(), env=remote_env(backend.nn),
            blocking=opts.blocking, deadline=time.monotonic() + opts.timeout_s, on_status=self.progress.status)
        failure = None
        try:
            raw = execute(nn_backend)
            if not opts.blocking:
                raw = self._wait(nn_backend)
        except BaseException as exc:
            if nn_backend.job_id:
                self.job_ids.append(nn_backend.job_id)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            failure = self._translate(exc, nn_backend, host, total)
        if failure is not None:
            # raised here, not in the except block: the original exception (whose text a server may have filled,
            # key included) must not survive as the attnlab error's __context__
            raise failure
        self.job_ids.append(nn_backend.job_id)
        self.progress.job_done()
        return raw

    def _wait(self, nn_backend: DeadlineRemoteBackend):
        """Poll a non-blocking job until it completes (or the deadline passes)."""
        while True:
            result = nn_backend.poll()
            if result is not None:
                return result["results"] if isinstance(result, dict) and "results" in result else result
            nn_backend._check_deadline("waiting for the job")
            time.sleep(min(self.options.poll_interval_s, max(0.01, nn_backend.remaining())))

    def _translate(self, exc: BaseException, nn_backend, host: str, total: int | None) -> RemoteError:
        """The attnlab error for a failure of one job, with the job id and what is kept. Never contains the key."""
        import httpx
        import websocket

        job_id = nn_backend.job_id
        kept = len(self.kept)
        job = f"job {job_id}" if job_id else "the job (no job id: the server never accepted it)"
        if total is not None:
            saved = (f"{kept} of {total} passes of this analysis finished and are kept in memory; run the same "
                     "analysis again with this model object to resume (kept passes are not sent again)")
        else:
            saved = f"{kept} finished passes are kept in memory; running the same analysis again resumes after them"
        text = redact(exc)
        cause = exc.__cause__
        cls, what, todo = RemoteServerError, f"{host} failed {job}: {text}", "try again later"
        if isinstance(exc, RemoteTimeoutError):
            cls, what = RemoteTimeoutError, f"{job} on {host} did not finish within {self.options.timeout_s:g} s ({text})"
            todo = "raise RemoteOptions.timeout_s, or lower job_budget_mb so that each job is shorter"
        elif isinstance(exc, websocket.WebSocketBadStatusException):
            code = getattr(exc, "status_code", None)
            if code in (401, 403):
                cls, what = RemoteAuthError, f"{host} rejected the API key (HTTP {code})"
                todo = "set NDIF_API_KEY (or nnsight.CONFIG.set_default_api_key) to a valid key"
            else:
                cls, what = RemoteConnectionError, f"{host} refused the status connection (HTTP {code})"
        elif isinstance(exc, (websocket.WebSocketException, ConnectionError, OSError, httpx.TransportError)):
            if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
                cls, what = RemoteTimeoutError, f"{job} on {host} timed out ({text})"
                todo = "raise RemoteOptions.timeout_s"
            else:
                cls, what = RemoteConnectionError, f"the connection to {host} failed while running {job} ({text})"
                todo = "check your network, then run the same analysis again"
        elif isinstance(exc, NNsightRemoteError):
            if isinstance(cause, httpx.HTTPStatusError):
                code = cause.response.status_code
                low = text.lower()
                if code in (401, 403):
                    cls, what = RemoteAuthError, f"{host} rejected the API key (HTTP {code}): {text}"
                    todo = "set NDIF_API_KEY (or nnsight.CONFIG.set_default_api_key) to a valid key"
                elif "version" in low:
                    cls, what = RemoteVersionError, f"{host} does not accept this client: {text}"
                    todo = "install the nnsight version the server names (pip install nnsight==<version>)"
                elif code == 404 or "not deployed" in low or "not found" in low:
                    cls, what = ModelNotDeployedError, f"{host} does not serve this model: {text}"
                    todo = "check attnlab.remote.status() for the deployed models"
                else:
                    what = f"{host} refused {job} (HTTP {code}): {text}"
            elif isinstance(cause, httpx.TimeoutException):
                cls, what, todo = RemoteTimeoutError, f"{host} did not answer in time ({text})", \
                    "raise RemoteOptions.timeout_s"
            elif isinstance(cause, httpx.HTTPError):
                cls, what = RemoteConnectionError, f"could not reach {host} ({text})"
                todo = "check your network and NDIF_HOST, then run the same analysis again"
            else:
                cls, what = RemoteExecutionError, f"{job} raised on the server:\n{text.strip()}\n"
                todo = "fix the cause above (an out-of-range site, too large a batch ...) and run again"
        elif isinstance(exc, RemoteError):
            return exc
        else:
            cls, what = RemoteError, f"{job} on {host} failed: {type(exc).__name__}: {text}"
        sep = "" if what.endswith("\n") else ". "
        return cls(redact(f"{what}{sep}{saved[0].upper()}{saved[1:]}. What to do: {todo}."), job_id=job_id,
                   passes_kept=kept)
