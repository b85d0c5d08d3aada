"""Gas per claim: RoyaltyDistributor against the classic single-root Merkle distributor.

    .venv/bin/python bench/gas_bench.py            # full run: 2^4 .. 2^17 leaves, ~1-2 min
    .venv/bin/python bench/gas_bench.py --max-exp 10 --out /tmp/gas.json   # quicker

Starts its own anvil, deploys the demo token, one RoyaltyDistributor and, per tree size, one
BaselineDistributor (contracts/src/bench: Uniswap-style, one immutable root, encodePacked
leaves, index bitmap, no funding cap, no dispute window, no pause, no guard), all from the
committed artifacts. For each size 2^k it commits a tree of 2^k leaves to both and sends 25
claims spread evenly over the tree (all leaves below 25), each one transaction from a third
party to a fresh account, and averages the receipts' gasUsed. Both sides pay the same token
transfer to a fresh account and, beyond 25 x 256 leaves, a fresh bitmap word per claim.

Claim-many: one recipient with a stable leaf index (as the settler assigns them) claims 1, 10
and 50 epochs in one `claimMany` call; the baseline needs one distributor and one claim
transaction per epoch. Results go to bench/results/gas.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from deploy.local import Anvil
from settlement.chain import ChainClient, Claim, RoyaltyDistributor, dev_account
from settlement.chain.artifacts import compiler_manifest
from settlement.chain.base import BoundContract
from settlement.chain.tokens import MintableToken
from settlement.merkle import MerkleTree, keccak256

RESULTS = Path(__file__).resolve().parent / "results" / "gas.json"
LEAF_ENCODING = ("uint256", "address", "uint256")
CLAIMS_PER_SIZE = 25
CLAIM_MANY_EPOCHS = (1, 10, 50)
DISPUTE_WINDOW = 3_600
SWEEP_DELAY = 30 * 86_400
MAX_TREE_SIZE_FOR_TARGET = 100_000


class BaselineDistributor(BoundContract):
    """The classic distributor of contracts/src/bench (benchmark only)."""

    artifact_name = "BaselineDistributor"


def accounts(tag: str, n: int) -> list[str]:
    """`n` deterministic, never-used addresses (so every payout goes to a fresh account)."""
    return ["0x" + keccak256(f"{tag}:{i}".encode())[:20].hex() for i in range(n)]


@dataclass
class PackedTree:
    """A sorted-pair Merkle tree over the baseline's encodePacked leaves (levels kept)."""

    levels: list[list[bytes]]

    @classmethod
    def of(cls, leaves: list[tuple[int, str, int]]) -> PackedTree:
        level = [
            keccak256(i.to_bytes(32, "big") + bytes.fromhex(a[2:]) + amt.to_bytes(32, "big"))
            for i, a, amt in leaves
        ]
        levels = [level]
        while len(level) > 1:
            parents = [
                keccak256(min(a, b) + max(a, b))
                for a, b in zip(level[::2], level[1::2], strict=False)
            ]
            if len(level) % 2:
                parents.append(level[-1])  # an odd node moves up unpaired
            level = parents
            levels.append(level)
        return cls(levels)

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def proof(self, position: int) -> list[bytes]:
        proof = []
        for level in self.levels[:-1]:
            sibling = position ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            position //= 2
        return proof


class Bench:
    """One anvil, one token, one RoyaltyDistributor; baselines deployed as needed."""

    def __init__(self, client: ChainClient, anvil: Anvil) -> None:
        self.client = client
        self.anvil = anvil
        self.admin: LocalAccount = dev_account(0)
        self.claimer: LocalAccount = dev_account(1)
        self.token = MintableToken.deploy(
            client, self.admin, "Bench USD", "bUSD", 6, self.admin.address
        )
        self.distributor = RoyaltyDistributor.deploy(
            client,
            self.admin,
            self.token.address,
            self.admin.address,
            self.admin.address,
            self.admin.address,
            DISPUTE_WINDOW,
            SWEEP_DELAY,
        )
        self.token.mint(self.admin, self.admin.address, 10**30)
        self.token.approve(self.admin, self.distributor.address, 10**30)
        self.next_epoch = 1

    def pass_dispute_window(self) -> None:
        self.anvil.rpc("evm_increaseTime", [DISPUTE_WINDOW])
        self.anvil.rpc("evm_mine")

    def new_tile(self, offset: int = 0) -> None:
        """Continue with epoch ids in a fresh 16-epoch tile of the claimed bitmap (+ offset).

        Without this, claims of consecutive benchmark epochs would find bitmap words that
        earlier rows already wrote, and look cheaper than a claim in a fresh epoch.
        """
        self.next_epoch = (self.next_epoch // 16 + 1) * 16 + offset

    def commit(self, tree: MerkleTree, total: int) -> int:
        epoch = self.next_epoch
        self.next_epoch += 1
        self.distributor.commit_epoch(
            self.admin, epoch, tree.root_bytes, total, b"\x01" * 32, b"\x02" * 32
        )
        return epoch

    def baseline(self, root: bytes, total: int) -> BaselineDistributor:
        baseline = BaselineDistributor.deploy(self.client, self.admin, self.token.address, root)
        self.token.transfer(self.admin, baseline.address, total)
        return baseline

    def gas(self, target: BoundContract, fn_name: str, *args: Any) -> int:
        receipt = self.client.transact(target.contract, fn_name, args, self.claimer)
        return int(receipt["gasUsed"])


def our_claim(tree: MerkleTree, epoch: int, position: int) -> Claim:
    index, account, amount = tree.values[position]
    proof = tuple(bytes.fromhex(p[2:]) for p in tree.proof(position))
    return Claim(epoch, int(index), str(account), int(amount), proof)


def spread(n: int) -> list[int]:
    """Up to 25 leaf positions spread evenly over n leaves."""
    if n <= CLAIMS_PER_SIZE:
        return list(range(n))
    return [j * n // CLAIMS_PER_SIZE for j in range(CLAIMS_PER_SIZE)]


def bench_single(bench: Bench, exp: int) -> dict[str, Any]:
    n = 2**exp
    ours = [(i, a, 1_000 + i) for i, a in enumerate(accounts(f"ours-{exp}", n))]
    theirs = [(i, a, 1_000 + i) for i, a in enumerate(accounts(f"base-{exp}", n))]
    tree = MerkleTree.of(ours, LEAF_ENCODING)
    packed = PackedTree.of(theirs)
    total = sum(amount for _, _, amount in ours)
    bench.new_tile()
    epoch = bench.commit(tree, total)
    baseline = bench.baseline(packed.root, total)
    bench.pass_dispute_window()

    positions = spread(n)
    ours_gas, base_gas = [], []
    for p in positions:
        c = our_claim(tree, epoch, p)
        ours_gas.append(bench.gas(bench.distributor, "claim", *c.as_tuple()))
        i, a, amt = theirs[p]
        args = (i, Web3.to_checksum_address(a), amt, packed.proof(p))
        base_gas.append(bench.gas(baseline, "claim", *args))
    avg_ours = sum(ours_gas) / len(ours_gas)
    avg_base = sum(base_gas) / len(base_gas)
    return {
        "leaves": n,
        "proof_length": len(tree.proof(0)),
        "claims": len(positions),
        "baseline_avg_gas": round(avg_base),
        "royalty_avg_gas": round(avg_ours),
        "overhead_pct": round(100 * (avg_ours - avg_base) / avg_base, 2),
    }


def bench_claim_many(bench: Bench, exp: int, single_avg: float) -> list[dict[str, Any]]:
    """One fresh account claims N epochs in one call; the baseline needs N claims.

    The account keeps its leaf index in every epoch (the settler assigns stable indices). A
    claim's gas depends on the proof length, not on the other leaves, so one tree serves as
    every epoch's tree (each epoch id is committed and funded on its own).
    """
    n = 2**exp
    position = n // 3
    rows = []
    for epochs in CLAIM_MANY_EPOCHS:
        ours = [(i, a, 1_000 + i) for i, a in enumerate(accounts(f"many-{exp}-{epochs}", n))]
        theirs = [(i, a, 1_000 + i) for i, a in enumerate(accounts(f"mbase-{exp}-{epochs}", n))]
        tree = MerkleTree.of(ours, LEAF_ENCODING)
        packed = PackedTree.of(theirs)
        total = sum(amount for _, _, amount in ours)
        # Start mid-tile, so 10 epochs span two bitmap words (not the best case of one).
        bench.new_tile(offset=8)
        ids = [bench.commit(tree, total) for _ in range(epochs)]
        baselines = [bench.baseline(packed.root, total) for _ in range(epochs)]
        bench.pass_dispute_window()

        claims = [our_claim(tree, e, position) for e in ids]
        many_gas = bench.gas(bench.distributor, "claimMany", [c.as_tuple() for c in claims])
        index, account, amount = theirs[position]
        args = (index, Web3.to_checksum_address(account), amount, packed.proof(position))
        base_gas = sum(bench.gas(b, "claim", *args) for b in baselines)
        rows.append(
            {
                "leaves": n,
                "epochs": epochs,
                "royalty_claim_many_gas": many_gas,
                "royalty_per_epoch_gas": round(many_gas / epochs),
                "baseline_separate_claims_gas": base_gas,
                "royalty_single_claim_avg_gas": round(single_avg),
                "claim_many_vs_4_single_claims": round(many_gas / (4 * single_avg), 3),
            }
        )
    return rows


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(results: dict[str, Any]) -> str:
    lines = [
        "Single claim (avg of up to 25 claims spread over the tree, each to a fresh account)",
        f"{'leaves':>8} {'proof':>5} {'baseline':>10} {'royalty':>10} {'overhead':>9}",
    ]
    for r in results["single_claim"]:
        lines.append(
            f"{r['leaves']:>8} {r['proof_length']:>5} {r['baseline_avg_gas']:>10} "
            f"{r['royalty_avg_gas']:>10} {r['overhead_pct']:>8.2f}%"
        )
    lines += [
        "",
        "Claim many epochs (one recipient, stable index, fresh account)",
        f"{'leaves':>8} {'epochs':>6} {'claimMany':>10} {'per epoch':>10} "
        f"{'baseline N txs':>15} {'vs 4 singles':>12}",
    ]
    for r in results["claim_many"]:
        lines.append(
            f"{r['leaves']:>8} {r['epochs']:>6} {r['royalty_claim_many_gas']:>10} "
            f"{r['royalty_per_epoch_gas']:>10} {r['baseline_separate_claims_gas']:>15} "
            f"{r['claim_many_vs_4_single_claims']:>12.3f}"
        )
    t = results["targets"]
    lines += [
        "",
        f"target: single claim at >= 100k leaves <= +10% over baseline: "
        f"{t['single_claim_at_100k_overhead_pct']:.2f}% -> {_verdict(t['single_claim_ok'])}",
        f"target: 10 epochs in one call < 4 single claims: "
        f"{t['claim_many_10_vs_4_singles']:.3f} -> {_verdict(t['claim_many_ok'])}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--min-exp", type=int, default=4)
    parser.add_argument("--max-exp", type=int, default=17)
    parser.add_argument("--claim-many-exps", type=int, nargs="*", default=[10, 17])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gas-bench-") as workdir:
        anvil = Anvil(Path(workdir)).start()
        try:
            client = ChainClient.connect(anvil.rpc_url)
            client.poll_latency_s = 0.002
            bench = Bench(client, anvil)
            single = [bench_single(bench, e) for e in range(args.min_exp, args.max_exp + 1)]
            by_leaves = {r["leaves"]: r for r in single}
            many: list[dict[str, Any]] = []
            for exp in args.claim_many_exps:
                if 2**exp in by_leaves:
                    many += bench_claim_many(bench, exp, by_leaves[2**exp]["royalty_avg_gas"])
            node_info = anvil.rpc("anvil_nodeInfo")
        finally:
            anvil.stop()

    big = [r for r in single if r["leaves"] >= MAX_TREE_SIZE_FOR_TARGET] or [single[-1]]
    ten = [r for r in many if r["epochs"] == 10]
    worst_ten = max((r["claim_many_vs_4_single_claims"] for r in ten), default=float("nan"))
    results = {
        "environment": {
            "anvil_hardfork": node_info.get("hardFork"),
            "solc": compiler_manifest()["compiler"]["version"],
            "settings": compiler_manifest()["settings"],
            "python": platform.python_version(),
            "seconds": round(time.monotonic() - started, 1),
        },
        "single_claim": single,
        "claim_many": many,
        "targets": {
            "single_claim_at_100k_overhead_pct": big[0]["overhead_pct"],
            "single_claim_ok": big[0]["overhead_pct"] <= 10.0,
            "claim_many_10_vs_4_singles": worst_ten,
            "claim_many_ok": bool(ten) and worst_ten < 1.0,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(render(results))
    print(f"\nwritten to {args.out} in {results['environment']['seconds']} s")


if __name__ == "__main__":
    main()
