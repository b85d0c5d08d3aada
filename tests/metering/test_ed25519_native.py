"""The native Ed25519 library's verdicts, single and in batches, against libsodium's.

Edge cases are built with a small reference implementation of the curve (RFC 8032, section
6): non-canonical `S`, small-order `R` and keys, non-canonical encodings, and a signature whose
`R` carries a small-order part, which only the key's holder can make. The batch and the single
check must agree on every item whatever else is in its batch; libsodium must agree too, except
on that last kind (cofactored rule here, cofactorless there: the library's documentation)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.ed25519 import NativeEd25519, SodiumEd25519

# --- reference arithmetic (RFC 8032, section 6) -----------------------------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int, int, int]
IDENTITY: Point = (0, 1, 1, 0)


def _add(a: Point, b: Point) -> Point:
    x = (a[1] - a[0]) * (b[1] - b[0]) % P
    y = (a[1] + a[0]) * (b[1] + b[0]) % P
    c = 2 * a[3] * b[3] * D % P
    d = 2 * a[2] * b[2] % P
    e, f, g, h = y - x, d - c, d + c, y + x
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(k: int, point: Point) -> Point:
    out = IDENTITY
    while k > 0:
        if k & 1:
            out = _add(out, point)
        point = _add(point, point)
        k >>= 1
    return out


def _x_of(y: int, sign: int) -> int | None:
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    return P - x if (x & 1) != sign else x


def _decode(encoding: bytes) -> Point | None:
    y = int.from_bytes(encoding, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _x_of(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


def _encode(point: Point) -> bytes:
    z = pow(point[2], P - 2, P)
    x, y = point[0] * z % P, point[1] * z % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _same(a: Point, b: Point) -> bool:
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


_gy = 4 * pow(5, P - 2, P) % P
_gx = _x_of(_gy, 0)
assert _gx is not None
BASE: Point = (_gx, _gy, 1, _gx * _gy % P)


def _torsion_of_order_8() -> Point:
    for y in range(2, 1000):
        point = _decode(y.to_bytes(32, "little"))
        if point is None:
            continue
        t = _mul(L, point)  # the point's small-order part
        if not _same(_mul(4, t), IDENTITY):
            return t
    raise AssertionError("no point with an order-8 part found")


T8 = _torsion_of_order_8()
SMALL_ORDER = [_mul(i, T8) for i in range(8)]


def _h(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little")


@dataclass(frozen=True)
class Key:
    seed: bytes

    @property
    def scalar(self) -> int:
        h = hashlib.sha512(self.seed).digest()
        a = int.from_bytes(h[:32], "little")
        return (a & ((1 << 254) - 8)) | (1 << 254)

    @property
    def public(self) -> bytes:
        return _encode(_mul(self.scalar, BASE))

    def sign(self, message: bytes, torsion: Point = IDENTITY) -> bytes:
        """RFC 8032 signing; `torsion` added to R makes the holder-crafted kind."""
        prefix = hashlib.sha512(self.seed).digest()[32:]
        r = _h(prefix, message) % L
        big_r = _encode(_add(_mul(r, BASE), torsion))
        k = _h(big_r, self.public, message) % L
        return big_r + ((r + k * self.scalar) % L).to_bytes(32, "little")


# --- cases ----------------------------------------------------------------------------------

KINDS = (
    "valid",
    "other message",
    "flipped bit",
    "other key",
    "S + L",
    "small-order R",
    "small-order key",
    "non-canonical key",
    "short signature",
    "holder-crafted R",
)


def _case(kind: str, key: Key, other: Key, message: bytes, pick: int) -> tuple[bytes, bytes, bytes]:
    """(public key, message, signature) of one kind; `pick` chooses among variants."""
    signature = key.sign(message)
    if kind == "valid":
        return key.public, message, signature
    if kind == "other message":
        return key.public, message + b"!", signature
    if kind == "flipped bit":
        bit = pick % 512
        flipped = bytearray(signature)
        flipped[bit // 8] ^= 1 << (bit % 8)
        return key.public, message, bytes(flipped)
    if kind == "other key":
        return other.public, message, signature
    if kind == "S + L":
        s = int.from_bytes(signature[32:], "little") + L
        return key.public, message, signature[:32] + s.to_bytes(32, "little")
    if kind == "small-order R":
        # R of small order, S = k·a: the cofactored equation holds ([8]R is the identity), so
        # only the small-order check refuses it, as libsodium does. (Needs the key: a holder's.)
        r = _encode(SMALL_ORDER[pick % 8])
        if pick & 8:  # the other sign of x ("negative zero" where x = 0)
            r = r[:31] + bytes([r[31] ^ 0x80])
        k = _h(r, key.public, message) % L
        return key.public, message, r + (k * key.scalar % L).to_bytes(32, "little")
    if kind == "small-order key":
        # A small-order key A, R = [S]B: [8]([S]B - R - [k]A) is the identity for any message,
        # so only the key check refuses it (libsodium's too).
        s = 1 + pick % (L - 1)
        return (
            _encode(SMALL_ORDER[pick % 8]),
            message,
            _encode(_mul(s, BASE)) + s.to_bytes(32, "little"),
        )
    if kind == "non-canonical key":
        # y + p for a y below 19 on the curve: a point encoded the wrong way.
        for y in range(2, 19):
            if _decode(y.to_bytes(32, "little")) is not None:
                return (y + P).to_bytes(32, "little"), message, signature
        raise AssertionError("no small y on the curve")
    if kind == "short signature":
        return key.public, message, signature[: pick % 64]
    if kind == "holder-crafted R":
        return key.public, message, key.sign(message, SMALL_ORDER[1 + pick % 7])
    raise AssertionError(kind)


def _native_rule(kind: str) -> bool:
    return kind in ("valid", "holder-crafted R")


@pytest.fixture(scope="module")
def native() -> NativeEd25519:
    try:
        return NativeEd25519()
    except OSError as exc:  # pragma: no cover - the bootstrap builds it wherever cargo is
        pytest.skip(f"native Ed25519 library not built: {exc}")


def test_reference_signatures_are_libsodiums() -> None:
    key = Key(os.urandom(32))
    sodium = SodiumEd25519()
    assert key.public == sodium.public_key(key.seed)
    assert key.sign(b"usage") == sodium.sign(key.seed, b"usage")


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_single_and_batch(native: NativeEd25519, kind: str) -> None:
    key, other, sodium = Key(b"\x07" * 32), Key(b"\x08" * 32), SodiumEd25519()
    items = [_case(kind, key, other, b"event %d" % i, i) for i in range(16)]
    expected = [_native_rule(kind)] * len(items)
    assert [native.verify(*item) for item in items] == expected
    assert native.verify_batch(items) == expected
    libsodium = [sodium.verify(*item) for item in items]
    if kind == "holder-crafted R":
        assert not any(libsodium)  # cofactorless: the one difference, documented
    else:
        assert libsodium == expected


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=40),
    picks=st.lists(st.integers(0, 10**6), min_size=40, max_size=40),
    messages=st.lists(st.binary(max_size=300), min_size=40, max_size=40),
)
def test_a_verdict_does_not_depend_on_the_batch(
    native: NativeEd25519, kinds: list[str], picks: list[int], messages: list[bytes]
) -> None:
    key, other = Key(b"\x11" * 32), Key(b"\x12" * 32)
    items = [_case(k, key, other, m, p) for k, m, p in zip(kinds, messages, picks, strict=False)]
    expected = [_native_rule(k) for k in kinds]
    assert native.verify_batch(items) == expected
    assert [native.verify(*item) for item in items] == expected
    # Any split of the same items into batches gives the same verdicts.
    cut = picks[0] % (len(items) + 1)
    assert native.verify_batch(items[:cut]) + native.verify_batch(items[cut:]) == expected


def test_batch_of_many_keys_and_sizes(native: NativeEd25519) -> None:
    keys = [Key(os.urandom(32)) for _ in range(5)]
    sodium = SodiumEd25519()
    items = []
    for i in range(700):
        key = keys[i % 5]
        message = os.urandom(i % 97)
        signature = sodium.sign(key.seed, message)
        if i % 101 == 50:
            message += b"x"
        items.append((key.public, message, signature))
    expected = [sodium.verify(*item) for item in items]
    assert expected.count(False) == 7
    assert native.verify_batch(items) == expected
    assert native.verify_batch([]) == []


def test_a_key_of_the_wrong_length_is_an_error(native: NativeEd25519) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        native.verify_batch([(b"\x01" * 31, b"m", b"\x00" * 64)])
    with pytest.raises(ValueError, match="32 bytes"):
        native.verify(b"\x01" * 33, b"m", b"\x00" * 64)
