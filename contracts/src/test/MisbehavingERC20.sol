// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title MisbehavingERC20
/// @notice TEST ONLY: an ERC-20 whose `transfer` / `transferFrom` can be switched to the
/// misbehaviours seen in the wild, to prove callers use SafeERC20 correctly.
contract MisbehavingERC20 is ERC20 {
    /// @notice Normal: standard ERC-20. ReturnFalse: moves nothing and returns false.
    /// Revert: reverts. NoReturn: moves tokens but returns no data (USDT style).
    enum Mode {
        Normal,
        ReturnFalse,
        Revert,
        NoReturn
    }

    /// @notice The current behaviour of transfer and transferFrom.
    Mode public mode;

    error Refused();

    constructor() ERC20("Misbehaving", "BAD") {}

    /// @notice Mint freely (test token).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Switch the behaviour of transfer and transferFrom.
    function setMode(Mode mode_) external {
        mode = mode_;
    }

    /// @inheritdoc ERC20
    function transfer(address to, uint256 value) public override returns (bool) {
        if (mode == Mode.ReturnFalse) return false;
        if (mode == Mode.Revert) revert Refused();
        bool ok = super.transfer(to, value);
        if (mode == Mode.NoReturn) {
            assembly {
                return(0, 0)
            }
        }
        return ok;
    }

    /// @inheritdoc ERC20
    function transferFrom(address from, address to, uint256 value) public override returns (bool) {
        if (mode == Mode.ReturnFalse) return false;
        if (mode == Mode.Revert) revert Refused();
        bool ok = super.transferFrom(from, to, value);
        if (mode == Mode.NoReturn) {
            assembly {
                return(0, 0)
            }
        }
        return ok;
    }
}
