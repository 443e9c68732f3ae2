"""examples/demo.py: the model side (no Gradio needed), the app through gradio_client against a
server started here on a free localhost port, and the page in headless Chromium.

Skips, each with its reason: the server tests without the 'demo' extra (Gradio); the
browser test without selenium, or without Debian's chromium and chromium-driver.
TINYGRAD_LLM_ARTIFACTS=DIR keeps the browser test's screenshots in DIR (default: the test's
temporary directory); TINYGRAD_LLM_DEMO_CKPT=DIR serves that checkpoint instead of the tiny
one made here (the screenshots in docs/ are of the Quickstart's checkpoint).
"""
import importlib.util
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import tinygrad_llm as tg
from tinygrad_llm import GPT, GPTConfig, Tensor, no_grad
from tinygrad_llm.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from tinygrad_llm.generate import generate_text
from tinygrad_llm.tokenizer import BPETokenizer, CharTokenizer

from conftest import write_tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "demo.py"
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks? <It is the east>\n& Juliet is the sun.\n"


@pytest.fixture(scope="module")
def demo_mod():
    spec = importlib.util.spec_from_file_location("demo_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # (its dataclass looks itself up there)
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules[spec.name]


def tiny_model(tok, block_size=32, n_layer=2):
    tg.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=n_layer, n_head=2, n_embd=16))


@pytest.fixture(scope="module")
def demo(demo_mod):
    tok = CharTokenizer.from_text(TEXT)
    return demo_mod.Demo(tiny_model(tok), tok, {"source": "made in the test"})


# ----------------------------------------------------------------------------- model side

@pytest.mark.parametrize("prompt, message", [
    ("", "the prompt is empty"),
    ("ROMEO: zzz", "cannot encode the prompt: character 'z'"),
    ("R" * 33, "the prompt is 33 tokens long, but this model reads at most 32"),
])
def test_bad_prompts_get_one_readable_line(demo, demo_mod, prompt, message):
    with pytest.raises(demo_mod.InputError, match=message) as e:
        demo.encode(prompt)
    assert "\n" not in str(e.value)


def test_analyse_gives_the_model_read_out_surprisal_and_next_token(demo):
    prompt = "ROMEO:\nBut soft"
    a = demo.analyse(prompt)
    ids = demo.tokenizer.encode(prompt)
    T = len(ids)
    assert a.ids == ids and "".join(a.texts) == prompt
    with no_grad():
        logits, _, att = demo.model(Tensor(np.asarray([ids])), return_attention=True)
    assert a.attention.shape == (2, 2, T, T)
    np.testing.assert_array_equal(a.attention, np.stack([w.numpy()[0] for w in att]))
    logits = logits.numpy()[0].astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert math.isnan(a.surprisal[0])
    np.testing.assert_allclose(a.surprisal[1:], -logp[np.arange(T - 1), ids[1:]] / np.log(2), rtol=1e-5)
    np.testing.assert_allclose(a.next_probs, np.exp(logp[-1]), rtol=1e-5)
    top = demo.top_next(a)
    probs = list(top.values())
    assert len(top) == 20 and probs == sorted(probs, reverse=True)
    assert probs[0] == pytest.approx(a.next_probs.max())


def test_weights_select_a_head_or_the_mean(demo, demo_mod):
    a = demo.analyse("But soft")
    np.testing.assert_array_equal(demo.weights(a, 1, 0), a.attention[1, 0])
    np.testing.assert_allclose(demo.weights(a, 1, demo_mod.AVERAGE), a.attention[1].mean(0))
    for layer, head in [(2, 0), (0, 2), (0, -2), (0.5, 0)]:
        with pytest.raises(demo_mod.InputError, match="layer|head"):
            demo.weights(a, layer, head)


def test_labels_show_whitespace_and_are_distinct(demo_mod):
    assert demo_mod.visible(" a\n\t\x01") == "\u00b7a\u21b5\u21e5\\x01"
    assert demo_mod.visible("") == "\u2205"
    assert demo_mod.distinct(["a", "\ufffd", "\ufffd"], [5, 7, 9]) == ["a", "\ufffd #7", "\ufffd #9"]


def test_surprisal_html_escapes_and_colours_each_token(demo, demo_mod):
    a = demo.analyse("<It is the east>")
    page = demo_mod.surprisal_html(a)
    assert page.count('class="tok"') == len(a.ids)
    assert "&lt;" in page and "<It" not in page
    bits = [float(s.split('"')[0]) for s in page.split('data-bits="')[1:]]
    np.testing.assert_allclose(bits[1:], a.surprisal[1:], atol=1e-4)
    assert "perplexity" in page


def test_sampling_args_map_the_controls(demo_mod):
    args = demo_mod.sampling_args(10, 0.5, 0, 1.0, 1.1, -1)
    assert args == dict(max_new_tokens=10, temperature=0.5, top_k=None, top_p=None, repetition_penalty=1.1, seed=None)
    assert demo_mod.sampling_args(10.0, 1, 5, 0.9, 1, 7.0)["seed"] == 7
    for bad, match in [((0, 1, 0, 1, 1, 1), "at least 1"), ((10, 1, 0, 1, 1, -5), "seed"),
                       ((10, float("nan"), 0, 1, 1, 1), "temperature"), ((2.5, 1, 0, 1, 1, 1), "whole number"),
                       ((10, "hot", 0, 1, 1, 1), "temperature")]:
        with pytest.raises(demo_mod.InputError, match=match):
            demo_mod.sampling_args(*bad)


def test_stream_yields_growing_text_that_generate_text_gives(demo):
    parts = list(demo.stream("ROMEO:", max_new_tokens=12, temperature=1.0, top_k=0, seed=3))
    assert len(parts) > 1 and all(b.startswith(a) and len(b) > len(a) for a, b in zip(parts, parts[1:]))
    want = generate_text(demo.model, demo.tokenizer, "ROMEO:", max_new_tokens=12, temperature=1.0, seed=3)
    assert parts[-1] == "ROMEO:" + want
    assert list(demo.stream("ROMEO:", max_new_tokens=12, temperature=1.0, top_k=0, seed=3))[-1] == parts[-1]


def test_stream_passes_generate_errors_and_stops_at_the_stop_string(demo):
    with pytest.raises(ValueError, match="repetition_penalty"):
        list(demo.stream("ROMEO:", max_new_tokens=5, repetition_penalty=0.0))
    full = list(demo.stream("ROMEO:", max_new_tokens=30, temperature=1.0, seed=1))[-1]
    stop = full[len("ROMEO:") + 4:len("ROMEO:") + 6]
    cut = list(demo.stream("ROMEO:", max_new_tokens=30, temperature=1.0, seed=1, stop=stop))[-1]
    assert full.startswith(cut) and stop not in cut[len("ROMEO:"):]


def test_closing_the_stream_ends_the_worker(demo, monkeypatch):
    """The Stop button closes the generator; the worker thread must then stop drawing tokens."""
    drawn = []
    decode = demo.tokenizer.decode
    monkeypatch.setattr(demo.tokenizer, "decode", lambda ids: drawn.append(1) or decode(ids))
    gen = demo.stream("ROMEO:", max_new_tokens=100_000, temperature=1.0, seed=0)
    next(gen)
    gen.close()
    deadline = time.monotonic() + 10
    while any(t.name == "demo-generate" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "demo-generate" for t in threading.enumerate())
    n = len(drawn)
    time.sleep(0.1)
    assert len(drawn) == n < 1000


def test_heatmap_figure_masks_the_future_and_labels_the_tokens(demo, demo_mod):
    pytest.importorskip("matplotlib", reason="the heatmap needs matplotlib (the 'demo' extra)")
    a = demo.analyse("But soft")
    fig = demo_mod.heatmap_figure(demo.weights(a, 0, 0), a.labels, "layer 0, head 0")
    ax = fig.axes[0]
    img = ax.get_images()[0].get_array()
    T = len(a.ids)
    assert img.mask[np.triu_indices(T, 1)].all() and not img.mask[np.tril_indices(T)].any()
    assert [t.get_text() for t in ax.get_xticklabels()] == a.labels == [t.get_text() for t in ax.get_yticklabels()]
    assert ax.get_title() == "layer 0, head 0"


def test_hf_directory_with_a_byte_level_tokenizer(demo_mod, tmp_path):
    """--hf: GPT-2's files; tokens that are part of a character show as U+FFFD, the bytes add up."""
    tg.manual_seed(0)
    tg.save_gpt2(GPT(GPTConfig(vocab_size=264, block_size=16, n_layer=1, n_head=2, n_embd=8)), tmp_path)
    write_tiny_tokenizer(tmp_path)
    model, tok, source = demo_mod.load(demo_mod.parse(["--hf", str(tmp_path)]))
    assert isinstance(tok, BPETokenizer) and source == {"source": f"Hugging Face GPT-2 directory {tmp_path}"}
    d = demo_mod.Demo(model, tok, source)
    a = d.analyse("hello world é")
    assert a.texts == ["hello", " wor", "l", "d", " ", "\ufffd", "\ufffd"] and a.attention.shape == (1, 2, 7, 7)
    assert a.labels[:5] == ["hello", "\u00b7wor", "l", "d", "\u00b7"]
    assert "BPETokenizer, 264 tokens" in d.describe()


def test_describe_lists_config_size_tokenizer_and_source(demo):
    md = demo.describe()
    for s in (f"{demo.model.num_params():,}", "CharTokenizer", f"{demo.tokenizer.vocab_size:,} tokens",
              "made in the test", "| n_layer | 2 |", "| block_size | 32 |"):
        assert s in md


def test_loopback_only_by_default(demo_mod):
    args = demo_mod.parse(["--ckpt", "x"])
    assert args.host == "127.0.0.1" and args.share is False
    assert demo_mod.is_loopback("127.0.0.1") and demo_mod.is_loopback("localhost") and demo_mod.is_loopback("::1")
    assert not demo_mod.is_loopback("0.0.0.0") and not demo_mod.is_loopback("192.168.1.5")


def run_main(demo_mod, argv) -> int:
    with pytest.raises(SystemExit) as e:
        demo_mod.main(argv)
    return e.value.code


def test_without_the_extra_the_script_names_it(demo_mod, monkeypatch, capsys):
    monkeypatch.setattr(demo_mod, "gr", None)
    assert run_main(demo_mod, ["--ckpt", "nowhere"]) == 2
    assert capsys.readouterr().err == ("error: the demo needs Gradio and matplotlib, from the 'demo' extra: "
                                       "pip install -e '.[demo]'\n")


def test_bad_checkpoint_and_port_are_one_error_line(demo_mod, tmp_path, capsys):
    pytest.importorskip("gradio", reason="needs the 'demo' extra (Gradio)")
    assert run_main(demo_mod, ["--ckpt", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no checkpoint at" in err and err.count("\n") == 1
    assert run_main(demo_mod, ["--ckpt", str(tmp_path), "--port", "70000"]) == 2
    assert "--port: expected a whole number >= 1 and <= 65535, got '70000'" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_main(demo_mod, ["--ckpt", str(tmp_path / "none"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}: ") and "choose another --port" in err


# ----------------------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """examples/demo.py serving a checkpoint on a free 127.0.0.1 port; stopped afterwards."""
    pytest.importorskip("gradio", reason="needs the 'demo' extra (Gradio): pip install -e '.[demo]'")
    pytest.importorskip("gradio_client", reason="needs gradio_client (comes with Gradio)")
    d = tmp_path_factory.mktemp("demo")
    ckpt = os.environ.get("TINYGRAD_LLM_DEMO_CKPT")
    if ckpt is not None:
        ckpt = find_checkpoint(ckpt)
    else:
        tok = CharTokenizer.from_text(TEXT)
        # twelve layers: a token then costs a few ms, so 2000 of them take seconds, and the
        # browser test's Stop always lands while the text is still streaming
        ckpt = save_checkpoint(d, "tiny", tiny_model(tok, n_layer=12), tokenizer=tok, trainer_state={"iter": 0})
    port = free_port()
    log = open(d / "server.log", "w+")
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--ckpt", str(ckpt), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"the demo exited with {proc.returncode}:\n{log.read()}")
            try:
                with urllib.request.urlopen(url + "config", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the demo did not start within 120 s")
                time.sleep(0.3)
        yield {"url": url, "port": port, "ckpt": load_checkpoint(ckpt), "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client
    return Client(server["url"], verbose=False)


def gen_args(prompt, n=16, seed=3):
    # prompt, max new tokens, temperature, top-k, top-p, repetition penalty, seed, stop string
    return (prompt, n, 1.0, 0, 1.0, 1.0, seed, "")


def test_server_listens_on_loopback_only(server):
    """The listening socket's address, as the kernel reports it (Linux)."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        pytest.skip("needs Linux's /proc/net/tcp to read the listening address")
    listening = [line.split()[1] for line in table.read_text().splitlines()[1:] if line.split()[3] == "0A"]
    mine = [a for a in listening if int(a.split(":")[1], 16) == server["port"]]
    assert mine == ["0100007F:" + f"{server['port']:04X}"]      # 127.0.0.1, little-endian


def test_generate_streams_and_is_deterministic_with_a_seed(server, client):
    ck = server["ckpt"]
    job = client.submit(*gen_args("ROMEO:"), api_name="/generate")
    job.result()
    parts = job.outputs()
    assert len(parts) > 1 and all(b.startswith(a) and len(b) > len(a) for a, b in zip(parts, parts[1:]))
    want = generate_text(ck.model, ck.tokenizer, "ROMEO:", max_new_tokens=16, temperature=1.0, seed=3)
    assert parts[-1] == "ROMEO:" + want
    assert client.predict(*gen_args("ROMEO:"), api_name="/generate") == parts[-1]
    assert client.predict(*gen_args("ROMEO:", seed=4), api_name="/generate") != parts[-1]


def test_attention_endpoint_rows_sum_to_one_zero_above_the_diagonal(server, client):
    ck = server["ckpt"]
    prompt = "ROMEO:\nBut soft"
    ids = ck.tokenizer.encode(prompt)
    T = len(ids)
    with no_grad():
        _, _, att = ck.model(Tensor(np.asarray([ids])), return_attention=True)
    for layer, head in [(0, -1), (ck.config.n_layer - 1, ck.config.n_head - 1)]:
        r = client.predict(prompt, layer, head, api_name="/attention")
        w = np.array(r["weights"])
        assert r["tokens"] == [ck.tokenizer.decode([i]) for i in ids] and w.shape == (T, T)
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
        assert (w[np.triu_indices(T, 1)] == 0).all()
        want = att[layer].numpy()[0]
        np.testing.assert_allclose(w, want.mean(0) if head == -1 else want[head], rtol=1e-5, atol=1e-7)


def test_inside_endpoint_gives_top_20_and_surprisal(server, client):
    _plot, label, html = client.predict("ROMEO:\nBut soft", 0, -1, api_name="/inside")
    conf = [c["confidence"] for c in label["confidences"]]
    assert len(conf) == 20 and conf == sorted(conf, reverse=True) and 0 < sum(conf) <= 1 + 1e-6
    assert label["label"] == label["confidences"][0]["label"]
    assert html.count('class="tok"') == len(server["ckpt"].tokenizer.encode("ROMEO:\nBut soft"))


def test_bad_input_gives_a_readable_message_and_the_server_keeps_serving(server, client):
    from gradio_client.exceptions import AppError
    block = server["ckpt"].config.block_size
    cases = [("", "the prompt is empty: type some text first"),
             ("ROMEO \u20ac", "cannot encode the prompt: character '\u20ac' (U+20AC)"),
             ("R" * (block + 1), f"the prompt is {block + 1} tokens long, but this model reads at most {block}")]
    for prompt, message in cases:
        for call in (lambda: client.predict(*gen_args(prompt), api_name="/generate"),
                     lambda: client.predict(prompt, 0, -1, api_name="/inside"),
                     lambda: client.predict(prompt, 0, -1, api_name="/attention")):
            with pytest.raises(AppError) as e:
                call()
            assert message in str(e.value) and "Traceback" not in str(e.value)
    with pytest.raises(AppError, match="layer must be an integer in"):
        client.predict("ROMEO:", 99, -1, api_name="/attention")
    with pytest.raises(AppError, match="seed must be >= 0"):
        client.predict(*gen_args("ROMEO:", seed=-7), api_name="/generate")
    assert client.predict(*gen_args("ROMEO:", n=3), api_name="/generate").startswith("ROMEO:")
    server["log"].seek(0)
    assert "Traceback" not in server["log"].read()


# ----------------------------------------------------------------------------- a real browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1500"]


@pytest.fixture
def browser(server):
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the 'test' extra)")
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("needs headless Chromium and its driver: apt-get install chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_page_streams_text_stops_and_draws_the_attention_map(server, browser, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    artifacts = Path(os.environ.get("TINYGRAD_LLM_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    # Gradio re-renders components while they update: an element found a moment ago may be
    # replaced, so every wait looks it up again and retries on a stale reference
    wait = WebDriverWait(browser, 60, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,))
    css = lambda sel: browser.find_element(By.CSS_SELECTOR, sel)   # noqa: E731
    browser.get(server["url"])

    # Generate: streamed text appears piece by piece, and Stop ends it
    prompt = wait.until(lambda b: css("#gen-prompt textarea"))
    prompt.clear()
    prompt.send_keys("ROMEO:")
    n_new = css("#gen-max-new input[type=number]")
    n_new.clear()
    n_new.send_keys("2000")
    css("#gen-go").click()
    out = lambda: css("#gen-out textarea").get_attribute("value")   # noqa: E731
    seen = []
    wait.until(lambda b: seen.append(out()) or len(set(seen) - {""}) >= 3)
    assert all(s.startswith("ROMEO:") for s in seen if s)
    css("#gen-stop").click()
    time.sleep(1.0)
    stopped = wait.until(lambda b: out())
    time.sleep(1.0)
    assert wait.until(lambda b: out()) == stopped and len(stopped) < len("ROMEO:") + 2000
    browser.save_screenshot(str(artifacts / "demo-generate.png"))

    # Inside: the heatmap image, the top-20 bars, one coloured span per prompt token
    next(t for t in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == "Inside").click()
    prompt = wait.until(lambda b: css("#inside-prompt textarea"))
    text = prompt.get_attribute("value")
    n_tokens = len(server["ckpt"].tokenizer.encode(text))
    css("#inside-go").click()
    wait.until(lambda b: css("#heatmap img"))
    assert wait.until(lambda b: css("#heatmap img").get_attribute("src")).startswith("data:image/")
    assert wait.until(lambda b: browser.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", css("#heatmap img"))) > 100
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#surprisal span.tok")) == n_tokens)
    assert "%" in css("#next-token").text
    first = wait.until(lambda b: css("#heatmap img").get_attribute("src"))
    browser.find_element(By.CSS_SELECTOR, "#inside-head input").click()     # another head: redrawn
    next(o for o in browser.find_elements(By.CSS_SELECTOR, "ul[role=listbox] li") if o.text == "head 0").click()
    wait.until(lambda b: css("#heatmap img").get_attribute("src") != first)
    try:                                   # (for the screenshot) until the progress overlay is gone
        WebDriverWait(browser, 10).until(lambda b: not b.find_elements(By.CSS_SELECTOR, "#heatmap .eta-bar"))
    except TimeoutException:
        pass
    browser.save_screenshot(str(artifacts / "demo-inside.png"))
    print(f"screenshots: {artifacts / 'demo-generate.png'}, {artifacts / 'demo-inside.png'}")
