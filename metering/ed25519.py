"""Ed25519 primitives: the engine's native library (ed25519-dalek, batch verification) first,
libsodium (PyNaCl) next, then the system's OpenSSL, pycryptodome last.

The gateway signs once per inference, on its event loop, and the stream worker verifies once
per usage event, so the backend's speed bounds both. On the 2-core reference machine:
libsodium signs in ~25 µs and verifies in ~70 µs; OpenSSL 3.0's libcrypto signs in ~90 µs and
verifies in ~230 µs; pycryptodome spends ~300 µs per signature in Python-level big-integer
wrappers. The native library (`metering/native`, built by the bootstrap with cargo) verifies
a batch of a few hundred signatures in ~15-20 µs each (one multi-scalar multiplication for the
whole batch), and gives every signature the verdict libsodium gives it (the crate's
documentation says how). Ed25519 signatures are deterministic (RFC 8032), so every backend
produces the same bytes; a native backend is only used after it has signed and verified a
known vector exactly as pycryptodome does, and the tests compare them on random keys and
messages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Protocol, runtime_checkable

import structlog
from Crypto.Signature import eddsa

log = structlog.get_logger(__name__)

_EVP_PKEY_ED25519 = 1087  # NID_ED25519
_SIGNATURE_BYTES = 64


class Ed25519Backend(Protocol):
    """Port: raw Ed25519 over 32-byte seeds and public keys."""

    name: str
    parallel: bool
    """True when a call releases the GIL, so verifications on several threads run on
    several cores at once."""

    def public_key(self, seed: bytes) -> bytes:
        """The 32-byte public key of a 32-byte seed."""
        ...

    def sign(self, seed: bytes, message: bytes) -> bytes:
        """The 64-byte signature of `message`."""
        ...

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """True when `signature` is valid for `message` under `public_key`."""
        ...


@runtime_checkable
class BatchVerifier(Protocol):
    """A backend that verifies many signatures in one call, cheaper than one by one."""

    def verify_batch(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        """`verify(public_key, message, signature)` of each item, in order."""
        ...


class PyCryptodomeEd25519:
    """Ed25519 with pycryptodome (portable, slower)."""

    name = "pycryptodome"
    parallel = False

    def public_key(self, seed: bytes) -> bytes:
        """The public key of `seed`."""
        return bytes(eddsa.import_private_key(seed).public_key().export_key(format="raw"))

    def sign(self, seed: bytes, message: bytes) -> bytes:
        """Sign `message`."""
        return bytes(eddsa.new(eddsa.import_private_key(seed), "rfc8032").sign(message))

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Verify `signature`."""
        try:
            eddsa.new(eddsa.import_public_key(public_key), "rfc8032").verify(message, signature)
        except ValueError:
            return False
        return True


class SodiumEd25519:
    """Ed25519 through libsodium (PyNaCl's bundled build).

    Signing keys are expanded once (seed → 64-byte secret key) and cached; every call is
    independent, so the backend is safe to share between threads."""

    name = "libsodium"
    parallel = True  # cffi releases the GIL around every libsodium call

    def __init__(self) -> None:
        from nacl import bindings
        from nacl.exceptions import BadSignatureError

        self._bindings = bindings
        self._bad_signature = BadSignatureError
        self._secret: dict[bytes, tuple[bytes, bytes]] = {}
        self._lock = threading.Lock()

    def _keypair(self, seed: bytes) -> tuple[bytes, bytes]:
        pair = self._secret.get(seed)
        if pair is None:
            if len(seed) != 32:
                raise ValueError("Ed25519 keys are 32 bytes")
            public, secret = self._bindings.crypto_sign_seed_keypair(seed)
            with self._lock:
                pair = self._secret.setdefault(seed, (public, secret))
        return pair

    def public_key(self, seed: bytes) -> bytes:
        """The public key of `seed`."""
        return self._keypair(seed)[0]

    def sign(self, seed: bytes, message: bytes) -> bytes:
        """Sign `message`."""
        return self._bindings.crypto_sign(message, self._keypair(seed)[1])[:_SIGNATURE_BYTES]

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Verify `signature`."""
        if len(signature) != _SIGNATURE_BYTES:
            return False
        if len(public_key) != 32:
            raise ValueError("Ed25519 keys are 32 bytes")
        try:
            self._bindings.crypto_sign_open(signature + message, public_key)
        except self._bad_signature:
            return False
        return True


class OpenSSLEd25519:
    """Ed25519 through libcrypto's EVP API (OpenSSL 1.1.1 or later), via ctypes.

    Keys are turned into `EVP_PKEY` objects once and cached; each call uses its own
    `EVP_MD_CTX`, so the backend is safe to share between threads.
    """

    name = "openssl"
    parallel = False  # PyDLL: each call keeps the GIL

    def __init__(self, library: str | None = None) -> None:
        path = library or ctypes.util.find_library("crypto") or "libcrypto.so.3"
        # PyDLL keeps the GIL during each call: a signature takes ~25 µs, far less than what
        # re-acquiring a released GIL can cost when the Kafka I/O thread holds it.
        lib = ctypes.PyDLL(path)
        vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        lib.EVP_PKEY_new_raw_private_key.restype = vp
        lib.EVP_PKEY_new_raw_private_key.argtypes = [ctypes.c_int, vp, cp, sz]
        lib.EVP_PKEY_new_raw_public_key.restype = vp
        lib.EVP_PKEY_new_raw_public_key.argtypes = [ctypes.c_int, vp, cp, sz]
        lib.EVP_PKEY_get_raw_public_key.argtypes = [vp, cp, ctypes.POINTER(sz)]
        lib.EVP_MD_CTX_new.restype = vp
        lib.EVP_MD_CTX_free.argtypes = [vp]
        lib.EVP_DigestSignInit.argtypes = [vp, vp, vp, vp, vp]
        lib.EVP_DigestSign.argtypes = [vp, cp, ctypes.POINTER(sz), cp, sz]
        lib.EVP_DigestVerifyInit.argtypes = [vp, vp, vp, vp, vp]
        lib.EVP_DigestVerify.argtypes = [vp, cp, sz, cp, sz]
        self._lib = lib
        self._private: dict[bytes, int] = {}
        self._public: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def _pkey(self, raw: bytes, private: bool) -> int:
        cache = self._private if private else self._public
        pkey = cache.get(raw)
        if pkey is None:
            if len(raw) != 32:
                raise ValueError("Ed25519 keys are 32 bytes")
            make = (
                self._lib.EVP_PKEY_new_raw_private_key
                if private
                else self._lib.EVP_PKEY_new_raw_public_key
            )
            created = make(_EVP_PKEY_ED25519, None, raw, len(raw))
            if not created:
                raise ValueError("OpenSSL refused the Ed25519 key")
            with self._lock:
                pkey = cache.setdefault(raw, int(created))
        return pkey

    def public_key(self, seed: bytes) -> bytes:
        """The public key of `seed`."""
        out = ctypes.create_string_buffer(32)
        size = ctypes.c_size_t(32)
        if (
            self._lib.EVP_PKEY_get_raw_public_key(self._pkey(seed, True), out, ctypes.byref(size))
            != 1
        ):
            raise ValueError("OpenSSL could not derive the public key")
        return out.raw[: size.value]

    def sign(self, seed: bytes, message: bytes) -> bytes:
        """Sign `message`."""
        pkey = self._pkey(seed, True)
        ctx = self._lib.EVP_MD_CTX_new()
        if not ctx:
            raise MemoryError("EVP_MD_CTX_new failed")
        try:
            out = ctypes.create_string_buffer(_SIGNATURE_BYTES)
            size = ctypes.c_size_t(_SIGNATURE_BYTES)
            if (
                self._lib.EVP_DigestSignInit(ctx, None, None, None, pkey) != 1
                or self._lib.EVP_DigestSign(ctx, out, ctypes.byref(size), message, len(message))
                != 1
            ):
                raise ValueError("OpenSSL Ed25519 signing failed")
            return out.raw[: size.value]
        finally:
            self._lib.EVP_MD_CTX_free(ctx)

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Verify `signature`."""
        if len(signature) != _SIGNATURE_BYTES:
            return False
        pkey = self._pkey(public_key, False)
        ctx = self._lib.EVP_MD_CTX_new()
        if not ctx:
            raise MemoryError("EVP_MD_CTX_new failed")
        try:
            if self._lib.EVP_DigestVerifyInit(ctx, None, None, None, pkey) != 1:
                return False
            return bool(
                self._lib.EVP_DigestVerify(ctx, signature, len(signature), message, len(message))
                == 1
            )
        finally:
            self._lib.EVP_MD_CTX_free(ctx)


NATIVE_LIBRARY_ENV = "ROYALTY_ED25519_LIBRARY"
"""Environment variable naming the native library's file; by default the bootstrap's build
under `metering/native/target/release/`."""


def native_library_path() -> Path:
    """Where the native Ed25519 library is looked for."""
    configured = os.environ.get(NATIVE_LIBRARY_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).parent / "native" / "target" / "release" / "libroyalty_ed25519.so"


class NativeEd25519:
    """Ed25519 through the engine's own library (`metering/native`: curve25519-dalek and
    ed25519-dalek behind a C ABI), with batch verification.

    Single calls (signing, one verification: tens of µs) keep the GIL, like the OpenSSL
    backend; `verify_batch` releases it, so batches on several threads use several cores.
    Expanded signing keys are cached per seed (a node holds one or two)."""

    name = "native"
    parallel = True  # verify_batch releases the GIL

    def __init__(self, library: str | Path | None = None) -> None:
        path = Path(library) if library is not None else native_library_path()
        if not path.is_file():
            raise OSError(f"{path} not built (the bootstrap builds it with cargo)")
        held = ctypes.PyDLL(str(path))  # keeps the GIL: short calls
        released = ctypes.CDLL(str(path))  # releases the GIL: batches
        vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        held.royalty_ed25519_public_key.argtypes = [cp, cp]
        held.royalty_ed25519_public_key.restype = ctypes.c_int
        held.royalty_ed25519_signing_key_new.argtypes = [cp]
        held.royalty_ed25519_signing_key_new.restype = vp
        held.royalty_ed25519_sign.argtypes = [vp, cp, sz, cp]
        held.royalty_ed25519_sign.restype = ctypes.c_int
        held.royalty_ed25519_verify.argtypes = [cp, cp, sz, cp]
        held.royalty_ed25519_verify.restype = ctypes.c_int
        released.royalty_ed25519_verify_batch.argtypes = [sz, cp, cp, vp, cp, vp]
        released.royalty_ed25519_verify_batch.restype = ctypes.c_int64
        self._held = held
        self._batch = released.royalty_ed25519_verify_batch
        self._keys: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def _signing_key(self, seed: bytes) -> int:
        handle = self._keys.get(seed)
        if handle is None:
            if len(seed) != 32:
                raise ValueError("Ed25519 keys are 32 bytes")
            created = self._held.royalty_ed25519_signing_key_new(seed)
            if not created:
                raise MemoryError("could not expand the Ed25519 signing key")
            with self._lock:
                # Kept for the process's life: a node signs with one or two keys.
                handle = self._keys.setdefault(seed, int(created))
        return handle

    def public_key(self, seed: bytes) -> bytes:
        """The public key of `seed`."""
        if len(seed) != 32:
            raise ValueError("Ed25519 keys are 32 bytes")
        out = ctypes.create_string_buffer(32)
        self._held.royalty_ed25519_public_key(seed, out)
        return out.raw

    def sign(self, seed: bytes, message: bytes) -> bytes:
        """Sign `message`."""
        out = ctypes.create_string_buffer(_SIGNATURE_BYTES)
        self._held.royalty_ed25519_sign(self._signing_key(seed), message, len(message), out)
        return out.raw

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Verify `signature`."""
        if len(signature) != _SIGNATURE_BYTES:
            return False
        if len(public_key) != 32:
            raise ValueError("Ed25519 keys are 32 bytes")
        return bool(
            self._held.royalty_ed25519_verify(public_key, message, len(message), signature) == 1
        )

    def verify_batch(self, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        """`verify` of each `(public_key, message, signature)`, in one call to the library."""
        verdicts = [False] * len(items)
        chosen: list[int] = []  # the items of well-formed length
        for i, (public_key, _, signature) in enumerate(items):
            if len(public_key) != 32:
                raise ValueError("Ed25519 keys are 32 bytes")
            if len(signature) == _SIGNATURE_BYTES:
                chosen.append(i)
        if not chosen:
            return verdicts
        count = len(chosen)
        ends = (ctypes.c_uint64 * count)(*accumulate(len(items[i][1]) for i in chosen))
        out = ctypes.create_string_buffer(count)
        status = self._batch(
            count,
            b"".join(items[i][0] for i in chosen),
            b"".join(items[i][1] for i in chosen),
            ctypes.addressof(ends),
            b"".join(items[i][2] for i in chosen),
            ctypes.addressof(out),
        )
        if status < 0:
            raise ValueError("the native Ed25519 library refused the batch's layout")
        for j, good in enumerate(out.raw):
            verdicts[chosen[j]] = good == 1
        return verdicts


# RFC 8032 section 7.1, test 2: a one-byte message.
_VECTOR_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
_VECTOR_MESSAGE = bytes.fromhex("72")
_VECTOR_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)

_default: Ed25519Backend | None = None


def _checked(make: Callable[[], Ed25519Backend]) -> Ed25519Backend:
    """The backend `make()` builds, once it reproduces the RFC 8032 vector."""
    backend = make()
    public = backend.public_key(_VECTOR_SEED)
    if backend.sign(_VECTOR_SEED, _VECTOR_MESSAGE) != _VECTOR_SIGNATURE or not (
        backend.verify(public, _VECTOR_MESSAGE, _VECTOR_SIGNATURE)
    ):
        raise ValueError(f"{backend.name} Ed25519 does not match RFC 8032")
    if backend.verify(public, _VECTOR_MESSAGE + b"!", _VECTOR_SIGNATURE):
        raise ValueError(f"{backend.name} Ed25519 accepts a signature of another message")
    return backend


def default_backend() -> Ed25519Backend:
    """The native library, else libsodium, else OpenSSL, whichever first loads and passes the
    RFC 8032 vector; else pycryptodome."""
    global _default
    if _default is None:
        backend: Ed25519Backend | None = None
        for make in (NativeEd25519, SodiumEd25519, OpenSSLEd25519):
            try:
                backend = _checked(make)
                break
            except (ImportError, OSError, AttributeError, ValueError) as exc:
                log.info("Ed25519 backend unavailable", backend=make.name, reason=str(exc))
        _default = backend if backend is not None else PyCryptodomeEd25519()
    return _default
