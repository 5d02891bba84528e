"""The ``reptrans`` command: embed | fit | eval | compare | demo.

A thin layer over the Python API: every subcommand parses its arguments, calls
library functions, and prints a table. Errors the library raises for bad input
(``ValueError``) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

METHODS = ("procrustes", "linear", "isometric", "vec2vec", "cyclegan")


def _load_npy(path: str, name: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{name}: no such file {path!r}")
    try:
        return np.load(p, allow_pickle=False)  # never unpickle user files
    except ValueError as exc:
        raise ValueError(f"{name}: {path!r} is not a plain .npy array ({exc})") from None


def _parse_params(items: Sequence[str]) -> Dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when they parse, else strings."""
    out: Dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--param expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def markdown_table(rows: List[Dict[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    """Rows of dicts as a markdown table; floats with 4 decimals."""
    columns = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# -- subcommands -----------------------------------------------------------


def cmd_embed(args: argparse.Namespace) -> None:
    from align.data import embed_corpus

    X = embed_corpus(
        args.encoder,
        corpus=args.corpus,
        n=args.n,
        start=args.start,
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, X)
    print(f"wrote {out} with shape {X.shape} ({args.encoder}, {args.corpus} texts [{args.start}, {args.start + len(X)}))")


def _make_translator(method: str, seed: int, params: Dict[str, Any]):
    import translate

    cls = {
        "procrustes": "Procrustes",
        "linear": "Linear",
        "isometric": "Isometric",
        "vec2vec": "Vec2Vec",
        "cyclegan": "CycleGAN",
    }[method]
    klass = getattr(translate, cls)
    if "seed" in klass._param_names():
        params = {"seed": seed, **params}
    try:
        return klass(**params)
    except TypeError as exc:
        raise ValueError(f"--param: {exc}") from None


def cmd_fit(args: argparse.Namespace) -> None:
    X = _load_npy(args.source, "--source")
    Y = _load_npy(args.target, "--target")
    t = _make_translator(args.method, args.seed, _parse_params(args.param))
    t.fit(X, Y)
    t.save(args.output)
    print(f"fitted {t!r} on {len(X)} source and {len(Y)} target rows; saved to {args.output}")


def cmd_eval(args: argparse.Namespace) -> None:
    import translate

    t = translate.load(args.model)
    X = _load_npy(args.source, "--source")
    Y = _load_npy(args.target, "--target")
    if len(X) != len(Y):
        raise ValueError(f"--source and --target must be paired rows, got {len(X)} and {len(Y)}")
    res = translate.evaluate(t.transform(X), Y, k=args.k)
    print(markdown_table([{"model": type(t).__name__, **res}]))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


def cmd_compare(args: argparse.Namespace) -> None:
    from align.metrics import METRICS, chance_level, score

    X = _load_npy(args.a, "A")
    Y = _load_npy(args.b, "B")
    names = list(METRICS) if args.metric == "all" else args.metric.split(",")
    rows = []
    for name in names:
        kw = {"k": args.k} if name in ("mutual_knn", "cycle_knn", "lcs_knn", "cknna") else {}
        try:
            value = score(X, Y, metric=name, **kw)
            chance = chance_level(X, Y, name, seed=args.seed, **kw) if args.chance else float("nan")
        except ValueError as exc:
            if args.metric != "all":
                raise
            rows.append({"metric": name, "value": "n/a", "chance": "n/a", "note": str(exc)[:60]})
            continue
        rows.append({"metric": name, "value": float(value), "chance": float(chance), "note": ""})
    print(f"A: {args.a} {X.shape}   B: {args.b} {Y.shape}")
    print(markdown_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def cmd_demo(args: argparse.Namespace) -> None:
    from translate.demo import run_demo

    run_demo(
        n_per_side=args.n_per_side,
        n_test=args.n_test,
        n_metric=args.n_metric,
        seed=args.seed,
        out_dir=args.out,
        source=args.source_encoder,
        target=args.target_encoder,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reptrans", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("embed", help="embed corpus texts with a packaged encoder (cached)")
    e.add_argument("--encoder", default="minilm", help="minilm | mpnet")
    e.add_argument("--corpus", default="wordnet", help="'wordnet' or a text file, one text per line")
    e.add_argument("--n", type=int, default=None, help="number of texts (default: all)")
    e.add_argument("--start", type=int, default=0, help="index of the first text")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--cache-dir", default=None)
    e.add_argument("--quiet", action="store_true")
    e.add_argument("-o", "--output", required=True, help="output .npy")
    e.set_defaults(func=cmd_embed)

    f = sub.add_parser("fit", help="fit a translator from space A (--source) to B (--target)")
    f.add_argument("--method", choices=METHODS, default="procrustes")
    f.add_argument("--source", required=True, help=".npy of space A rows")
    f.add_argument("--target", required=True, help=".npy of space B rows (unpaired unless the method is paired)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="translator parameter")
    f.add_argument("-o", "--output", required=True, help="output folder")
    f.set_defaults(func=cmd_fit)

    v = sub.add_parser("eval", help="evaluate a saved translator on held-out pairs")
    v.add_argument("--model", required=True)
    v.add_argument("--source", required=True)
    v.add_argument("--target", required=True)
    v.add_argument("--k", type=int, default=10, help="k of the mutual-kNN score")
    v.add_argument("--json", default=None, help="also write the results here")
    v.set_defaults(func=cmd_eval)

    c = sub.add_parser("compare", help="alignment metrics between two paired embedding sets")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--metric", default="all", help="'all' or comma-separated names")
    c.add_argument("--k", type=int, default=10)
    c.add_argument("--no-chance", dest="chance", action="store_false", help="skip the chance-level column")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", default=None)
    c.set_defaults(func=cmd_compare)

    d = sub.add_parser("demo", help="minilm -> mpnet on disjoint WordNet texts: unpaired isometric translation, "
                       "beside identity and the paired oracle; every fast metric")
    d.add_argument("--n-per-side", type=int, default=11500, help="texts per side, none in common")
    d.add_argument("--n-test", type=int, default=1000, help="held-out pairs (the candidate pool)")
    d.add_argument("--n-metric", type=int, default=2000, help="paired texts for the alignment metrics")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--source-encoder", default="minilm")
    d.add_argument("--target-encoder", default="mpnet")
    d.add_argument("--out", default="out/demo")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as exc:
        print(f"reptrans {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
