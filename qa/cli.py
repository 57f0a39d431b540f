"""The ``qa`` command: parse, call the API, print. No retrieval logic lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .config import DEFAULT_CORPUS, DEFAULT_INDEX

EXIT_USAGE = 2


def _err(msg: str) -> None:
    print(f"qa: {msg}", file=sys.stderr)


def _service(args, **kw):
    """The service over ``args.corpus`` and ``args.index`` with the settings the user chose
    (--model, --passage-vectors; the index's own otherwise); ``kw``: more for ``Verbatim``."""
    from .api import Verbatim
    from .config import IndexSettings

    settings, named = IndexSettings.chosen(model=getattr(args, "model", None),
                                           passage_vectors=getattr(args, "passage_vectors", None))
    return Verbatim(Path(args.corpus), Path(args.index), settings=settings, named=named, **kw)


def cmd_index(args) -> int:
    cluster = None
    if args.ray is not None:
        from .cluster import Cluster

        cluster = Cluster(args.ray or None, args.ray_workers)
        cluster.check()  # unreachable: one line, before anything is written
    v = _service(args)
    report = v.sync(progress=sys.stderr.isatty(), log=_err, wait=not args.no_wait, rehash=args.rehash,
                    only=[Path(f) for f in args.files] or None, cluster=cluster)
    for w in report.warnings:
        _err(f"warning: {w}")
    if args.json:
        print(json.dumps(report.__dict__ | {"summary": report.summary()}, indent=2, default=list))
        return 0
    print(f"index {v.index_dir}: {report.summary()} ({report.seconds:.1f} s)")
    for a, b in report.renamed:
        print(f"  renamed {a} -> {b} (not re-embedded)")
    if report.chunks_embedded:
        pooled = f" ({report.chunks_pooled} pooled from their sentences)" if report.chunks_pooled else ""
        print(f"  embedded {report.chunks_embedded} passages{pooled} and {report.sentences_embedded} sentences")
    return 0


def _emph(quote: str, q_start: int, a_start, a_end, tty: bool) -> str:
    if a_start is None or not tty:
        return quote
    s, e = a_start - q_start, a_end - q_start
    return f"{quote[:s]}\033[1;4m{quote[s:e]}\033[0m{quote[e:]}"


def _line(text: str) -> str:
    """Text for one terminal line: control characters (a newline in a file name) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cite(src: dict) -> str:
    bits = [src["title"] or src["path"], src["publisher"], src["date"]]
    return _line(" · ".join(b for b in bits if b))


def _ready(args):
    """The service with its index built if needed, and the filter the options ask for."""
    from .retrieval import Filter

    v = _service(args)
    built = v.ensure_index(log=_err)
    if built is not None:
        _err(f"built the index: {built.summary()}")
    flt = Filter(
        doc_ids=frozenset(d for sel in args.source for d in _matching_docs(v.index(), sel)) if args.source else None,
        date_from=args.date_from or "", date_to=args.date_to or "",
    )
    return v, flt


def cmd_ask(args) -> int:
    from .api import clean_question, something_to_look_for

    something_to_look_for(clean_question(args.question))  # fail fast, before loading any model
    v, flt = _ready(args)
    res = v.ask(args.question, top=args.top, mode=args.mode, flt=flt)
    if args.json:
        print(json.dumps(res.to_dict(), ensure_ascii=False, indent=2))
        return 0
    _print_answer(res.to_dict(), sys.stdout.isatty())
    return 0


def _print_answer(out: dict, tty: bool) -> None:
    """An answer (``AskResult.to_dict()``) as text: quotes with their sources, or the refusal
    and the closest passages."""
    from .answering import percent

    if out["follow_up"]:
        print(f"(read with your earlier question: {_line(out['follow_up']['earlier_question'])})")
    if out["no_answer"]:
        print("No answer in the sources.")
    groups = [("", out["answers"]),
              ("\nClosest passages (not answers):" if out["no_answer"] else "\nRelated (not answers):",
               out["closest"])]
    n = 0
    for heading, shown in groups:
        if shown and heading:
            print(heading)
        for a in shown:
            n += 1
            print(f"\n{n}. “{_emph(a['quote'], a['start'], a['answer_start'], a['answer_end'], tty)}”")
            if a["answer"] and not tty:
                print(f"   answer: {a['answer']}")
            print(f"   — {_cite(a['source'])}" + (f", p. {a['page']}" if a.get("page") else ""))
            print(f"     {_line(a['source']['path'])} [{a['start']}:{a['end']}]"
                  + (f"  {a['source']['url']}" if a["source"]["url"] else "")
                  + (f"  {a['label']}" if a.get("label") else "")
                  + (f" ({percent(a['probability'])})" if a.get("probability") is not None else f"  score {a['score']:.2f}"))
            for other in a["also_in"]:
                print(f"     also in: {_cite(other['source'])} ({_line(other['source']['path'])})")


NEW_TOPIC = ("/new", "/new topic", "new topic")


def cmd_chat(args) -> int:
    """A terminal chat: follow-up questions are read with the earlier turns. From a terminal, a
    prompt; otherwise one question per line of standard input (``--json``: one JSON object per
    line out, the ``qa ask --json`` shape with ``follow_up``, the context used)."""
    from .errors import BadQuestion

    interactive = sys.stdin.isatty()
    v, flt = _ready(args)
    v.index()
    v.query_encoder  # loaded before the first question
    if interactive and not args.json:
        print("Verbatim chat: answers are quotes from the sources. Follow-up questions are read with "
              "the earlier ones; type /new for a new topic, Ctrl-D to leave.")
    history = []
    while True:
        try:
            line = input("\nyou> " if interactive and not args.json else "")
        except EOFError:
            break
        question = line.strip()
        if not question:
            continue
        if question.lower() in NEW_TOPIC:
            history.clear()
            print(json.dumps({"new_topic": True}) if args.json else "(new topic: earlier questions are set aside)",
                  flush=True)
            continue
        try:
            res = v.ask(question, top=args.top, mode=args.mode, flt=flt, history=history)
        except BadQuestion as err:
            if args.json:
                print(_error_json(str(err), question), flush=True)
            else:
                _err(str(err))
            continue
        history = [res.turn()]  # a follow-up is read with the last turn
        if args.json:
            print(json.dumps(res.to_dict(), ensure_ascii=False), flush=True)
        else:
            _print_answer(res.to_dict(), sys.stdout.isatty())
            sys.stdout.flush()
    return 0


def cmd_sources(args) -> int:
    v = _service(args)
    docs = v.index().documents()
    if args.json:
        print(json.dumps({"manifest": v.index().manifest.to_dict(), "documents": docs}, indent=2,
                         ensure_ascii=False))
        return 0
    m = v.index().manifest
    bm = m.bm25
    print(f"{len(docs)} documents, {m.counts['chunks']} passages; model {m.model}; built {m.created}")
    print(f"dense index: {m.dense_index}")
    print(f"BM25: base of {bm.get('base', 0)} passages + {bm.get('delta', 0)} added since, "
          f"{bm.get('deleted', 0)} deleted since")
    for d in docs:
        print(f"  {d['doc_id']}  {d['date'] or '????-??-??':10}  {d['passages']:4d} passages  "
              f"{_line(d['title'][:70])}  ({_line(d['path'])})")
    return 0


def _matching_docs(idx, selector: str) -> list[str]:
    """Doc ids matching an id, a path or a file name; a clear error if none does."""
    from .errors import VerbatimError

    ids = idx.doc_ids_for([selector])
    if not ids:
        raise VerbatimError(f"no indexed document matches '{selector}' (see `qa sources`)")
    return sorted(ids)


def cmd_show(args) -> int:
    idx = _service(args).index()
    for doc_id in _matching_docs(idx, args.doc):
        src = idx.sources([doc_id])[doc_id]
        print(json.dumps(src.to_dict(), ensure_ascii=False, indent=2))
        print("-" * 72)
        sys.stdout.write(idx.document_text(doc_id))
        print()
    return 0


def cmd_serve(args) -> int:
    from .web import serve

    serve(
        corpus_dir=Path(args.corpus), index_dir=Path(args.index),
        host=args.host, port=args.port, allow_upload=args.allow_upload, model=args.model,
    )
    return 0


def cmd_remove(args) -> int:
    from .errors import VerbatimError
    from .manage import REMOVED_DIR, remove_files

    v = _service(args)
    idx = v.index()
    # a file named removes that file only; a document id removes every file holding its text
    paths = idx.paths_named(args.doc) or sorted(
        {p for src in idx.sources(_matching_docs(idx, args.doc)).values() for p in src.paths})
    files = {(v.root / p.split("#")[0]) for p in paths}
    if any("#" in p for p in paths):
        raise VerbatimError("that document is a line of a .jsonl feed; edit the feed file to remove it")
    moved = remove_files(v.corpus_dir, sorted(files))
    for m in moved:
        print(f"moved {m.name} to {v.corpus_dir.name}/{REMOVED_DIR}/ (recoverable)")
    report = v.sync(log=_err, only=sorted(files))
    print(f"index: {report.summary()}")
    return 0


def cmd_watch(args) -> int:
    from .manage import watch

    v = _service(args)

    def update(paths=None):
        try:
            r = v.sync(log=_err, only=paths)
        except Exception as err:  # keep watching whatever one update did
            _err(f"update failed: {err}")
            return
        if r.changed_anything:
            print(f"{time.strftime('%H:%M:%S')} index updated: {r.summary()}", flush=True)

    update()
    print(f"watching {v.corpus_dir} for changes (Ctrl-C to stop)", flush=True)
    watch(v.corpus_dir, update, delay=args.delay)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qa", description="Verbatim: answers quoted exactly from your sources."
    )
    # --corpus/--index/--model go before or after the subcommand and show in every --help; in the
    # subcommands they default to "not given", so a value given before the subcommand stands
    common = argparse.ArgumentParser(add_help=False)
    for parser, given in ((p, True), (common, False)):
        parser.add_argument("--corpus", default=str(DEFAULT_CORPUS) if given else argparse.SUPPRESS,
                            help="folder of articles (default: corpus/)")
        parser.add_argument("--index", default=str(DEFAULT_INDEX) if given else argparse.SUPPRESS,
                            help="index folder (default: embeddings/)")
        parser.add_argument("--model", default=None if given else argparse.SUPPRESS,
                            help="embedding model (default: all-MiniLM-L6-v2)")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        """A subcommand that takes the common options too."""
        return sub.add_parser(name, parents=[common], **kwargs)

    s = command("index", help="build or update the index incrementally")
    s.add_argument("--json", action="store_true", help="print the sync report as JSON")
    s.add_argument("--no-wait", action="store_true", help="fail instead of waiting for another writer")
    s.add_argument("--rehash", action="store_true",
                   help="read and hash every file, even those whose size and time are unchanged")
    s.add_argument("files", nargs="*", metavar="FILE",
                   help="only look at these files (added, edited or deleted); default: scan the corpus")
    s.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="embed the new and changed files on a Ray cluster (ray://host:port or host:port; "
                   "without ADDRESS a local Ray started for the run); needs pip install -e '.[cluster]'")
    s.add_argument("--ray-workers", type=int, default=0, metavar="N",
                   help="with --ray: actors embedding at once (default: the cluster's CPUs)")
    s.add_argument("--passage-vectors", choices=["sentences", "own"],
                   help="sentences (the default for a new index): each passage's vector pooled from its "
                   "sentences' encoder passes; own: each passage encoded alone too, a build 1.7x slower "
                   "(a change rebuilds; a plain qa index keeps the index's)")
    s.set_defaults(func=cmd_index)

    def asking(s: argparse.ArgumentParser, json_help: str) -> None:
        """The options of the commands that ask: ask and chat."""
        s.add_argument("--top", type=int, default=3, metavar="N", help="number of quotes (default 3)")
        s.add_argument("--json", action="store_true", help=json_help)
        s.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default="hybrid")
        s.add_argument("--source", action="append", metavar="DOC",
                       help="restrict to a document (id or path); repeatable")
        s.add_argument("--date-from", metavar="DATE", help="only documents dated on/after YYYY[-MM[-DD]]")
        s.add_argument("--date-to", metavar="DATE", help="only documents dated on/before YYYY[-MM[-DD]]")

    s = command("ask", help="ask a question")
    s.add_argument("question")
    asking(s, "print the answer as JSON")
    s.set_defaults(func=cmd_ask)

    s = command("chat", help="chat in the terminal, follow-ups read with the earlier questions "
                "(one question per line from a pipe)")
    asking(s, "print one JSON object per question (the qa ask --json shape)")
    s.set_defaults(func=cmd_chat)

    s = command("sources", help="list indexed documents")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sources)

    s = command("show", help="print a document's metadata and text")
    s.add_argument("doc", help="document id or path")
    s.set_defaults(func=cmd_show)

    s = command("serve", help="start the browser app")
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--allow-upload", action="store_true",
                   help="let browser users add articles to the corpus (off by default)")
    s.set_defaults(func=cmd_serve)

    s = command("remove", help="remove a document (its file moves to corpus/.removed/)")
    s.add_argument("doc", help="document id or path")
    s.set_defaults(func=cmd_remove)

    s = command("watch", help="re-index whenever files in the corpus change")
    s.add_argument("--delay", type=float, default=1.5, metavar="SECONDS", help="seconds of quiet before updating")
    s.set_defaults(func=cmd_watch)

    from .evaluate import add_eval_parser

    add_eval_parser(command)
    return p


COMMON = ("--corpus", "--index", "--model")
README_BEGIN, README_END = "<!-- cli reference: generated from --help by `qa.cli.reference` -->", "<!-- end cli reference -->"


def _commands(parser: argparse.ArgumentParser):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    return [(name, helps.get(name, ""), sp) for name, sp in sub.choices.items()]


def _positional(a: argparse.Action) -> str:
    name = a.metavar or a.dest.upper()
    return {None: name, "?": f"[{name}]", "*": f"[{name} ...]", "+": f"{name} ..."}.get(a.nargs, name)


def reference(full: bool = False) -> str:
    """The CLI reference, from the parser itself: a markdown table of the commands and their
    options (the README's), or every command's ``--help`` (``full``: docs/cli.md)."""
    width, os.environ["COLUMNS"] = os.environ.get("COLUMNS"), "100"  # argparse wraps to the terminal
    try:
        parser = build_parser()
        return _reference(parser, full)
    finally:
        if width is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = width


def _reference(parser: argparse.ArgumentParser, full: bool) -> str:
    if full:
        out = ["# `qa` command reference", "",
               "Generated from `qa COMMAND --help` (`python scripts/cli_reference.py --write`); a test fails "
               "when it drifts.", "", "```text", parser.format_help().rstrip(), "```"]
        for name, _, sp in _commands(parser):
            out += ["", f"## qa {name}", "", "```text", sp.format_help().rstrip(), "```"]
        return "\n".join(out) + "\n"
    rows = ["| command | what it does | its options |", "|---|---|---|"]
    for name, help_text, sp in _commands(parser):
        pos = " ".join(_positional(a) for a in sp._actions if not a.option_strings)
        opts = ", ".join(f"`{a.option_strings[-1]}" + (f" {a.metavar or a.dest.upper()}`" if a.nargs != 0 else "`")
                         for a in sp._actions
                         if a.option_strings and a.option_strings[-1] not in COMMON and a.dest != "help")
        rows.append(f"| `qa {name}{' ' + pos if pos else ''}` | {help_text} | {opts} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    from .errors import VerbatimError

    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "top") and not 1 <= args.top <= 50:
        parser.error("--top must be between 1 and 50")
    try:
        return int(args.func(args) or 0)
    except VerbatimError as err:
        return _fail(args, str(err))
    except KeyboardInterrupt:
        return _fail(args, "interrupted; the index on disk is unchanged", 130)
    except BrokenPipeError:
        return 0
    except Exception as err:  # last resort: one line, not a traceback
        if os.environ.get("VERBATIM_DEBUG"):
            raise
        return _fail(args, f"internal error ({type(err).__name__}: {err}); set VERBATIM_DEBUG=1 for details")


def _fail(args, message: str, code: int = 1) -> int:
    """A failed command: one line on standard error and, with ``--json``, an ``{"error"}`` object
    on standard output (with the question, for ``ask``, as ``qa chat --json`` reports a bad line),
    so a script reading the output always gets JSON."""
    _err(message)
    if getattr(args, "json", False):
        print(_error_json(message, getattr(args, "question", None)))
    return code


def _error_json(message: str, question: object = None) -> str:
    """``{"question"?, "error"}``: a failure as ``--json`` prints it, with the question it was about."""
    about = {"question": _line(question[:200])} if isinstance(question, str) else {}
    return json.dumps({**about, "error": message}, ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(main())
