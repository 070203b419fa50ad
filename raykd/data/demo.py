"""The built-in demo collection: a synthetic, seeded retrieval task plus tiny BERT models.

The language is made of pseudo-words. Every topic has its own content words, split further into
subtopics; passages mix their topic's and subtopic's words with Zipf-distributed background words.
Queries take some content words from their source passage and replace others by *synonyms*: words
that never occur in any passage. BM25 cannot match a synonym, so it loses on queries that lean on
them, while a trained encoder can learn each synonym's topic from the training queries.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# Bump when the generator's output changes, so stale cached collections are regenerated.
_GENERATOR_VERSION = 1

_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_VOCAB_SIZE = 3000
_MAX_POSITIONS = 160

_PASSAGES_PER_TOPIC = 100
_SUBTOPICS_PER_TOPIC = 4
_TOPIC_WORDS = 40
_SUBTOPIC_WORDS = 10
_TOPIC_SYNONYMS = 6
_SUBTOPIC_SYNONYMS = 3
_BACKGROUND_WORDS = 250
# Frequent background words double as query filler ("what", "how"): matched but nearly zero IDF.
_QUERY_FILLER = 12
_SYNONYM_RATE = 0.5
_REL1_RATE = 0.5


@dataclass(frozen=True)
class DemoPaths:
    """Where the built-in demo collection and its tiny models live under ``root``."""

    root: Path
    corpus: Path
    queries: Path
    qrels_dir: Path
    tokenizer_dir: Path
    teacher_dir: Path
    student_dir: Path


def default_demo_dir() -> Path:
    """`$RAYKD_CACHE/demo`, by default `~/.cache/raykd/demo`."""
    cache = os.environ.get("RAYKD_CACHE") or "~/.cache/raykd"
    return Path(cache).expanduser() / "demo"


def write_demo_collection(
    dest: str | Path,
    *,
    seed: int = 0,
    n_passages: int = 3000,
    n_train_queries: int = 300,
    n_dev_queries: int = 100,
) -> DemoPaths:
    """Write the demo collection (BEIR layout), its tokenizer and tiny teacher/student models.

    Returns at once when `dest` already holds a complete collection for the same parameters.
    Everything is generated in a temporary sibling directory and renamed into place.
    """
    if n_passages < 2 * _SUBTOPICS_PER_TOPIC:
        raise ValueError(f"n_passages must be at least {2 * _SUBTOPICS_PER_TOPIC}: {n_passages}")
    if n_train_queries < 1 or n_dev_queries < 1:
        raise ValueError("need at least one train and one dev query")
    if n_train_queries + n_dev_queries > n_passages:
        raise ValueError("every query needs its own source passage: too many queries")
    dest = Path(dest).expanduser()
    params = {
        "generator_version": _GENERATOR_VERSION,
        "seed": seed,
        "n_passages": n_passages,
        "n_train_queries": n_train_queries,
        "n_dev_queries": n_dev_queries,
    }
    paths = _paths(dest)
    if _stamp_matches(dest, params):
        return paths
    if dest.exists() and not (dest / "demo.json").exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty and not a raykd demo collection")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    # mkdtemp's 0700 would survive the rename and hide a shared cache from other users.
    tmp.chmod(0o755)
    try:
        _generate(tmp, params)
        _install(tmp, dest, params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def _paths(root: Path) -> DemoPaths:
    return DemoPaths(
        root=root,
        corpus=root / "corpus.jsonl",
        queries=root / "queries.jsonl",
        qrels_dir=root / "qrels",
        tokenizer_dir=root / "tokenizer",
        teacher_dir=root / "teacher",
        student_dir=root / "student",
    )


def _stamp_matches(root: Path, params: dict) -> bool:
    try:
        return json.loads((root / "demo.json").read_text()) == params
    except (OSError, ValueError):
        return False


def _install(tmp: Path, dest: Path, params: dict) -> None:
    stale = None
    if dest.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{dest.name}.stale-", dir=dest.parent))
        os.rename(dest, stale / "old")
    try:
        os.rename(tmp, dest)
    except OSError:
        # A concurrent writer got there first; its collection is as good as ours.
        if not _stamp_matches(dest, params):
            raise
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def _generate(root: Path, params: dict) -> None:
    rng = random.Random(params["seed"])
    lang = _Language(rng, n_topics=max(1, round(params["n_passages"] / _PASSAGES_PER_TOPIC)))
    passages = _make_passages(rng, lang, params["n_passages"])
    n_train, n_dev = params["n_train_queries"], params["n_dev_queries"]
    queries, qrels = _make_queries(rng, lang, passages, n_train + n_dev)

    with open(root / "corpus.jsonl", "w") as f:
        for p in passages:
            f.write(json.dumps({"_id": p.pid, "title": p.title, "text": p.text}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for qid, text in queries:
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (root / "qrels").mkdir()
    for split, part in (("train", queries[:n_train]), ("dev", queries[n_train:])):
        with open(root / "qrels" / f"{split}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid, _ in part:
                for pid, rel in qrels[qid]:
                    f.write(f"{qid}\t{pid}\t{rel}\n")

    texts = [f"{p.title} {p.text}" for p in passages] + [text for _, text in queries]
    tokenizer = _train_tokenizer(texts, lang.syllables)
    tokenizer.save_pretrained(root / "tokenizer")
    _write_models(root, tokenizer, params["seed"])
    # Written last: its presence marks the collection complete.
    (root / "demo.json").write_text(json.dumps(params, indent=2) + "\n")


class _Language:
    """Pseudo-word vocabularies: background, per-topic, per-subtopic, and query-only synonyms."""

    def __init__(self, rng: random.Random, n_topics: int):
        open_syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
        self.syllables = open_syllables + [s + e for s in open_syllables for e in "nrls"]
        seen: set[str] = set()

        def fresh(n: int) -> list[str]:
            out = []
            while len(out) < n:
                word = "".join(rng.choice(self.syllables) for _ in range(rng.randint(2, 3)))
                if word not in seen:
                    seen.add(word)
                    out.append(word)
            return out

        self.background = fresh(_BACKGROUND_WORDS)
        self.background_weights = [1.0 / (rank + 1) for rank in range(_BACKGROUND_WORDS)]
        self.filler = self.background[:_QUERY_FILLER]
        self.n_topics = n_topics
        self.topic_words = [fresh(_TOPIC_WORDS) for _ in range(n_topics)]
        self.subtopic_words = [
            [fresh(_SUBTOPIC_WORDS) for _ in range(_SUBTOPICS_PER_TOPIC)] for _ in range(n_topics)
        ]
        # Many-to-one, so that each synonym recurs across training queries and can be learned.
        self.synonym: dict[str, str] = {}
        for t in range(n_topics):
            syns = fresh(_TOPIC_SYNONYMS)
            for i, w in enumerate(self.topic_words[t]):
                self.synonym[w] = syns[i % _TOPIC_SYNONYMS]
            for words in self.subtopic_words[t]:
                syns = fresh(_SUBTOPIC_SYNONYMS)
                for i, w in enumerate(words):
                    self.synonym[w] = syns[i % _SUBTOPIC_SYNONYMS]


@dataclass
class _Passage:
    pid: str
    topic: int
    subtopic: int
    content: list[str]
    title: str
    text: str


def _make_passages(rng: random.Random, lang: _Language, n: int) -> list[_Passage]:
    slots = [(t, s) for t in range(lang.n_topics) for s in range(_SUBTOPICS_PER_TOPIC)]
    passages = []
    for i in range(n):
        t, s = slots[i % len(slots)]
        sub = rng.sample(lang.subtopic_words[t][s], rng.randint(3, 6))
        top = rng.sample(lang.topic_words[t], rng.randint(5, 9))
        content = sub + top
        words = content + rng.choices(content, k=rng.randint(2, 6))
        words += rng.choices(
            lang.background, lang.background_weights, k=rng.randint(30, 60) - len(words)
        )
        rng.shuffle(words)
        title = f"{sub[0]} {top[0]}"
        passages.append(_Passage(f"p{i}", t, s, content, title, " ".join(words)))
    # Ids run in generation order, so neighbouring ids would otherwise share a subtopic.
    order = list(range(n))
    rng.shuffle(order)
    return [passages[j] for j in order]


def _make_queries(
    rng: random.Random, lang: _Language, passages: list[_Passage], n: int
) -> tuple[list[tuple[str, str]], dict[str, list[tuple[str, int]]]]:
    by_subtopic: dict[tuple[int, int], list[_Passage]] = {}
    for p in passages:
        by_subtopic.setdefault((p.topic, p.subtopic), []).append(p)
    queries, qrels = [], {}
    for i, src in enumerate(rng.sample(passages, n)):
        qid = f"q{i}"
        picked = rng.sample(src.content, rng.randint(3, 5))
        words = [lang.synonym[w] if rng.random() < _SYNONYM_RATE else w for w in picked]
        words += rng.sample(lang.filler, rng.randint(0, 2))
        rng.shuffle(words)
        queries.append((qid, " ".join(words)))
        qrels[qid] = [(src.pid, 2)]
        if rng.random() < _REL1_RATE:
            # The sibling that best covers the query's intent, synonyms resolved.
            siblings = [p for p in by_subtopic[(src.topic, src.subtopic)] if p is not src]
            if siblings:
                best = max(siblings, key=lambda p: len(set(picked) & set(p.content)))
                qrels[qid].append((best.pid, 1))
    return queries, qrels


def _train_tokenizer(texts: list[str], syllables: list[str]):
    """A WordPiece vocabulary: every syllable (start and `##` continuation), then whole words by
    frequency. The `tokenizers` WordPiece trainer breaks ties between equally frequent merges in
    hash-map order, which differs per run, so its vocabulary is not a function of the seed."""
    from transformers import BertTokenizer

    counts = Counter(w for text in texts for w in text.lower().split())
    chars = sorted({c for w in counts for c in w})
    pieces = set(chars + syllables) | {"##" + p for p in chars + syllables}
    budget = _VOCAB_SIZE - len(_SPECIAL_TOKENS) - len(pieces)
    frequent = sorted((w for w in counts if w not in pieces), key=lambda w: (-counts[w], w))
    learned = sorted(pieces | set(frequent[:budget]))
    vocab = {token: i for i, token in enumerate(_SPECIAL_TOKENS + learned)}
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=_MAX_POSITIONS)


def _write_models(root: Path, tokenizer, seed: int) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel
    from transformers.utils import logging as hf_logging

    config = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=_MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Forked so that seeding the init leaves the caller's global torch RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = BertForSequenceClassification(BertConfig(**config, num_labels=1))
        student = BertModel(BertConfig(**config))
    # A one-shard progress bar per tiny model is noise in `raykd demo` and test output.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        for model, name in ((teacher, "teacher"), (student, "student")):
            model.save_pretrained(root / name)
            tokenizer.save_pretrained(root / name)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
