"""Signing usage events and verifying them: signing keys, key ids, and the key ring.

A metering node signs `schemas.usage.signing_payload(event)` (the canonical JSON of the event
without its signature, `keyid` included) with its current key; the stream processor verifies
with the key ring, which maps every key id ever used to its verification key. Rotation is
adding a key to the ring, switching the node to it, and later retiring the old one with a
`not_after` time: events dated after it no longer verify under the old key, events dated
before it still do (a replay of an old spool must keep verifying).

Two algorithms:

- `ed25519` (default): the ring holds public keys only, so it can be published and anyone
  (the stream processor, an auditor, the HTTP ingest) verifies without holding a secret;
- `hmac-sha256`: cheaper still (a few microseconds, against 70-110 µs to verify an Ed25519
  signature through libsodium and ~230 µs through OpenSSL on the 2-core reference machine),
  but the ring then holds shared secrets and must be kept as private as the signing key.

`KeyRing.verdicts` verifies a whole batch, spreading Ed25519 verifications over a few threads
when the backend releases the GIL (libsodium does): that is most of a stream worker's CPU per
event, and it then uses every core.

Pure: no file or network I/O here (`metering.keyfiles` reads and writes the JSON files).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

from metering.ed25519 import BatchVerifier, Ed25519Backend, default_backend
from metering.errors import BadSignature
from schemas.usage import UsageEvent, signing_payload

Algorithm = Literal["ed25519", "hmac-sha256"]
ALGORITHMS: tuple[Algorithm, ...] = ("ed25519", "hmac-sha256")
_SECRET_BYTES = 32


def _fingerprint(algorithm: Algorithm, verification_bytes: bytes) -> str:
    # For HMAC the "verification bytes" are the secret: hashing it with a domain prefix keeps
    # the key id from revealing anything usable about the secret.
    return hashlib.sha256(algorithm.encode() + b":" + verification_bytes).hexdigest()[:16]


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _unhex(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"{what} must be a 0x-prefixed hex string")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as exc:
        raise ValueError(f"{what} is not valid hex") from exc


@dataclass(frozen=True)
class VerificationKey:
    """One entry of the key ring: what verifies signatures made under `keyid`.

    `key` is the Ed25519 public key (32 bytes) or the HMAC secret. `not_after` (unix seconds)
    retires the key: events whose time is later are rejected under it.
    """

    keyid: str
    algorithm: Algorithm
    key: bytes = field(repr=False)
    not_after: int | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown signing algorithm {self.algorithm!r}")
        if self.algorithm == "ed25519" and len(self.key) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        if self.algorithm == "hmac-sha256" and len(self.key) < 16:
            raise ValueError("an HMAC key must be at least 16 bytes")

    def to_json(self) -> dict[str, Any]:
        """The key ring file's form of this entry."""
        entry: dict[str, Any] = {"keyid": self.keyid, "algorithm": self.algorithm}
        entry["public_key" if self.algorithm == "ed25519" else "secret"] = _hex(self.key)
        if self.not_after is not None:
            entry["not_after"] = self.not_after
        return entry

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> VerificationKey:
        """Parse one key ring entry; raise `ValueError` naming what is wrong."""
        algorithm = entry.get("algorithm", "ed25519")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown signing algorithm {algorithm!r}")
        field_name = "public_key" if algorithm == "ed25519" else "secret"
        keyid = entry.get("keyid")
        if not isinstance(keyid, str) or not keyid:
            raise ValueError("key ring entry without a keyid")
        not_after = entry.get("not_after")
        if not_after is not None and (not isinstance(not_after, int) or not_after < 0):
            raise ValueError(f"{keyid}: not_after must be unix seconds")
        return cls(
            keyid=keyid,
            algorithm=cast(Algorithm, algorithm),
            key=_unhex(entry.get(field_name), f"{keyid}: {field_name}"),
            not_after=not_after,
        )


@dataclass(frozen=True)
class SigningKey:
    """A metering node's private signing key and its key id.

    `secret` is the Ed25519 seed (32 bytes) or the HMAC secret. Build one with `generate`.
    """

    keyid: str
    algorithm: Algorithm
    secret: bytes = field(repr=False)

    @classmethod
    def generate(cls, algorithm: Algorithm = "ed25519", *, prefix: str = "") -> SigningKey:
        """A fresh random key; its id is `<prefix>-<fingerprint>` (or the fingerprint)."""
        secret = secrets.token_bytes(_SECRET_BYTES)
        verification = _public_bytes(algorithm, secret)
        fp = _fingerprint(algorithm, verification)
        return cls(keyid=f"{prefix}-{fp}" if prefix else fp, algorithm=algorithm, secret=secret)

    def verification_key(self) -> VerificationKey:
        """The key ring entry that verifies this key's signatures."""
        return VerificationKey(
            self.keyid, self.algorithm, _public_bytes(self.algorithm, self.secret)
        )

    def to_json(self) -> dict[str, Any]:
        """The signing key file's form (secret: keep the file private)."""
        return {"keyid": self.keyid, "algorithm": self.algorithm, "secret": _hex(self.secret)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SigningKey:
        """Parse a signing key file; raise `ValueError` naming what is wrong."""
        algorithm = doc.get("algorithm", "ed25519")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown signing algorithm {algorithm!r}")
        keyid = doc.get("keyid")
        if not isinstance(keyid, str) or not keyid:
            raise ValueError("signing key without a keyid")
        secret = _unhex(doc.get("secret"), "secret")
        if algorithm == "ed25519" and len(secret) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(keyid=keyid, algorithm=cast(Algorithm, algorithm), secret=secret)


def _public_bytes(algorithm: Algorithm, secret: bytes) -> bytes:
    if algorithm == "hmac-sha256":
        return secret
    return default_backend().public_key(secret)


class Signer:
    """Signs usage events with one `SigningKey` (thread-safe: it holds no mutable state)."""

    def __init__(self, key: SigningKey, backend: Ed25519Backend | None = None) -> None:
        self.key = key
        self.backend = backend or default_backend()

    @property
    def keyid(self) -> str:
        """The key id events signed here carry (set it with `UsageEvent.create(keyid=...)`)."""
        return self.key.keyid

    def sign_bytes(self, message: bytes) -> bytes:
        """The raw signature of `message`."""
        if self.key.algorithm == "ed25519":
            return self.backend.sign(self.key.secret, message)
        return hmac.digest(self.key.secret, message, "sha256")

    def sign(self, event: UsageEvent) -> UsageEvent:
        """`event` carrying this key's signature; its `keyid` must already be this key's,
        because the key id is part of the signed bytes."""
        if event.keyid != self.keyid:
            raise ValueError(f"event keyid {event.keyid!r} is not the signer's {self.keyid!r}")
        return event.with_signature(_hex(self.sign_bytes(signing_payload(event))))


class KeyRing(Mapping[str, VerificationKey]):
    """Verification keys by key id: what the stream processor and the ingest API verify with.

    Immutable: `with_key` and `retire` return a new ring, so a ring shared between threads
    never changes under a verifier.
    """

    def __init__(
        self, keys: Iterable[VerificationKey] = (), backend: Ed25519Backend | None = None
    ) -> None:
        self._keys: dict[str, VerificationKey] = {}
        for key in keys:
            if key.keyid in self._keys:
                raise ValueError(f"key id {key.keyid!r} appears twice in the key ring")
            self._keys[key.keyid] = key
        self.backend = backend or default_backend()

    def __getitem__(self, keyid: str) -> VerificationKey:
        return self._keys[keyid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def with_key(self, key: VerificationKey) -> KeyRing:
        """This ring plus `key` (replacing an entry with the same id and the same key)."""
        existing = self._keys.get(key.keyid)
        if existing is not None and existing.key != key.key:
            raise ValueError(f"key id {key.keyid!r} already names a different key")
        others = (k for k in self._keys.values() if k.keyid != key.keyid)
        return KeyRing([*others, key], self.backend)

    def retire(self, keyid: str, not_after: int) -> KeyRing:
        """This ring with `keyid` refusing events dated after `not_after` (unix seconds)."""
        if keyid not in self._keys:
            raise KeyError(keyid)
        retired = replace(self._keys[keyid], not_after=not_after)
        return KeyRing(
            [retired if k.keyid == keyid else k for k in self._keys.values()], self.backend
        )

    def verify(self, event: UsageEvent, payload: bytes | None = None) -> None:
        """Return if `event` carries a good signature under a key of this ring that was not
        retired at the event's time; raise `BadSignature` with the reason otherwise.

        `payload` is `signing_payload(event)` when the caller has already computed it."""
        key, signature = self._key_for(event)
        if payload is None:
            payload = signing_payload(event)
        if not self.verify_bytes(key.keyid, payload, signature):
            raise BadSignature(f"event {event.id}: signature does not verify")

    def _key_for(self, event: UsageEvent) -> tuple[VerificationKey, bytes]:
        """The ring's key for `event` and its signature bytes; `BadSignature` when the event
        cannot verify whatever its signature (unsigned, unknown or retired key)."""
        if event.signature is None or event.keyid is None:
            raise BadSignature(f"event {event.id}: unsigned (no signature or keyid)")
        key = self._keys.get(event.keyid)
        if key is None:
            raise BadSignature(f"event {event.id}: unknown key id {event.keyid!r}")
        if key.not_after is not None and event.unix_time > key.not_after:
            raise BadSignature(f"event {event.id}: key {key.keyid} retired before the event")
        return key, bytes.fromhex(event.signature[2:])

    def verdicts(self, items: Sequence[tuple[UsageEvent, bytes]]) -> list[str | None]:
        """`verify` of each `(event, signing payload)`: None where the signature is good, the
        reason where it is not, in order.

        Ed25519 verifications go to the backend in batches when it verifies batches
        (`BatchVerifier`), and a large batch runs on a few threads when the backend releases
        the GIL (`Ed25519Backend.parallel`); the answers are the same either way."""
        out: list[str | None] = [None] * len(items)
        pending: list[tuple[int, bytes, bytes, bytes]] = []  # index, key, payload, signature
        for i, (event, payload) in enumerate(items):
            try:
                key, signature = self._key_for(event)
            except BadSignature as exc:
                out[i] = str(exc)
                continue
            if key.algorithm == "hmac-sha256":
                if not _hmac_verifies(key.key, payload, signature):
                    out[i] = f"event {event.id}: signature does not verify"
            else:
                pending.append((i, key.key, payload, signature))
        run = _verify_chunk(self.backend)
        workers = _verify_threads() if self.backend.parallel else 1
        if workers > 1 and len(pending) >= _PARALLEL_MIN:
            step = -(-len(pending) // workers)
            chunks = [pending[k : k + step] for k in range(0, len(pending), step)]
            results = [good for chunk_results in _pool().map(run, chunks) for good in chunk_results]
        else:
            results = run(pending)
        for (i, _, _, _), good in zip(pending, results, strict=True):
            if not good:
                out[i] = f"event {items[i][0].id}: signature does not verify"
        return out

    def verify_bytes(self, keyid: str, message: bytes, signature: bytes) -> bool:
        """True when `signature` over `message` verifies under `keyid`."""
        key = self._keys[keyid]
        if key.algorithm == "hmac-sha256":
            return _hmac_verifies(key.key, message, signature)
        return self.backend.verify(key.key, message, signature)

    def to_json(self) -> dict[str, Any]:
        """The key ring file's form."""
        return {"keys": [k.to_json() for k in self._keys.values()]}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> KeyRing:
        """Parse a key ring file; raise `ValueError` naming what is wrong."""
        keys = doc.get("keys")
        if not isinstance(keys, list):
            raise ValueError("a key ring is an object with a `keys` list")
        return cls(VerificationKey.from_json(entry) for entry in keys)


def _hmac_verifies(secret: bytes, message: bytes, signature: bytes) -> bool:
    # compare_digest: a byte-by-byte `==` would leak how many leading bytes match.
    return hmac.compare_digest(hmac.digest(secret, message, "sha256"), signature)


_PARALLEL_MIN = 64
"""Fewer Ed25519 verifications than this are not worth handing to threads."""

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _verify_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_verify_threads(), thread_name_prefix="ed25519-verify")
        return _POOL


def _forget_pool_in_child() -> None:
    # A forked child has none of its parent's threads: it builds its own pool when it needs one.
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def _verify_chunk(
    backend: Ed25519Backend,
) -> Callable[[list[tuple[int, bytes, bytes, bytes]]], list[bool]]:
    """Verify a chunk of `(index, key, payload, signature)` in one call when the backend
    verifies batches, one by one otherwise."""
    batch = backend.verify_batch if isinstance(backend, BatchVerifier) else None
    verify = backend.verify

    def run(chunk: list[tuple[int, bytes, bytes, bytes]]) -> list[bool]:
        items = [(key, payload, signature) for _, key, payload, signature in chunk]
        return batch(items) if batch is not None else [verify(*item) for item in items]

    return run
