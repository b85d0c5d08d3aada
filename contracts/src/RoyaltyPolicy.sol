// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title RoyaltyPolicy
/// @notice Per model, how royalties split between the model's operator, the treasury and the
/// model's contributors (stakers), in basis points summing to 10000.
/// @dev Owned by governance (the timelock executing the Governor's proposals): nothing else
/// can change a split or the treasury. Model id 0 holds the default split, which applies to
/// every model without its own. The constructor sets the initial default and treasury and
/// emits the same events as later changes, so the indexer sees the full history.
contract RoyaltyPolicy is Ownable {
    /// @notice Basis points denominator: the three shares of a split sum to this.
    uint16 public constant TOTAL_BPS = 10_000;

    /// @notice A split in basis points; `isSet` distinguishes "own split" from "use default".
    struct Split {
        uint16 operatorBps;
        uint16 treasuryBps;
        uint16 contributorsBps;
        bool isSet;
    }

    mapping(uint256 modelId => Split) private _splits;
    address private _treasury;

    /// @notice The split of `modelId` (0 = the default) was set.
    event PolicySet(uint256 indexed modelId, uint16 operatorBps, uint16 treasuryBps, uint16 contributorsBps);
    /// @notice The treasury address was set.
    event TreasurySet(address indexed treasury);

    /// @notice The shares do not sum to 10000.
    error InvalidSplit(uint16 operatorBps, uint16 treasuryBps, uint16 contributorsBps);
    /// @notice The treasury cannot be the zero address.
    error ZeroTreasury();

    constructor(address governance, address treasury_, uint16 operatorBps, uint16 treasuryBps, uint16 contributorsBps)
        Ownable(governance)
    {
        _setTreasury(treasury_);
        _setPolicy(0, operatorBps, treasuryBps, contributorsBps);
    }

    /// @notice Set the split of `modelId` (0 = the default). Governance only.
    function setPolicy(uint256 modelId, uint16 operatorBps, uint16 treasuryBps, uint16 contributorsBps)
        external
        onlyOwner
    {
        _setPolicy(modelId, operatorBps, treasuryBps, contributorsBps);
    }

    /// @notice Set the treasury address. Governance only.
    function setTreasury(address treasury_) external onlyOwner {
        _setTreasury(treasury_);
    }

    /// @notice The split in force for `modelId`: its own, else the default.
    function policyOf(uint256 modelId) external view returns (Split memory split) {
        split = _splits[modelId];
        if (!split.isSet) split = _splits[0];
    }

    /// @notice Whether `modelId` has a split of its own (rather than the default).
    function hasOwnPolicy(uint256 modelId) external view returns (bool) {
        return _splits[modelId].isSet;
    }

    /// @notice Where the treasury share goes.
    function treasury() external view returns (address) {
        return _treasury;
    }

    function _setPolicy(uint256 modelId, uint16 operatorBps, uint16 treasuryBps, uint16 contributorsBps) private {
        // Summed in uint256: three uint16 values cannot overflow it.
        if (uint256(operatorBps) + treasuryBps + contributorsBps != TOTAL_BPS) {
            revert InvalidSplit(operatorBps, treasuryBps, contributorsBps);
        }
        _splits[modelId] = Split(operatorBps, treasuryBps, contributorsBps, true);
        emit PolicySet(modelId, operatorBps, treasuryBps, contributorsBps);
    }

    function _setTreasury(address treasury_) private {
        if (treasury_ == address(0)) revert ZeroTreasury();
        _treasury = treasury_;
        emit TreasurySet(treasury_);
    }
}
