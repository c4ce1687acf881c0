"""Verification of a ledger: named failures, and 1,200 random tamperings, every one caught."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from tandem_audit_sink.checkpoint import Checkpoint, Signer
from tandem_audit_sink.ledger import StoredEntry, canonical_json, entry_leaf, seal
from tandem_audit_sink.merkle import BLOCK, Frontier, root_of
from tandem_audit_sink.verify import Verifier, verify

from tests.audit_sink.conftest import record

RECORDED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SIGNER = Signer.generate("tests")
SIZE = 300  # past one whole block


def entries(count: int, start: int = 1) -> list[StoredEntry]:
    return [seal(record(n), n, RECORDED) for n in range(start, start + count)]


def signed(rows: list[StoredEntry], size: int, signer: Signer = SIGNER) -> Checkpoint:
    root = root_of(bytes.fromhex(r.leaf_hash) for r in rows[:size]).hex()
    return signer.sign(size, root, RECORDED)


def blocks(rows: list[StoredEntry]) -> dict[int, bytes]:
    leaves = [bytes.fromhex(r.leaf_hash) for r in rows]
    return {b: root_of(leaves[b * BLOCK : (b + 1) * BLOCK]) for b in range(len(rows) // BLOCK)}


@dataclasses.dataclass
class Stored:
    """A ledger as its database holds it: rows, block hashes, checkpoints."""

    rows: list[StoredEntry]
    blocks: dict[int, bytes]
    checkpoints: list[Checkpoint]

    def verify(self, kept: list[Checkpoint]) -> Verifier:
        verifier = Verifier([*self.checkpoints, *kept], self.blocks, [SIGNER.public_key])
        verifier.feed(self.rows)
        return verifier


def ledger(size: int = SIZE) -> Stored:
    rows = entries(size)
    return Stored(rows, blocks(rows), [signed(rows, 100), signed(rows, 256), signed(rows, size)])


def test_an_untouched_ledger_verifies_with_its_checkpoints() -> None:
    stored = ledger()
    result = stored.verify([]).finish()
    assert result.ok, result.failure
    assert (result.entries, result.tree_size, result.checkpoints) == (SIZE, SIZE, 3)
    assert result.root_hash == stored.checkpoints[-1].root_hash
    assert verify([]).ok


def test_a_changed_entry_is_named_at_its_row() -> None:
    rows = entries(5)
    doc = json.loads(rows[2].canonical)
    doc["data"]["features"]["amount"] = 1_000_000
    rows[2] = dataclasses.replace(rows[2], canonical=canonical_json(doc))
    result = verify(rows)
    assert result.failure is not None
    assert (result.failure.seq, result.entries) == (3, 2)
    assert result.failure.reason.startswith("leaf mismatch")


def test_a_changed_column_is_an_entry_mismatch() -> None:
    rows = entries(4)
    rows[1] = dataclasses.replace(rows[1], subject="someone-else", task_type="other")
    result = verify(rows)
    assert result.failure is not None
    assert result.failure.seq == 2
    assert "subject" in result.failure.reason and "task_type" in result.failure.reason


def test_a_resealed_entry_is_caught_by_the_next_checkpoint() -> None:
    rows = entries(20)
    checkpoints = [signed(rows, 8), signed(rows, 16)]
    rows[11] = seal(record(99), 12, RECORDED)  # consistent in itself: a new leaf hash too
    result = verify(rows, checkpoints)
    assert result.failure is not None
    assert result.failure.seq == 9  # the first entry no checkpoint vouched for yet
    assert "root mismatch: entries 9 to 16" in result.failure.reason


def test_a_cut_tail_is_caught_by_a_kept_checkpoint() -> None:
    rows = entries(10)
    kept = signed(rows, 10)
    result = verify(rows[:7], [signed(rows, 5), kept])
    assert result.failure is not None
    assert result.failure.seq == 8
    assert result.failure.reason == (
        "ledger truncated: it ends at seq 7 but a checkpoint was signed at size 10"
    )


def test_checkpoints_with_a_bad_signature_or_an_untrusted_key_fail() -> None:
    rows = entries(10)
    good = signed(rows, 10)
    forged = dataclasses.replace(good, root_hash="ab" * 32)
    assert "does not hold" in str(verify(rows, [forged]).failure)
    stranger = signed(rows, 10, Signer.generate("tests"))
    untrusted = verify(rows, [stranger], trusted_keys=[SIGNER.public_key])
    assert "untrusted key" in str(untrusted.failure)
    assert verify(rows, [stranger]).ok  # without a list of trusted keys, any signer is taken


def test_a_verifier_from_a_trusted_checkpoint_checks_only_what_follows() -> None:
    rows = entries(40)
    start = Frontier()
    for row in rows[:25]:
        start.push(bytes.fromhex(row.leaf_hash))
    verifier = Verifier([signed(rows, 40)], start=start)
    assert verifier.feed(rows[25:])
    result = verifier.finish()
    assert result.ok
    assert (result.entries, result.tree_size) == (15, 40)


def test_the_verifier_streams_in_chunks_and_stops_at_the_first_failure() -> None:
    rows = entries(10)
    rows[6] = dataclasses.replace(rows[6], leaf_hash="00" * 32)
    verifier = Verifier()
    assert verifier.feed(rows[:4])
    assert not verifier.feed(rows[4:8])
    assert not verifier.feed(rows[8:])
    result = verifier.finish()
    assert result.failure is not None
    assert (result.failure.seq, result.entries) == (7, 6)


# Tampering, as an operator with write access to the database could do it. The strongest forger
# renumbers and rehashes what follows (and the stored blocks), so only the signed roots tell.


def resealed(rows: list[StoredEntry]) -> list[StoredEntry]:
    out = []
    for seq, row in enumerate(rows, start=1):
        doc = json.loads(row.canonical) | {"seq": seq}
        canonical = canonical_json(doc)
        out.append(
            dataclasses.replace(
                row, seq=seq, canonical=canonical, leaf_hash=entry_leaf(canonical).hex()
            )
        )
    return out


def forged(stored: Stored, rows: list[StoredEntry]) -> Stored:
    rows = resealed(rows)
    return dataclasses.replace(stored, rows=rows, blocks=blocks(rows))


def change_data(stored: Stored, rng: random.Random) -> Stored:
    i = rng.randrange(len(stored.rows))
    doc = json.loads(stored.rows[i].canonical)
    doc["data"]["features"]["amount"] = -rng.randrange(1, 10**6)
    changed = dataclasses.replace(stored.rows[i], canonical=canonical_json(doc))
    rows = [*stored.rows[:i], changed, *stored.rows[i + 1 :]]
    return forged(stored, rows) if rng.random() < 0.5 else dataclasses.replace(stored, rows=rows)


def change_column(stored: Stored, rng: random.Random) -> Stored:
    i = rng.randrange(len(stored.rows))
    column = rng.choice(["event_id", "source", "subject", "topic", "offset", "task_type"])
    value = 10**9 if column == "offset" else "forged"
    rows = list(stored.rows)
    rows[i] = dataclasses.replace(rows[i], **{column: value})
    return dataclasses.replace(stored, rows=rows)


def delete(stored: Stored, rng: random.Random) -> Stored:
    i = rng.randrange(len(stored.rows))
    rows = stored.rows[:i] + stored.rows[i + 1 :]
    return forged(stored, rows) if rng.random() < 0.5 else dataclasses.replace(stored, rows=rows)


def swap(stored: Stored, rng: random.Random) -> Stored:
    i, j = rng.sample(range(len(stored.rows)), 2)
    rows = list(stored.rows)
    rows[i], rows[j] = rows[j], rows[i]
    return forged(stored, rows) if rng.random() < 0.5 else dataclasses.replace(stored, rows=rows)


def insert(stored: Stored, rng: random.Random) -> Stored:
    i = rng.randrange(len(stored.rows))  # after the last entry would be a lawful append
    extra = seal(record(10_000 + i), i + 1, RECORDED)
    return forged(stored, [*stored.rows[:i], extra, *stored.rows[i:]])


def flip_bit(stored: Stored, rng: random.Random) -> Stored:
    i = rng.randrange(len(stored.rows))
    row = stored.rows[i]
    if rng.random() < 0.7:
        text = row.canonical.encode()
        at = rng.randrange(len(text))
        flipped = bytes([text[at] ^ (1 << rng.randrange(7))])  # stays ASCII, so stays text
        row = dataclasses.replace(row, canonical=(text[:at] + flipped + text[at + 1 :]).decode())
    else:
        raw = bytearray(bytes.fromhex(row.leaf_hash))
        raw[rng.randrange(32)] ^= 1 << rng.randrange(8)
        row = dataclasses.replace(row, leaf_hash=raw.hex())
    return dataclasses.replace(stored, rows=[*stored.rows[:i], row, *stored.rows[i + 1 :]])


def cut_tail(stored: Stored, rng: random.Random) -> Stored:
    # the stored checkpoints beyond the cut go too: only the kept one remembers the tail
    keep = rng.randrange(len(stored.rows))
    checkpoints = [c for c in stored.checkpoints if c.tree_size <= keep]
    return Stored(stored.rows[:keep], blocks(stored.rows[:keep]), checkpoints)


MUTATIONS: list[Callable[[Stored, random.Random], Stored]] = [
    change_data,
    change_column,
    delete,
    swap,
    insert,
    flip_bit,
    cut_tail,
]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_random_tampering_is_detected(seed: int) -> None:
    """400 mutations a seed, 1,200 in all: each one fails verification against the checkpoint
    an auditor kept from before (the stored checkpoints may be gone with the tail)."""
    rng = random.Random(seed)
    original = ledger()
    kept = original.checkpoints[-1]
    assert original.verify([kept]).finish().ok
    kinds: Counter[str] = Counter()
    for n in range(400):
        mutation = rng.choice(MUTATIONS)
        tampered = mutation(original, rng)
        assert tampered != original, f"{mutation.__name__} changed nothing"
        result = tampered.verify([kept]).finish()
        assert not result.ok, f"mutation {n} ({mutation.__name__}) went unnoticed"
        kinds[mutation.__name__] += 1
    assert set(kinds) == {m.__name__ for m in MUTATIONS}
