"""The browser front end: a Gradio chat over ``Verbatim.ask``, plus a document view.

Pure rendering functions come first (testable without a browser); the layout is
built in ``build_blocks``; ``build_app`` mounts it on a FastAPI app that also
serves ``/doc/{doc_id}``, the whole article with the quoted sentence marked.

Every string that comes from an article or a question is untrusted: it goes
through ``esc`` (HTML and markdown escaping) before it is put in a page, and
the document view is served with a Content-Security-Policy that forbids scripts.
"""

from __future__ import annotations

import html
import json
import logging
import threading
from pathlib import Path
from urllib.parse import quote as urlquote

from .answering import LIKELY, MAY, RELATED, percent
from .api import Verbatim
from .errors import BadQuestion, VerbatimError
from .config import MAX_QUESTION_CHARS
from .retrieval import Filter
from .types import Turn

EXAMPLES = [
    "How many North Korean refugees did China forcibly repatriate in October 2023?",
    "Why does China send North Korean defectors back?",
    "What happens to defectors who are sent back to North Korea?",
    "Where were the ten North Korean defectors arrested?",
    "What percentage of North Korea's population is malnourished?",
]
INTRO = (
    "**Verbatim** answers only with sentences quoted exactly from the indexed articles, "
    "with the source of each. If the articles don't answer, it says so."
)

# characters that HTML, markdown or LaTeX rendering could give meaning to, each written once as
# a numeric character reference (a second pass over the first one's output would turn the "#"
# of "&#x27;" into "&#35;" and show the reference itself: one escaping step)
_ESCAPE = {c: f"&#{ord(c)};" for c in "&<>\"'\\`*_{}[]()#+!|~$:"}


def esc(text: str) -> str:
    """Escape untrusted text, in one pass, for HTML that may also pass through a markdown
    renderer; what the browser shows is the text itself."""
    return "".join(_ESCAPE.get(c, c) for c in text).replace("\n", "<br>")


def _attr(text: str) -> str:
    return html.escape(text, quote=True).replace("\n", "&#10;")


def error_reply(err: Exception) -> str:
    """A refusal of the user's input in one line: the message as written, its first letter
    raised (``str.capitalize`` would lower-case the rest, the user's own words included)."""
    msg = str(err)
    return f"<b>{esc(msg[:1].upper() + msg[1:])}.</b>"


def confidence_label(a: dict) -> str:
    """The quote's label in words ("likely answers", "may answer", "related, not an answer"),
    set from its calibrated probability by the ask path, with that probability beside it."""
    words = a.get("label") or RELATED
    kind = {LIKELY: "likely", MAY: "may"}.get(words, "related")
    p = a.get("probability")
    pct = "" if p is None else f" ({percent(p)} likely to answer)"
    return f"<span class='vb-rel vb-rel-{kind}'>{esc(words)}</span><span class='vb-prob'>{esc(pct)}</span>"


def citation_text(a: dict) -> str:
    s = a["source"]
    parts = [f"“{a['quote']}”", s["title"] or s["path"]]
    if s["authors"]:
        parts.append(", ".join(s["authors"]))
    for k in ("publisher", "date", "url"):
        if s[k]:
            parts.append(s[k])
    if a.get("page"):
        parts.append(f"p. {int(a['page'])}")
    if not s["url"]:
        parts.append(s["path"])
    return " — ".join(parts[:2]) + (". " + ". ".join(parts[2:]) if len(parts) > 2 else "") + "."


def doc_link(doc_id: str, start: int, end: int) -> str:
    return f"/doc/{urlquote(doc_id)}?s={int(start)}&e={int(end)}#quote"


def page_note(a: dict) -> str:
    return f" · p. {int(a['page'])}" if a.get("page") else ""


def _source_line(src: dict) -> str:
    bits = [f"<b>{esc(src['title'] or src['path'])}</b>"]
    for k in ("publisher", "date"):
        if src[k]:
            bits.append(esc(src[k]))
    return " · ".join(bits)


def render_quote(a: dict, answer: bool = True) -> str:
    q, start = a["quote"], a["start"]
    if answer and a.get("answer_start") is not None:
        s, e = a["answer_start"] - start, a["answer_end"] - start
        body = f"{esc(q[:s])}<mark class='vb-ans'>{esc(q[s:e])}</mark>{esc(q[e:])}"
    else:
        body = esc(q)
    src = a["source"]
    link = doc_link(src["doc_id"], a["start"], a["end"])
    also = ""
    if a["also_in"]:
        others = "; ".join(
            f"<a href='{_attr(doc_link(o['source']['doc_id'], o['start'], o['end']))}' "
            f"target='_blank' rel='noopener'>{_source_line(o['source'])}</a>"
            for o in a["also_in"]
        )
        also = f"<div class='vb-also'>also in: {others}</div>"
    ctx = a["context"]
    context = (
        "<details class='vb-ctx'><summary>Show surrounding sentences</summary>"
        f"<div>{esc(ctx['before'])}<b>{esc(q)}</b>{esc(ctx['after'])}</div></details>"
    )
    return (
        f"<div class='vb-item'><blockquote class='vb-quote'>“{body}”</blockquote>"
        f"<div class='vb-cite'>— <a class='vb-open' href='{_attr(link)}' target='_blank' "
        f"rel='noopener'>{_source_line(src)}</a>{page_note(a)} · {confidence_label(a)} "
        f"<button class='vb-copy' type='button'>Copy citation</button>"
        f"<span class='vb-cite-text'>{esc(citation_text(a))}</span></div>{also}{context}</div>"
    )


def context_line(result: dict) -> str:
    """The one line that says a follow-up was read with an earlier question ("" when not)."""
    f = result.get("follow_up")
    if not f:
        return ""
    return (f"<div class='vb-context'>Read with your earlier question: "
            f"“{esc(f['earlier_question'])}”</div>")


def render_answer(result: dict) -> str:
    """The assistant's reply for one ``ask`` result (``AskResult.to_dict()``): the answers,
    then any related quotes that are not answers, labelled as such."""
    out = context_line(result)
    if result["no_answer"]:
        out += "<div class='vb-none'><b>The sources don't answer this.</b></div>"
        heading = "Closest passages — <i>not answers</i>:"
    else:
        out += "".join(render_quote(a) for a in result["answers"])
        heading = "Related — <i>not answers</i>:"
    if result["closest"]:
        out += (
            f"<hr><div class='vb-closest-label'>{heading}</div><div class='vb-closest'>"
            + "".join(render_quote(a, answer=False) for a in result["closest"])
            + "</div>"
        )
    return out


DOC_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; form-action 'none'"


def render_document(text: str, source: dict, start: int | None, end: int | None) -> str:
    """A whole article as a standalone page, the quoted span marked and scrolled to."""
    if start is not None and end is not None and 0 <= start < end <= len(text):
        body = (f"{html.escape(text[:start])}<mark id='quote'>{html.escape(text[start:end])}</mark>"
                f"{html.escape(text[end:])}")
    else:
        body = html.escape(text)
    meta_rows = "".join(
        f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in [
            ("Title", source["title"]), ("Publisher", source["publisher"]), ("Date", source["date"]),
            ("Authors", ", ".join(source["authors"])), ("URL", source["url"]),
            ("File", ", ".join(source["paths"]) or source["path"]), ("Document id", source["doc_id"]),
        ] if v
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(source['title'] or source['path'])} — Verbatim</title>
<style>
body{{font:16px/1.6 Georgia,serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{font:14px sans-serif;border-collapse:collapse;margin-bottom:1.5rem}}
th{{text-align:left;padding-right:1rem;color:#666;vertical-align:top}}
pre{{white-space:pre-wrap;font:inherit}}
mark{{background:#ffe58a;padding:.1em 0;scroll-margin-top:40vh}}
</style></head><body>
<h1 style="font-size:1.4rem">{html.escape(source['title'] or source['path'])}</h1>
<table>{meta_rows}</table>
<pre id="doc">{body}</pre></body></html>"""


CSS = """
.vb-quote{border-left:4px solid #c9a227;margin:.2em 0 .4em;padding:.2em .8em;font-size:1.05em;white-space:pre-wrap}
.vb-ans{background:#ffe58a;font-weight:600;padding:0 .1em}
.vb-cite{font-size:.9em;color:#444}
.vb-also{font-size:.85em;color:#555;margin-top:.2em}
.vb-ctx summary{cursor:pointer;font-size:.85em;color:#555}
.vb-item{margin-bottom:1em}
.vb-copy{font-size:.8em;margin-left:.5em;padding:0 .5em;border:1px solid #aaa;border-radius:4px;cursor:pointer}
.vb-closest{opacity:.75}
.vb-cite-text{display:none}
.vb-context{font-size:.9em;color:#555;margin:0 0 .4em}
.vb-closest-label{font-size:.9em;color:#7a4b00;margin:.3em 0}
.vb-rel{font-weight:600;padding:0 .3em;border-radius:3px}
.vb-rel-likely{color:#1b5e20;background:#e6f4ea}
.vb-rel-may{color:#7a4b00;background:#fff4d6}
.vb-rel-related{color:#555;background:#eee}
.vb-prob{font-size:.85em;color:#666;margin-left:.2em}
"""

# One delegated listener: a "Copy citation" button copies the hidden citation text of its
# answer (the chat's sanitizer strips data-* attributes, so the text lives in a span).
HEAD_JS = """<script>
document.addEventListener('click', function (ev) {
  var b = ev.target.closest && ev.target.closest('button.vb-copy');
  if (!b) return;
  var item = b.closest('.vb-item');
  var src = item && item.querySelector('.vb-cite-text');
  var text = src ? src.textContent : '';
  function done() { b.textContent = 'Copied'; setTimeout(function(){ b.textContent = 'Copy citation'; }, 1500); }
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () { fallback(); });
  } else { fallback(); }
  function fallback() {
    var t = document.createElement('textarea'); t.value = text; document.body.appendChild(t);
    t.select(); try { document.execCommand('copy'); done(); } finally { t.remove(); }
  }
});
</script>"""




MAX_HISTORY = 50  # earlier turns a client may send, each checked (a follow-up reads the last)


def parse_history(history: object) -> tuple[Turn, ...]:
    """A client's conversation so far, as ``Turn``s; BadQuestion (one line) when malformed."""
    if history is None or history == "":
        return ()
    if not isinstance(history, (list, tuple)):
        raise BadQuestion("history must be a list of earlier turns (questions, or the \"turn\" objects "
                          "earlier replies gave)")
    try:
        turns = tuple(Turn.from_dict(t) for t in list(history)[-MAX_HISTORY:])
    except TypeError as err:
        raise BadQuestion(str(err)) from None
    for t in turns:
        if max(len(t.question), len(t.read_as), len(t.answer)) > 4 * MAX_QUESTION_CHARS:
            raise BadQuestion("an earlier turn in history is too long")
    return turns


class WebApp:
    """Handlers bound to one service; no module-level mutable state."""

    def __init__(self, service: Verbatim, allow_upload: bool = False):
        self.service = service
        self.allow_upload = allow_upload
        self._lock = threading.Lock()

    # -- adding articles (only with --allow-upload)

    def add_article(self, file_path: str | None, pasted: str, name: str, title: str, publisher: str,
                    date: str, url: str, overwrite: bool) -> str:
        """Save an uploaded file or pasted text into the corpus and index it; one-line result."""
        from .corpus import normalise_date
        from .manage import add_file

        if not self.allow_upload:
            return "Adding articles is switched off (start the app with --allow-upload)."
        pasted = pasted or ""
        if bool(file_path) == bool(pasted.strip()):
            return "Choose a file **or** paste text (one of the two)."
        if date and not normalise_date(date):
            return "The date must look like 2024-08-23 (or 2024-08, or 2024)."
        meta = {"title": title.strip(), "publisher": publisher.strip(),
                "date": normalise_date(date) if date else "", "url": url.strip()}
        try:
            if file_path:
                data = Path(file_path).read_bytes()
                fname = name.strip() or Path(file_path).name
            else:
                data = pasted.encode("utf-8")
                fname = name.strip() or (title.strip() or "pasted-article")
                if not Path(fname).suffix:
                    fname += ".txt"
            with self._lock:
                saved = add_file(self.service.corpus_dir, fname, data, meta, overwrite=bool(overwrite))
                report = self.service.sync(only=[saved])
        except VerbatimError as err:
            return f"Not added: {esc(str(err))}."
        except OSError as err:
            return f"Not added: the file could not be read ({esc(err.strerror or str(err))})."
        return f"Added **{esc(saved.name)}** and updated the index: {esc(report.summary())}."

    # -- data for the side panel

    def documents(self) -> list[dict]:
        try:
            return self.service.index().documents()
        except VerbatimError:
            return []

    def doc_choices(self) -> list[tuple[str, str]]:
        return [
            (f"{d['title'][:80]} · {d['publisher'] or '?'} · {d['date'] or 'undated'} · "
             f"{d['passages']} passages", d["doc_id"])
            for d in self.documents()
        ]

    def status_line(self) -> str:
        try:
            m = self.service.index().manifest
        except VerbatimError as err:
            return str(err)
        return (f"{m.counts['documents']} documents · {m.counts['chunks']} passages · "
                f"index updated {m.created.replace('T', ' ')[:16]}")

    # -- asking

    def ask_json(self, question: str, top: int = 3, sources: list[str] | None = None,
                 date_from: str = "", date_to: str = "", history: list | None = None) -> dict:
        """The API endpoint: same JSON as ``qa ask --json``; ``history``: the conversation's
        earlier turns, oldest first (questions, or the ``turn`` objects earlier replies gave)."""
        try:
            top = int(top)
        except (TypeError, ValueError):
            raise BadQuestion(f"top must be a whole number from 1 to 50 (got {top!r})") from None
        if not 1 <= top <= 50:
            raise BadQuestion(f"top must be a whole number from 1 to 50 (got {top})")
        n_docs = self.service.index().manifest.counts["documents"]
        chosen = None if not sources or len(set(sources)) >= n_docs else frozenset(sources)
        flt = Filter(doc_ids=chosen, date_from=(date_from or "").strip(), date_to=(date_to or "").strip())
        return self.service.ask(question, top=top, flt=flt, history=parse_history(history)).to_dict()

    def chat(self, message: str, history: list, sources: list[str], date_from: str, date_to: str,
             turns: list | None = None):
        """One chat exchange: yields (chat messages, question box, turns). ``turns``: the
        conversation's earlier turns (``Turn.to_dict()``), what follow-ups are read with."""
        history = list(history or [])
        turns = list(turns or [])
        shown = (message or "").strip()
        history.append({"role": "user", "content": esc(shown[:1000] or "(empty)")})
        history.append({"role": "assistant", "content": "<i>Searching the sources…</i>"})
        yield history, "", turns
        if sources is not None and len(sources) == 0:
            reply = "<b>No sources selected.</b> Tick at least one source in the Sources panel."
        else:
            try:
                result = self.ask_json(message, 3, sources, date_from, date_to, history=turns)
                reply = render_answer(result)
                turns = [result["turn"]]  # what the next question is read with
            except VerbatimError as err:
                reply = error_reply(err)
            except ValueError as err:
                reply = f"<b>{esc(str(err))}</b>"
        history[-1] = {"role": "assistant", "content": reply}
        yield history, "", turns

    def chat_with_status(self, message, history, sources, date_from, date_to, turns=None):
        for hist, box, ts in self.chat(message, history, sources, date_from, date_to, turns):
            yield hist, box, ts, self.status_line()


def build_blocks(web: WebApp):
    import gradio as gr

    def refresh():
        choices = web.doc_choices()
        return gr.update(choices=choices, value=[c[1] for c in choices]), web.status_line()

    with gr.Blocks(title="Verbatim") as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(
                    label="Answers", height=560, elem_id="chat", render_markdown=False,
                    sanitize_html=True, latex_delimiters=[], feedback_options=None,
                    buttons=["copy"],
                )
                with gr.Row():
                    box = gr.Textbox(placeholder="Ask a question about the articles…", show_label=False,
                                     scale=5, elem_id="question", max_length=1000, submit_btn=False)
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                    new_topic = gr.Button("New topic", variant="secondary", scale=1, elem_id="new-topic")
                turns = gr.State([])
                gr.Examples(EXAMPLES, inputs=box, label="Try one of these")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                with gr.Accordion("Sources", open=True):
                    picked = gr.CheckboxGroup(label="Search only these", elem_id="sources")
                    with gr.Row():
                        dfrom = gr.Textbox(label="From date", placeholder="YYYY-MM-DD", elem_id="date-from")
                        dto = gr.Textbox(label="To date", placeholder="YYYY-MM-DD", elem_id="date-to")

                if web.allow_upload:
                    with gr.Accordion("Add an article", open=False, elem_id="upload"):
                        up_file = gr.File(label="File (.txt .md .html .pdf .jsonl, up to 10 MB)",
                                          file_types=[".txt", ".md", ".html", ".htm", ".pdf", ".jsonl"],
                                          type="filepath", elem_id="up-file")
                        up_text = gr.Textbox(label="…or paste the article text", lines=5, elem_id="up-text")
                        up_name = gr.Textbox(label="File name (optional)", elem_id="up-name")
                        with gr.Row():
                            up_title = gr.Textbox(label="Title", elem_id="up-title")
                            up_pub = gr.Textbox(label="Publisher", elem_id="up-publisher")
                        with gr.Row():
                            up_date = gr.Textbox(label="Date", placeholder="YYYY-MM-DD", elem_id="up-date")
                            up_url = gr.Textbox(label="URL", elem_id="up-url")
                        up_over = gr.Checkbox(label="Replace a file with the same name", elem_id="up-overwrite")
                        up_btn = gr.Button("Add to the corpus", elem_id="up-add")
                        up_msg = gr.Markdown(elem_id="up-msg")

                    def add(*a):
                        msg = web.add_article(*a)
                        choices, line = refresh()
                        return msg, choices, line

                    up_btn.click(add, [up_file, up_text, up_name, up_title, up_pub, up_date, up_url, up_over],
                                 [up_msg, picked, status], api_name=False)

        demo.load(refresh, outputs=[picked, status], api_name=False)
        inputs = [box, chat, picked, dfrom, dto, turns]
        outputs = [chat, box, turns, status]
        send.click(web.chat_with_status, inputs, outputs, api_name=False, show_progress="minimal")
        box.submit(web.chat_with_status, inputs, outputs, api_name=False, show_progress="minimal")
        # a new topic: the conversation so far is no longer read with the next question
        new_topic.click(lambda: ([], []), None, [chat, turns], api_name=False)

        def ask(question: str, top: int = 3, history: list | None = None) -> str:
            """Answer with verbatim quotes: the JSON text `qa ask --json` prints.

            `history`: the conversation's earlier turns, oldest first, for a follow-up question
            (each an earlier question, or the `turn` object an earlier reply returned).
            Returned as text, not an object: gradio_client would otherwise take the
            `source.path` fields for files to download.
            """
            try:
                return json.dumps(web.ask_json(question, top, history=history), ensure_ascii=False, indent=2)
            except VerbatimError as err:  # the caller's mistake, told to them: no traceback in the log
                raise gr.Error(str(err), print_exception=False) from err

        gr.api(ask, api_name="ask")
    return demo


def build_app(service: Verbatim, allow_upload: bool = False):
    """A FastAPI app: the Gradio UI at / and the document view at /doc/{doc_id}."""
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    from .manage import MAX_UPLOAD_BYTES

    web = WebApp(service, allow_upload=allow_upload)
    app = FastAPI(title="Verbatim", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/doc/{doc_id}", response_class=HTMLResponse)
    def doc(doc_id: str, s: int | None = None, e: int | None = None):
        headers = {"Content-Security-Policy": DOC_CSP, "X-Content-Type-Options": "nosniff"}
        try:
            idx = service.index()
            text = idx.document_text(doc_id)
            source = idx.sources([doc_id])[doc_id].to_dict()
        except (KeyError, VerbatimError):
            return HTMLResponse("<!doctype html><p>No such document in the index.</p>",
                                status_code=404, headers=headers)
        return HTMLResponse(render_document(text, source, s, e), headers=headers)

    @app.get("/healthz")
    def health():
        return {"ok": True, "status": web.status_line()}

    demo = build_blocks(web)
    return gr.mount_gradio_app(app, demo, path="/", css=CSS, head=HEAD_JS, footer_links=["api"],
                               max_file_size=MAX_UPLOAD_BYTES)


def check_port(host: str, port: int) -> None:
    """A one-line error for a port that cannot be served on (out of range, or in use)."""
    import socket

    if not 1 <= port <= 65535:
        raise VerbatimError(f"--port must be between 1 and 65535 (got {port})")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        raise VerbatimError(f"cannot serve on {host}:{port} ({err.strerror or err}); "
                            "choose another with --port, or stop what is using it") from None


def serve(corpus_dir: Path, index_dir: Path, host: str = "127.0.0.1", port: int = 7860,
          allow_upload: bool = False, model: str | None = None) -> None:
    import uvicorn

    check_port(host, port)  # before the index is built or "running at" is printed
    from .config import IndexSettings

    settings, named = IndexSettings.chosen(model=model)
    service = Verbatim(corpus_dir, index_dir, settings=settings, named=named)
    built = service.ensure_index(log=print)
    if built is not None:
        print(f"built the index: {built.summary()}")
    service.index()  # the index's model is the one questions use (a different --model: one line)
    service.query_encoder  # load the model before the first question
    app = build_app(service, allow_upload=allow_upload)
    if allow_upload:
        print(f"uploads are on: new articles are saved into {corpus_dir}")
    print(f"Verbatim is running at http://{host}:{port}/  (Ctrl-C to stop)")
    # open streams (a browser tab's or an API client's heartbeat) would hold a graceful shutdown
    # for ever: after 3 s they are cancelled, which is the shutdown, not an error to log
    logging.getLogger("uvicorn.error").addFilter(_not_cancelled)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)


def _not_cancelled(record: logging.LogRecord) -> bool:
    """Drop the log records of streams cancelled at shutdown."""
    import asyncio

    return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))

