"""Sentence-transformers folders run under ONNX Runtime: the default embedding runtime.

The transformer of a sentence-transformers folder is exported once with ``torch.onnx.export``
into a cache folder of its own (keyed by a fingerprint of the weights), then run with
``onnxruntime`` and the folder's own ``tokenizer.json`` (the ``tokenizers`` library), pooled and
normalised as sentence-transformers does. Vectors equal the torch path's (cosine >= 0.9999), so
calibrated thresholds hold, while a query embeds several times faster and a serving process
never imports torch. Export needs torch and ``onnx``; if it fails, or the folder has modules
this runtime does not reproduce, the embedder runs the torch path with a logged warning.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import inspect
import json
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .base import BaseEmbedder, Thresholds

__all__ = [
    "INT8_THRESHOLDS",
    "OnnxSentenceEmbedder",
    "default_onnx_cache_dir",
    "export_onnx",
    "quantize_onnx",
]

log = logging.getLogger("modelcache")

_EXPORT_VERSION = "1"  # bump when the exported graph changes, so old exports are not reused
_MIN_COSINE = 0.9999  # an export whose vectors differ more from torch's is refused
_MODULES = ("Transformer", "Pooling", "Normalize")  # class names, by any module path
_POOLING = {  # sentence-transformers < 6 wrote one flag per mode, 6 writes `pooling_mode`
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}
# The shipped MiniLM quantised to int8: each threshold keeps the pairwise precision fp32 has at
# its default (qqp_dev for short, multiturn_dev for follow-up and context; no long pair in the
# sample, so long moves by short's offset). Method and numbers: benchmarks/results/int8.md.
INT8_THRESHOLDS = Thresholds(short=0.855, long=0.905, followup=0.46, context=0.785)
_PROBES = (
    "How do I reset my password?",
    "What is the capital of France?",
    "a",
    "Write a Python function that finds all numbers divisible by 13 and 23, "
    "then explain how it works step by step.",
)


def default_onnx_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/modelcache/onnx`` (``~/.cache/modelcache/onnx``): writable per user."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelcache" / "onnx"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class _Layout:
    """What a sentence-transformers folder holds, read from its small JSON files only."""

    def __init__(self, model_dir: Path) -> None:
        self.root = model_dir
        modules = _read_json(model_dir / "modules.json")
        self.problem: str | None = None
        transformer_path, pooling_path = "", None
        if isinstance(modules, list):
            for module in modules:
                kind = str(module.get("type", ""))
                name = kind.rsplit(".", 1)[-1]
                if not kind.startswith("sentence_transformers.") or name not in _MODULES:
                    self.problem = f"module {kind or '?'} has no ONNX Runtime equivalent here"
                elif name == "Transformer":
                    transformer_path = str(module.get("path", ""))
                elif name == "Pooling":
                    pooling_path = str(module.get("path", ""))
        self.transformer = model_dir / transformer_path
        pooling = _read_json(model_dir / pooling_path / "config.json") if pooling_path else None
        pooling = pooling if isinstance(pooling, dict) else {"pooling_mode": "mean"}
        mode = pooling.get("pooling_mode")
        if mode is None:
            flags = [
                _POOLING.get(k, k)
                for k, v in pooling.items()
                if k.startswith("pooling_mode_") and v
            ]
            mode = flags[0] if len(flags) == 1 else flags
        if isinstance(mode, list) and len(mode) == 1:
            mode = mode[0]
        if mode not in ("mean", "cls", "max"):
            self.problem = self.problem or f"pooling {mode} has no ONNX Runtime equivalent here"
            mode = "mean"
        self.pooling = str(mode)
        dim = pooling.get("embedding_dimension") or pooling.get("word_embedding_dimension")
        config = _read_json(self.transformer / "config.json") or {}
        self.dimension: int | None = int(dim or config.get("hidden_size") or 0) or None
        st_config = _read_json(self.transformer / "sentence_bert_config.json") or {}
        tok_config = _read_json(self.transformer / "tokenizer_config.json") or {}
        limits = [
            int(v)
            for v in (tok_config.get("model_max_length"), config.get("max_position_embeddings"))
            if isinstance(v, int) and 0 < v < 1_000_000
        ]
        self.max_length = int(st_config.get("max_seq_length") or min(limits, default=512))
        self.lower = bool(st_config.get("do_lower_case", False))

    def weight_files(self) -> list[Path]:
        return sorted(
            p
            for pattern in ("*.safetensors", "pytorch_model*.bin")
            for p in self.transformer.glob(pattern)
        )

    def fingerprint(self) -> str:
        """Digest of the config files and of each weight file's size, head and tail.

        Cheap enough for every start (no full read of the weights), and it changes when the
        weights are replaced, e.g. by fine-tuning into the same folder.
        """
        digest = hashlib.sha256(_EXPORT_VERSION.encode())
        for name in ("config.json", "tokenizer.json", "sentence_bert_config.json"):
            path = self.transformer / name
            if path.is_file():
                digest.update(name.encode() + path.read_bytes())
        for path in self.weight_files():
            size = path.stat().st_size
            digest.update(f"{path.name}:{size}".encode())
            with path.open("rb") as fh:
                digest.update(fh.read(1 << 16))
                fh.seek(max(0, size - (1 << 16)))
                digest.update(fh.read(1 << 16))
        return digest.hexdigest()[:16]


def export_onnx(model_dir: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Export a sentence-transformers folder's transformer to ``target/model.onnx``.

    The export is checked against the torch model on probe texts (cosine >= 0.9999 after
    pooling) and written atomically, so concurrent processes never read half a file. Needs
    torch, transformers and ``onnx``.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    layout = _Layout(Path(model_dir))
    if layout.problem:
        raise ConfigError(f"cannot export {model_dir}: {layout.problem}")
    out_dir = Path(target)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = str(layout.transformer)
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
    try:  # eager attention traces to a plain graph that honours the padding mask
        model = AutoModel.from_pretrained(src, local_files_only=True, attn_implementation="eager")
    except (TypeError, ValueError):
        model = AutoModel.from_pretrained(src, local_files_only=True)
    model.eval()
    names = [n for n in tokenizer.model_input_names if n in ("input_ids", "attention_mask")]
    names += [n for n in tokenizer.model_input_names if n == "token_type_ids"]

    class _Wrapper(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    batch = tokenizer(list(_PROBES), padding=True, return_tensors="pt")
    inputs = tuple(batch[n] for n in names)
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
    tmp = out_dir / f"model.onnx.{os.getpid()}.tmp"
    options: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False  # the TorchScript exporter: one self-contained file
    with torch.no_grad():  # before the export, which leaves the torch model altered
        expected = model(**{n: batch[n] for n in names}).last_hidden_state.numpy()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Wrapper(model),
                inputs,
                str(tmp),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=17,
                **options,
            )
        session = _session(tmp, threads=1)
        got = session.run(None, {n: batch[n].numpy().astype(np.int64) for n in names})[0]
        mask = batch["attention_mask"].numpy()
        a = _l2(_pool(got, mask, layout.pooling))
        b = _l2(_pool(expected, mask, layout.pooling))
        worst = float(np.min(np.sum(a * b, axis=1)))
        if worst < _MIN_COSINE:
            raise RuntimeError(f"exported vectors differ from torch (cosine {worst:.6f})")
        if not (layout.transformer / "tokenizer.json").is_file():
            tokenizer.backend_tokenizer.save(str(out_dir / "tokenizer.json"))
        os.replace(tmp, out_dir / "model.onnx")
    finally:
        tmp.unlink(missing_ok=True)
    return out_dir / "model.onnx"


def quantize_onnx(source: Path, target: Path) -> Path:
    """An int8 copy of an exported model (dynamic quantisation, per-channel weights), made once.

    Per-channel weights keep vectors closer to fp32 (mean cosine 0.994 vs 0.968 per-tensor on
    Quora questions) at about the same speed. Written atomically beside the fp32 export.
    """
    if target.is_file():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    log.info("modelcache: quantising %s to int8 once, into %s", source.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        quantize_dynamic(source, tmp, per_channel=True, weight_type=QuantType.QInt8)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """sentence-transformers' Pooling over the real (unpadded) tokens."""
    if mode == "cls":
        return hidden[:, 0]
    weights = mask[..., None].astype(np.float32)
    if mode == "max":
        return np.where(weights > 0, hidden, -1e9).max(axis=1)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def _l2(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class _OnnxRuntime:
    """Tokenizer and ONNX Runtime session of one exported model."""

    def __init__(self, layout: _Layout, model: Path, tokenizer: Path, threads: int | None) -> None:
        from tokenizers import Tokenizer

        self._session = _session(model, threads)
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._raw = Tokenizer.from_file(str(tokenizer))  # counting and windows: no limits
        self._raw.no_truncation()
        self._raw.no_padding()
        self._batch = Tokenizer.from_file(str(tokenizer))  # model input, as sentence-transformers
        self._batch.enable_truncation(layout.max_length)
        padding = self._batch.padding or {}
        self._pad_id = int(padding.get("pad_id", 0))
        self._pad_type_id = int(padding.get("pad_type_id", 0))
        self._batch.no_padding()  # each batch is padded to its own longest text (see run)
        self._pooling = layout.pooling
        self._lower = layout.lower
        self.max_tokens = layout.max_length - self._batch.num_special_tokens_to_add(False)
        probe = self.encode(["dimension probe"])
        self.dimension = int(probe.shape[1])

    def tokens(self, text: str) -> list[int]:
        return list(self._raw.encode(text, add_special_tokens=False).ids)

    def token_starts(self, text: str) -> tuple[list[int], list[int]]:
        encoding = self._raw.encode(text, add_special_tokens=False)
        return list(encoding.ids), [start for start, _ in encoding.offsets]

    def token_lists(self, texts: list[str]) -> list[list[int]]:
        return [list(e.ids) for e in self._raw.encode_batch(texts, add_special_tokens=False)]

    def detokenize(self, ids: list[int]) -> str:
        return str(self._raw.decode(ids, skip_special_tokens=False))

    def encodings(self, texts: list[str]) -> list[Any]:
        """Model inputs of texts, truncated to the window and not padded."""
        if self._lower:
            texts = [t.lower() for t in texts]
        return list(self._batch.encode_batch(texts))

    def run(self, encodings: Sequence[Any]) -> np.ndarray:
        """Pooled (not normalised) vectors of one batch, padded to its longest text."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.full((len(encodings), width), self._pad_type_id, dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
            types[row, : len(e.ids)] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        hidden = self._session.run(None, {k: feed[k] for k in self._inputs if k in feed})[0]
        return _pool(hidden, mask, self._pooling).astype(np.float32, copy=False)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.run(self.encodings(texts))


class OnnxSentenceEmbedder(BaseEmbedder):
    """A sentence-transformers folder (default: the shipped MiniLM) run under ONNX Runtime.

    Nothing is loaded until the first embedding, so opening a cache for ``stats`` or
    ``export`` costs no model. The name equals the torch embedder's: the vectors are the same,
    so a cache written by either opens with the other. With ``fallback`` (default) a folder
    that cannot be exported or run is embedded by torch instead, with a warning. A call with
    many texts (a bulk load) runs its batches on ``workers`` threads (default: one per core).

    ``quantize=True`` runs an int8 copy of the export (dynamic quantisation, per-channel
    weights): about 2x faster, but its vectors differ from fp32 (cosine about 0.99), so it has
    its own name (``...:int8``; a cache written by fp32 refuses it) and calibrated thresholds,
    and never falls back to fp32 torch.
    """

    batch_size = 16  # texts per run: on one thread, 8-16 embed the most texts per CPU-second

    def __init__(
        self,
        model_dir: str | None = None,
        *,
        threads: int | None = 1,
        cache_dir: str | os.PathLike[str] | None = None,
        fallback: bool = True,
        workers: int | None = None,
        quantize: bool = False,
    ) -> None:
        from .models import shipped_model_path

        path = Path(model_dir or shipped_model_path())
        if not path.is_dir():
            raise ConfigError(f"embedding model directory not found: {path}")
        self._path = path
        self._model_dir = model_dir
        self._layout = _Layout(path)
        self._base = path.name if model_dir else "all-MiniLM-L6-v2"
        self._name = f"st:{self._base}:int8" if quantize else f"st:{self._base}"
        self._quantize = quantize
        if quantize and model_dir is None:
            self.thresholds = INT8_THRESHOLDS
        self._threads = threads
        self._cache_dir = Path(cache_dir) if cache_dir is not None else default_onnx_cache_dir()
        self._fallback = fallback
        self._lock = threading.Lock()
        self._runtime: _OnnxRuntime | None = None
        self._torch: BaseEmbedder | None = None
        self._workers = workers if workers is not None else (os.cpu_count() or 1)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def name(self) -> str:
        """``st:<model folder name>`` as the torch embedder of the folder (``:int8`` added)."""
        return self._name

    @property
    def dimension(self) -> int:
        """From the folder's pooling or model config; the model is loaded only if neither has it."""
        if self._layout.dimension is not None and self._layout.problem is None:
            return self._layout.dimension
        return self._loaded().dimension

    @property
    def backend(self) -> str:
        """``onnx`` or ``torch`` (after a fallback); loads the model."""
        self._loaded()
        return "onnx" if self._runtime is not None else "torch"

    @property
    def onnx_path(self) -> Path:
        """Where the exported model of this folder lives (or will, after the first use)."""
        folder = f"{self._base}-{self._layout.fingerprint()}"
        return self._cache_dir / folder / "model.onnx"

    def _loaded(self) -> Any:
        runtime = self._runtime or self._torch
        if runtime is not None:
            return runtime
        with self._lock:
            if self._runtime is None and self._torch is None:
                self._load()
            return self._runtime or self._torch

    def _preload(self) -> None:
        """Load the model now (idempotent). The engine calls it on a background thread at the
        first lookup: ONNX Runtime builds its session without the GIL while the vector store
        opens, and the first embedding waits for it on the load lock."""
        self._loaded()

    def _load(self) -> None:
        try:
            if self._layout.problem:
                raise ConfigError(self._layout.problem)
            self._runtime = self._open_onnx()
        except Exception as exc:
            if self._quantize:  # torch's fp32 vectors would not match the int8 name
                raise ConfigError(
                    f"int8 ONNX embedding unavailable for {self._name}: {exc}"
                ) from exc
            if not self._fallback:
                raise
            log.warning(
                "modelcache: ONNX Runtime embedding unavailable for %s (%s); using torch",
                self._name,
                exc,
            )
            from .models import SentenceTransformerEmbedder

            self._torch = SentenceTransformerEmbedder(self._model_dir, threads=self._threads)

    def _open_onnx(self) -> _OnnxRuntime:
        bundled = self._path / "onnx" / "model.onnx"  # sentence-transformers' backend="onnx"
        model = bundled if bundled.is_file() else self.onnx_path
        if not model.is_file():
            log.info("modelcache: exporting %s to ONNX once, into %s", self._name, model.parent)
            export_onnx(self._path, model.parent)
        tokenizer = self._layout.transformer / "tokenizer.json"
        if not tokenizer.is_file():
            tokenizer = model.parent / "tokenizer.json"
        if self._quantize:
            model = quantize_onnx(model, self.onnx_path.parent / "model.int8.onnx")
        return _OnnxRuntime(self._layout, model, tokenizer, self._threads)

    @property
    def max_tokens(self) -> int:
        """The model's max sequence length minus its special tokens."""
        return int(self._loaded().max_tokens)

    def _tokens(self, text: str) -> list[int]:
        runtime = self._loaded()
        return runtime.tokens(text) if runtime is self._runtime else runtime._tokens(text)

    def _token_lists(self, texts: list[str]) -> list[list[int]]:
        runtime = self._loaded()
        if runtime is self._runtime:
            return runtime.token_lists(texts)  # one call of the Rust tokenizer, not one per text
        return runtime._token_lists(texts)

    def _token_starts(self, text: str) -> tuple[list[int], list[int]] | None:
        runtime = self._loaded()
        return runtime.token_starts(text) if runtime is self._runtime else None

    def _detokenize(self, ids: list[int]) -> str:
        runtime = self._loaded()
        return runtime.detokenize(ids) if runtime is self._runtime else runtime._detokenize(ids)

    def _encode(self, texts: list[str]) -> np.ndarray:
        runtime = self._loaded()
        if runtime is not self._runtime:
            return np.asarray(runtime._encode(texts), dtype=np.float32)
        encodings = runtime.encodings(texts)
        # sorted by token count, so each batch pads little (bulk loads)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        chunks = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        out = np.empty((len(texts), runtime.dimension), dtype=np.float32)

        def run(chunk: list[int]) -> None:
            out[chunk] = runtime.run([encodings[i] for i in chunk])

        pool = self._bulk_pool() if len(chunks) > 1 else None
        if pool is None:
            for chunk in chunks:
                run(chunk)
        else:  # ONNX Runtime releases the GIL: one-thread sessions run side by side
            for done in pool.map(run, chunks):
                del done
        return out

    def _bulk_pool(self) -> concurrent.futures.ThreadPoolExecutor | None:
        """Threads running batches of one call in parallel, when the session is single-threaded."""
        if self._threads != 1 or self._workers < 2:
            return None
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self._workers, thread_name_prefix="modelcache-embed"
                )
            return self._pool
