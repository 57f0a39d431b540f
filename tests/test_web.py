"""The browser app: pure renderers, the gradio_client API, and a real headless Chromium."""

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa.web import error_reply, esc, render_answer, render_document

from .conftest import CORPUS, REPO
from .test_conversation import FIRST, SECOND, SECOND_ANSWER

ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

HOSTILE = """Title: Smuggling on the Yalu

Brokers on the Yalu river charged 300 dollars per crossing <script>window.__xss = 1; alert(1)</script> according to the report.
The broker network used <img src=x onerror="window.__xss = 2; alert(2)"> safe houses in Dandong.
Investigators found <iframe src="javascript:alert(3)"></iframe> ledgers listing 42 crossings.
The report is at [the ledger](javascript:alert(4)) and **bold** $x$ claims.
"""


def test_esc_neutralises_html_and_markdown():
    out = esc('<script>alert(1)</script> [a](javascript:x) **b** $c$ "q"')
    assert "<" not in out.replace("<br>", "") and "[" not in out and "(" not in out
    assert "*" not in out and "$" not in out and '"' not in out


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_esc_is_one_step_the_browser_reads_back_exactly(text):
    import html as html_mod

    out = esc(text)
    assert html_mod.unescape(out.replace("<br>", "\n")) == text  # what is shown is the text
    assert not set(out.replace("<br>", "")) & set("<>\"'`*_[]()$")
    import re

    assert re.fullmatch(r"(?:[^&]|&#\d+;)*", out)  # every "&" starts one decimal reference


def test_error_replies_keep_the_users_words_as_typed():
    from qa.errors import BadQuestion

    out = error_reply(BadQuestion("dates must look like 2024-08-23 (got 'Next MONDAY')"))
    assert out.startswith("<b>Dates must") and "Next MONDAY" in out.replace("&#39;", "'")


def test_render_answer_no_answer_labels_closest_as_not_answers():
    a = {"quote": "A <b>sentence</b>.", "start": 10, "end": 28, "score": 0.2, "answer": None,
         "answer_start": None, "answer_end": None, "also_in": [],
         "context": {"before": "x", "after": "y", "start": 9, "end": 29},
         "source": {"doc_id": "d1", "path": "corpus/a.txt", "title": "T", "publisher": "P",
                    "date": "2020", "url": "", "authors": [], "paths": ["corpus/a.txt"]}}
    html = render_answer({"no_answer": True, "answers": [], "closest": [{**a, "label": "related, not an answer",
                                                                         "probability": 0.12}]})
    assert "don't answer this" in html and "not answers" in html
    assert "<b>sentence</b>" not in html and "&#60;b&#62;sentence&#60;/b&#62;" in html
    assert "vb-ans" not in html
    assert "related, not an answer" in html and "12% likely" in html and "likely answers" not in html


def test_render_document_marks_span_and_escapes():
    src = {"doc_id": "d", "path": "p.txt", "title": "<T>", "publisher": "", "date": "", "url": "",
           "authors": [], "paths": ["p.txt"]}
    page = render_document("ab<script>cd</script>ef", src, 2, 10)
    assert "<mark id='quote'>&lt;script&gt;</mark>" in page and "<script>" not in page


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, service):
        import uvicorn

        from qa.web import build_app

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        cfg = uvicorn.Config(build_app(service), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.1)

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def app_url(real_service):
    srv = _Server(real_service)
    yield srv.url
    srv.close()


@pytest.fixture(scope="module")
def hostile_url(tmp_path_factory):
    from qa import Verbatim
    from qa.config import IndexSettings

    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(CORPUS, root / "corpus")
    (root / "corpus" / "hostile.txt").write_text(HOSTILE)
    v = Verbatim(root / "corpus", root / "index", settings=IndexSettings(model="hashing-256"), root=root)
    v.sync()
    srv = _Server(v)
    yield srv.url
    srv.close()


@pytest.mark.slow
def test_gradio_client_ask_returns_cli_json(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    out = json.loads(client.predict(
        "How many North Korean refugees did China forcibly repatriate in October 2023?", 3, api_name="/ask"))
    assert out["no_answer"] is False and "600" in out["answers"][0]["quote"]
    first = out["answers"][0]
    assert (REPO / first["source"]["path"]).read_text()[first["start"]:first["end"]] == first["quote"]
    out = json.loads(client.predict("Who won the 2022 FIFA World Cup?", 3, api_name="/ask"))
    assert out["no_answer"] is True
    with pytest.raises(Exception, match="please type a question"):
        client.predict("   ", 3, api_name="/ask")
    for bad in (0, 51, -3):  # our message, not Python's
        with pytest.raises(Exception, match="top must be a whole number from 1 to 50"):
            client.predict("Who is Tim Peters?", bad, api_name="/ask")
    # a follow-up with the conversation so far: the turn an earlier reply gave, or just its question
    first = json.loads(client.predict(FIRST, 3, api_name="/ask"))
    for history in ([first["turn"]], [FIRST]):
        out = json.loads(client.predict(SECOND, 3, history, api_name="/ask"))
        assert out["follow_up"]["earlier_question"] == FIRST and SECOND_ANSWER in out["answers"][0]["quote"]
    # alone, it names nothing to look for: told so, not given a quote
    with pytest.raises(Exception, match="names no one and nothing to look for"):
        client.predict(SECOND, 3, api_name="/ask")
    with pytest.raises(Exception, match="each earlier turn must be a question"):
        client.predict(SECOND, 3, [{"answer": "x"}], api_name="/ask")


def test_a_rejected_question_leaves_no_traceback_in_the_server_log(tmp_path):
    """A running `qa serve` answers a bad question with its one-line reason and logs nothing."""
    import socket
    import subprocess
    import sys
    import urllib.request

    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    qa = str(Path(sys.executable).with_name("qa"))
    srv = subprocess.Popen([qa, "--corpus", str(CORPUS), "--index", str(tmp_path / "idx"), "--model", "hashing-256",
                            "serve", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        client = Client(url, verbose=False)
        for bad in ("   ", "x" * 2000):
            with pytest.raises(Exception, match="please type a question|limited to 1,000 characters"):
                client.predict(bad, 3, api_name="/ask")
    finally:
        srv.terminate()
        _, err = srv.communicate(timeout=30)
    assert "Traceback" not in err and "gradio.exceptions.Error" not in err, err[-2000:]


@pytest.fixture(scope="module")
def browser():
    pw_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is missing: `make test` installs it (apt-get install chromium)")
    with pw_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _ask(page, url, question):
    page.goto(url)
    # the Sources list is filled by the app's load event: the page is hydrated and connected
    page.wait_for_selector("#sources label", timeout=60000)
    page.fill("#question textarea", question)
    page.click("#ask")
    shown = "(q) => document.querySelector('#chat').innerText.includes(q)"
    try:
        page.wait_for_function(shown, arg=question[:25], timeout=10000)
    except Exception:  # the click landed before the handlers were attached: once more
        page.fill("#question textarea", question)
        page.click("#ask")
        page.wait_for_function(shown, arg=question[:25], timeout=30000)


@pytest.mark.slow
def test_browser_question_quote_citation_and_document_view(browser, app_url):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1300, "height": 950})
    page = ctx.new_page()
    _ask(page, app_url, "How many North Korean refugees did China forcibly repatriate in October 2023?")
    page.wait_for_selector("#chat .vb-quote", timeout=60000)
    first = page.locator("#chat .vb-item").first
    assert "600 North Korean refugees" in first.locator(".vb-quote").inner_text()
    assert first.locator("mark.vb-ans").inner_text() == "600"
    assert "International Christian Concern" in first.locator(".vb-cite").inner_text()
    assert "2024-08-23" in first.locator(".vb-cite").inner_text()
    # what the browser shows is the article's text, character for character (one escaping step:
    # no "&#x27;" where the article has an apostrophe)
    corpus_text = "\n".join(f.read_text(encoding="utf-8") for f in CORPUS.glob("*.txt"))
    for shown in page.locator("#chat .vb-quote").all_inner_texts():
        assert shown.startswith("“") and shown.endswith("”") and shown[1:-1] in corpus_text, shown
    # the quote's calibrated probability, in words
    assert first.locator(".vb-rel").inner_text() == "likely answers"
    assert "likely to answer" in first.locator(".vb-prob").inner_text()
    page.screenshot(path=str(ARTIFACTS / "chat-answer.png"))
    # context is one click away
    first.locator("details summary").click()
    assert "inflict forced deportation" in first.locator("details").inner_text()
    # the citation opens the document view, sentence highlighted and scrolled into view
    with ctx.expect_page() as new:
        first.locator("a.vb-open").click()
    doc = new.value
    doc.wait_for_load_state()
    mark = doc.locator("mark#quote")
    assert mark.inner_text().startswith("In October 2023, the Transitional Justice Working Group")
    assert "Publisher" in doc.locator("table").inner_text()
    doc.wait_for_function("() => { const r = document.querySelector('mark#quote').getBoundingClientRect();"
                          " return r.top >= 0 && r.bottom <= window.innerHeight; }", timeout=10000)
    doc.screenshot(path=str(ARTIFACTS / "document-view.png"))
    # no answer: a clear reply, then the closest passages, labelled
    _ask(page, app_url, "Who won the 2022 FIFA World Cup?")
    page.wait_for_selector("#chat .vb-none", timeout=60000)
    text = page.locator("#chat").inner_text()
    assert "The sources don't answer this." in text and "not answers" in text
    page.screenshot(path=str(ARTIFACTS / "chat-no-answer.png"))
    # an on-topic question the articles do not answer: refused, its closest passages not answers
    before = page.locator("#chat .vb-none").count()
    page.fill("#question textarea", "How many of the 600 repatriated refugees were later released?")
    page.click("#ask")
    page.wait_for_function(f"() => document.querySelectorAll('#chat .vb-none').length > {before}", timeout=60000)
    last = page.locator("#chat .vb-none").last.locator("xpath=..")
    labels = last.locator(".vb-closest .vb-rel").all_inner_texts()
    assert labels and set(labels) == {"related, not an answer"}
    assert "TJWG" in last.locator(".vb-closest").inner_text() and last.locator("mark.vb-ans").count() == 0
    page.screenshot(path=str(ARTIFACTS / "chat-near-unanswerable.png"))
    # a quote that runs on over a paragraph break ("…by Chinese authorities:" and what it
    # introduces) is shown as the article has it, line breaks included
    before = page.locator("#chat .vb-quote").count()
    page.fill("#question textarea", "What did Barnabas Aid find about the treatment of North Koreans in China?")
    page.click("#ask")
    page.wait_for_function(f"() => document.querySelectorAll('#chat .vb-quote').length > {before}", timeout=60000)
    shown = page.locator("#chat .vb-quote").nth(before).inner_text()
    run = shown[1:-1]
    assert "Chinese authorities:\n\n\u201cInvestigators documented" in run and run in corpus_text, shown
    ctx.close()


@pytest.mark.slow
def test_browser_follow_up_reads_the_earlier_question_until_a_new_topic(browser, app_url):
    ctx = browser.new_context(viewport={"width": 1300, "height": 950})
    page = ctx.new_page()
    _ask(page, app_url, FIRST)
    page.wait_for_function("() => document.querySelectorAll('#chat .vb-item').length > 0", timeout=60000)
    n = page.locator("#chat .vb-item").count()
    page.fill("#question textarea", SECOND)
    page.click("#ask")
    page.wait_for_function(f"() => document.querySelectorAll('#chat .vb-item').length > {n}", timeout=60000)
    line = page.locator("#chat .vb-context").last
    assert line.inner_text() == f"Read with your earlier question: “{FIRST}”"
    reply = line.locator("xpath=..")
    assert SECOND_ANSWER in reply.locator(".vb-quote").first.inner_text()
    line.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "chat-follow-up.png"))
    # a new topic: the conversation is cleared, and the same question is read alone, where it
    # names nothing to look for: the reply says so, with no quote and no earlier question
    page.click("#new-topic")
    page.wait_for_function("() => document.querySelectorAll('#chat .vb-item').length === 0", timeout=30000)
    page.fill("#question textarea", SECOND)
    page.click("#ask")
    page.wait_for_function("() => document.querySelector('#chat')?.innerText.includes('nothing to look for')",
                           timeout=60000)
    assert page.locator("#chat .vb-context").count() == 0 and page.locator("#chat .vb-quote").count() == 0
    # a question of its own is answered alone: no "read with your earlier question" line
    page.fill("#question textarea", "What has China done to South Korean missionaries?")
    page.click("#ask")
    page.wait_for_selector("#chat .vb-quote", timeout=60000)
    assert page.locator("#chat .vb-context").count() == 0
    ctx.close()


@pytest.mark.slow
def test_browser_copy_citation_and_source_filter(browser, app_url):
    ctx = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    # record what the page hands to the clipboard (headless clipboards are unreliable to read back)
    ctx.add_init_script("""window.__copied = [];
      if (navigator.clipboard) { const w = navigator.clipboard.writeText.bind(navigator.clipboard);
        navigator.clipboard.writeText = (t) => { window.__copied.push(t); return w(t); }; }""")
    page = ctx.new_page()
    _ask(page, app_url, "What percentage of North Korea's population is malnourished?")
    page.wait_for_selector("#chat .vb-copy", timeout=60000)
    page.locator("#chat .vb-copy").first.click()
    page.wait_for_function("() => document.querySelector('#chat .vb-copy').textContent === 'Copied'")
    copied = page.evaluate("window.__copied.join('\\n')")
    assert "41 % of the population is malnourished" in copied and "Danish European Mission" in copied
    # restrict to one source: the answer must come from it
    page.locator("#sources label", has_text="China must stop sending").click()  # untick one
    for label in page.locator("#sources label").all():
        if "Christian Post" not in label.inner_text():
            box = label.locator("input")
            if box.is_checked():
                box.uncheck()
    before = page.locator("#chat .vb-item, #chat .vb-none").count()
    page.fill("#question textarea", "Where were the defectors arrested?")
    page.click("#ask")
    page.wait_for_function(
        f"() => document.querySelectorAll('#chat .vb-item, #chat .vb-none').length > {before}",
        timeout=60000)
    cites = page.locator("#chat .vb-cite").all_inner_texts()[-3:]
    assert cites and all("Christian Post" in c for c in cites)
    # a title and quotes with ASCII apostrophes and quotation marks are shown as written
    assert all("Face 'Imminent Threat' of Repatriation" in c for c in cites)
    assert "&#" not in page.locator("#chat").inner_text()
    page.locator("#chat .vb-copy").last.click()
    page.wait_for_function("() => window.__copied.length > 1")
    assert "Face 'Imminent Threat'" in page.evaluate("window.__copied[window.__copied.length - 1]")
    ctx.close()


@pytest.mark.slow
def test_hostile_article_and_question_render_inert(browser, hostile_url):
    ctx = browser.new_context()
    page = ctx.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _ask(page, hostile_url, "How much did brokers on the Yalu river charge per crossing? <img src=x onerror=alert(5)>")
    page.wait_for_selector("#chat .vb-item", timeout=60000)
    before = page.locator("#chat .vb-item").count()
    page.fill("#question textarea", "What did the broker network use in Dandong? Investigators found ledgers?")
    page.click("#ask")
    page.wait_for_function(f"() => document.querySelectorAll('#chat .vb-item').length > {before}",
                           timeout=60000)
    page.wait_for_timeout(500)
    chat = page.locator("#chat")
    text = chat.inner_text()
    assert "<script>window.__xss = 1; alert(1)</script>" in text  # shown as text
    assert "onerror=alert(5)" in text  # the question, shown as text
    assert chat.locator("script, iframe, img[src='x'], img[onerror]").count() == 0
    assert chat.locator("a[href^='javascript']").count() == 0
    assert page.evaluate("window.__xss === undefined")
    # the document view of the hostile article is inert too
    href = chat.locator("a.vb-open", has_text="Smuggling on the Yalu").first.get_attribute("href")
    page.goto(hostile_url.rstrip("/") + href)
    # (which quotes the chat shows depends on ranking; the document view shows every line)
    doc_text = page.locator("#doc").inner_text()
    for raw in ("<script>window.__xss", 'onerror="window.__xss = 2', '<iframe src="javascript:alert(3)">',
                "javascript:alert(4)"):
        assert raw in doc_text
    assert page.locator("#doc script, #doc iframe, #doc img, #doc a[href^='javascript']").count() == 0
    assert page.evaluate("window.__xss === undefined")
    assert dialogs == []
    page.screenshot(path=str(ARTIFACTS / "hostile.png"))
    ctx.close()


@pytest.mark.slow
def test_running_app_picks_up_a_new_index_without_restart(tmp_path):
    import urllib.request

    from gradio_client import Client

    from qa import Verbatim
    from qa.config import IndexSettings

    shutil.copytree(CORPUS, tmp_path / "corpus")
    settings = IndexSettings(model="hashing-256")
    app_side = Verbatim(tmp_path / "corpus", tmp_path / "index", settings=settings, root=tmp_path)
    app_side.sync()
    srv = _Server(app_side)
    try:
        health = lambda: json.loads(urllib.request.urlopen(srv.url + "healthz").read())["status"]
        assert health().startswith("5 documents")
        client = Client(srv.url, verbose=False)
        q = "How many goats did the Rason cooperative raise?"
        before = json.loads(client.predict(q, 3, api_name="/ask"))
        assert not any("goats" in a["quote"] for a in before["answers"] + before["closest"])
        # another process (here: another service object, as `qa index` would be) updates the index
        (tmp_path / "corpus" / "goats.txt").write_text("The Rason cooperative raised 450 goats in 2022.")
        Verbatim(tmp_path / "corpus", tmp_path / "index", settings=settings, root=tmp_path).sync()
        after = json.loads(client.predict(q, 3, api_name="/ask"))
        top = (after["answers"] or after["closest"])[0]
        assert "450 goats" in top["quote"] and top["source"]["path"] == "corpus/goats.txt"
        assert health().startswith("6 documents")
    finally:
        srv.close()


@pytest.mark.parametrize("top", ["abc", None, 2.5e9, "0"])
def test_api_top_is_checked_before_anything_runs(top):
    from qa.errors import BadQuestion
    from qa.web import WebApp

    app = WebApp.__new__(WebApp)  # no service: the check comes first
    with pytest.raises(BadQuestion, match="top must be a whole number from 1 to 50"):
        app.ask_json("Who is Tim Peters?", top)


@pytest.mark.slow
def test_parallel_askers_during_100_updates_meet_no_error_and_only_verbatim_quotes(tmp_path):
    """The API under load while the index is updated 100 times (as uploads and `qa watch` do)."""
    from gradio_client import Client

    from qa import Verbatim
    from qa.config import IndexSettings

    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    growing = corpus / "growing.txt"
    growing.write_text("Dispatches from the Tumen river.\n")
    settings = IndexSettings(model="hashing-256")
    writer = Verbatim(corpus, tmp_path / "index", settings=settings, root=tmp_path)
    writer.sync()
    srv = _Server(Verbatim(corpus, tmp_path / "index", settings=settings, root=tmp_path))
    questions = ["How many refugees crossed the Tumen river in dispatch 7?",
                 "How many North Korean refugees did China forcibly repatriate in October 2023?",
                 "Who chairs the North Korean Freedom Coalition?"]
    done = threading.Event()
    errors: list[str] = []
    answers: list[dict] = []

    def ask_loop(n):
        client = Client(srv.url, verbose=False)
        i = 0
        while not done.is_set():
            try:
                out = json.loads(client.predict(questions[(i + n) % 3], 3, api_name="/ask"))
                answers.append(out)
            except Exception as e:  # every failure counts
                errors.append(f"{type(e).__name__}: {e}")
            i += 1

    askers = [threading.Thread(target=ask_loop, args=(n,)) for n in range(4)]
    try:
        for t in askers:
            t.start()
        for k in range(100):  # append a dispatch: earlier text, and so earlier offsets, stay valid
            with growing.open("a") as fh:
                fh.write(f"Dispatch {k}: {k * 3} refugees crossed the Tumen river near Hoeryong.\n")
            writer.sync(only=[growing])
            deadline = time.time() + 60  # at least three asks per update, all during the updates
            while len(answers) + len(errors) < 3 * (k + 1) and time.time() < deadline:
                time.sleep(0.01)
        asked_during = len(answers) + len(errors)
        done.set()
        for t in askers:
            t.join(300)
    finally:
        done.set()
        srv.close()
    assert errors == [] and asked_during >= 300
    final = {f"corpus/{f.name}": f.read_text(encoding="utf-8") for f in corpus.glob("*.txt")}
    for out in answers:
        for q in out["answers"] + out["closest"]:
            assert final[q["source"]["path"]][q["start"]:q["end"]] == q["quote"]
