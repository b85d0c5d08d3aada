// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/// @title RoyaltyTimelock
/// @notice The executor of governance: it owns RoyaltyPolicy and administers
/// RoyaltyDistributor, and runs what the Governor queued once `minDelay` has passed.
/// @dev Deployed with the deployer as temporary admin, which grants the proposer and canceller
/// roles to the Governor and then renounces; executors are open (address 0).
contract RoyaltyTimelock is TimelockController {
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors, address admin)
        TimelockController(minDelay, proposers, executors, admin)
    {}
}
