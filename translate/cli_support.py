"""What the ``reptrans`` command needs besides its parser: translator parameters from
``--param KEY=VALUE`` (checked against each class's ``__init__`` signature), known pairs
from ``--pairs``, input files through :mod:`align.arrays`, and messages phrased in the
command's own option names.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from align.arrays import ArrayFile, open_array

__all__ = [
    "METHOD_CLASSES",
    "UsageError",
    "cli_message",
    "convert_params",
    "describe_params",
    "method_class",
    "methods_taking_pairs",
    "open_input",
    "param_specs",
    "parse_param_items",
    "read_finite",
    "read_pairs",
    "resolve_init",
    "takes_pairs",
    "warning_printer",
]

#: --method -> class exported by :mod:`translate`
METHOD_CLASSES: Dict[str, str] = {
    "procrustes": "Procrustes",
    "linear": "Linear",
    "isometric": "Isometric",
    "vec2vec": "Vec2Vec",
    "cyclegan": "CycleGAN",
}

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class UsageError(ValueError):
    """A bad command line: its message already names the option; printed as it is."""


def method_class(method: str) -> type:
    import translate

    return getattr(translate, METHOD_CLASSES[method])


def param_specs(cls: type) -> Dict[str, inspect.Parameter]:
    """The constructor parameters of ``cls`` by name (from ``inspect.signature(cls.__init__)``)."""
    params = inspect.signature(cls.__init__).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p for p in params if p.name != "self" and p.kind in kinds}


def describe_params(cls: type) -> str:
    """``"name=default, ..."`` for the help text (``seed`` is ``--seed``)."""
    out = []
    for name, p in param_specs(cls).items():
        if name == "seed":
            continue
        default = "" if p.default is inspect.Parameter.empty else f"={p.default!r}".replace("'", "")
        out.append(f"{name}{default}")
    return ", ".join(out)


def takes_pairs(cls: type) -> bool:
    """Whether ``cls.fit`` accepts known ``pairs``: its signature has the argument and the
    class does not say otherwise (``accepts_pairs = False``)."""
    if "pairs" not in inspect.signature(cls.fit).parameters:
        return False
    return bool(getattr(cls, "accepts_pairs", True))


def methods_taking_pairs() -> List[str]:
    """The ``--method`` names whose ``fit`` accepts ``pairs``."""
    out = []
    for method in METHOD_CLASSES:
        try:
            if takes_pairs(method_class(method)):
                out.append(method)
        except ImportError:  # pragma: no cover - an optional dependency missing
            pass
    return out


# -- --param ----------------------------------------------------------------


def parse_param_items(items: Sequence[str]) -> Dict[str, str]:
    """``KEY=VALUE`` strings -> {key: raw value}; a repeated key is an error."""
    out: Dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--param expects KEY=VALUE, got {item!r}")
        if key in out:
            raise UsageError(f"--param {key} is given twice")
        out[key] = value.strip()
    return out


def _split_top(text: str) -> List[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        cur += ch
    return parts + [cur.strip()] if cur.strip() else parts


def _kinds(p: inspect.Parameter) -> List[str]:
    """What a parameter accepts, from its annotation (or its default): bool, int, float,
    str, none, dict, list, any."""
    ann = p.annotation
    if ann is inspect.Parameter.empty:
        d = p.default
        if isinstance(d, bool):
            return ["bool"]
        for kind, typ in (("int", int), ("float", float), ("str", str)):
            if isinstance(d, typ):
                return ["float"] if kind == "float" else [kind]
        return ["any"]
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    text = text.replace("typing.", "").strip()
    m = re.fullmatch(r"Optional\[(.*)\]", text)
    if m:
        return _kinds_of(m.group(1)) + ["none"]
    m = re.fullmatch(r"Union\[(.*)\]", text)
    if m:
        return [k for part in _split_top(m.group(1)) for k in _kinds_of(part)]
    return _kinds_of(text)


def _kinds_of(text: str) -> List[str]:
    text = text.strip()
    if text.startswith(("Optional[", "Union[")):
        return _kinds(inspect.Parameter("x", inspect.Parameter.KEYWORD_ONLY, annotation=text))
    simple = {"bool": "bool", "int": "int", "float": "float", "str": "str", "None": "none", "NoneType": "none"}
    if text in simple:
        return [simple[text]]
    if text.startswith(("Mapping", "Dict", "dict")):
        return ["dict"]
    if text.startswith(("Sequence", "List", "list", "Tuple", "tuple")):
        return ["list"]
    if "Path" in text:
        return ["str"]
    return ["any"]


def _convert(key: str, raw: str, kinds: List[str]) -> Any:
    import json

    low = raw.lower()
    if "none" in kinds and low in ("none", "null"):
        return None
    for kind in kinds:
        if kind == "bool" and low in _TRUE + _FALSE:
            return low in _TRUE
        if kind == "int" and re.fullmatch(r"[+-]?\d+", raw):
            return int(raw)
        if kind == "float":
            try:
                value = float(raw)
            except ValueError:
                continue
            if np.isfinite(value):
                return value
        if kind in ("dict", "list"):
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict if kind == "dict" else list):
                return value
        if kind in ("str", "any"):
            if kind == "any":
                try:
                    return json.loads(raw)
                except ValueError:
                    pass
            return raw
    wanted = {"bool": "true or false", "int": "an integer", "float": "a finite number", "none": "none",
              "dict": "a JSON object", "list": "a JSON list"}
    says = " or ".join(wanted.get(k, k) for k in kinds)
    raise UsageError(f"--param {key} must be {says}, got {raw!r}")


def convert_params(cls: type, method: str, raw: Dict[str, str]) -> Dict[str, Any]:
    """Check every ``--param`` key against ``cls``'s constructor and convert its value to
    the parameter's type (booleans must be true / false, integers whole, ...)."""
    specs = param_specs(cls)
    out: Dict[str, Any] = {}
    for key, value in raw.items():
        if key == "seed" and "seed" in specs:
            raise UsageError("--param seed: use --seed")
        if key not in specs:
            valid = ", ".join(k for k in specs if k != "seed")
            raise UsageError(f"--param {key}: {method} has no parameter {key!r}; valid keys: {valid}")
        out[key] = _convert(key, value, _kinds(specs[key]))
    return out


def resolve_init(cls: type, method: str, params: Dict[str, Any], seed: int, progress: bool) -> None:
    """``--param init=<method>`` for a translator that starts from another one (its ``init`` takes a
    :class:`translate.Translator`: vec2vec, cyclegan): the named unpaired method's translator, unfitted,
    with the command's seed; ``cls.fit`` fits it on the same rows first. In place."""
    spec = param_specs(cls).get("init")
    if spec is None or "Translator" not in str(spec.annotation) or not isinstance(params.get("init"), str):
        return
    starts = [m for m in METHOD_CLASSES if m != method and not getattr(method_class(m), "paired", False)]
    name = params["init"].lower()
    if name not in starts:
        raise UsageError(f"--param init: {method} starts from an unpaired translator ({', '.join(starts)}) or none; "
                         f"got {params['init']!r}")
    start_cls = method_class(name)
    kw = {k: v for k, v in (("seed", seed), ("progress", progress)) if k in param_specs(start_cls)}
    params["init"] = start_cls(**kw)


# -- --pairs ----------------------------------------------------------------


def read_pairs(path: str, n_source: int, n_target: int, option: str = "--pairs") -> np.ndarray:
    """Known pairs from a text file: two integer columns (row of the source, row of the
    target), separated by a comma, tab, semicolon or spaces; an optional header line;
    blank lines and ``#`` comments are skipped. Returns an (m, 2) int64 array."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{option}: no such file {path!r}")
    rows: List[Tuple[int, int]] = []
    with open(p, encoding="utf-8", errors="replace") as fh:
        first = True
        for lineno, line in enumerate(fh, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            fields = [f for f in re.split(r"[,;\t ]+", text) if f]
            ok = len(fields) == 2 and all(re.fullmatch(r"[+-]?\d+", f) for f in fields)
            if not ok:
                if first and not any(re.fullmatch(r"[+-]?\d+(\.\d*)?", f) for f in fields):
                    first = False  # a header
                    continue
                raise UsageError(f"{option}: line {lineno} of {path!r} is not two integers (row of --source, row "
                                 f"of --target): {text[:60]!r}")
            first = False
            s, t = int(fields[0]), int(fields[1])
            if not 0 <= s < n_source:
                raise UsageError(f"{option}: line {lineno} of {path!r}: source row {s} is out of range "
                                 f"(--source has {n_source} rows, numbered from 0)")
            if not 0 <= t < n_target:
                raise UsageError(f"{option}: line {lineno} of {path!r}: target row {t} is out of range "
                                 f"(--target has {n_target} rows, numbered from 0)")
            rows.append((s, t))
    if not rows:
        raise UsageError(f"{option}: {path!r} holds no pairs")
    return np.asarray(rows, dtype=np.int64)


# -- inputs and messages ----------------------------------------------------


def open_input(path: str, option: str, key: Optional[str] = None, key_option: str = "--key") -> ArrayFile:
    """:func:`align.arrays.open_array` with its errors as :class:`UsageError`."""
    try:
        f = open_array(path, option, key, key_option)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return f


def read_finite(*files: ArrayFile) -> List[np.ndarray]:
    """The arrays of ``files``, once each is scanned for NaN / Inf (all before any is
    read); the first non-finite value is a :class:`UsageError` naming its row."""
    for f in files:
        try:
            f.check_finite()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return [f.read() for f in files]


def cli_message(message: str, names: Optional[Dict[str, str]] = None, params: Sequence[str] = ()) -> str:
    """A library message in the command's words: argument names (``X``, ``Y``) become
    option names (``names``), and translator parameters become ``--param NAME=…``
    (``seed`` becomes ``--seed``). One line."""
    msg = " ".join(str(message).split())
    if msg.startswith("-"):
        return msg  # already phrased by the command
    for arg, option in (names or {}).items():
        msg = re.sub(rf"(?<![\w.\-'\"(\[]){re.escape(arg)}(?![\w(\[.'\")])", option, msg)
    for name in sorted(params, key=len, reverse=True):
        pattern = rf"(?<![\w\-]){re.escape(name)}(=[^\s,;)]+)?(?![\w])"

        def repl(m: "re.Match[str]", name: str = name) -> str:
            value = m.group(1)
            if name == "seed":
                return f"--seed {value[1:]}" if value else "--seed"
            if value is None and "_" not in name and m.start() != 0:
                return m.group(0)  # a plain word ("steps", "device") in prose
            if value:
                return f"--param {name}{value}"
            return f"--param {name}" if m.start() == 0 else f"--param {name}=…"

        msg = re.sub(pattern, repl, msg)
    return msg


def warning_printer(prog: str, rewrite: Callable[[str], str]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints ``<prog>: warning: <message>`` on one line."""

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        out = file if file is not None else sys.stderr
        try:
            print(f"{prog}: warning: {rewrite(str(message))}", file=out)
        except (OSError, ValueError):  # a closed stream
            pass

    return show
