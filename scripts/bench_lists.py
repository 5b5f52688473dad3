#!/usr/bin/env python3
"""Benchmark the device side of reference lists with N entries (default 10 million).

Prints: list memory on the device (goal <= 200 MB), load + verify + decrypt time (goal <= 5 s),
and lookup time of one passage with 32 variants (goal <= 50 us), plus the full match() time.
Entries are random 96-bit keyed hashes plus some real plates hashed with the same key, so the
lookups both hit and miss. Everything is written to a temporary folder and removed afterwards.

    .venv/bin/python scripts/bench_lists.py [--entries 10000000] [--passages 20000]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import secrets
import statistics
import string
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.lists import keys  # noqa: E402
from edge.lists.central import Central  # noqa: E402
from edge.lists.codec import Entries  # noqa: E402
from edge.lists.hashing import KEY_BYTES, PlateHasher  # noqa: E402
from edge.lists.matcher import ListMatcher, plate_variants  # noqa: E402
from edge.lists.model import ListDef  # noqa: E402
from edge.lists.store import ListStore  # noqa: E402

CATS = ("fine", "tax_debt", "stolen_vehicle", "stolen_plate", "warrant", "driving_ban", "area_ban",
        "mobile_banditry", "cargo_theft", "observation")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """VmHWM of this process image (ru_maxrss would include the parent's peak before exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def random_nl(rng: random.Random) -> str:
    letters = "BDFGHJKLNPRSTVXZ"
    shapes = ("LLDDDL", "DLLLDD", "LLDDLL", "DDLLLD", "LDDDLL", "DLLDDD")
    return "".join(rng.choice(letters) if c == "L" else rng.choice(string.digits) for c in rng.choice(shapes))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000_000)
    ap.add_argument("--passages", type=int, default=20_000)
    ap.add_argument("--real", type=int, default=10_000, help="real plates among the entries")
    ap.add_argument("--device", type=Path, help=argparse.SUPPRESS)  # internal: run the device part
    args = ap.parse_args()
    if args.device:
        return device_part(args.device, args.passages)
    rng = random.Random(1)
    nrng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="bench-lists-") as tmp:
        root = Path(tmp)
        central = Central(root / "central")
        trusted = central.init()
        keys.generate_device_key(root / "dev.key", root / "dev.pub")
        central.add_device("bench", root / "dev.pub")
        for n in range(49):  # a fleet of 50 units: one wrapped key each
            keys.generate_device_key(root / f"d{n}.key", root / f"d{n}.pub")
            central.add_device(f"unit{n:03d}", root / f"d{n}.pub")

        t = time.perf_counter()
        hasher = PlateHasher(secrets.token_bytes(KEY_BYTES))
        real = sorted({random_nl(rng) for _ in range(args.real)})
        r_hi, r_lo = hasher.hash_many(real)
        n_rand = args.entries - len(real)
        hi = np.concatenate([np.frombuffer(nrng.bytes(8 * n_rand), dtype=np.uint64), r_hi])
        lo = np.concatenate([np.frombuffer(nrng.bytes(4 * n_rand), dtype=np.uint32), r_lo])
        defs = tuple(ListDef(id=f"list{n}", name=f"List {n}", category=CATS[n], action="observe", priority=n)
                     for n in range(10))
        tags = tuple((n % 10, f"R{n}") for n in range(40))
        tag = nrng.integers(0, len(tags), args.entries, dtype=np.uint16)
        until = np.zeros(args.entries, dtype=np.uint16)
        sealed = central.build_hashed(defs, hasher.key, Entries(hi, lo, tag, until), tags)
        del hi, lo, tag, until
        (root / "real.txt").write_text("\n".join(real))
        print(f"central build + seal of {args.entries:,} entries: {time.perf_counter() - t:.1f} s, "
              f"sealed package {len(sealed.snapshot) / 2**20:.1f} MiB")
        del sealed
        gc.collect()

        # the device side runs in a fresh process, so its memory figures are its own
        child = [sys.executable, __file__, "--device", str(root), "--passages", str(args.passages)]
        rc = subprocess.run(child).returncode
        if rc:
            return rc
    return 0


def device_part(root: Path, n_passages: int) -> int:
    """Load, verify, decrypt and look up, as the unit does; prints the figures."""
    rng = random.Random(2)
    real = (root / "real.txt").read_text().split()
    base = rss_mb()
    store = ListStore("bench", keys.load_device_key(root / "dev.key"),
                      keys.load_trusted_signers(root / "central" / "trusted.pub"))
    t = time.perf_counter()
    blob = (root / "central" / "out" / "snapshot.bin").read_bytes()
    t_read = time.perf_counter() - t
    result = store.apply(blob, persist=False)
    t_total = time.perf_counter() - t
    assert result.status == "applied", result
    del blob
    gc.collect()
    idx = store.index
    n = len(idx.hi)
    print(f"load + verify + decrypt + index: {t_total:.2f} s (reading the file {t_read:.2f} s)  [goal <= 5 s]")
    print(f"list memory on the device: {idx.nbytes / 1e6:.1f} MB = {idx.nbytes / 2**20:.1f} MiB "
          f"({idx.nbytes / n:.1f} bytes/entry: hashes 12, tag 2, valid-until 2, bucket table); "
          f"process RSS {base:.0f} -> {rss_mb():.0f} MiB after load, peak {peak_mb():.0f} MiB while loading  "
          f"[goal <= 200 MB]")

    now = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    matcher = ListMatcher(store, ["*"])
    passages, hits_expected = [], 0
    for k in range(n_passages):
        text = rng.choice(real) if k % 10 == 0 else random_nl(rng)
        hits_expected += k % 10 == 0
        passages.append((text, [(random_nl(rng), 0.1) for _ in range(3)]))
    variant_sets = []
    for text, alts in passages:
        v = [x for x, _ in plate_variants(text, alts, "", limit=32)]
        while len(v) < 32:
            v.append(random_nl(rng))
        variant_sets.append(v[:32])
    for v in variant_sets[:200]:  # warm up
        idx.lookup(v)
    lookup_us, match_us, hits = [], [], 0
    for v in variant_sets:
        t = time.perf_counter()
        found = idx.lookup(v)
        lookup_us.append((time.perf_counter() - t) * 1e6)
        hits += bool(found)
    for text, alts in passages:
        t = time.perf_counter()
        matcher.match(text, alts, "NL", now)
        match_us.append((time.perf_counter() - t) * 1e6)

    def q(xs, p):
        return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]

    print(f"lookup of one passage with 32 variants (HMAC + search): median {statistics.median(lookup_us):.1f} us, "
          f"p99 {q(lookup_us, 0.99):.1f} us  [goal <= 50 us]; {hits}/{len(variant_sets)} passages hit "
          f"({hits_expected} listed)")
    print(f"full match() incl. NL look-alike variants and list rules: median {statistics.median(match_us):.1f} us, "
          f"p99 {q(match_us, 0.99):.1f} us")
    assert hits >= hits_expected
    return 0


if __name__ == "__main__":
    sys.exit(main())
