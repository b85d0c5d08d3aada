"""keccak256 (Ethereum's pre-standard SHA-3), fast enough to hash a million-leaf Merkle tree.

`keccak256` is the thread-safe one-off hash. For bulk work, `new_keccak()` gives an engine that
calls pycryptodome's C keccak directly on one reusable state (~0.8 us a hash instead of ~3 us
through the Python wrapper); it is used only when it reproduces the public API's digests on a
self-check at import, and otherwise falls back to the public API. Pure: no I/O.
"""

from __future__ import annotations

import ctypes
import importlib.util
import weakref
from collections.abc import Iterable
from typing import Protocol

from Crypto.Hash import keccak as _pycryptodome_keccak


def keccak256(data: bytes) -> bytes:
    """Return keccak256(data) (Ethereum's pre-standard SHA-3). Thread-safe; for one-off hashes."""
    return _pycryptodome_keccak.new(digest_bits=256, data=data).digest()


class Keccak(Protocol):
    """keccak256 of one input or of many (in order); see `new_keccak`."""

    def hash(self, data: bytes) -> bytes: ...

    def hash_all(self, data: Iterable[bytes]) -> list[bytes]: ...


class _PortableKeccak:
    """keccak256 through pycryptodome's public API: the fallback when the C binding is absent."""

    def hash(self, data: bytes) -> bytes:
        return keccak256(data)

    def hash_all(self, data: Iterable[bytes]) -> list[bytes]:
        return list(map(keccak256, data))


def _load_c_keccak() -> ctypes.CDLL | None:
    """Open pycryptodome's C keccak library for direct calls, or None if it cannot be found.

    Why: without cffi, pycryptodome's Python wrapper costs ~3 us per hash (a state allocation
    and argument checks each time); calls on one reusable C state cost ~0.8 us. A tree of n
    leaves needs 3n hashes, so this is most of the difference between ~10 s and ~4 s for a
    million leaves. `keccak_init/absorb/digest/reset/destroy` are pycryptodome's exported C
    ABI; `new_keccak` checks the results against the public API before trusting them.
    """
    try:
        spec = importlib.util.find_spec("Crypto.Hash._keccak")
        if spec is None or spec.origin is None:
            return None
        lib = ctypes.CDLL(spec.origin)
        for name in ("keccak_init", "keccak_absorb", "keccak_digest", "keccak_reset"):
            getattr(lib, name)
    except (OSError, AttributeError):
        return None
    return lib


class _CKeccak:
    """keccak256 on a private C state: fast, but not thread-safe (make one per operation).

    Every argument is passed as a ctypes object of the C parameter's exact type, so no
    `argtypes` conversion runs per call (a third of the call cost) and nothing is truncated.
    """

    __slots__ = ("__weakref__", "_absorb", "_digest", "_out", "_reset", "_state")

    def __init__(self, lib: ctypes.CDLL) -> None:
        state = ctypes.c_void_p()
        # capacity 64 bytes (twice the 256-bit digest) and 24 rounds: plain Keccak-256.
        if lib.keccak_init(ctypes.byref(state), ctypes.c_size_t(64), ctypes.c_ubyte(24)) != 0:
            raise MemoryError("keccak_init failed")
        self._state = ctypes.c_void_p(state.value)
        self._absorb, self._digest, self._reset = (
            lib.keccak_absorb,
            lib.keccak_digest,
            lib.keccak_reset,
        )
        self._out = ctypes.create_string_buffer(32)
        weakref.finalize(self, lib.keccak_destroy, self._state)

    def hash(self, data: bytes) -> bytes:
        self._absorb(self._state, data, ctypes.c_size_t(len(data)))
        self._digest(self._state, self._out, _C_SIZE_32, _C_KECCAK_PADDING)
        self._reset(self._state)
        return self._out.raw

    def hash_all(self, data: Iterable[bytes]) -> list[bytes]:
        absorb, digest, reset = self._absorb, self._digest, self._reset
        state, out, size32, padding = self._state, self._out, _C_SIZE_32, _C_KECCAK_PADDING
        sizes: dict[int, ctypes.c_size_t] = {}
        hashes: list[bytes] = []
        append = hashes.append
        for item in data:
            size = sizes.get(len(item))
            if size is None:
                size = sizes[len(item)] = ctypes.c_size_t(len(item))
            absorb(state, item, size)
            digest(state, out, size32, padding)
            reset(state)
            append(out.raw)
        return hashes


_C_SIZE_32 = ctypes.c_size_t(32)
_C_KECCAK_PADDING = ctypes.c_ubyte(0x01)  # Keccak's padding byte (SHA3-256 would use 0x06)
_C_KECCAK_LIB = _load_c_keccak()


def _c_keccak_works() -> bool:
    if _C_KECCAK_LIB is None:
        return False
    try:
        fast = _CKeccak(_C_KECCAK_LIB)
    except MemoryError:
        return False
    samples = [b"", b"abc", bytes(range(64)), bytes(range(200))]
    return fast.hash_all(samples) == [keccak256(sample) for sample in samples]


_USE_C_KECCAK = _c_keccak_works()


def new_keccak() -> Keccak:
    """A keccak256 engine for one operation: the C binding when it passed its self-check."""
    if _USE_C_KECCAK and _C_KECCAK_LIB is not None:
        return _CKeccak(_C_KECCAK_LIB)
    return _PortableKeccak()


def keccak256_many(data: Iterable[bytes]) -> list[bytes]:
    """keccak256 of each item, in order: the fast path for bulk hashing (e.g. address checksums)."""
    return new_keccak().hash_all(data)


def hashing_backend() -> str:
    """Name the keccak implementation in use (reported by the benchmark)."""
    return "pycryptodome C, direct calls" if _USE_C_KECCAK else "pycryptodome public API"
