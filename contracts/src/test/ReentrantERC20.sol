// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title ReentrantERC20
/// @notice TEST ONLY: a hostile token. Once armed, the next token movement initiated by the
/// target contract calls back into the target with the armed calldata (e.g. a second claim)
/// before completing. The outcome of that reentrant call is recorded, not propagated, so a
/// test can check the target refused it while the outer call went on.
contract ReentrantERC20 is ERC20 {
    address public target;
    bytes public payload;
    bool public attempted;
    bool public reentrySucceeded;
    bytes public reentryReturnData;

    constructor() ERC20("Reentrant", "EVIL") {}

    /// @notice Mint freely (test token).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Arm the attack: on the next movement initiated by `target_`, call it with `payload_`.
    function arm(address target_, bytes calldata payload_) external {
        target = target_;
        payload = payload_;
        attempted = false;
    }

    function _update(address from, address to, uint256 value) internal override {
        address t = target;
        if (t != address(0) && msg.sender == t && !attempted) {
            attempted = true;
            (bool ok, bytes memory data) = t.call(payload);
            reentrySucceeded = ok;
            reentryReturnData = data;
        }
        super._update(from, to, value);
    }
}
