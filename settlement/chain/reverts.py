"""Decoding of revert data into the Solidity error that caused it.

Every custom error of every compiled contract (OpenZeppelin's included, since the compiler
puts the errors a contract can raise into its ABI) is indexed by selector, plus the built-in
`Error(string)` and `Panic(uint256)`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3.exceptions import ContractLogicError

from settlement.chain.artifacts import artifact_names, load_artifact
from settlement.chain.errors import ContractRevertError

_BUILTIN: dict[bytes, tuple[str, tuple[str, ...]]] = {
    bytes.fromhex("08c379a0"): ("Error", ("string",)),
    bytes.fromhex("4e487b71"): ("Panic", ("uint256",)),
}


def _canonical_type(param: dict[str, Any]) -> str:
    """The ABI type of a parameter as it appears in a signature (tuples spelled out)."""
    kind: str = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@lru_cache(maxsize=1)
def _error_table() -> dict[bytes, tuple[str, tuple[str, ...]]]:
    table = dict(_BUILTIN)
    for name in artifact_names(include_test_only=True):
        for item in load_artifact(name).abi:
            if item["type"] != "error":
                continue
            types = tuple(_canonical_type(p) for p in item["inputs"])
            selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            table[selector] = (item["name"], types)
    return table


def decode_revert(data: bytes) -> tuple[str, tuple[Any, ...]]:
    """(error name, arguments) of revert data; ("unknown", ()) when not decodable."""
    if len(data) < 4:
        return ("unknown", ())
    entry = _error_table().get(bytes(data[:4]))
    if entry is None:
        return ("unknown", ())
    name, types = entry
    try:
        return (name, tuple(decode(list(types), bytes(data[4:]))))
    except DecodingError:
        return ("unknown", ())


def revert_data(exc: ContractLogicError) -> bytes:
    """The raw revert data web3 attached to a contract logic error (empty if none)."""
    data: Any = exc.data
    if isinstance(data, dict):
        data = data.get("data") or next(iter(data.values()), None)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes(HexBytes(data))
        except ValueError:
            return b""
    return b""


def to_revert_error(exc: ContractLogicError, context: str = "") -> ContractRevertError:
    """Translate web3's contract logic error into a decoded `ContractRevertError`."""
    data = revert_data(exc)
    name, args = decode_revert(data)
    if name == "unknown" and exc.message:
        return ContractRevertError("unknown", (exc.message,), data, context)
    return ContractRevertError(name, args, data, context)
