// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ModelRegistry} from "./ModelRegistry.sol";

/// @title Staking
/// @notice Contributors stake an ERC-20 on a model; the contributor share of the model's
/// royalties is split pro rata to the stakes in force when the usage happened.
/// @dev A stake stops counting at `unstake` (the `Unstaked` event). With a cooldown the tokens
/// are then held until `withdraw` after `cooldown` seconds (each unstake restarts the wait of
/// the model's pending amount); without one they are returned in the same call. Events carry the
/// resulting stake and model total so the indexer needs no extra calls.
contract Staking is ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Tokens unstaked but not yet withdrawn.
    struct PendingWithdrawal {
        uint256 amount;
        uint64 releaseAt;
    }

    /// @notice The staked token.
    IERC20 public immutable stakeToken;
    /// @notice The registry of models one may stake on.
    ModelRegistry public immutable registry;
    /// @notice Seconds between `unstake` and the earliest `withdraw` (0 = returned at once).
    uint64 public immutable cooldown;

    mapping(uint256 modelId => mapping(address staker => uint256)) private _stakes;
    mapping(uint256 modelId => uint256) private _totals;
    mapping(uint256 modelId => mapping(address staker => PendingWithdrawal)) private _pending;

    /// @notice `staker` added `amount` to its stake on `modelId`.
    event Staked(uint256 indexed modelId, address indexed staker, uint256 amount, uint256 stakeAfter, uint256 totalAfter);
    /// @notice `staker` removed `amount` from its stake on `modelId`; it stops counting now.
    event Unstaked(uint256 indexed modelId, address indexed staker, uint256 amount, uint256 stakeAfter, uint256 totalAfter);
    /// @notice Unstaked tokens were paid back to `staker`.
    event Withdrawn(uint256 indexed modelId, address indexed staker, uint256 amount);

    /// @notice Amounts must be positive.
    error ZeroAmount();
    /// @notice No model has this id.
    error UnknownModel(uint256 modelId);
    /// @notice The staker has less than `amount` staked on the model.
    error InsufficientStake(uint256 modelId, uint256 staked, uint256 amount);
    /// @notice The token delivered a different amount than requested (fee-on-transfer tokens).
    error TransferAmountMismatch(uint256 expected, uint256 received);
    /// @notice Nothing is pending for the staker on this model.
    error NothingToWithdraw(uint256 modelId);
    /// @notice The cooldown of the pending amount has not passed.
    error CooldownActive(uint256 modelId, uint64 releaseAt);

    constructor(IERC20 stakeToken_, ModelRegistry registry_, uint64 cooldown_) {
        stakeToken = stakeToken_;
        registry = registry_;
        cooldown = cooldown_;
    }

    /// @notice Stake `amount` of the stake token on `modelId` (pulled with transferFrom).
    function stake(uint256 modelId, uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (!registry.exists(modelId)) revert UnknownModel(modelId);
        uint256 stakeAfter = _stakes[modelId][msg.sender] + amount;
        uint256 totalAfter = _totals[modelId] + amount;
        _stakes[modelId][msg.sender] = stakeAfter;
        _totals[modelId] = totalAfter;
        emit Staked(modelId, msg.sender, amount, stakeAfter, totalAfter);

        uint256 before = stakeToken.balanceOf(address(this));
        stakeToken.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = stakeToken.balanceOf(address(this)) - before;
        if (received != amount) revert TransferAmountMismatch(amount, received);
    }

    /// @notice Remove `amount` from the caller's stake on `modelId`. The stake stops counting
    /// now; the tokens come back now (no cooldown) or through `withdraw` after the cooldown.
    function unstake(uint256 modelId, uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 staked = _stakes[modelId][msg.sender];
        if (staked < amount) revert InsufficientStake(modelId, staked, amount);
        uint256 stakeAfter;
        uint256 totalAfter;
        unchecked {
            // staked >= amount, and the total is the sum of the stakes.
            stakeAfter = staked - amount;
            totalAfter = _totals[modelId] - amount;
        }
        _stakes[modelId][msg.sender] = stakeAfter;
        _totals[modelId] = totalAfter;
        emit Unstaked(modelId, msg.sender, amount, stakeAfter, totalAfter);

        if (cooldown == 0) {
            emit Withdrawn(modelId, msg.sender, amount);
            stakeToken.safeTransfer(msg.sender, amount);
        } else {
            PendingWithdrawal storage p = _pending[modelId][msg.sender];
            p.amount += amount;
            p.releaseAt = uint64(block.timestamp) + cooldown;
        }
    }

    /// @notice Pay back the caller's unstaked tokens of `modelId` once the cooldown has passed.
    function withdraw(uint256 modelId) external nonReentrant {
        PendingWithdrawal memory p = _pending[modelId][msg.sender];
        if (p.amount == 0) revert NothingToWithdraw(modelId);
        if (block.timestamp < p.releaseAt) revert CooldownActive(modelId, p.releaseAt);
        delete _pending[modelId][msg.sender];
        emit Withdrawn(modelId, msg.sender, p.amount);
        stakeToken.safeTransfer(msg.sender, p.amount);
    }

    /// @notice The stake of `staker` on `modelId`.
    function stakeOf(uint256 modelId, address staker) external view returns (uint256) {
        return _stakes[modelId][staker];
    }

    /// @notice The total stake on `modelId`.
    function totalStaked(uint256 modelId) external view returns (uint256) {
        return _totals[modelId];
    }

    /// @notice What `staker` has unstaked from `modelId` and not yet withdrawn, and when it frees.
    function pendingWithdrawal(uint256 modelId, address staker) external view returns (PendingWithdrawal memory) {
        return _pending[modelId][staker];
    }
}
