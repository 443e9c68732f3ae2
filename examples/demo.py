"""A web demo of a GPT or Llama: stream text from it, and look inside it (Gradio).

    pip install -e '.[demo]'
    python examples/demo.py --ckpt out/shakespeare-char-cpu      # then open http://127.0.0.1:7860
    python examples/demo.py --hf path/to/gpt2 --port 8000          # a Hugging Face GPT-2 or Llama directory

Tabs:
  Generate  the prompt's continuation, streamed token by token (generate() with its KV cache),
            with temperature, top-k, top-p, repetition penalty, seed, stop string, and a Stop button
  Inside    for a prompt: every layer's and head's attention weights as a heatmap over the
            tokens, the next-token distribution (top 20), and the surprisal of each prompt token
  Model     the config, parameter count, tokenizer, and where the weights came from

The server listens on 127.0.0.1 only: other machines cannot reach it. --host 0.0.0.0 serves
every network interface, --share asks Gradio for a public link; both only when given.
See docs/demo.md for what each view shows and how to read an attention map.
"""
from __future__ import annotations

import html
import ipaddress
import math
import queue
import socket
import sys
import threading
import traceback
from typing import NamedTuple

import numpy as np

from tinygrad_llm import Tensor, backend, cli, no_grad
from tinygrad_llm.checkpoint import CheckpointError, load_for_sampling
from tinygrad_llm.generate import generate_text

try:
    import gradio as gr
except ImportError:              # the 'demo' extra is not installed: main() says so
    gr = None
try:
    from matplotlib import colormaps
    from matplotlib.figure import Figure
except ImportError:
    Figure = None

EXTRA = "pip install -e '.[demo]'"
TOP = 20                         # next-token candidates shown
AVERAGE = -1                     # the head selector's value for "average of heads"
RANDOM_SEED = -1                 # the seed control's value for "a fresh random seed"
PROMPTS = {"generate": "ROMEO:", "inside": "ROMEO:\nBut soft, what light through yonder window breaks?"}


class InputError(ValueError):
    """Input from the page that cannot be used; its message is shown in the app as is."""


# ----------------------------------------------------------------------------- tokens as text

def token_texts(tokenizer, ids) -> list[str]:
    """Each token's own text. A byte-level token that is part of a character shows as U+FFFD."""
    if hasattr(tokenizer, "decode_bytes"):
        return [tokenizer.decode_bytes([i]).decode("utf-8", errors="replace") for i in ids]
    return [tokenizer.decode([i]) for i in ids]


_VISIBLE = {" ": "\u00b7", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}


def visible(text: str) -> str:
    """A token's text for an axis or bar label: spaces as middle dots, newline as an arrow,
    other control characters escaped, so that no token is blank."""
    out = []
    for c in text:
        if c in _VISIBLE:
            out.append(_VISIBLE[c])
        elif c.isprintable():
            out.append(c)
        else:
            out.append(c.encode("unicode_escape").decode("ascii"))
    return "".join(out) or "\u2205"


def distinct(labels: list[str], ids) -> list[str]:
    """Labels made unique (bar labels are keys) by adding the token id where two coincide."""
    seen: dict[str, int] = {}
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
    return [f"{lab} #{i}" if seen[lab] > 1 else lab for lab, i in zip(labels, ids)]


# ----------------------------------------------------------------------------- the model side

class Analysis(NamedTuple):
    """One forward pass over a prompt, in host arrays."""

    ids: list[int]
    texts: list[str]            # each token's text
    attention: np.ndarray       # (n_layer, n_head, T, T): row t = query t's weights over keys 0..t
    surprisal: np.ndarray       # (T,) bits, -log2 p(token t | tokens before it); NaN for the first
    next_probs: np.ndarray      # (vocab_size,) p(next token | the whole prompt)

    @property
    def labels(self) -> list[str]:
        return [visible(t) for t in self.texts]


class Demo:
    """What the app does, without the app: encode, stream, analyse, describe."""

    def __init__(self, model, tokenizer, source: dict):
        self.model, self.tokenizer, self.source = model, tokenizer, source
        self.config = model.config
        model.eval()

    # ---------------------------------------------------------------- input
    def encode(self, prompt) -> list[int]:
        """The prompt's token ids; InputError for an empty prompt, characters the tokenizer
        cannot encode, or more tokens than the model's context (block_size)."""
        if not isinstance(prompt, str) or prompt == "":
            raise InputError("the prompt is empty: type some text first")
        try:
            ids = self.tokenizer.encode(prompt)
        except ValueError as e:
            raise InputError(f"this model's tokenizer cannot encode the prompt: {e}") from None
        if not ids:
            raise InputError("the prompt encodes to no tokens: type some text first")
        if len(ids) > self.config.block_size:
            raise InputError(f"the prompt is {len(ids)} tokens long, but this model reads at most "
                             f"{self.config.block_size} (its block_size): shorten the prompt")
        return ids

    def usable(self, prompt: str) -> str:
        """``prompt`` if this model can take it, else its longest usable start ("" if none)."""
        for end in range(len(prompt), 0, -1):
            try:
                self.encode(prompt[:end])
                return prompt[:end]
            except InputError:
                continue
        return ""

    # ---------------------------------------------------------------- Generate
    def stream(self, prompt, max_new_tokens=200, temperature=0.8, top_k=200, top_p=1.0,
               repetition_penalty=1.0, seed=None, stop=""):
        """Yield the prompt followed by the continuation so far, each time new text appears.

        generate_text runs in a worker thread and hands over each piece of text; closing
        this generator (the Stop button) makes the worker end at its next piece.
        """
        self.encode(prompt)                           # bad prompts fail here, before any work
        kwargs = sampling_args(max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed)
        pieces: queue.Queue = queue.Queue()
        halt = threading.Event()
        done = object()

        def on_text(text):
            if halt.is_set():
                raise _Halted
            pieces.put(text)

        def work():
            try:
                generate_text(self.model, self.tokenizer, prompt, stop=stop or None, stream=on_text, **kwargs)
            except _Halted:
                pass
            except Exception as e:    # handed to the page as a message
                pieces.put(e)
            finally:
                pieces.put(done)

        threading.Thread(target=work, name="demo-generate", daemon=True).start()
        text = prompt
        try:
            while (item := pieces.get()) is not done:
                if isinstance(item, Exception):
                    raise item
                text += item
                yield text
        finally:
            halt.set()

    # ---------------------------------------------------------------- Inside
    def analyse(self, prompt) -> Analysis:
        ids = self.encode(prompt)
        with no_grad():
            logits, _, att = self.model(Tensor(np.asarray([ids]), device=self.model.device),
                                        return_attention=True)
        logits = backend.to_numpy(logits.data[0])                          # (T, V)
        shift = logits.max(axis=-1, keepdims=True)
        log_z = (np.log(np.exp(logits - shift).sum(axis=-1, keepdims=True)) + shift).astype(np.float64)
        logp_next = logits[-1].astype(np.float64) - log_z[-1]
        surprisal = np.full(len(ids), np.nan)
        if len(ids) > 1:
            picked = logits[np.arange(len(ids) - 1), ids[1:]].astype(np.float64)
            surprisal[1:] = (log_z[:-1, 0] - picked) / math.log(2)
        attention = np.stack([backend.to_numpy(a.data[0]) for a in att])    # (L, H, T, T)
        return Analysis(ids, token_texts(self.tokenizer, ids), attention, surprisal, np.exp(logp_next))

    def check_layer_head(self, layer, head) -> tuple[int, int]:
        L, H = self.config.n_layer, self.config.n_head
        if not isinstance(layer, (int, np.integer)) or not 0 <= layer < L:
            raise InputError(f"layer must be an integer in [0, {L}), got {layer!r}")
        if not isinstance(head, (int, np.integer)) or not (head == AVERAGE or 0 <= head < H):
            raise InputError(f"head must be an integer in [0, {H}) or {AVERAGE} (average of heads), got {head!r}")
        return int(layer), int(head)

    def weights(self, a: Analysis, layer: int, head: int) -> np.ndarray:
        """(T, T) weights of one head, or their mean over the heads of the layer."""
        layer, head = self.check_layer_head(layer, head)
        w = a.attention[layer]
        return w.mean(axis=0) if head == AVERAGE else w[head]

    def top_next(self, a: Analysis, k: int = TOP) -> dict[str, float]:
        """The k most likely next tokens, label -> probability."""
        order = np.argsort(-a.next_probs, kind="stable")[:k]
        labels = distinct([visible(t) for t in token_texts(self.tokenizer, order.tolist())], order.tolist())
        return {lab: float(a.next_probs[i]) for lab, i in zip(labels, order)}

    # ---------------------------------------------------------------- Model
    def describe(self) -> str:
        """The Model tab, as Markdown."""
        cfg, m, tok = self.config, self.model, self.tokenizer
        kind = type(tok).__name__
        rows = [("parameters", f"{m.num_params():,} ({m.num_params(non_embedding=True):,} without position "
                               "embeddings)"),
                ("tokenizer", f"{kind}, {tok.vocab_size:,} tokens"),
                ("device", m.device), ("weights", str(m.dtype))]
        rows += [(k, str(v)) for k, v in self.source.items()]
        out = ["| model | |", "|---|---|"] + [f"| {k} | {_md(v)} |" for k, v in rows]
        out += ["", f"**{type(cfg).__name__}**", "", "| field | value |", "|---|---|"]
        out += [f"| {k} | {_md(repr(v))} |" for k, v in cfg.to_dict().items()]
        return "\n".join(out)


class _Halted(Exception):
    """Raised in the worker's stream callback once the page has stopped listening."""


def _md(text: str) -> str:
    return html.escape(text).replace("|", "&#124;")


def sampling_args(max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed) -> dict:
    """The page's control values as generate()'s arguments: top-k 0 and top-p 1 mean off,
    seed -1 (or none) means a fresh random one. InputError for values of the wrong kind."""
    def number(name, v, integer=False):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
            raise InputError(f"{name} must be a number, got {v!r}")
        if integer and v != int(v):
            raise InputError(f"{name} must be a whole number, got {v!r}")
        return int(v) if integer else float(v)

    out = dict(max_new_tokens=number("max new tokens", max_new_tokens, True),
               temperature=number("temperature", temperature),
               top_k=number("top-k", top_k, True) or None,
               top_p=number("top-p", top_p),
               repetition_penalty=number("repetition penalty", repetition_penalty),
               seed=None if seed is None else number("seed", seed, True))
    if out["top_p"] >= 1.0:
        out["top_p"] = None
    if out["max_new_tokens"] < 1:
        raise InputError(f"max new tokens must be at least 1, got {out['max_new_tokens']}")
    if out["seed"] == RANDOM_SEED:
        out["seed"] = None
    elif out["seed"] is not None and out["seed"] < 0:
        raise InputError(f"seed must be >= 0, or {RANDOM_SEED} for a random one, got {out['seed']}")
    return out


# ----------------------------------------------------------------------------- pictures

def heatmap_figure(weights: np.ndarray, labels: list[str], title: str):
    """A (T, T) attention map: rows are queries (the token attending), columns keys (the tokens
    it reads); cells above the diagonal (later tokens) are blank. The colour scale tops out at
    the largest weight below the first row (whose single weight is always 1)."""
    T = len(labels)
    fig = Figure(figsize=(8.5, 7.5), dpi=100, layout="constrained")   # about the page's column
    ax = fig.add_subplot()
    shown = np.ma.masked_where(np.triu(np.ones((T, T), dtype=bool), k=1), weights)
    top = float(weights[1:].max()) if T > 1 else 1.0
    cmap = colormaps["viridis"].with_extremes(bad="#eeeeee")
    im = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=max(top, 1e-9), interpolation="nearest")
    step = max(1, math.ceil(T / 64))                 # at most 64 labels per axis
    ticks = list(range(0, T, step))
    font = dict(fontsize=min(max(360 / len(ticks), 5.0), 10.0), fontfamily="monospace")
    ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, **font)
    ax.set_yticks(ticks, [labels[i] for i in ticks], **font)
    ax.set_xlabel("key: the token read")
    ax.set_ylabel("query: the token reading")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8, label="attention weight")
    return fig


def surprisal_html(a: Analysis) -> str:
    """The prompt's tokens, each coloured by its surprisal (white 0 bits -> red at 2x the mean
    or more), with the exact numbers in each token's tooltip."""
    finite = a.surprisal[np.isfinite(a.surprisal)]
    top = max(2.0 * float(finite.mean()), 1e-9) if finite.size else 1.0
    spans = []
    for t, (text, s) in enumerate(zip(a.texts, a.surprisal)):
        shown = html.escape(text).replace("\n", "\u21b5<br>")
        if np.isnan(s):
            tip, color = f"token {t}: the first token, nothing before it predicts it", "#e8e8e8"
        else:
            strength = min(float(s) / top, 1.0)
            color = f"rgba(220, 40, 40, {0.05 + 0.85 * strength:.3f})"
            tip = f"token {t} {visible(text)!r}: {s:.2f} bits, p = {2.0 ** -s:.3g}"
        spans.append(f'<span class="tok" title="{html.escape(tip)}" data-bits="{s:.4f}" '
                     f'style="background:{color}">{shown}</span>')
    if finite.size:
        nats = float(finite.mean()) * math.log(2)
        summary = (f"mean over the {finite.size} predicted tokens: {finite.mean():.2f} bits "
                   f"(loss {nats:.3f} nats, perplexity {math.exp(nats):.1f})")
    else:
        summary = "one token: nothing in the prompt is predicted"
    return (f'<h4>How surprising each prompt token was (hover a token for its numbers)</h4>'
            f'<div id="surprisal-text" style="white-space:pre-wrap;font-family:monospace;line-height:1.7">'
            f'{"".join(spans)}</div><p id="surprisal-summary">{summary}</p>')


# ----------------------------------------------------------------------------- the app

def _page_error(e: Exception):
    """An exception as the message the page shows (gr.Error), never a traceback. Unexpected
    ones are also printed, with their traceback, on the server's terminal."""
    if not isinstance(e, (InputError, ValueError)):
        traceback.print_exception(e)
        return gr.Error(f"{type(e).__name__}: {e}")
    return gr.Error(str(e), print_exception=False)


def build_app(demo: Demo):
    """The Gradio Blocks of the three tabs (not launched)."""
    cfg = demo.config
    head_choices = [("average of heads", AVERAGE)] + [(f"head {h}", h) for h in range(cfg.n_head)]
    prompts = {tab: demo.usable(p) for tab, p in PROMPTS.items()}

    def generate(prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop):
        try:
            yield from demo.stream(prompt, max_new_tokens, temperature, top_k, top_p,
                                   repetition_penalty, seed, stop)
        except Exception as e:
            raise _page_error(e) from None

    def inside(prompt, layer, head):
        try:
            a = demo.analyse(prompt)
            return a, draw(a, layer, head), demo.top_next(a), surprisal_html(a)
        except Exception as e:
            raise _page_error(e) from None

    def draw(a, layer, head):
        if a is None:
            return None
        w = demo.weights(a, layer, head)
        which = "average of heads" if head == AVERAGE else f"head {head}"
        return heatmap_figure(w, a.labels, f"layer {layer}, {which}")

    def redraw(a, layer, head):
        try:
            return draw(a, layer, head)
        except Exception as e:
            raise _page_error(e) from None

    def attention(prompt: str, layer: int = 0, head: int = AVERAGE) -> dict:
        """One layer's attention weights for a prompt: {"tokens", "layer", "head", "weights"}, where
        weights[q][k] is how much query token q attends to key token k (head -1: mean of heads)."""
        try:
            a = demo.analyse(prompt)
            w = demo.weights(a, layer, head)
        except Exception as e:
            raise _page_error(e) from None
        return {"tokens": a.texts, "layer": layer, "head": head, "weights": w.astype(float).tolist()}

    with gr.Blocks(title="tinygrad_llm demo", analytics_enabled=False) as app:
        gr.Markdown("## tinygrad_llm: generate, and look inside")
        with gr.Tab("Generate", id="generate"):
            with gr.Row():
                with gr.Column(scale=3):
                    g_prompt = gr.Textbox(prompts["generate"], label="prompt", lines=3, elem_id="gen-prompt")
                    with gr.Row():
                        g_go = gr.Button("Generate", variant="primary", elem_id="gen-go")
                        g_stop = gr.Button("Stop", variant="stop", elem_id="gen-stop")
                    g_out = gr.Textbox(label="prompt + continuation", lines=14, elem_id="gen-out")
                with gr.Column(scale=1):
                    max_new = gr.Slider(1, 2000, value=200, step=1, label="max new tokens", elem_id="gen-max-new")
                    temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="temperature (0 = greedy)")
                    top_k = gr.Slider(0, cfg.vocab_size, value=min(200, cfg.vocab_size), step=1,
                                      label="top-k (0 = off)")
                    top_p = gr.Slider(0.01, 1.0, value=1.0, step=0.01, label="top-p (1 = off)")
                    rep = gr.Slider(0.5, 2.0, value=1.0, step=0.05, label="repetition penalty (1 = off)")
                    seed = gr.Number(RANDOM_SEED, precision=0, label=f"seed ({RANDOM_SEED} = random)")
                    stop = gr.Textbox("", label="stop string (empty = none)")
            run = g_go.click(generate, [g_prompt, max_new, temperature, top_k, top_p, rep, seed, stop], g_out,
                             api_name="generate")
            g_prompt.submit(generate, [g_prompt, max_new, temperature, top_k, top_p, rep, seed, stop], g_out,
                            api_visibility="private")
            g_stop.click(None, None, None, cancels=[run], api_visibility="private")
        with gr.Tab("Inside", id="inside"):
            state = gr.State(None)
            with gr.Row():
                i_prompt = gr.Textbox(prompts["inside"], label="prompt", lines=2, scale=4, elem_id="inside-prompt")
                i_go = gr.Button("Look inside", variant="primary", scale=1, elem_id="inside-go")
            with gr.Row():
                layer = gr.Dropdown([(f"layer {i}", i) for i in range(cfg.n_layer)], value=0, label="layer",
                                    elem_id="inside-layer")
                head = gr.Dropdown(head_choices, value=AVERAGE, label="head", elem_id="inside-head")
            with gr.Row():
                with gr.Column(scale=2):
                    heatmap = gr.Plot(label="attention weights", elem_id="heatmap")
                with gr.Column(scale=1):
                    nxt = gr.Label(num_top_classes=TOP, label=f"next token: the {TOP} most likely",
                                   elem_id="next-token")
            surprisal = gr.HTML(label="surprisal of each prompt token", elem_id="surprisal")
            i_go.click(inside, [i_prompt, layer, head], [state, heatmap, nxt, surprisal], api_name="inside")
            for sel in (layer, head):
                sel.change(redraw, [state, layer, head], heatmap, api_visibility="private")
            gr.api(attention, api_name="attention")
        with gr.Tab("Model", id="model"):
            gr.Markdown(demo.describe(), elem_id="model-info")
    return app


# ----------------------------------------------------------------------------- command line

def parse(argv):
    p = cli.ArgumentParser(description=__doc__)
    cli.add_model_source(p, "checkpoint directory (or a training output directory: its best/, else latest/)")
    p.add_argument("--device", default="cpu", help="cpu (default) or gpu")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=cli.integer(min=1, max=65535), default=7860)
    p.add_argument("--share", action="store_true", help="also ask Gradio for a public share link")
    return p.parse_args(argv)


def load(args):
    """(model, tokenizer, source) from --ckpt or --hf; source: what the Model tab says of it."""
    model, tokenizer, ckpt = load_for_sampling(ckpt=args.ckpt, hf=args.hf, device=args.device)
    if ckpt is None:
        kind = "Llama" if model.arch == "llama" else "GPT-2"
        return model, tokenizer, {"source": f"Hugging Face {kind} directory {args.hf}"}
    source = {"source": f"checkpoint {ckpt.path}"}
    st = ckpt.trainer_state
    if "iter" in st:
        source["trained iterations"] = st["iter"]
    if isinstance(st.get("best_val_loss"), (int, float)) and math.isfinite(st["best_val_loss"]):
        source["best validation loss"] = f"{st['best_val_loss']:.4f}"
    return model, tokenizer, source


def check_address(host: str, port: int):
    """OSError naming the address if this machine cannot listen there (a port in use, an
    address that is not this machine's), before any model is loaded."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(infos[0][4])
    except OSError as e:
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port or --host") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if gr is None or Figure is None:
        cli.fail(f"the demo needs Gradio and matplotlib, from the 'demo' extra: {EXTRA}")
    try:
        check_address(args.host, args.port)
        args.device = backend.canonical_device(args.device)
        model, tokenizer, source = load(args)
    except (ValueError, CheckpointError, backend.DeviceError, OSError) as e:
        cli.fail(e)
    app = build_app(Demo(model, tokenizer, source))
    if not is_loopback(args.host):
        print(f"note: listening on {args.host}: anyone who can reach this machine on port {args.port} "
              "can use the demo", file=sys.stderr)
    font = ["ui-sans-serif", "system-ui", "sans-serif"]      # local fonts: the page fetches nothing
    theme = gr.themes.Default(font=font, font_mono=["ui-monospace", "monospace"])
    try:
        app.queue().launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True,
                           ssr_mode=False, theme=theme, footer_links=["api"])
    except OSError as e:               # taken since check_address
        cli.fail(f"cannot serve on {args.host}:{args.port}: {e}")
    return 0


if __name__ == "__main__":
    cli.run(main)
