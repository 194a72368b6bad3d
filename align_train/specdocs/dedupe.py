"""Length filters and exact / near-duplicate removal, with the counts a data card reports.

Near duplicates are found with MinHash over word shingles and locality-sensitive banding
(candidate pairs), then confirmed by the exact Jaccard similarity of the shingle sets, so
the threshold means what it says. Small and dependency-free; for millions of documents use
a dedicated tool (datasketch, text-dedup).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

WORD = re.compile(r"\w+")
MASK = (1 << 61) - 1  # Mersenne prime modulus for the universal hash family


def normalise(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def shingles(text: str, k: int = 3) -> set[str]:
    words = WORD.findall(text.lower())
    if len(words) <= k:
        return {" ".join(words)}
    return {" ".join(words[i:i + k]) for i in range(len(words) - k + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _hash(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")


def minhash(items: set[str], num_perm: int) -> list[int]:
    hashes = [_hash(s) for s in items]
    sig = []
    for i in range(num_perm):
        a, b = 2 * i + 1, 7919 * i + 3  # fixed, distinct coefficients: deterministic signatures
        sig.append(min((a * h + b) % MASK for h in hashes))
    return sig


@dataclass
class FilterReport:
    input: int = 0
    too_short: int = 0
    too_long: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    kept: int = 0
    settings: dict = field(default_factory=dict)


def filter_documents(texts: list[str], min_words: int = 0, max_words: int | None = None,
                     near_threshold: float = 0.8, shingle_size: int = 3, num_perm: int = 64,
                     bands: int = 16) -> tuple[list[int], FilterReport]:
    """Indices of the documents kept (first occurrence wins) and what was removed, by reason."""
    if num_perm % bands:
        raise ValueError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
    report = FilterReport(input=len(texts), settings=dict(
        min_words=min_words, max_words=max_words, near_threshold=near_threshold, shingle_size=shingle_size,
        num_perm=num_perm, bands=bands))
    rows = num_perm // bands
    seen_exact: set[str] = set()
    buckets: dict[tuple, list[int]] = {}
    kept_shingles: dict[int, set[str]] = {}
    kept: list[int] = []
    for i, text in enumerate(texts):
        n_words = len(WORD.findall(text))
        if n_words < min_words:
            report.too_short += 1
            continue
        if max_words is not None and n_words > max_words:
            report.too_long += 1
            continue
        key = normalise(text)
        if key in seen_exact:
            report.exact_duplicates += 1
            continue
        sh = shingles(text, shingle_size)
        sig = minhash(sh, num_perm)
        band_keys = [(b, tuple(sig[b * rows:(b + 1) * rows])) for b in range(bands)]
        candidates = {j for bk in band_keys for j in buckets.get(bk, ())}
        if near_threshold < 1.0 and any(jaccard(sh, kept_shingles[j]) >= near_threshold for j in candidates):
            report.near_duplicates += 1
            continue
        seen_exact.add(key)
        kept_shingles[i] = sh
        for bk in band_keys:
            buckets.setdefault(bk, []).append(i)
        kept.append(i)
    report.kept = len(kept)
    return kept, report
