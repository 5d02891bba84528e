"""The reptrans command: embed | fit | transform | eval | compare | demo.

A thin layer over the Python API: every subcommand checks its arguments and files
first (formats, shapes, parameters, output paths), then calls the library and prints
a table. Array files: .npy, .safetensors (one tensor; pick it with a --key option),
FAISS flat index (.faiss / .index).

Exit status: 0 done; 2 bad input -- one line ``reptrans <cmd>: error: ...`` on stderr
naming the option (a ``ValueError`` from the library too); 1 an operating-system error
while working; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

import align
from align.arrays import FORMATS, SUPPORTED, ArrayWriter, check_output_path, write_array
from align.progress import on_terminal, progress_bar

from .cli_support import (
    METHOD_CLASSES,
    UsageError,
    cli_message,
    convert_params,
    describe_params,
    method_class,
    methods_taking_pairs,
    open_input,
    param_specs,
    parse_param_items,
    read_finite,
    read_pairs,
    resolve_init,
    takes_pairs,
    warning_printer,
)
from .demo import DEMO_N_PER_SIDE
from .tables import markdown_table, to_json

METHODS = tuple(METHOD_CLASSES)
NEIGHBOUR_METRICS = ("mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cknna")
#: library argument names -> this command's option names, for messages
ARG_NAMES: Dict[str, Dict[str, str]] = {
    "fit": {"X": "--source", "Y": "--target"},
    "eval": {"X": "--source", "Y": "--target", "Y_true": "--target"},
    "compare": {"X": "A", "Y": "B"},
    "transform": {"X": "--input"},
    "embed": {"encoder": "--encoder", "start": "--start", "batch_size": "--batch-size", "corpus": "--corpus"},
}


def note(args: argparse.Namespace, text: str) -> None:
    print(f"reptrans {args.command}: {text}", file=sys.stderr, flush=True)


def check_output(path: str, option: str, overwrite: bool, folder: bool = False, formats: Optional[dict] = None) -> Path:
    try:
        return check_output_path(path, option, overwrite, folder=folder, formats=formats)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def load_model(path: str) -> Any:
    import translate

    try:
        t = translate.load(path)
    except ValueError as exc:
        raise UsageError(f"--model: {cli_message(str(exc))}") from None
    if not hasattr(t, "d_in_") or not hasattr(t, "d_out_"):
        raise UsageError(f"--model: {path!r} holds a {type(t).__name__}, which maps between several spaces; "
                         "this command needs a one-way translator")
    return t


def check_rows_paired(a: Any, b: Any, names: Sequence[str], why: str) -> None:
    if len(a) != len(b):
        raise UsageError(f"{names[0]} and {names[1]} must have the same number of rows ({why}), "
                         f"got {len(a)} and {len(b)}")


# -- subcommands -----------------------------------------------------------


def cmd_embed(args: argparse.Namespace) -> None:
    from align.data import embed_corpus

    out = check_output(args.output, "-o", args.overwrite, formats=FORMATS)
    X = embed_corpus(
        args.encoder,
        corpus=args.corpus,
        n=args.n,
        start=args.start,
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        progress=not args.quiet and on_terminal(),
    )
    path = write_array(out, X, "-o", key=args.key)
    print(f"wrote {path} with shape {X.shape} ({args.encoder}, {args.corpus} texts [{args.start}, {args.start + len(X)}))")


def cmd_fit(args: argparse.Namespace) -> None:
    cls = method_class(args.method)
    params = convert_params(cls, args.method, parse_param_items(args.param))
    specs = param_specs(cls)
    if "seed" in specs:
        params["seed"] = 0 if args.seed is None else args.seed
    elif args.seed is not None:
        note(args, f"note: --seed has no effect: {args.method} is deterministic")
    if "progress" in specs and "progress" not in params:
        params["progress"] = on_terminal()
    resolve_init(cls, args.method, params, params.get("seed", 0), on_terminal())
    try:
        t = cls(**params)
    except TypeError as exc:
        raise UsageError(f"--param: {exc}") from None
    check_output(args.output, "-o", args.overwrite, folder=True)
    src = open_input(args.source, "--source", args.source_key, "--source-key")
    tgt = open_input(args.target, "--target", args.target_key, "--target-key")
    if getattr(cls, "paired", False):
        check_rows_paired(src, tgt, ("--source", "--target"), f"{args.method} needs paired rows: row i of each is "
                          "the same item")
    fit_kw: Dict[str, Any] = {}
    if args.pairs:
        if not takes_pairs(cls):
            takers = methods_taking_pairs()
            raise UsageError(f"--pairs: {args.method} does not take known pairs"
                             + (f"; methods that do: {', '.join(takers)}" if takers else "")
                             + ("" if not getattr(cls, "paired", False) else
                                f" ({args.method} pairs rows by position: row i of --source with row i of --target)"))
        fit_kw["pairs"] = read_pairs(args.pairs, len(src), len(tgt))
    X, Y = read_finite(src, tgt)
    note(args, f"fitting {args.method} on {len(X)} source rows ({X.shape[1]}-d) and {len(Y)} target rows "
               f"({Y.shape[1]}-d)" + (f" with {len(fit_kw['pairs'])} known pairs" if fit_kw else ""))
    t.fit(X, Y, **fit_kw)
    t.save(args.output)
    print(f"fitted {t!r} on {len(X)} source and {len(Y)} target rows; saved to {args.output}")


def cmd_transform(args: argparse.Namespace) -> None:
    out = check_output(args.output, "-o", args.overwrite, formats=FORMATS)
    if args.chunk_rows < 1:
        raise UsageError(f"--chunk-rows must be >= 1, got {args.chunk_rows}")
    t = load_model(args.model)
    inp = open_input(args.input, "--input", args.key, "--key")
    if inp.shape[1] != t.d_in_:
        raise UsageError(f"--input has {inp.shape[1]} columns but the model in {args.model!r} was fitted on "
                         f"{t.d_in_}-d rows")
    n = len(inp)
    bar = progress_bar(total=n, desc="transform", unit="row", enabled=on_terminal())
    try:
        with ArrayWriter(out, n, t.d_out_, "-o", key=args.output_key, faiss_metric=inp.faiss_metric or "ip") as w:
            for start, rows in inp.chunks(args.chunk_rows):
                bad = ~np.isfinite(rows).all(axis=1)
                if bad.any():
                    raise UsageError(f"--input: {args.input!r} contains non-finite values (NaN or Inf), first in "
                                     f"row {start + int(np.flatnonzero(bad)[0])}; nothing was written")
                w.write(t.transform(rows))
                bar.update(len(rows))
    finally:
        bar.close()
    print(f"wrote {out} with shape ({n}, {t.d_out_}): {type(t).__name__} applied to {args.input}")


def cmd_eval(args: argparse.Namespace) -> None:
    import translate

    if args.json:
        check_output(args.json, "--json", args.overwrite)
    t = load_model(args.model)
    src = open_input(args.source, "--source", args.source_key, "--source-key")
    tgt = open_input(args.target, "--target", args.target_key, "--target-key")
    if src.shape[1] != t.d_in_:
        raise UsageError(f"--source has {src.shape[1]} columns but the model was fitted on {t.d_in_}-d rows")
    if tgt.shape[1] != t.d_out_:
        raise UsageError(f"--target has {tgt.shape[1]} columns but the model translates into {t.d_out_}-d rows")
    check_rows_paired(src, tgt, ("--source", "--target"), "held-out pairs: row i of each is the same item")
    n = len(src)
    if n < 2:
        raise UsageError(f"--source has {n} row; evaluation needs a candidate pool of at least 2")
    if not 1 <= args.k < n:
        raise UsageError(f"--k {args.k} must be between 1 and {n - 1} (the candidate pool is the {n} rows of "
                         "--target)")
    X, Y = read_finite(src, tgt)
    res = translate.evaluate(t.transform(X), Y, k=args.k)
    print(markdown_table([{"model": type(t).__name__, **res}]))
    if args.json:
        Path(args.json).write_text(to_json(res) + "\n")


def metric_names(text: str) -> List[str]:
    from align.metrics import METRICS

    if text.strip() == "all":
        return list(METRICS)
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if not names or unknown:
        what = f"unknown metric {', '.join(map(repr, unknown))}" if unknown else "no metric given"
        raise UsageError(f"--metric: {what}; valid names: all, {', '.join(METRICS)}")
    return names


def cmd_compare(args: argparse.Namespace) -> None:
    from align.metrics import chance_level, score

    names = metric_names(args.metric)
    if args.json:
        check_output(args.json, "--json", args.overwrite)
    fa = open_input(args.a, "A", args.a_key, "--a-key")
    fb = open_input(args.b, "B", args.b_key, "--b-key")
    check_rows_paired(fa, fb, ("A", "B"), "the metrics compare paired rows: row i of each is the same item")
    n = len(fa)
    if n < 3:
        raise UsageError(f"A has {n} rows; the metrics need at least 3 paired rows")
    if any(m in NEIGHBOUR_METRICS for m in names) and not 1 <= args.k < n:
        raise UsageError(f"--k {args.k} must be between 1 and {n - 1} ({n} rows, self excluded)")
    X, Y = read_finite(fa, fb)
    rows: List[Dict[str, Any]] = []
    failures = []
    for name in names:
        kw = {"k": args.k} if name in NEIGHBOUR_METRICS else {}
        try:
            value = score(X, Y, metric=name, **kw)
            chance = chance_level(X, Y, name, seed=args.seed, **kw) if args.chance else None
        except ValueError as exc:
            if args.metric.strip() != "all":
                raise
            failures.append(f"{name}: {exc}")
            rows.append({"metric": name, "value": None, "chance": None,
                         "note": cli_message(str(exc), ARG_NAMES["compare"])[:80]})
            continue
        rows.append({"metric": name, "value": float(value), "chance": chance, "note": ""})
    if len(failures) == len(names):
        raise ValueError(f"no metric could be computed; first: {failures[0]}")
    print(f"A: {args.a} {fa.shape}   B: {args.b} {fb.shape}")
    columns = ["metric", "value"] + (["chance"] if args.chance else []) + (["note"] if failures else [])
    print(markdown_table(rows, columns))
    if args.json:
        Path(args.json).write_text(to_json(rows) + "\n")


def cmd_demo(args: argparse.Namespace) -> None:
    from translate.demo import run_demo

    check_output(args.out, "--out", overwrite=True, folder=True)
    run_demo(
        n_per_side=args.n_per_side,
        n_test=args.n_test,
        n_metric=args.n_metric,
        seed=args.seed,
        out_dir=args.out,
        source=args.source_encoder,
        target=args.target_encoder,
        progress=on_terminal(),
    )


# -- the parser ------------------------------------------------------------


class HelpParser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog is computed when help is shown (it imports the
    translator classes and the metrics, which a plain run need not pay for)."""

    epilog_fn: Optional[Callable[[], str]] = None

    def format_help(self) -> str:
        if self.epilog_fn is not None:
            self.epilog, self.epilog_fn = self.epilog_fn(), None
        return super().format_help()


def fit_epilog() -> str:
    lines = ["translator parameters (--param KEY=VALUE; defaults shown):"]
    for method in METHODS:
        try:
            cls = method_class(method)
        except ImportError as exc:  # pragma: no cover - an optional dependency missing
            lines.append(f"  {method}: unavailable ({exc})")
            continue
        kind = "paired rows" if getattr(cls, "paired", False) else "unpaired"
        if takes_pairs(cls):
            kind += ", --pairs accepted"
        lines.append(textwrap.fill(f"{method} ({kind}): {describe_params(cls)}", width=100, initial_indent="  ",
                                   subsequent_indent="      ", break_on_hyphens=False))
    lines.append("booleans are true/false; 'none' where a parameter allows it. --seed sets the seed of the methods "
                 "that have one. vec2vec and cyclegan take init=isometric: start from the isometric map, fitted "
                 "first on the same rows (the intended use on a CPU).")
    return "\n".join(lines)


def compare_epilog() -> str:
    from align.metrics import METRICS

    return ("metrics: " + ", ".join(METRICS) + "\nneighbour metrics (use --k): " + ", ".join(NEIGHBOUR_METRICS))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reptrans", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {align.__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=HelpParser, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter
    arrays = f"array file: {SUPPORTED}"

    def add(name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help + ".", **kw)

    def overwrite(parser: argparse.ArgumentParser, what: str = "output files") -> None:
        parser.add_argument("--overwrite", action="store_true", help=f"replace existing {what} (refused otherwise)")

    e = add("embed", "embed corpus texts with a sentence encoder (cached in resumable chunks)")
    e.add_argument("--encoder", default="minilm", help="a packaged encoder name (minilm, mpnet, e5, glove) or the path "
                   "of a local sentence-transformers model folder (default: minilm)")
    e.add_argument("--corpus", default="wordnet", help="'wordnet' (bundled) or a text file, one text per line")
    e.add_argument("--n", type=int, default=None, help="number of texts (default: all from --start)")
    e.add_argument("--start", type=int, default=0, help="index of the first text (default: 0)")
    e.add_argument("--batch-size", type=int, default=64, help="texts per encoder call (default: 64)")
    e.add_argument("--cache-dir", default=None, help="embedding cache (default: $REPTRANS_CACHE or ~/.cache/reptrans)")
    e.add_argument("--key", default="embeddings", help="tensor name when -o is .safetensors (default: embeddings)")
    e.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    e.add_argument("-o", "--output", required=True, help=f"output {arrays}; written exactly at this path")
    overwrite(e)
    e.set_defaults(func=cmd_embed)

    f = add("fit", "fit a translator from space A (--source) to space B (--target) and save it",
                       formatter_class=raw)
    f.add_argument("--method", choices=METHODS, default="procrustes",
                   help="procrustes, linear: paired rows (row i of each is the same item); isometric, vec2vec, "
                   "cyclegan: unpaired sets (default: procrustes)")
    f.add_argument("--source", required=True, help=f"rows of space A ({arrays})")
    f.add_argument("--target", required=True, help=f"rows of space B ({arrays}); unpaired unless the method is paired")
    f.add_argument("--source-key", default=None, help="tensor of --source when it is a .safetensors with several")
    f.add_argument("--target-key", default=None, help="tensor of --target when it is a .safetensors with several")
    f.add_argument("--pairs", default=None, metavar="CSV",
                   help="known pairs for methods that take them: two integer columns (row of --source, row of "
                   "--target, from 0), header optional")
    f.add_argument("--seed", type=int, default=None, help="random seed of the methods that have one (default: 0)")
    f.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="translator parameter, repeatable; the valid keys per method are listed below")
    f.add_argument("-o", "--output", required=True, help="output folder (config.json + weights.safetensors)")
    overwrite(f, "model folders")
    f.set_defaults(func=cmd_fit)
    f.epilog_fn = fit_epilog

    t = add("transform", "apply a saved translator to an array file, in chunks")
    t.add_argument("--model", required=True, help="folder written by 'reptrans fit' (any saved translator)")
    t.add_argument("--input", required=True, help=f"rows of the source space ({arrays})")
    t.add_argument("--key", default=None, help="tensor of --input when it is a .safetensors with several")
    t.add_argument("-o", "--output", required=True, help=f"output {arrays}; a FAISS output is an index of the "
                   "input's type (IndexFlatIP otherwise)")
    t.add_argument("--output-key", default="embeddings", help="tensor name when -o is .safetensors (default: embeddings)")
    t.add_argument("--chunk-rows", type=int, default=8192, help="rows translated at a time (default: 8192)")
    overwrite(t)
    t.set_defaults(func=cmd_transform)

    v = add("eval", "evaluate a saved translator on held-out pairs (top-1, mean rank, FOSCTTM, ...)")
    v.add_argument("--model", required=True, help="folder written by 'reptrans fit'")
    v.add_argument("--source", required=True, help=f"held-out rows of space A ({arrays})")
    v.add_argument("--target", required=True, help="the same items in space B, row for row: the candidate pool")
    v.add_argument("--source-key", default=None, help="tensor of --source in a .safetensors with several")
    v.add_argument("--target-key", default=None, help="tensor of --target in a .safetensors with several")
    v.add_argument("--k", type=int, default=10, help="k of the mutual-kNN score, below the pool size (default: 10)")
    v.add_argument("--json", default=None, help="also write the results here as JSON")
    overwrite(v, "--json files")
    v.set_defaults(func=cmd_eval)

    c = add("compare", "alignment metrics between two paired embedding sets", formatter_class=raw)
    c.add_argument("a", metavar="A", help=f"rows of the first space ({arrays})")
    c.add_argument("b", metavar="B", help="the same items in the second space, row for row")
    c.add_argument("--a-key", default=None, help="tensor of A in a .safetensors with several")
    c.add_argument("--b-key", default=None, help="tensor of B in a .safetensors with several")
    c.add_argument("--metric", default="all", help="'all' (the default) or comma-separated names, listed below")
    c.add_argument("--k", type=int, default=10, help="neighbours of the neighbour metrics (default: 10)")
    c.add_argument("--no-chance", dest="chance", action="store_false",
                   help="skip the chance level (the metric with rows shuffled)")
    c.add_argument("--seed", type=int, default=0, help="seed of the row shuffles of the chance level (default: 0)")
    c.add_argument("--json", default=None, help="also write the rows here as JSON (missing values are null)")
    overwrite(c, "--json files")
    c.set_defaults(func=cmd_compare)
    c.epilog_fn = compare_epilog

    d = add("demo", "minilm -> mpnet on disjoint WordNet texts: unpaired isometric translation, "
                       "beside identity and the paired oracle; every fast metric")
    d.add_argument("--n-per-side", type=int, default=DEMO_N_PER_SIDE,
                   help=f"texts per side, none in common (default: {DEMO_N_PER_SIDE})")
    d.add_argument("--n-test", type=int, default=1000, help="held-out pairs, the candidate pool (default: 1000)")
    d.add_argument("--n-metric", type=int, default=2000, help="paired texts for the alignment metrics (default: 2000)")
    d.add_argument("--seed", type=int, default=0, help="seed of the isometric fit and the shuffles (default: 0)")
    d.add_argument("--source-encoder", default="minilm", help="encoder of space A (default: minilm)")
    d.add_argument("--target-encoder", default="mpnet", help="encoder of space B (default: mpnet)")
    d.add_argument("--out", default="out/demo", help="output folder, rewritten on each run (default: out/demo)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status (argparse exits 2 itself on bad syntax)."""
    args = build_parser().parse_args(argv)
    prog = f"reptrans {args.command}"
    names = ARG_NAMES.get(args.command, {})

    def params() -> List[str]:
        if args.command != "fit":
            return []
        try:
            return list(param_specs(method_class(args.method)))
        except ImportError:  # pragma: no cover
            return []

    def rewrite(msg: str) -> str:
        return cli_message(msg, names, params())

    with warnings.catch_warnings():
        warnings.showwarning = warning_printer(prog, rewrite)
        try:
            args.func(args)
        except UsageError as exc:
            print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"{prog}: error: {rewrite(str(exc))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            # a second Ctrl-C while the interpreter shuts down (seconds, under load) would
            # otherwise kill the process by the signal instead of exiting with 130
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            except ValueError:  # not the main thread: nothing to protect
                pass
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except OSError as exc:
            print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
