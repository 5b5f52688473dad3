"""Multi-frame consensus: one plate text from all reads of one tracked plate.

Each read is treated as independent evidence per character position: a read that says `x` with
confidence q supports `x` with likelihood q and every other character with (1 - q) / 35. Summed
in log space over the reads that have the winning length, this gives a posterior per position
that grows with agreement (three agreeing reads of 0.9 beat one read of 0.99) and stays low where
reads disagree. A beam over the per-position posteriors then yields ranked whole-plate texts;
the first one the plate grammar accepts (Dutch sidecodes first, via edge.grammar) wins, so the
consensus is a valid plate wherever the evidence allows one. The runners-up become the passage's
alternatives for the matcher.

Nothing here logs or raises with plate text (privacy rule in docs/architecture.md).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from edge import grammar
from edge.types import PlateRead

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_K = len(ALPHABET)
_Q_MIN, _Q_MAX = 0.05, 0.98  # a recognizer is never certain; caps keep one read from outvoting many
_MAX_EVIDENCE = 8.0  # total read weight beyond which weights are scaled down (many garbage reads prove nothing)
_OTHER_LENGTH_FLOOR = 1e-3  # a valid text of another length may beat an invalid one this much more likely
# ... and of the same length this much: enough for a look-alike every read got wrong (Z for 2), not for
# a foreign plate read confidently many times that two unsure reads happen to make look Dutch, nor for
# a character three reads gave at 0.98 (reads of one plate are not independent: their agreement counts
# for less than the product says)
_SAME_LENGTH_FLOOR = 1e-5
_KEEP_SHARE = 0.5  # a grammar-chosen plate must keep this share of the favoured text's confidence
_ALIGNED_WEIGHT = 0.7  # evidence of a read with a dropped or doubled character counts this much
_CONFUSABLE = 12.0  # a misread lands on one of about this many characters, not on any of 35
_LEN_RIGHT = 0.8  # a reader's chance to get the number of characters right, before its confidence counts
_LOOKALIKE_SHARE = 0.5  # share of a read's doubt that goes to look-alikes of the character it read
_LOOKALIKE = {c: "".join(g.replace(c, "") for g in grammar.LOOKALIKE_GROUPS if c in g)
              for g in grammar.LOOKALIKE_GROUPS for c in g}


@dataclass(frozen=True)
class Consensus:
    """The voted plate: text, its grammar status and how sure the vote is."""

    text: str
    formatted: str
    country: str
    confidence: float  # 0..1: posterior of the length times the per-position posteriors
    char_confidences: tuple[float, ...]
    alternatives: tuple[tuple[str, float], ...]  # runner-up texts, best first
    valid: bool  # the grammar of `country` accepts `text`
    reads: int  # reads that took part in the vote


def _clip(q: float) -> float:
    return min(_Q_MAX, max(_Q_MIN, float(q)))


def _char_confs(read: PlateRead) -> tuple[float, ...]:
    if len(read.char_confidences) == len(read.text):
        return tuple(_clip(c) for c in read.char_confidences)
    return (_clip(read.confidence),) * len(read.text)


def is_valid(text: str, country: str) -> bool:
    """Whether the plate grammar accepts `text` for `country`: Dutch sidecodes and letter rules for NL,
    the unambiguous formats edge.grammar knows for other countries; without a country nothing is valid."""
    if country == "NL":
        return grammar.is_valid_nl(text)
    if country:
        return grammar.guess_country(text) == country
    return False  # no grammar to check against


def _length_posterior(pairs: Sequence[tuple[PlateRead, float]]) -> dict[int, float]:
    """Posterior of the plate length: a read has the right length with probability _LEN_RIGHT,
    more so when it is confident; a wrong length is one of a few neighbours."""
    lens = {len(r.text) for r, _ in pairs}
    score = {}
    for n in lens:
        s = 0.0
        for r, w in pairs:
            right = _LEN_RIGHT + (1 - _LEN_RIGHT) * 0.5 * _clip(r.confidence)
            s += w * math.log(right if len(r.text) == n else (1 - right) / 4)
        score[n] = s
    top = max(score.values())
    z = sum(math.exp(v - top) for v in score.values())
    return {n: math.exp(v - top) / z for n, v in score.items()}


Evidence = list[tuple[int, str, float, float]]  # (position, character, confidence, weight)


def _evidence(reads: Sequence[tuple[PlateRead, float]]) -> Evidence:
    return [(i, ch, q, w) for read, w in reads for i, (ch, q) in enumerate(zip(read.text, _char_confs(read)))]


def _aligned(read: PlateRead, w: float, ref: str) -> Evidence:
    """Evidence of a read one character shorter or longer than `ref`, aligned where it fits `ref` best
    (a reader drops or doubles a character; the others still say something about their positions)."""
    text, confs = read.text, _char_confs(read)
    n = len(ref)
    options = []
    if len(text) == n - 1:  # a character dropped before position k
        for k in range(n):
            pos = [i if i < k else i + 1 for i in range(len(text))]
            options.append((pos, list(range(len(text)))))
    elif len(text) == n + 1:  # a character inserted at position k of the read
        for k in range(len(text)):
            idx = [i for i in range(len(text)) if i != k]
            options.append((list(range(n)), idx))
    else:
        return []
    best = max(options, key=lambda o: sum(text[j] == ref[p] for p, j in zip(*o)))
    return [(p, text[j], confs[j], w * _ALIGNED_WEIGHT) for p, j in zip(*best)]


def _position_posteriors(evidence: Evidence, length: int) -> list[dict[str, float]]:
    """Per position: posterior over the characters seen there; unseen characters share the rest."""
    logl: list[dict[str, float]] = [defaultdict(float) for _ in range(length)]
    base = [0.0] * length  # log-likelihood of a character no read proposed at that position
    for i, ch, q, w in evidence:
        miss = w * math.log((1 - q) / _CONFUSABLE)
        hit = w * math.log(q)
        # every character starts at `base`; the proposed one gets hit instead of miss
        base[i] += miss
        logl[i][ch] += hit - miss
        # a reader that is wrong is most often wrong by a look-alike: half the doubt goes there
        alike = _LOOKALIKE.get(ch, "")
        for a in alike:
            logl[i][a] += w * math.log((1 - q) * _LOOKALIKE_SHARE / len(alike)) - miss
    posts = []
    for i in range(length):
        seen = {ch: base[i] + d for ch, d in logl[i].items()}
        top = max(list(seen.values()) + [base[i]])
        z = sum(math.exp(v - top) for v in seen.values()) + (_K - len(seen)) * math.exp(base[i] - top)
        post = {ch: math.exp(v - top) / z for ch, v in seen.items()}
        post[""] = math.exp(base[i] - top) / z  # probability of each single unseen character
        posts.append(post)
    return posts


def _beam(posts: list[dict[str, float]], width: int) -> list[tuple[str, float]]:
    """Whole texts ranked by the product of per-position posteriors (seen characters only)."""
    beam: list[tuple[str, float]] = [("", 0.0)]
    for post in posts:
        choices = sorted(((c, p) for c, p in post.items() if c and p > 1e-6), key=lambda cp: -cp[1])[:6]
        beam = sorted(((t + c, s + math.log(p)) for t, s in beam for c, p in choices), key=lambda ts: -ts[1])[:width]
    return [(t, math.exp(s)) for t, s in beam]


def _text_prob(text: str, posts: list[dict[str, float]]) -> tuple[float, tuple[float, ...]]:
    chars = tuple(post.get(ch, post[""]) for ch, post in zip(text, posts))
    return math.prod(chars), chars


def _sidecode_fit(posts: list[dict[str, float]]) -> dict[int, list[float]]:
    """Per Dutch sidecode: the probability mass each position puts on the characters it allows."""
    if len(posts) != 6:
        return {}
    memo: dict[tuple[int, str], float] = {}  # sidecodes share a few character sets: sum each once

    def mass(i: int, allowed: str) -> float:
        if (i, allowed) not in memo:
            post = posts[i]
            memo[i, allowed] = sum(post.get(a, post[""]) for a in allowed)
        return memo[i, allowed]

    return {sc: [mass(i, grammar.nl_allowed(sc, i)) for i in range(6)] for sc in grammar.NL_SIDECODES}


def _nl_conditional(text: str, posts: list[dict[str, float]],
                    fits: dict[int, list[float]]) -> tuple[float, tuple[float, ...]]:
    """Posteriors under the Dutch grammar: per position given this text's sidecode (a character the
    sidecode forbids there carries no weight: an 'O' where only 'D' or '0' can be), and the whole
    text's probability times how likely the reads make this sidecode among all fourteen."""
    zs = fits[grammar.nl_sidecode(text)]
    total = sum(math.prod(f) for f in fits.values())
    chars = tuple(post.get(ch, post[""]) / z if z > 0 else 0.0 for ch, post, z in zip(text, posts, zs))
    share = math.prod(zs) / total if total > 0 else 0.0
    return math.prod(chars) * share, chars


def _country(reads: Sequence[tuple[PlateRead, float]], text: str) -> str:
    votes: dict[str, float] = defaultdict(float)
    for r, w in reads:
        if r.country:
            votes[r.country.upper()] += w * r.confidence
    if votes:
        return max(votes.items(), key=lambda kv: kv[1])[0]
    return (grammar.guess_country(text) or "").upper()


def vote(reads: Sequence[PlateRead], weights: Sequence[float] | None = None, *,
         beam_width: int = 48, max_alternatives: int = 5) -> Consensus | None:
    """The consensus of `reads` (None when none has text). `weights` scale each read's evidence (default 1)."""
    if weights is not None and len(weights) != len(reads):
        raise ValueError(f"vote: got {len(weights)} weights for {len(reads)} reads")
    pairs = [(r, 1.0 if weights is None else float(w)) for r, w in zip(reads, weights or [None] * len(reads))]
    pairs = [(r, w) for r, w in pairs if r.text and w > 0]
    if not pairs:
        return None
    total_w = sum(w for _, w in pairs)
    if total_w > _MAX_EVIDENCE:  # reads of one plate are not independent: cap what many of them can prove
        pairs = [(r, w * _MAX_EVIDENCE / total_w) for r, w in pairs]

    by_len = _length_posterior(pairs)
    total = 1.0
    lengths = sorted(by_len, key=lambda n: -by_len[n])

    # text, joint probability, char confidences, country, valid, probability under the Dutch grammar
    candidates: list[tuple[str, float, tuple[float, ...], str, bool, float | None]] = []
    for length in lengths[:2]:
        same = [(r, w) for r, w in pairs if len(r.text) == length]
        evidence = _evidence(same)
        posts = _position_posteriors(evidence, length)
        ref = _beam(posts, 1)[0][0]
        for r, w in pairs:  # reads one character off in length, aligned to the provisional text
            evidence += _aligned(r, w, ref)
        posts = _position_posteriors(evidence, length)
        p_len = by_len[length] / total
        ranked = _beam(posts, beam_width)
        country = _country(same, ranked[0][0])
        if not country:
            country = _nl_if_plausible(ranked, posts)
        seen = {t for t, _ in ranked}
        # grammar-guided repairs of the best text: look-alike swaps the reads may all have got wrong
        for alt in _lookalikes(ranked[0][0], country):
            if len(alt) == length and alt not in seen:
                ranked.append((alt, _text_prob(alt, posts)[0]))
                seen.add(alt)
        fits = _sidecode_fit(posts) if country == "NL" else {}
        for text, _ in ranked:
            ok = is_valid(text, country)
            prob, chars = _text_prob(text, posts)  # ranking uses the plain joint probability
            nl_prob = None
            if ok and country == "NL":
                nl_prob, chars = _nl_conditional(text, posts, fits)  # reported: under the Dutch grammar
            candidates.append((text, prob * p_len, chars, country, ok, nl_prob))

    candidates.sort(key=lambda c: -c[1])
    top = candidates[0]
    # a valid plate wins; of another length than the most probable text only if not far less likely
    valid = [c for c in candidates
             if c[4] and c[1] >= (_SAME_LENGTH_FLOOR if len(c[0]) == len(top[0]) else _OTHER_LENGTH_FLOOR) * top[1]]

    def reported(c) -> float:
        # a valid Dutch plate has six characters whatever the reads' lengths said: the grammar fixes it
        return c[5] if c[5] is not None else math.prod(c[2]) * by_len[len(c[0])] / total

    best = valid[0] if valid else top
    # ... unless the reads leave that plate itself unsure while they favour another text clearly (a
    # foreign plate whose look-alike happens to fit a sidecode): a doubtful Dutch guess would be
    # dropped as unreadable, while the favoured text still reaches the matcher (the guess stays
    # among its alternatives unless the reads make it far less likely still)
    if best is not top and reported(best) < _KEEP_SHARE * reported(top):
        best = top
    text, _, chars, country, ok, nl_prob = best
    if country == "NL" and not ok:  # Dutch was only a guess that the grammar then did not confirm
        country = grammar.guess_country(text)
    prob = reported(best)
    alts = []
    for t, p, *_ in sorted(candidates, key=lambda c: (not c[4], -c[1])):  # valid plates first
        if t != text and p >= 1e-4 and all(t != a for a, _ in alts):
            alts.append((t, round(p, 6)))
        if len(alts) >= max_alternatives:
            break
    formatted = grammar.format_plate(text, country) if country else text
    return Consensus(text=text, formatted=formatted or text, country=country, confidence=prob,
                     char_confidences=chars, alternatives=tuple(alts), valid=ok, reads=len(pairs))


def _nl_if_plausible(ranked: list[tuple[str, float]], posts: list[dict[str, float]]) -> str:
    """'NL' when reads without a country have a valid Dutch reading not far below the best text."""
    if len(posts) != 6 or not ranked:
        return ""
    top = ranked[0][1]
    variants = [t for t, _ in ranked] + _lookalikes(ranked[0][0], "NL")
    best_nl = max((_text_prob(t, posts)[0] for t in variants if grammar.is_valid_nl(t)), default=0.0)
    # Dutch first: any Dutch reading the look-alikes allow wins over an unknown foreign format
    return "NL" if best_nl > 0 else ""


def _lookalikes(text: str, country: str) -> list[str]:
    try:
        variants = grammar.lookalike_variants(text, country)
    except (TypeError, ValueError):
        return []
    out = []
    for v in variants:
        out.append(v[0] if isinstance(v, tuple) else v)
    return [v for v in out if isinstance(v, str)]
