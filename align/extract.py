"""Activations of any torch module through forward hooks.

:func:`extract_activations` runs a model on batches under ``torch.no_grad()``
and records the outputs of named submodules (``model.get_submodule`` names)
with forward hooks, reduced to one vector per input: conv maps ``(N, C, H, W)``
by the centre pixel (as Kapoor, Srivastava & Khosla 2025 do for CNN units) or the
spatial mean; token sequences ``(N, T, D)`` by the CLS token, the mean over the
attention mask, or the last (non-padding) token.

Packaged sentence encoders live in :mod:`align.encoders`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from align.validation import check_choice, check_positive_int

__all__ = ["extract_activations", "resolve_layer", "TOKEN_POOLS", "CONV_POOLS"]


# ---------------------------------------------------------------------------
# layer names -> submodules (the one resolver: extract_activations and REPA's hook)


def resolve_layer(model: "torch.nn.Module", name: Any, arg: str = "layer", allow_root: bool = True):  # noqa: F821
    """The submodule of ``model`` called ``name`` in ``model.named_modules()``
    (``"blocks.3"``; ``""`` is the whole model unless ``allow_root`` is False).

    A ``model`` that is not a ``torch.nn.Module`` or an unknown ``name`` raises
    ValueError, the latter naming the argument ``arg`` and listing the model's modules."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    if isinstance(name, str) and name in modules and (allow_root or name != ""):
        return modules[name]
    names = [n for n in modules if n]
    shown = ", ".join(repr(n) for n in names[:60]) + (f", ... ({len(names)} in all)" if len(names) > 60 else "")
    raise ValueError(f"{arg}: {name!r} is not a module of this model; its modules are: {shown or '(none)'}")


# ---------------------------------------------------------------------------
# activations from any torch module

TOKEN_POOLS = ("cls", "mean", "last", "flatten")
CONV_POOLS = ("center", "mean", "flatten")


def _first_tensor(out: Any, layer: str):
    """The main tensor of a module output (tensor, tuple, or HF ModelOutput / dict)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        if "last_hidden_state" in out:
            return out["last_hidden_state"]
        out = list(out.values())
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ValueError(f"layers: module {layer!r} returned {type(out).__name__}, not a tensor; hook another module")


def _reduce(t, layer: str, pool: str, conv_pool: str, mask) -> "torch.Tensor":  # noqa: F821
    """(N, ...) activation -> (N, d)."""
    import torch

    t = t.detach()
    if t.ndim == 2:
        return t
    if t.ndim == 4:  # conv maps (N, C, H, W)
        if conv_pool == "center":
            # the unit at the centre of the map, as Kapoor et al. (2025) for CNN layers
            return t[:, :, t.shape[2] // 2, t.shape[3] // 2]
        if conv_pool == "mean":
            return t.mean(dim=(2, 3))
        return t.flatten(1)
    if t.ndim == 3:  # token sequences (N, T, D)
        m = None
        if mask is not None and mask.shape[:2] == t.shape[:2]:
            m = mask.to(device=t.device, dtype=t.dtype)
        if pool == "cls":
            return t[:, 0]
        if pool == "mean":
            if m is None:
                return t.mean(dim=1)
            return (t * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)
        if pool == "last":
            if m is None:
                return t[:, -1]
            # last position whose mask is 1 (works for left or right padding)
            pos = torch.arange(t.shape[1], device=t.device, dtype=t.dtype)
            last = (m * (pos + 1)).argmax(dim=1)
            return t[torch.arange(t.shape[0], device=t.device), last]
        return t.flatten(1)
    if pool == "flatten" or conv_pool == "flatten":
        return t.flatten(1)
    raise ValueError(
        f"layers: module {layer!r} outputs shape {tuple(t.shape)}; only (N, D), (N, T, D) and (N, C, H, W) "
        "are pooled -- pass pool='flatten' to flatten it"
    )


def _batches(inputs, n: int, batch_size: int, device):
    import torch

    for b in range(0, n, batch_size):
        if isinstance(inputs, Mapping):
            yield {k: (v[b : b + batch_size].to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        else:
            yield inputs[b : b + batch_size].to(device)


def extract_activations(
    model: "torch.nn.Module",  # noqa: F821
    inputs: Union[np.ndarray, "torch.Tensor", Mapping[str, Any]],  # noqa: F821
    layers: Union[str, Sequence[str]],
    pool: str = "mean",
    conv_pool: str = "center",
    batch_size: int = 256,
    device: Optional[str] = None,
    attention_mask: Optional[Any] = None,
) -> Dict[str, np.ndarray]:
    """Outputs of the named submodules of ``model``, one float32 ``(n, d)`` array per layer.

    Parameters
    ----------
    model : any ``torch.nn.Module``. It is run in eval mode (its previous
        train/eval flags are restored afterwards) under ``torch.no_grad()``.
    inputs : an array or tensor with samples on the first axis (``model(x)``),
        or a dict of tensors (``model(**batch)``, e.g. a tokenizer's output; its
        ``attention_mask`` is then used for token pooling).
    layers : one or more names from ``model.named_modules()`` (``""`` is the
        whole model).
    pool : token outputs ``(N, T, D)``: ``"cls"`` (first token, e.g. ViT CLS),
        ``"mean"`` (over the attention mask when given), ``"last"`` (last
        non-padding token, for causal LMs), or ``"flatten"``.
    conv_pool : conv outputs ``(N, C, H, W)``: ``"center"`` (centre pixel, as
        Kapoor et al. 2025), ``"mean"`` (spatial mean) or ``"flatten"``.
    batch_size : samples per forward pass.
    device : run there (the model is moved, as ``model.to`` does); default:
        where the model's parameters are.
    attention_mask : ``(N, T)`` mask for token pooling when ``inputs`` is not a dict.

    Hooks are removed when this returns or raises.
    """
    import torch

    from align.device import torch_device

    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_choice(pool, "pool", TOKEN_POOLS)
    check_choice(conv_pool, "conv_pool", CONV_POOLS)
    batch_size = check_positive_int(batch_size, "batch_size")
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("layers is empty; name at least one module of the model")
    modules = {name: resolve_layer(model, name, "layers") for name in names}
    if len(set(names)) != len(names):
        raise ValueError(f"layers has duplicates: {names}")

    # the inputs, as tensors with a common first axis
    if isinstance(inputs, Mapping):
        tensors = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
        lens = {k: v.shape[0] for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        if not lens:
            raise ValueError("inputs is a dict without tensors")
        if len(set(lens.values())) != 1:
            raise ValueError(f"inputs: tensors have different first dimensions {lens}")
        n = next(iter(lens.values()))
        data: Any = tensors
        mask_all = tensors.get("attention_mask", attention_mask)
    else:
        if isinstance(inputs, np.ndarray):
            data = torch.from_numpy(np.ascontiguousarray(inputs))
        elif isinstance(inputs, torch.Tensor):
            data = inputs
        else:
            raise ValueError(f"inputs must be an array, a tensor or a dict of tensors, got {type(inputs).__name__}")
        if data.ndim == 0:
            raise ValueError("inputs must have samples on its first axis, got a scalar")
        if data.is_floating_point() and data.dtype == torch.float64:
            data = data.float()  # models are float32; float64 numpy input is the common mistake
        n = data.shape[0]
        mask_all = attention_mask
    if n == 0:
        raise ValueError("inputs is empty (0 samples)")
    if mask_all is not None:
        mask_all = torch.as_tensor(mask_all)
        if mask_all.ndim != 2 or mask_all.shape[0] != n:
            raise ValueError(f"attention_mask must have shape (n, T) with n={n}, got {tuple(mask_all.shape)}")

    if device is not None:
        dev = torch_device(device)
        model.to(dev)
    else:
        p = next(model.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")

    captured: Dict[str, Any] = {}
    outputs: Dict[str, List[np.ndarray]] = {name: [] for name in names}

    def make_hook(name: str):
        def hook(module, args, out):
            captured[name] = _first_tensor(out, name)

        return hook

    handles = []
    modes = {m: m.training for m in model.modules()}
    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        model.eval()
        with torch.no_grad():
            for b, batch in enumerate(_batches(data, n, batch_size, dev)):
                captured.clear()
                if isinstance(batch, Mapping):
                    model(**batch)
                else:
                    model(batch)
                mask = None if mask_all is None else mask_all[b * batch_size : (b + 1) * batch_size]
                for name in names:
                    if name not in captured:
                        raise ValueError(f"layers: module {name!r} was not called in the forward pass")
                    red = _reduce(captured[name], name, pool, conv_pool, mask)
                    outputs[name].append(red.float().cpu().numpy())
    finally:
        for h in handles:
            h.remove()
        for m, flag in modes.items():
            m.training = flag
        captured.clear()
    return {name: np.ascontiguousarray(np.concatenate(outputs[name], axis=0), dtype=np.float32) for name in names}
