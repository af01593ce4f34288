"""The head-gallery widget's logic, in plain Python: controls, a run layer by layer, cancellation, clicked heads.

:class:`GalleryController` does everything :class:`~attnlab.gallery_widget.widget.HeadGalleryWidget` shows, with no
front end, so tests and scripts drive it directly. A run draws repeated random sequences
(:func:`~attnlab.tasks.induction.repeated_random_tokens`: a random segment of ``seq_len`` tokens, repeated twice) and
scores every head's previous-token, duplicate-token and induction attention on them (the ``"diagonal"`` definitions
of :mod:`attnlab.heads.scores`; Olsson et al. 2022, "In-context Learning and Induction Heads", section
"Definitions").

The run goes through the model one block at a time: the pass of block ``l`` starts from the residual stream the pass
of block ``l - 1`` returned (``Backend.run(resid=..., start_layer=l, stop_layer=l + 1)``), records that block's
attention pattern and scores its heads. Together the passes cost one forward pass of the model, and they give a
progress bar, a time estimate and a Cancel that keeps every finished block: the heads of the blocks not reached are
NaN in :attr:`result` ("not computed" in the gallery). The scores equal :func:`~attnlab.heads.scores.score_heads` on
the same sequences (``tests/test_gallery_widget.py`` checks it).

Clicking a head (:meth:`select`) computes its detail in the kernel: its attention pattern on the example sequence
(sequence 0) and its ablation effect (zero and mean ablation, :func:`~attnlab.heads.verification.ablation_effects`:
the increase of the second-repeat loss in nats per token), cached per head for the current run.
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from attnlab.backends.base import Backend
from attnlab.errors import ExplorerError

__all__ = ["GalleryController", "GalleryRun"]

#: the most sequences a run may draw (one batch of activations per block is kept in memory)
MAX_SEQUENCES = 512
#: sequences per pass
BATCH_SIZE = 32


@dataclass
class GalleryRun:
    """One run of the gallery.

    Attributes:
        controls: the control values of the run (``seq_len``, ``n_sequences``, ``seed``).
        data: the :class:`~attnlab.tasks.induction.RepeatedTokens` it scored.
        result: the :class:`~attnlab.heads.results.HeadScores` (NaN for the heads of blocks not reached).
        layers_done: the blocks scored, in order.
        complete: False when cancelled.
        started: Unix time the run started; seconds: its wall time.
        ablations: ``{(layer, head): HeadAblation}`` computed for clicked heads.
    """

    controls: dict
    data: object = field(repr=False)
    result: object
    layers_done: list[int]
    complete: bool
    started: float
    seconds: float
    ablations: dict = field(default_factory=dict, repr=False)


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class GalleryController:
    """Everything the head-gallery widget does, without a front end.

    Args:
        model: the backend to analyse (:func:`attnlab.load_model`, :func:`attnlab.tiny_model` ...).
        seq_len: tokens per repeat, an int >= 2 (a sequence is BOS + 2 * seq_len tokens long).
        n_sequences: repeated sequences to score, an int in [1, 512].
        seed: the seed of the random tokens, an int >= 0.
        methods: ablation methods of a clicked head's detail (``("zero", "mean")``).

    Raises:
        ExplorerError: an invalid initial control value (before any work).
    """

    CONTROLS = ("seq_len", "n_sequences", "seed")

    def __init__(self, model: Backend, *, seq_len: int = 10, n_sequences: int = 8, seed: int = 0,
                 methods=("zero", "mean")) -> None:
        from attnlab.backends.base import check_model

        check_model(model, "the head gallery")
        self.model = model
        self.methods = tuple(methods)
        self._listeners: list[Callable[[str], None]] = []
        self.controls: dict = {"seq_len": 10, "n_sequences": 8, "seed": 0}
        for name, value in (("seq_len", seq_len), ("n_sequences", n_sequences), ("seed", seed)):
            self.set_control(name, value)
        self.runs: list[GalleryRun] = []
        self.status = "idle"  # idle | running | done | cancelled | error
        self.message = ""
        self.progress = (0, 0)
        #: seconds left, estimated from the passes done so far (None before the first pass or when idle)
        self.eta: float | None = None
        self.elapsed = 0.0
        self.selected: tuple[int, int] | None = None
        self.detail: dict | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._model_lock = threading.RLock()  # a click's detail and a run's pass never use the model at once
        self._partial: GalleryRun | None = None  # the run in progress (its finished blocks), for the live view

    # -- notification ---------------------------------------------------------------------------------------------
    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(what)`` on every change (``"controls"``, ``"status"``, ``"progress"``, ``"result"``,
        ``"selected"``, ``"detail"``)."""
        self._listeners.append(callback)

    def _emit(self, what: str) -> None:
        for cb in list(self._listeners):
            cb(what)

    # -- controls -------------------------------------------------------------------------------------------------
    @property
    def max_seq_len(self) -> int:
        """The longest repeat that fits the model's context (with BOS when the model prepends one)."""
        bos = 1 if getattr(self.model.info, "prepend_bos", True) else 0
        return max(2, (self.model.info.n_ctx - bos) // 2)

    def limits(self) -> dict:
        """The range of each control: ``{"seq_len": [2, max], "n_sequences": [1, 512], "seed": [0, None]}``."""
        return {"seq_len": [2, self.max_seq_len], "n_sequences": [1, MAX_SEQUENCES], "seed": [0, None]}

    def set_control(self, name: str, value) -> None:
        """Set one control, validating it first (the old value stays on error).

        Controls:
            seq_len: tokens per repeat, an int in [2, :attr:`max_seq_len`].
            n_sequences: an int in [1, 512].
            seed: an int >= 0.

        Raises:
            ExplorerError: an unknown control or an invalid value; the message says what is allowed.
        """
        if name not in self.CONTROLS:
            raise ExplorerError(f"unknown control {name!r}; controls are {list(self.CONTROLS)}")
        n = _as_int(value)
        if name == "seq_len":
            top = self.max_seq_len
            if n is None or not 2 <= n <= top:
                raise ExplorerError(f"'seq_len' must be an integer in [2, {top}] (two repeats fit "
                                    f"{self.model.info.name}'s context of {self.model.info.n_ctx} tokens; got "
                                    f"{value!r})")
        elif name == "n_sequences":
            if n is None or not 1 <= n <= MAX_SEQUENCES:
                raise ExplorerError(f"'n_sequences' must be an integer in [1, {MAX_SEQUENCES}] (got {value!r})")
        elif n is None or n < 0:
            raise ExplorerError(f"'seed' must be an integer >= 0 (got {value!r})")
        self.controls[name] = n
        self._emit("controls")

    # -- runs -----------------------------------------------------------------------------------------------------
    def run(self) -> GalleryRun:
        """Draw the sequences of the current controls and score every head, block by block (blocking).

        Progress goes to :attr:`progress` (passes done, passes planned) and :attr:`eta`; after each block the
        partial result is published (``"result"``), so a view fills in as the run goes. :meth:`cancel` (from another
        thread: the widget's Cancel button) stops after the current pass and keeps every finished block.

        Returns:
            The :class:`GalleryRun` (it becomes current).

        Raises:
            ExplorerError: a run is already in progress.
            DatasetError: sequences that do not fit the model (before any pass).
        """
        from attnlab.tasks.induction import repeated_random_tokens

        if not self._lock.acquire(blocking=False):
            raise ExplorerError("a run is already in progress; cancel it or wait for it to finish")
        try:
            self._stop.clear()
            controls = dict(self.controls)
            started = time.time()
            self.progress, self.eta, self.elapsed = (0, 0), None, 0.0
            self.selected, self.detail = None, None  # the selection belonged to the previous run
            self._emit("progress")
            self._emit("selected")
            self._emit("detail")
            try:
                self._set_status("running", "drawing the repeated sequences")
                data = repeated_random_tokens(self.model, controls["seq_len"], controls["n_sequences"],
                                              seed=controls["seed"])
                run = self._score(data, controls, started)
            except Exception as exc:
                self._partial = None
                self._set_status("error", f"{type(exc).__name__}: {exc}")
                raise
            self._partial = None
            self.runs.append(run)
            self.selected, self.detail = None, None
            self.eta = None
            self._emit("progress")
            self._emit("result")
            self._emit("selected")
            self._emit("detail")
            n_l = self.model.info.n_layers
            if run.complete:
                self._set_status("done", f"{n_l} blocks scored in {run.seconds:.1f} s")
            else:
                self._set_status("cancelled", f"cancelled after {len(run.layers_done)} of {n_l} blocks; the heads "
                                              f"of {len(run.layers_done)} blocks are kept, the others are not "
                                              "computed")
            return run
        finally:
            self._lock.release()

    def _score(self, data, controls: dict, started: float) -> GalleryRun:
        from attnlab.heads.results import HeadScores
        from attnlab.heads.scores import SCORE_KINDS, detection_masks, pattern_scores
        from attnlab.sites import Site, SiteKind

        info = self.model.info
        tokens = data.tokens
        n, n_pos = tokens.shape
        chunks = [(i, min(i + BATCH_SIZE, n)) for i in range(0, n, BATCH_SIZE)]
        total = info.n_layers * len(chunks)
        nan = float("nan")
        per_sequence = torch.full((len(SCORE_KINDS), n, info.n_layers, info.n_heads), nan)
        example = torch.full((info.n_layers, info.n_heads, n_pos, n_pos), nan)
        masks = [detection_masks(tokens[a:b], definition="diagonal", seq_len=data.seq_len,
                                 bos_offset=data.bos_offset) for a, b in chunks]
        resid: list = [None] * len(chunks)
        done, layers_done = 0, []
        t0 = time.perf_counter()
        run = GalleryRun(controls=controls, data=data, result=None, layers_done=layers_done, complete=False,
                         started=started, seconds=0.0)
        self._set_status("running", f"scoring {n} sequences of {n_pos} tokens, block by block")
        for layer in range(info.n_layers):
            site = Site(SiteKind.PATTERN, layer)
            scores_l = []
            for ci, (a, b) in enumerate(chunks):
                if self._stop.is_set():
                    break
                last = layer + 1 == info.n_layers  # the last block runs to the logits: only one position's
                with self._model_lock:
                    out = self.model.run(tokens[a:b], resid=resid[ci], start_layer=layer,
                                         stop_layer=None if last else layer + 1, cache=[site],
                                         logits_at=torch.zeros(b - a, dtype=torch.long) if last else None)
                resid[ci] = out.resid
                pattern = out.cache[site].float().cpu()  # [b, head, dest, src]
                s = pattern_scores(pattern[:, None], masks[ci], definition="diagonal")
                scores_l.append(torch.stack([s[k][:, 0] for k in SCORE_KINDS]))  # [kind, b, head]
                if a == 0:
                    example[layer] = pattern[0]
                done += 1
                self.elapsed = time.perf_counter() - t0
                self.eta = self.elapsed / done * (total - done)
                self.progress = (done, total)
                self._emit("progress")
            if len(scores_l) < len(chunks):  # cancelled inside this block: its heads are not kept
                example[layer] = nan
                break
            per_sequence[:, :, layer] = torch.cat(scores_l, dim=1)
            layers_done.append(layer)
            run.result = self._head_scores(HeadScores, SCORE_KINDS, per_sequence, example, data, layers_done)
            self._partial = run
            self._emit("result")
            if self._stop.is_set():
                break
        run.complete = len(layers_done) == info.n_layers
        run.seconds = time.time() - started
        if run.result is None:  # cancelled before the first block finished
            run.result = self._head_scores(HeadScores, SCORE_KINDS, per_sequence, example, data, layers_done)
        run.result.settings["complete"] = run.complete
        return run

    def _head_scores(self, cls, kinds, per_sequence, example, data, layers_done):
        return cls(
            kinds=list(kinds), scores=per_sequence.mean(1), per_sequence=per_sequence.clone(), definition="diagonal",
            example_tokens=[int(t) for t in data.tokens[0]],
            example_str_tokens=self.model.to_str_tokens(data.tokens[0]),
            example_patterns=example.clone(), model=self.model.info.to_dict(), task=data.describe(),
            settings={"definition": "diagonal", "exclude_bos": False, "exclude_current_token": False, "example": 0,
                      "layers_done": list(layers_done), "complete": False, "source": "HeadGalleryWidget"})

    def run_in_background(self) -> threading.Thread:
        """Start :meth:`run` in a daemon thread (the kernel stays free to receive Cancel and clicks) and return it.
        Errors end up in :attr:`status` and :attr:`message`.

        Raises:
            ExplorerError: a run is already in progress.
        """
        if self._lock.locked():
            raise ExplorerError("a run is already in progress; cancel it or wait for it to finish")

        def target():
            try:
                self.run()
            except Exception:  # already reported through status/message
                pass

        thread = threading.Thread(target=target, name="attnlab-gallery-run", daemon=True)
        thread.start()
        return thread

    def cancel(self) -> None:
        """Ask the running scoring to stop after its current pass (no-op when idle); finished blocks are kept."""
        if self._lock.locked():
            self._stop.set()
            self._set_status("running", "cancelling after the current pass")

    @property
    def running(self) -> bool:
        """Whether a run holds the controller (from its start until its last notification)."""
        return self._lock.locked()

    @property
    def in_progress(self) -> bool:
        """Whether the run on display is still being scored (its result is partial until it finishes)."""
        return self._partial is not None

    def _set_status(self, status: str, message: str) -> None:
        self.status, self.message = status, message
        self._emit("status")

    @property
    def current(self) -> GalleryRun | None:
        """The run on display: the one in progress (its finished blocks), else the latest, else None."""
        if self._partial is not None:
            return self._partial
        return self.runs[-1] if self.runs else None

    @property
    def result(self):
        """The :class:`~attnlab.heads.results.HeadScores` on display (NaN for heads not computed), or None."""
        run = self.current
        return None if run is None else run.result

    # -- selection ------------------------------------------------------------------------------------------------
    def select(self, target) -> tuple[int, int] | None:
        """Select a head and compute its detail in the kernel (pattern on the example sequence, ablation effects).

        Args:
            target: ``(layer, head)``, ``"L3H2"``, or None to clear.

        Returns:
            The selected ``(layer, head)`` (None when cleared).

        Raises:
            ExplorerError: no result yet, or not a head of the model.
        """
        if target is None:
            self.selected, self.detail = None, None
            self._emit("selected")
            self._emit("detail")
            return None
        if self.result is None:
            raise ExplorerError("nothing to select yet: run the gallery first (gallery.run())")
        layer, head = self._resolve(target)
        self.selected = (layer, head)
        self._emit("selected")
        self.detail = self.head_detail(layer, head)
        self._emit("detail")
        return self.selected

    def _resolve(self, target) -> tuple[int, int]:
        import re

        info = self.model.info
        pair = None
        if isinstance(target, str):
            m = re.fullmatch(r"\s*L(\d+)H(\d+)\s*", target, flags=re.IGNORECASE)
            pair = (int(m[1]), int(m[2])) if m else None
        elif isinstance(target, tuple | list) and len(target) == 2:
            pair = (_as_int(target[0]), _as_int(target[1]))
        if pair is None or None in pair or not (0 <= pair[0] < info.n_layers and 0 <= pair[1] < info.n_heads):
            raise ExplorerError(f"select a head as (layer, head) or 'L3H2' with layer in [0, {info.n_layers}) and "
                                f"head in [0, {info.n_heads}) (got {target!r})")
        return pair

    def head_detail(self, layer: int, head: int) -> dict:
        """The detail of one head of the current run, computed here.

        Returns:
            ``{"layer", "head", "computed" (its block was scored), "scores": {kind: mean score or None},
            "std": {kind: standard deviation over sequences or None}, "pattern" ([dest][src] attention on sequence 0,
            or None when not computed), "tokens" (sequence 0's tokens, text), "ablation": {method: effect},
            "ablation_label", "clean_loss": {"first_repeat", "second_repeat"}}``. The ablation is measured whether
            or not the head's block was scored (it does not need the scores).
        """
        from attnlab.heads.verification import ablation_effects

        run = self.current
        result = run.result
        computed = layer in run.layers_done
        scores, std = {}, {}
        for i, kind in enumerate(result.kinds):
            v = float(result.scores[i, layer, head])
            scores[kind] = None if math.isnan(v) else v
            s = float(result.std(kind)[layer, head])
            std[kind] = None if math.isnan(s) else s
        pattern = None
        if computed and result.example_patterns is not None:
            pattern = [[round(float(x), 4) for x in row] for row in result.example_patterns[layer, head].tolist()]
        key = (layer, head)
        if key not in run.ablations:
            with self._model_lock:
                run.ablations[key] = ablation_effects(self.model, run.data, [key], methods=self.methods)
        abl = run.ablations[key]
        return {"layer": layer, "head": head, "computed": computed, "scores": scores, "std": std, "pattern": pattern,
                "tokens": list(result.example_str_tokens),
                "ablation": {m: abl.effect(layer, head, m) for m in abl.methods}, "ablation_label": abl.label,
                "clean_loss": {k: abl.clean_loss[k] for k in ("first_repeat", "second_repeat")}}
