"""Warm start: clients of the student's architecture begin each round from the student.

``distill.warm_start`` sends the server student's trainable weights down with every train
message, and a client whose model is the student's (same name, same fixed feature map)
loads them before it digests and trains, as the clients of FedDF start from the server's
distilled model each round (Lin, Kong, Stich and Jaggi, "Ensemble Distillation for Robust
Model Fusion in Federated Learning", NeurIPS 2020). Unlike FedDF, nothing but predictions
goes back up: the server never averages weights.

Privacy: the student is a function of released teachers and public proxy inputs, so its
weights are post-processing and cost nothing. It is refused with DP-SGD, the path whose
adversary includes the server: DP-SGD bounds each example's clipped gradient, but weights a
server crafts (finite, huge, firing on one example) can make that example's gradient
non-finite, and NaN passes through clipping and noise, so whether the reply is finite
would tell the server whether the example was sampled. On the client-level and PATE paths
the server is trusted with the raw predictions anyway. Clients of another architecture
get nothing (the server does not send it there), so heterogeneous federations still work.

Only the trainable part travels: with a fixed public feature map (scattering, PCA of the
proxy) both sides compute the same map from the same public proxy, so it stays out of the
message.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedkd.config import Config
from fedkd.models import ModelError

__all__ = ["head_arrays", "load_head", "warm_starts"]


def warm_starts(cfg: Config, model_name: str) -> bool:
    """Whether a client whose model is ``model_name`` starts from the student's weights.

    True when ``distill.warm_start`` is on, the client does not train with DP-SGD, and its
    model is built exactly as the student is: the same model name, fixed feature map and
    number of public features. Config validation refuses warm start with DP-SGD; the check
    here holds on a client whatever config reaches it.
    """
    c, d = cfg.clients, cfg.distill
    return (
        d.warm_start
        and "dpsgd" not in cfg.privacy.mechanisms
        and model_name == d.student
        and c.feature_map == d.feature_map
        and c.public_features == d.public_features
    )


def head_arrays(head: nn.Module) -> dict[str, np.ndarray]:
    """The trainable part's state (parameters and buffers) as float32 / int64 arrays."""
    return {k: v.detach().cpu().numpy().copy() for k, v in head.state_dict().items()}


def load_head(head: nn.Module, arrays: dict[str, np.ndarray], model_name: str) -> None:
    """Load the student's weights into a client's trainable part, checking they fit.

    Parameters
    ----------
    head : nn.Module
        The client's trainable part (the model, or its head on fixed features).
    arrays : dict of str to ndarray
        The student's state as :func:`head_arrays` gives it, from the train message.
    model_name : str
        The client's model, named in errors.

    Raises
    ------
    ModelError
        If the keys, shapes or dtypes differ from the client's own model, or a weight is
        not finite (the client keeps its own weights then; nothing is half loaded).
    """
    own = head.state_dict()
    where = f"the student weights sent with distill.warm_start do not fit model '{model_name}'"
    if set(arrays) != set(own):
        missing, extra = sorted(set(own) - set(arrays)), sorted(set(arrays) - set(own))
        raise ModelError(f"{where}: missing {missing[:3]}, unexpected {extra[:3]}")
    loaded = {}
    for key, mine in own.items():
        value = np.asarray(arrays[key])
        if value.shape != tuple(mine.shape):
            raise ModelError(f"{where}: '{key}' has shape {value.shape}, not {tuple(mine.shape)}")
        tensor = torch.from_numpy(value.copy())
        if tensor.dtype != mine.dtype:
            raise ModelError(f"{where}: '{key}' is {tensor.dtype}, not {mine.dtype}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"{where}: '{key}' holds values that are not finite")
        loaded[key] = tensor
    head.load_state_dict(loaded)
