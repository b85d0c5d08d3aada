"""The epoch lifecycle as data, and the epoch, allocation and carry records."""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from schemas.epoch import (
    TRANSITIONS,
    Allocation,
    Epoch,
    EpochStatus,
    RecipientCarry,
    check_transition,
)
from schemas.errors import InvalidTransition
from tests.schemas.schema_factories import PAYER, ROOT, TX_HASH

S = EpochStatus
LIFECYCLE = {
    (S.OPEN, S.CLOSING),
    (S.CLOSING, S.COMPUTED),
    (S.COMPUTED, S.COMMITTED),
    (S.COMMITTED, S.CLAIMABLE),
    (S.COMMITTED, S.DISPUTED),
}
COMPUTED = {"root": ROOT, "total": 1000, "inputs_hash": ROOT, "usage_root": ROOT}
COMMITTED = {"tx_hash": TX_HASH, "block_number": 99, "claimable_at": 7200}


def test_transitions_are_exactly_the_design_lifecycle() -> None:
    table = {(src, dst) for src, targets in TRANSITIONS.items() for dst in targets}
    assert table == LIFECYCLE
    assert set(TRANSITIONS) == set(EpochStatus)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(EpochStatus, repeat=2)))
def test_check_transition_allows_only_lifecycle_steps(
    current: EpochStatus, target: EpochStatus
) -> None:
    if (current, target) in LIFECYCLE:
        check_transition(current, target)
        check_transition(current.value, target.value)
    else:
        with pytest.raises(InvalidTransition) as caught:
            check_transition(current, target)
        assert caught.value.current == current.value
        assert repr(target.value) in str(caught.value)


def test_final_statuses_say_so() -> None:
    with pytest.raises(InvalidTransition, match="final status"):
        check_transition("claimable", "open")


def test_unknown_status_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'settled' is not a valid EpochStatus"):
        check_transition("open", "settled")


def test_an_epoch_walks_its_lifecycle() -> None:
    epoch = Epoch(id=1, start_time=3600, end_time=7200, status=S.OPEN)
    assert epoch.contains(3600)
    assert not epoch.contains(7200)
    closing = epoch.transition_to(S.CLOSING)
    computed = closing.transition_to(S.COMPUTED, **COMPUTED)
    committed = computed.transition_to(S.COMMITTED, **COMMITTED)
    claimable = committed.transition_to(S.CLAIMABLE)
    assert claimable.status is S.CLAIMABLE
    assert claimable.total == 1000
    assert Epoch.model_validate_json(claimable.model_dump_json()) == claimable
    with pytest.raises(InvalidTransition):
        claimable.transition_to(S.DISPUTED)


def test_statuses_require_their_outputs() -> None:
    closing = Epoch(id=1, start_time=0, end_time=10, status=S.CLOSING)
    with pytest.raises(ValidationError, match="needs root, total, inputs_hash, usage_root"):
        closing.transition_to(S.COMPUTED)
    computed = closing.transition_to(S.COMPUTED, **COMPUTED)
    with pytest.raises(ValidationError, match="needs tx_hash, block_number, claimable_at"):
        computed.transition_to(S.COMMITTED)


def test_an_epoch_window_is_not_empty() -> None:
    with pytest.raises(ValidationError, match="end_time"):
        Epoch(id=1, start_time=10, end_time=10, status=S.OPEN)


def test_allocation_and_carry_records() -> None:
    leaf = Allocation(epoch=1, index=0, account=PAYER.lower(), amount=2**256 - 1)
    assert leaf.account == PAYER
    assert '"amount":"' + str(2**256 - 1) + '"' in leaf.model_dump_json()
    assert RecipientCarry(account=PAYER, epoch=1, carry_e6=999_999).carry_e6 == 999_999
    with pytest.raises(ValidationError):
        RecipientCarry(account=PAYER, epoch=1, carry_e6=1_000_000)


def test_an_epoch_with_nothing_to_pay_commits_without_a_transaction() -> None:
    empty = {**COMPUTED, "total": 0}
    computed = Epoch(id=2, start_time=0, end_time=10, status=S.COMPUTED, **empty)
    with pytest.raises(ValidationError, match="needs claimable_at"):
        computed.transition_to(S.COMMITTED)
    committed = computed.transition_to(S.COMMITTED, claimable_at=10)
    assert committed.tx_hash is None
    assert committed.transition_to(S.CLAIMABLE).status is S.CLAIMABLE
