"""A loopback server that speaks nnsight 0.8.1's remote (NDIF) protocol, for tests, the tutorial and benchmarks.

It binds 127.0.0.1 only and executes requests the way an NDIF worker does, with nnsight's own server-side pieces:
``RequestModel.deserialize(blob, model._remoteable_persistent_objects(), compress=...)``,
``model._remoteable_set_env(env)``, ``tracer.execute(tracer.info.code)`` with the saved values collected through
``nnsight.tracing.tracer`` (``inc``/``dec``/``_saves``; all through ``attnlab.backends.nnsight_adapter.server_execute``),
answers as ``ResponseModel`` frames. So the real nnsight client
(``trace(..., remote=True)`` / attnlab's ``remote=``) is exercised end to end, without a network.

Endpoints (nnsight 0.8.1's client, ``nnsight/intervention/backends/remote.py``):

- ``GET /subscribe`` websocket, header ``ndif-api-key``; first frame ``{"session_id": ...}``, then JSON
  ``ResponseModel`` status frames, and COMPLETED as a binary frame holding ``ResponseModel.pickle()``.
- ``POST /request`` multipart: form field ``data`` (``RequestModel`` JSON) and file ``blob``; headers
  ``ndif-api-key``, ``nnsight-version``, ``python-version``. Answers the RECEIVED ``ResponseModel`` as JSON.
- ``GET /response/{id}``: latest status of a job (non-blocking clients poll it); COMPLETED carries a result URL.
- ``GET /result/{id}``: the result blob. ``GET /status``: deployed models. ``GET /whoami``: the key's identity.

Faults for tests: ``faults[n] = "stall" | "drop" | "fail" | "echo_key"`` applies to the n-th accepted ``POST /request``
(1-based, see ``n_requests``): a stalled job stays RUNNING, a dropped one has its status connection closed once
RUNNING, a failing one raises inside the job, and ``echo_key`` fails with an error that repeats the request's API key
(a careless server: the client must not show it). ``accepted_versions`` rejects other client versions; ``api_keys`` other keys.
Every loop is bounded: a stalled job gives up after ``max_job_s``, and the server stops itself after ``idle_stop_s``
without a request. The log (``server.log``) records paths, form fields and header *names*, never header values.
"""

import asyncio
import json
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor

import torch
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
from nnsight.schema.request import RequestModel
from nnsight.schema.response import ResponseModel, Status

from attnlab.backends.nnsight_adapter import serialise_result, server_execute

__all__ = ["LoopbackServer"]

_LOOPBACK = "127.0.0.1"


class LoopbackServer:
    """Serve one nnsight model on ``http://127.0.0.1:<free port>``.

    Args:
        model: an ``nnsight.TransformersModel`` holding real weights (the server's copy).
        repo_id: the id it is deployed under (what ``/status`` lists and what the client's model key must name).
        model_key: the full model key requests must carry (default: ``model.to_model_key()``).
        api_keys: keys the server accepts.
        accepted_versions: client nnsight versions it accepts (default: this process's nnsight version).
        idle_stop_s: stop after this many seconds without a request.
        max_job_s: a stalled job gives up (ERROR) after this many seconds.
    """

    def __init__(self, model, *, repo_id: str, model_key: str | None = None, api_keys=(), accepted_versions=None,
                 idle_stop_s: float = 900.0, max_job_s: float = 60.0) -> None:
        from nnsight.intervention.backends.remote import _NNSIGHT_VERSION

        self.model = model
        self.repo_id = repo_id
        self.model_key = model_key or model.to_model_key()
        self.api_keys = set(api_keys)
        self.accepted_versions = set(accepted_versions or {_NNSIGHT_VERSION})
        self.idle_stop_s = idle_stop_s
        self.max_job_s = max_job_s
        #: request number (1-based) -> "stall" | "drop" | "fail"
        self.faults: dict[int, str] = {}
        self.log: list[dict] = []
        self.n_requests = 0
        self.n_completed = 0
        #: bytes of the request blobs received and of the results produced (what clients download)
        self.bytes_uploaded = 0
        self.bytes_downloaded = 0
        #: result bytes of each completed job, in order
        self.result_sizes: list[int] = []
        self._sockets: dict[str, tornado.websocket.WebSocketHandler] = {}
        self._responses: dict[str, str] = {}
        self._results: dict[str, bytes] = {}
        self._release = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopback-job")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._last = time.monotonic()
        self.port: int | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{_LOOPBACK}:{self.port}"

    def start(self) -> "LoopbackServer":
        import logging

        logging.getLogger("tornado.access").setLevel(logging.ERROR)  # expected 401s are not news
        sockets = tornado.netutil.bind_sockets(0, address=_LOOPBACK)
        self.port = sockets[0].getsockname()[1]
        assert all(s.getsockname()[0] == _LOOPBACK for s in sockets), "the loopback server binds 127.0.0.1 only"
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            app = tornado.web.Application(self._routes(), websocket_ping_interval=None)
            server = tornado.httpserver.HTTPServer(app, max_body_size=2**31)
            server.add_sockets(sockets)
            loop.call_soon(ready.set)
            watcher = loop.create_task(self._watch_idle())
            try:
                loop.run_forever()
            finally:
                watcher.cancel()
                server.stop()
                loop.run_until_complete(asyncio.gather(watcher, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=serve, name="loopback-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _watch_idle(self) -> None:
        while time.monotonic() - self._last < self.idle_stop_s:
            await asyncio.sleep(1.0)
        self._loop.stop()

    def stop(self) -> None:
        self._release.set()
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def release_stalled(self) -> None:
        """Let stalled jobs finish (they then fail with ERROR)."""
        self._release.set()

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- protocol -------------------------------------------------------------------------------------------------
    def _routes(self) -> list:
        server = self
        return [
            (r"/status", _StatusHandler, {"server": server}),
            (r"/whoami", _WhoamiHandler, {"server": server}),
            (r"/subscribe", _SubscribeHandler, {"server": server}),
            (r"/request", _RequestHandler, {"server": server}),
            (r"/response/([A-Za-z0-9-]+)", _ResponseHandler, {"server": server}),
            (r"/result/([A-Za-z0-9-]+)", _ResultHandler, {"server": server}),
        ]

    def _record(self, handler, **extra) -> None:
        self._last = time.monotonic()
        r = handler.request
        self.log.append({"method": r.method, "path": r.path, "headers": sorted(k.lower() for k in r.headers),
                         **extra})

    def _emit(self, job_id: str, session_id: str, status: Status, description: str = "", data=None) -> None:
        """Publish a status: stored for polling, and sent on the job's websocket if it has one."""
        stored = ResponseModel(id=job_id, status=status, description=description,
                               data=f"{self.url}/result/{job_id}" if status is Status.COMPLETED else None)
        self._responses[job_id] = stored.model_dump_json()
        socket = self._sockets.get(session_id)
        if socket is None:
            return
        if status is Status.COMPLETED:
            message, binary = ResponseModel(id=job_id, status=status, description=description, data=data).pickle(), True
        else:
            message, binary = stored.model_dump_json(), False
        self._loop.call_soon_threadsafe(_send, socket, message, binary)

    def _execute(self, job_id: str, request: RequestModel, blob: bytes, number: int, key: str = "") -> None:
        """Run one job in the worker thread, the way an NDIF worker does (``key``: the request's, for ``echo_key``)."""
        sid = request.session_id
        fault = self.faults.pop(number, None)
        self._emit(job_id, sid, Status.QUEUED, "queued")
        self._emit(job_id, sid, Status.RUNNING, "running")
        if fault == "drop":
            socket = self._sockets.pop(sid, None)
            if socket is not None:
                self._loop.call_soon_threadsafe(socket.close)
            return  # the job never finishes: the client sees its connection drop
        if fault == "stall":
            self._release.wait(self.max_job_s)
            self._emit(job_id, sid, Status.ERROR, "the job stalled and was abandoned by the server")
            return
        try:
            if fault == "fail":
                raise RuntimeError("injected failure: the server's GPU caught fire (test)")
            if fault == "echo_key":
                raise RuntimeError(f"injected failure: request from key {key} refused (test)")
            result = server_execute(self.model, blob, compress=request.compress, env=request.env)
            data = serialise_result(result, compress=request.compress)
        except Exception:
            self._emit(job_id, sid, Status.ERROR, traceback.format_exc())
            return
        self._results[job_id] = data
        self.bytes_downloaded += len(data)
        self.result_sizes.append(len(data))
        self.n_completed += 1
        self._emit(job_id, sid, Status.COMPLETED, "completed", data=data)


def _send(socket, message, binary: bool) -> None:
    try:
        socket.write_message(message, binary=binary)
    except tornado.websocket.WebSocketClosedError:
        pass


class _Handler(tornado.web.RequestHandler):
    def initialize(self, server: LoopbackServer) -> None:
        self.server = server

    def check_xsrf_cookie(self) -> None:  # an API, not a browser form
        return

    def key_ok(self) -> bool:
        return self.request.headers.get("ndif-api-key") in self.server.api_keys

    def fail(self, code: int, detail: str) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"detail": detail}))


class _StatusHandler(_Handler):
    def get(self) -> None:
        self.server._record(self)
        s = self.server
        self.finish({"deployments": {s.model_key: {
            "repo_id": s.repo_id, "model_key": s.model_key, "deployment_level": "HOT",
            "application_state": "RUNNING", "revision": "main", "task": "text-generation"}}})


class _WhoamiHandler(_Handler):
    def get(self) -> None:
        self.server._record(self)
        self.finish({"email": "tester@127.0.0.1" if self.key_ok() else None, "tags": []})


class _RequestHandler(_Handler):
    def post(self) -> None:
        s = self.server
        fields = sorted(self.request.body_arguments)
        files = sorted(self.request.files)
        s._record(self, fields=fields, files=files)
        if not self.key_ok():
            return self.fail(401, "The API key is missing or not valid.")
        version = self.request.headers.get("nnsight-version", "")
        if version not in s.accepted_versions:
            return self.fail(400, f"nnsight version {version or '(none)'} is not supported by this server, which "
                                  f"runs nnsight {', '.join(sorted(s.accepted_versions))}")
        try:
            request = RequestModel.model_validate_json(self.get_body_argument("data"))
            blob = self.request.files["blob"][0]["body"]
        except Exception as exc:  # malformed envelope
            return self.fail(422, f"malformed request: {type(exc).__name__}")
        s.log[-1]["data_keys"] = sorted(json.loads(self.get_body_argument("data")))
        if request.model_key != s.model_key:
            return self.fail(404, f"model {request.model_key} is not deployed on this server")
        s.n_requests += 1
        s.bytes_uploaded += len(blob)
        job_id = str(uuid.uuid4())
        received = ResponseModel(id=job_id, status=Status.RECEIVED, description="received")
        s._responses[job_id] = received.model_dump_json()
        self.set_header("Content-Type", "application/json")
        self.finish(received.model_dump_json())
        s._executor.submit(s._execute, job_id, request, blob, s.n_requests, self.request.headers.get("ndif-api-key"))


class _ResponseHandler(_Handler):
    def get(self, job_id: str) -> None:
        self.server._record(self)
        if not self.key_ok():
            return self.fail(401, "The API key is missing or not valid.")
        stored = self.server._responses.get(job_id)
        if stored is None:
            return self.fail(404, "no such job")
        self.set_header("Content-Type", "application/json")
        self.finish(stored)


class _ResultHandler(_Handler):
    def get(self, job_id: str) -> None:
        self.server._record(self)
        data = self.server._results.get(job_id)
        if data is None:
            return self.fail(404, "no such result")
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(data)


class _SubscribeHandler(tornado.websocket.WebSocketHandler):
    def initialize(self, server: LoopbackServer) -> None:
        self.server = server

    def check_origin(self, origin: str) -> bool:
        return True

    async def get(self, *args, **kwargs):
        self.server._record(self)
        if self.request.headers.get("ndif-api-key") not in self.server.api_keys:
            self.set_status(401)
            self.finish(json.dumps({"detail": "The API key is missing or not valid."}))
            return
        await super().get(*args, **kwargs)

    def open(self) -> None:
        self.session_id = str(uuid.uuid4())
        self.server._sockets[self.session_id] = self
        self.write_message(json.dumps({"session_id": self.session_id}))

    def on_close(self) -> None:
        self.server._sockets.pop(getattr(self, "session_id", None), None)


def embedded_server(api_keys, **kwargs) -> LoopbackServer:
    """A (not yet started) loopback server deploying the embedded SmolLM2-135M under its Hugging Face id.

    The server holds its own copy of the weights (eager attention, float32), like an NDIF deployment.
    """
    import nnsight
    from nnsight.modeling.huggingface import _ID_CACHE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from attnlab.backends.nnsight import EMBEDDED_REPO_ID
    from attnlab.models.embedded import embedded_checkpoint

    path = str(embedded_checkpoint())
    tokenizer = AutoTokenizer.from_pretrained(path)
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    hf_model.requires_grad_(False)  # as NDIF's workers do: gradients flow only from what a request marks
    _ID_CACHE[path] = EMBEDDED_REPO_ID
    model = nnsight.TransformersModel(hf_model, tokenizer=tokenizer, task="text-generation")
    return LoopbackServer(model, repo_id=EMBEDDED_REPO_ID, api_keys=api_keys, **kwargs)


def remote_model(server, **options):
    """The embedded model on ``server`` (progress off, short deadline unless given)."""
    from attnlab.models import load_model
    from attnlab.remote import RemoteOptions

    options = {"timeout_s": 120.0, "progress": False, **options}
    return load_model("smollm2-135m", backend="nnsight", remote=RemoteOptions(host=server.url, **options))
