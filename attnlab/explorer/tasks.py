"""The tasks the Explorer offers: a small registry that task modules add themselves to.

A task is anything that builds a :class:`~attnlab.tasks.base.PatchingDataset` (clean/corrupted pairs with an answer
pair per prompt) from a model, a number of prompts, a seed and a corruption. The Explorer's task menu lists the
registered tasks; a new task becomes clickable by calling :func:`register_task` once (IOI is registered here; other
tasks register from their own modules).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from attnlab.errors import TaskError

__all__ = ["CUSTOM_TASK", "ExplorerTask", "TaskError", "custom_prompts_task", "get_task", "register_task",
           "registered_tasks"]


@dataclass(frozen=True)
class ExplorerTask:
    """A task the Explorer can run.

    Attributes:
        name: short id shown in the task menu (``"ioi"``).
        title: human-readable name (``"Indirect object identification"``).
        build: ``build(model, n_prompts, seed=..., corruption=..., **options) -> PatchingDataset``.
        corruptions: the corruption names ``build`` accepts; the first is the default.
        source: the paper the task follows (shown in the Explorer).
        answer_names: what the two answer columns mean (``("IO", "S")``): used to label direct logit attribution.
    """

    name: str
    title: str
    build: Callable
    corruptions: tuple[str, ...]
    source: str = ""
    answer_names: tuple[str, str] = ("answer", "distractor")
    options: dict = field(default_factory=dict)


_TASKS: dict[str, ExplorerTask] = {}


def register_task(task: ExplorerTask) -> ExplorerTask:
    """Add ``task`` to the Explorer's task menu (idempotent for the same definition).

    Raises:
        TaskError: another task is already registered under the same name.
    """
    old = _TASKS.get(task.name)
    if old is not None and old != task:
        raise TaskError(f"a different task is already registered as {task.name!r}; pick another name")
    _TASKS[task.name] = task
    return task


def registered_tasks() -> dict[str, ExplorerTask]:
    """The registered tasks by name (a copy)."""
    _register_builtin()
    return dict(_TASKS)


def get_task(task: "str | ExplorerTask") -> ExplorerTask:
    """Look up a task by name (or pass an :class:`ExplorerTask` through).

    Raises:
        TaskError: no task of that name is registered; the message lists the registered ones.
    """
    if isinstance(task, ExplorerTask):
        return task
    tasks = registered_tasks()
    if task not in tasks:
        raise TaskError(f"unknown task {task!r}; registered tasks: {sorted(tasks)} (add one with "
                        "attnlab.explorer.register_task)")
    return tasks[task]


def _register_builtin() -> None:
    if "ioi" not in _TASKS:
        from attnlab.tasks.ioi import ioi_dataset

        register_task(ExplorerTask(
            name="ioi", title="Indirect object identification (IOI)", build=ioi_dataset,
            corruptions=("abc", "s2_swap"), answer_names=("IO", "S"),
            source="Wang et al. 2022, arXiv 2211.00593",
        ))
    if "colored_objects" not in _TASKS:
        register_task(ExplorerTask(
            name="colored_objects", title="Colored Objects", build=_colored_objects,
            corruptions=("other_object",), answer_names=("colour", "other colour"),
            source="Merullo, Eickhoff & Pavlick 2023, arXiv 2310.08744",
        ))


def _colored_objects(model, n_prompts: int, *, seed: int = 0, corruption: str = "other_object", **options):
    """Colored Objects pairs; the one corruption asks about another object of the same prompt."""
    from attnlab.tasks.colored_objects import colored_objects_dataset

    return colored_objects_dataset(model, n_prompts, seed=seed, **options)


#: the Explorer's task name for your own prompts (always in its task menu)
CUSTOM_TASK = "custom"


def custom_prompts_task(dataset=None) -> ExplorerTask:
    """The Explorer's "your own prompts" task: it runs on ``dataset`` (a
    :class:`~attnlab.tasks.base.PatchingDataset` built by :meth:`~attnlab.tasks.base.PatchingDataset.from_prompts` or
    ``from_text``, what the Explorer's prompt form makes), or refuses to run until one is given.

    Its build takes the first ``n_prompts`` pairs (all of them when there are fewer); the seed and the corruption do
    not apply (the pairs are as typed).

    Raises (from its build):
        ExplorerError: no prompts given yet.
    """

    def build(model, n_prompts: int, *, seed: int = 0, corruption: str = "as typed", **options):
        from attnlab.errors import ExplorerError

        if dataset is None:
            raise ExplorerError("no prompts of your own yet: type a clean prompt, its corrupted version and the two "
                                "answers in the Explorer's 'Your own prompts' form (or call explorer.set_prompts(...))")
        return dataset if n_prompts >= len(dataset) else dataset.subset(list(range(n_prompts)))

    n = "" if dataset is None else f" ({len(dataset)} pair{'s' if len(dataset) != 1 else ''})"
    return ExplorerTask(name=CUSTOM_TASK, title=f"your own prompts{n}", build=build, corruptions=("as typed",),
                        answer_names=("answer", "distractor"), source="typed by you")
