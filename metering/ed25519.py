"""Ed25519 primitives: libsodium (PyNaCl) first, the system's OpenSSL next, pycryptodome last.

The gateway signs once per inference, on its event loop, and the stream worker verifies once
per usage event, so the backend's speed bounds both. On the 2-core reference machine:
libsodium signs in ~25 µs and verifies in ~70 µs; OpenSSL 3.0's libcrypto signs in ~90 µs and
verifies in ~230 µs; pycryptodome spends ~300 µs per signature in Python-level big-integer
wrappers. Ed25519 signatures are deterministic (RFC 8032), so every backend produces the same
bytes; a native backend is only used after it has signed and verified a known vector exactly
as pycryptodome does, and the tests compare them on random keys and messages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable
from typing import Protocol

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
    """libsodium, else OpenSSL, whichever first loads and passes the RFC 8032 vector; else
    pycryptodome."""
    global _default
    if _default is None:
        backend: Ed25519Backend | None = None
        for make in (SodiumEd25519, OpenSSLEd25519):
            try:
                backend = _checked(make)
                break
            except (ImportError, OSError, AttributeError, ValueError) as exc:
                log.info("Ed25519 backend unavailable", backend=make.name, reason=str(exc))
        _default = backend if backend is not None else PyCryptodomeEd25519()
    return _default
