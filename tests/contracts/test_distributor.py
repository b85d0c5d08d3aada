"""RoyaltyDistributor: commits, claims, disputes, pause, sweep; happy paths and attacks."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3.types import TxReceipt

from settlement.chain import Claim, EpochStatus, System
from settlement.chain.distributor import GUARDIAN_ROLE, SETTLER_ROLE
from settlement.chain.tokens import MintableToken
from settlement.merkle import MerkleTree
from tests.contracts.contract_helpers import ChainHarness, Distribution, reverts

pytestmark = pytest.mark.anvil

WINDOW = 3_600
INPUTS = b"\x11" * 32
USAGE = b"\x22" * 32


def commit(system: System, chain: ChainHarness, epoch: int, dist: Distribution) -> TxReceipt:
    """Approve and commit `dist` as `epoch`, from the settler."""
    settler = chain.actors.settler
    distributor = system.royalty_distributor
    system.payment_token.approve(settler, distributor.address, dist.total)
    return distributor.commit_epoch(settler, epoch, dist.root, dist.total, INPUTS, USAGE)


@pytest.fixture
def dist(chain: ChainHarness) -> Distribution:
    a = chain.actors
    return Distribution.of([(a.alice.address, 700), (a.bob.address, 200), (a.carol.address, 100)])


def test_roles_are_wired(system: System, chain: ChainHarness) -> None:
    d, a = system.royalty_distributor, chain.actors
    assert d.has_role(SETTLER_ROLE, a.settler.address)
    assert d.has_role(GUARDIAN_ROLE, a.guardian.address)
    assert not d.has_role(SETTLER_ROLE, a.deployer.address)
    assert d.dispute_window_s() == WINDOW
    assert d.token() == system.payment_token.address


def test_leaf_hash_is_standard_merkle_tree_leaf(system: System, dist: Distribution) -> None:
    index, account, amount = dist.leaves[1]
    expected = dist.tree.leaf_hash(1)
    assert "0x" + system.royalty_distributor.leaf_hash(index, account, amount).hex() == expected


def test_commit_pulls_total_and_emits_event(
    system: System, chain: ChainHarness, dist: Distribution
) -> None:
    d, token, settler = system.royalty_distributor, system.payment_token, chain.actors.settler
    before = token.balance_of(settler.address)
    receipt = commit(system, chain, 7, dist)
    ts = chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]

    assert token.balance_of(settler.address) == before - dist.total
    assert token.balance_of(d.address) == dist.total
    (event,) = d.events(receipt, "EpochCommitted")
    assert event == {
        "epoch": 7,
        "merkleRoot": dist.root,
        "total": dist.total,
        "inputsHash": INPUTS,
        "usageRoot": USAGE,
        "claimableAt": ts + WINDOW,
        "funder": settler.address,
    }
    info = d.epoch_info(7)
    assert (info.root, info.total, info.claimed, info.status) == (
        dist.root,
        dist.total,
        0,
        EpochStatus.COMMITTED,
    )
    assert info.claimable_at == ts + WINDOW
    assert info.funder == settler.address


def test_claim_after_window_pays_the_account_whoever_sends(
    system: System, chain: ChainHarness, dist: Distribution
) -> None:
    d, token, a = system.royalty_distributor, system.payment_token, chain.actors
    commit(system, chain, 1, dist)
    chain.advance_time(WINDOW)
    claim = dist.claim(1, 0)

    receipt = d.claim(a.mallory, claim)  # anyone may send it

    assert token.balance_of(a.alice.address) == 700
    assert token.balance_of(a.mallory.address) == 0
    assert d.events(receipt, "Claimed") == [
        {"epoch": 1, "index": 0, "account": a.alice.address, "amount": 700}
    ]
    assert d.is_claimed(1, 0)
    assert not d.is_claimed(1, 1)
    assert d.epoch_info(1).claimed == 700
    for position in (1, 2):
        d.claim(a.bob, dist.claim(1, position))
    assert d.epoch_info(1).claimed == dist.total
    assert token.balance_of(d.address) == 0


def test_claim_before_the_window_ends_reverts(
    system: System, chain: ChainHarness, dist: Distribution
) -> None:
    d = system.royalty_distributor
    commit(system, chain, 1, dist)
    claimable_at = d.epoch_info(1).claimable_at
    alice, args = chain.actors.alice, dist.claim(1, 0).as_tuple()
    with chain.rewind(), reverts("NotClaimableYet") as info:
        chain.send_at(claimable_at - 1, d, alice, "claim", *args)
    assert info.value.error_args == (1, claimable_at)
    chain.send_at(claimable_at, d, alice, "claim", *args)
    assert system.payment_token.balance_of(alice.address) == 700


def test_double_claim_reverts(system: System, chain: ChainHarness, dist: Distribution) -> None:
    d = system.royalty_distributor
    commit(system, chain, 1, dist)
    chain.advance_time(WINDOW)
    d.claim(chain.actors.alice, dist.claim(1, 0))
    with reverts("AlreadyClaimed") as info:
        d.claim(chain.actors.alice, dist.claim(1, 0))
    assert info.value.error_args == (1, 0)
    assert system.payment_token.balance_of(chain.actors.alice.address) == 700


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda c, a: Claim(c.epoch, c.index, a, c.amount, c.proof), id="account"),
        pytest.param(lambda c, a: Claim(c.epoch, c.index, c.account, 701, c.proof), id="amount"),
        pytest.param(lambda c, a: Claim(c.epoch, 1, c.account, c.amount, c.proof), id="index"),
        pytest.param(lambda c, a: Claim(c.epoch, c.index, c.account, c.amount, ()), id="no-proof"),
        pytest.param(
            lambda c, a: Claim(c.epoch, c.index, c.account, c.amount, c.proof[:-1]), id="short"
        ),
    ],
)
def test_forged_claims_revert(
    system: System, chain: ChainHarness, dist: Distribution, forge: object
) -> None:
    """Alice's proof with another account, amount or index proves nothing."""
    commit(system, chain, 1, dist)
    chain.advance_time(WINDOW)
    forged = forge(dist.claim(1, 0), chain.actors.mallory.address)  # type: ignore[operator]
    with reverts("InvalidProof"):
        system.royalty_distributor.claim(chain.actors.mallory, forged)
    assert system.payment_token.balance_of(chain.actors.mallory.address) == 0


def test_proof_of_another_epoch_reverts(
    system: System, chain: ChainHarness, dist: Distribution
) -> None:
    a = chain.actors
    other = Distribution.of([(a.mallory.address, 1000), (a.bob.address, 1)])
    commit(system, chain, 1, dist)
    commit(system, chain, 2, other)
    chain.advance_time(WINDOW)
    claim = other.claim(1, 0)  # a valid leaf of epoch 2's tree, claimed under epoch 1
    with reverts("InvalidProof"):
        system.royalty_distributor.claim(a.mallory, claim)
    with reverts("UnknownEpoch"):
        system.royalty_distributor.claim(a.mallory, other.claim(3, 0))


def test_claim_of_a_disputed_epoch_reverts_and_refunds_the_funder(
    system: System, chain: ChainHarness, dist: Distribution
) -> None:
    d, token, a = system.royalty_distributor, system.payment_token, chain.actors
    before = token.balance_of(a.settler.address)
    commit(system, chain, 1, dist)

    receipt = d.dispute(a.guardian, 1)

    assert d.events(receipt, "EpochDisputed") == [
        {"epoch": 1, "guardian": a.guardian.address, "refunded": dist.total}
    ]
    assert token.balance_of(a.settler.address) == before
    assert token.balance_of(d.address) == 0
    assert d.epoch_info(1).status == EpochStatus.DISPUTED
    chain.advance_time(WINDOW)
    with reverts("EpochIsDisputed"):
        d.claim(a.alice, dist.claim(1, 0))
    with reverts("EpochIsDisputed"):
        d.dispute(a.guardian, 1)
    system.payment_token.approve(a.settler, d.address, dist.total)
    with reverts("EpochAlreadyCommitted"):  # ids are never reused
        d.commit_epoch(a.settler, 1, dist.root, dist.total, INPUTS, USAGE)


def test_dispute_only_by_the_guardian_and_only_in_the_window(
    system: System, chain: ChainHarness, dist: Distribution
) -> None:
    d, a = system.royalty_distributor, chain.actors
    commit(system, chain, 1, dist)
    for outsider in (a.mallory, a.settler, a.deployer):
        with reverts("AccessControlUnauthorizedAccount"):
            d.dispute(outsider, 1)
    with reverts("UnknownEpoch"):
        d.dispute(a.guardian, 2)
    claimable_at = d.epoch_info(1).claimable_at
    with chain.rewind(), reverts("DisputeWindowClosed"):
        chain.send_at(claimable_at, d, a.guardian, "dispute", 1)
    chain.send_at(claimable_at - 1, d, a.guardian, "dispute", 1)


def test_commit_by_a_non_settler_reverts(
    system: System, chain: ChainHarness, dist: Distribution, payment_token: MintableToken
) -> None:
    d, a = system.royalty_distributor, chain.actors
    for outsider in (a.mallory, a.guardian, a.deployer):
        payment_token.mint(a.deployer, outsider.address, dist.total)
        payment_token.approve(outsider, d.address, dist.total)
        with reverts("AccessControlUnauthorizedAccount"):
            d.commit_epoch(outsider, 1, dist.root, dist.total, INPUTS, USAGE)
    assert d.epoch_info(1).status == EpochStatus.NONE


def test_commit_twice_reverts(system: System, chain: ChainHarness, dist: Distribution) -> None:
    commit(system, chain, 1, dist)
    with reverts("EpochAlreadyCommitted"):
        commit(system, chain, 1, Distribution.of([(chain.actors.mallory.address, 5)]))


def test_underfunded_commit_reverts(
    system: System, chain: ChainHarness, dist: Distribution, payment_token: MintableToken
) -> None:
    """A root is never unfunded: no allowance or no balance, no commit."""
    d, a = system.royalty_distributor, chain.actors
    payment_token.approve(a.settler, d.address, dist.total - 1)
    with reverts("ERC20InsufficientAllowance"):
        d.commit_epoch(a.settler, 1, dist.root, dist.total, INPUTS, USAGE)

    poor = a.carol  # a settler without the funds
    chain.send_as(system.manifest.roles.governance, d, "grantRole", SETTLER_ROLE, poor.address)
    payment_token.mint(a.deployer, poor.address, dist.total - 1)
    payment_token.approve(poor, d.address, dist.total)
    with reverts("ERC20InsufficientBalance"):
        d.commit_epoch(poor, 1, dist.root, dist.total, INPUTS, USAGE)
    assert d.epoch_info(1).status == EpochStatus.NONE
    assert payment_token.balance_of(d.address) == 0


def test_commit_rejects_zero_root_and_oversized_total(system: System, chain: ChainHarness) -> None:
    d, settler = system.royalty_distributor, chain.actors.settler
    with reverts("ZeroRoot"):
        d.commit_epoch(settler, 1, b"\x00" * 32, 1, INPUTS, USAGE)
    with reverts("TotalTooLarge"):
        d.commit_epoch(settler, 1, b"\x01" * 32, 2**104, INPUTS, USAGE)


def test_claimed_never_exceeds_funded(system: System, chain: ChainHarness) -> None:
    """A root promising more than its total cannot reach the funds of other epochs."""
    d, token, a = system.royalty_distributor, system.payment_token, chain.actors
    greedy = Distribution.of([(a.alice.address, 600), (a.mallory.address, 600)])
    honest = Distribution.of([(a.bob.address, 1000)])
    settler = a.settler
    token.approve(settler, d.address, 1000)
    d.commit_epoch(settler, 1, greedy.root, 1000, INPUTS, USAGE)  # leaves sum to 1200
    commit(system, chain, 2, honest)
    chain.advance_time(WINDOW)

    d.claim(a.alice, greedy.claim(1, 0))
    with reverts("EpochOverclaimed") as info:
        d.claim(a.mallory, greedy.claim(1, 1))
    assert info.value.error_args == (1, 1000, 1200)
    assert d.epoch_info(1).claimed == 600
    d.claim(a.bob, honest.claim(2, 0))  # epoch 2 is whole
    assert token.balance_of(a.bob.address) == 1000
    assert token.balance_of(d.address) == 400


def test_claims_while_paused_revert(
    system: System, chain: ChainHarness, dist: Distribution
) -> None:
    d, a = system.royalty_distributor, chain.actors
    commit(system, chain, 1, dist)
    chain.advance_time(WINDOW)
    with reverts("AccessControlUnauthorizedAccount"):
        d.pause(a.mallory)

    receipt = d.pause(a.guardian)

    assert d.events(receipt, "Paused") == [{"account": a.guardian.address}]
    with reverts("EnforcedPause"):
        d.claim(a.alice, dist.claim(1, 0))
    with reverts("EnforcedPause"):
        d.claim_many(a.alice, [dist.claim(1, 0)])
    with reverts("EnforcedPause"):
        commit(system, chain, 2, dist)
    with reverts("AccessControlUnauthorizedAccount"):
        d.unpause(a.mallory)
    d.unpause(a.guardian)
    d.claim(a.alice, dist.claim(1, 0))
    assert system.payment_token.balance_of(a.alice.address) == 700


def test_guardian_can_dispute_while_paused(
    system: System, chain: ChainHarness, dist: Distribution
) -> None:
    d, a = system.royalty_distributor, chain.actors
    commit(system, chain, 1, dist)
    d.pause(a.guardian)
    d.dispute(a.guardian, 1)
    assert d.epoch_info(1).status == EpochStatus.DISPUTED


def test_claim_many_across_epochs_pays_each_account_once(
    system: System, chain: ChainHarness
) -> None:
    d, token, a = system.royalty_distributor, system.payment_token, chain.actors
    epochs = {
        e: Distribution.of([(a.alice.address, 10 * e), (a.bob.address, e)]) for e in (1, 2, 3)
    }
    for e, dist in epochs.items():
        commit(system, chain, e, dist)
    chain.advance_time(WINDOW)
    claims = [epochs[e].claim(e, 0) for e in (1, 2, 3)] + [epochs[1].claim(1, 1)]

    receipt = d.claim_many(a.mallory, claims)

    assert token.balance_of(a.alice.address) == 60
    assert token.balance_of(a.bob.address) == 1
    assert [(c["epoch"], c["account"]) for c in d.events(receipt, "Claimed")] == [
        (1, a.alice.address),
        (2, a.alice.address),
        (3, a.alice.address),
        (1, a.bob.address),
    ]
    transfers = token.events(receipt, "Transfer")
    assert [(t["to"], t["value"]) for t in transfers] == [(a.alice.address, 60), (a.bob.address, 1)]
    assert all(d.is_claimed(e, 0) for e in (1, 2, 3))
    assert not d.is_claimed(2, 1)


def test_claim_many_is_all_or_nothing(system: System, chain: ChainHarness) -> None:
    """One bad proof among good claims reverts the whole call: nothing is claimed."""
    d, token, a = system.royalty_distributor, system.payment_token, chain.actors
    dist = Distribution.of([(a.alice.address, 5), (a.bob.address, 6)])
    for e in (1, 2):
        commit(system, chain, e, dist)
    chain.advance_time(WINDOW)
    good = [dist.claim(1, 0), dist.claim(2, 0), dist.claim(1, 1)]
    c = dist.claim(2, 1)
    bad = Claim(c.epoch, c.index, c.account, c.amount + 1, c.proof)

    with reverts("InvalidProof"):
        d.claim_many(a.alice, [*good, bad])
    with reverts("AlreadyClaimed"):  # the same leaf twice in one call
        d.claim_many(a.alice, [good[0], good[1], good[0]])
    with reverts("NoClaims"):
        d.claim_many(a.alice, [])

    assert not any(d.is_claimed(e, i) for e in (1, 2) for i in (0, 1))
    assert token.balance_of(a.alice.address) == token.balance_of(a.bob.address) == 0
    d.claim_many(a.alice, good)
    assert token.balance_of(a.alice.address) == 10


def test_claim_flags_are_per_epoch_and_index(system: System, chain: ChainHarness) -> None:
    """Flags share storage words in 16 x 16 tiles of (index, epoch); none leaks to another."""
    d, a = system.royalty_distributor, chain.actors
    payouts = [(f"0x{i + 1:040x}", 1) for i in range(40)]
    dist = Distribution.of(payouts)
    epochs = (0, 15, 16, 255, 256, 2**256 - 1)
    for e in epochs:
        commit(system, chain, e, dist)
    chain.advance_time(WINDOW)
    indices = (0, 1, 15, 16, 17, 31, 32, 39)
    claimed = {(15, 16), (16, 15), (2**256 - 1, 39), (0, 0)}
    d.claim_many(a.alice, [dist.claim(e, i) for e, i in sorted(claimed)])
    assert {(e, i) for e in epochs for i in indices if d.is_claimed(e, i)} == claimed
    d.claim_many(a.alice, [dist.claim(e, 17) for e in epochs])
    assert all(d.is_claimed(e, 17) for e in epochs)
    assert not any(d.is_claimed(e, 1) for e in epochs)


def test_sweep_only_by_governance_after_the_expiry(
    system: System, chain: ChainHarness, dist: Distribution
) -> None:
    d, token, a = system.royalty_distributor, system.payment_token, chain.actors
    governance = system.manifest.roles.governance
    commit(system, chain, 1, dist)
    chain.advance_time(WINDOW)
    d.claim(a.alice, dist.claim(1, 0))
    for outsider in (a.mallory, a.guardian, a.settler, a.deployer):
        with reverts("AccessControlUnauthorizedAccount"):
            d.sweep(outsider, 1, a.treasury.address)
    with reverts("SweepTooEarly"):
        chain.send_as(governance, d, "sweep", 1, a.treasury.address)
    sweepable_at = d.epoch_info(1).claimable_at + 30 * 86_400
    chain.next_block_at(sweepable_at - 10)
    chain.mine(1)
    with reverts("SweepTooEarly"):
        chain.send_as(governance, d, "sweep", 1, a.treasury.address)
    chain.next_block_at(sweepable_at)
    chain.mine(1)

    receipt = chain.send_as(governance, d, "sweep", 1, a.treasury.address)

    assert d.events(receipt, "Swept") == [{"epoch": 1, "to": a.treasury.address, "amount": 300}]
    assert token.balance_of(a.treasury.address) == 300
    assert d.epoch_info(1).status == EpochStatus.SWEPT
    with reverts("EpochIsSwept"):
        d.claim(a.bob, dist.claim(1, 1))
    with reverts("EpochIsSwept"):
        chain.send_as(governance, d, "sweep", 1, a.treasury.address)


def test_late_claims_work_until_swept(
    system: System, chain: ChainHarness, dist: Distribution
) -> None:
    commit(system, chain, 1, dist)
    chain.advance_time(WINDOW + 400 * 86_400)
    system.royalty_distributor.claim(chain.actors.bob, dist.claim(1, 1))
    assert system.payment_token.balance_of(chain.actors.bob.address) == 200


def test_single_leaf_tree(system: System, chain: ChainHarness) -> None:
    """A one-leaf tree: the root is the leaf and the proof is empty."""
    dist = Distribution.of([(chain.actors.alice.address, 42)])
    assert dist.claim(1, 0).proof == ()
    commit(system, chain, 1, dist)
    chain.advance_time(WINDOW)
    system.royalty_distributor.claim(chain.actors.alice, dist.claim(1, 0))
    assert system.payment_token.balance_of(chain.actors.alice.address) == 42


def test_large_tree_proofs_verify(system: System, chain: ChainHarness) -> None:
    a = chain.actors
    payouts = [(f"0x{i + 1:040x}", i + 1) for i in range(1000)]
    dist = Distribution.of(payouts)
    assert isinstance(dist.tree, MerkleTree)
    commit(system, chain, 9, dist)
    chain.advance_time(WINDOW)
    d = system.royalty_distributor
    d.claim_many(a.alice, [dist.claim(9, p) for p in (0, 499, 999)])
    assert d.epoch_info(9).claimed == 1 + 500 + 1000


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    amounts=st.lists(st.integers(min_value=0, max_value=10**30), min_size=1, max_size=20),
    epoch=st.integers(min_value=0, max_value=2**256 - 1),
)
def test_every_leaf_of_a_random_epoch_claims_exactly_its_amount(
    system: System, chain: ChainHarness, amounts: list[int], epoch: int
) -> None:
    """Conservation on chain: all leaves claimed in one call pay out exactly the total."""
    d, token = system.royalty_distributor, system.payment_token
    payouts = [(f"0x{0xABC0000 + i:040x}", amount) for i, amount in enumerate(amounts)]
    dist = Distribution.of(payouts)
    with chain.rewind():
        token_owner = chain.actors.deployer
        MintableToken(chain.client, token.address).mint(
            token_owner, chain.actors.settler.address, dist.total
        )
        commit(system, chain, epoch, dist)
        chain.advance_time(WINDOW)
        d.claim_many(chain.actors.mallory, [dist.claim(epoch, p) for p in range(len(payouts))])
        assert [token.balance_of(a) for a, _ in payouts] == amounts
        assert d.epoch_info(epoch).claimed == dist.total
        assert token.balance_of(d.address) == 0
