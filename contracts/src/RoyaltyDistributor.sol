// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title RoyaltyDistributor
/// @notice Pays out royalties epoch by epoch. For each epoch the settler commits the Merkle root
/// of `(index, account, amount)` leaves together with the epoch's total, which is pulled in by
/// the same call, so a committed root is never unfunded. Once the dispute window has passed,
/// anyone may claim a leaf for its account (the tokens always go to the leaf's account), one
/// epoch at a time or many epochs in one call.
///
/// Safety:
/// - the guardian may dispute an epoch during its window (the funds go back to the funder) and
///   may pause commits and claims at any time; pausing is also the backstop should a refund fail;
/// - per epoch, the claimed amount can never exceed the funded total, whatever the root says,
///   so a wrong root can never reach the funds of other epochs;
/// - funds still unclaimed `sweepDelay` (at least 30 days) after an epoch became claimable may
///   be swept, by governance only;
/// - every entry point that moves tokens is `nonReentrant` and follows checks-effects-
///   interactions, and all token calls go through SafeERC20.
///
/// @dev Leaves are OpenZeppelin StandardMerkleTree leaves:
/// `keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))))`, pairs hashed in
/// sorted order (OpenZeppelin MerkleProof).
///
/// Gas: a claim recomputes the root from its proof and looks up the epoch's state under
/// `(epoch, computed root)`. A wrong proof computes a root that was never committed for that
/// epoch and finds an empty state, so the committed root itself is never loaded on the claim
/// path, and everything a claim checks and updates (total, claimed, claimable time, status)
/// sits in one storage slot. Claimed flags form a bitmap over `(epoch, index)` stored in
/// 16 x 16 tiles: one storage word holds the flags of 16 consecutive indices in 16
/// consecutive epoch ids. Neighbouring leaves of one epoch share words, as in a classic
/// bitmap, and so does a recipient's run of epochs when the settler keeps its index stable
/// across epochs: claiming 10 epochs then touches one or two fresh words, not ten. `claimMany`
/// also sends one transfer per run of same-account claims.
contract RoyaltyDistributor is AccessControl, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice May commit epochs (and funds them).
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    /// @notice May dispute epochs within their window, and pause / unpause.
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");
    /// @notice The shortest allowed wait, after an epoch becomes claimable, before a sweep.
    uint64 public constant MIN_SWEEP_DELAY = 30 days;
    /// @notice The longest allowed dispute window.
    uint64 public constant MAX_DISPUTE_WINDOW = 365 days;

    /// @notice Lifecycle of an epoch on chain.
    enum EpochStatus {
        None,
        Committed,
        Disputed,
        Swept
    }

    /// @dev What a claim reads and writes, packed in one slot (104 + 104 + 40 + 8 bits, from
    /// the low end: total, claimed, claimableAt, status); `_markClaimed` reads it raw.
    struct EpochState {
        uint104 total;
        uint104 claimed;
        uint40 claimableAt;
        EpochStatus status;
    }

    /// @dev What only commit, dispute, sweep and views need.
    struct EpochRecord {
        bytes32 root;
        address funder;
    }

    /// @notice One claim of `claimMany`: the leaf `(index, account, amount)` of `epoch` and its proof.
    struct Claim {
        uint256 epoch;
        uint256 index;
        address account;
        uint256 amount;
        bytes32[] proof;
    }

    /// @notice Everything known about an epoch (see `epochInfo`).
    struct EpochInfo {
        bytes32 root;
        address funder;
        uint256 total;
        uint256 claimed;
        uint64 claimableAt;
        EpochStatus status;
    }

    uint256 private constant CLAIMED_SHIFT = 104;
    uint256 private constant CLAIMABLE_AT_SHIFT = 208;
    uint256 private constant STATUS_SHIFT = 248;
    uint256 private constant UINT104_MASK = (1 << 104) - 1;
    uint256 private constant UINT40_MASK = (1 << 40) - 1;

    /// @notice The token paid out (and pulled in at commit).
    IERC20 public immutable token;
    /// @notice Seconds between a commit and the moment its epoch becomes claimable.
    uint64 public immutable disputeWindow;
    /// @notice Seconds after an epoch becomes claimable before governance may sweep what is left.
    uint64 public immutable sweepDelay;

    mapping(uint256 epoch => EpochRecord) private _records;
    mapping(uint256 epoch => mapping(bytes32 root => EpochState)) private _states;
    /// @dev Claimed flags: tile (index >> 4, epoch >> 4), bit ((index & 15) << 4) | (epoch & 15).
    mapping(uint256 indexTile => mapping(uint256 epochTile => uint256)) private _claimedBits;

    /// @notice The settler committed `merkleRoot` for `epoch` and `funder` paid in `total`.
    event EpochCommitted(
        uint256 indexed epoch,
        bytes32 merkleRoot,
        uint256 total,
        bytes32 inputsHash,
        bytes32 usageRoot,
        uint64 claimableAt,
        address indexed funder
    );
    /// @notice The guardian disputed `epoch`; `refunded` went back to the funder.
    event EpochDisputed(uint256 indexed epoch, address indexed guardian, uint256 refunded);
    /// @notice Leaf `index` of `epoch` was claimed and `amount` paid to `account`.
    event Claimed(uint256 indexed epoch, uint256 index, address indexed account, uint256 amount);
    /// @notice Governance swept the unclaimed `amount` of `epoch` to `to`.
    event Swept(uint256 indexed epoch, address indexed to, uint256 amount);

    /// @notice A required address is zero.
    error ZeroAddress();
    /// @notice The dispute window is longer than `MAX_DISPUTE_WINDOW`.
    error DisputeWindowTooLong(uint64 disputeWindow);
    /// @notice The sweep delay is shorter than `MIN_SWEEP_DELAY`.
    error SweepDelayTooShort(uint64 sweepDelay);
    /// @notice A Merkle root cannot be zero.
    error ZeroRoot();
    /// @notice The epoch id was committed before (ids are never reused, even after a dispute).
    error EpochAlreadyCommitted(uint256 epoch);
    /// @notice The total does not fit the 104 bits kept per epoch.
    error TotalTooLarge(uint256 total);
    /// @notice The token delivered a different amount than the committed total.
    error FundingMismatch(uint256 epoch, uint256 expected, uint256 received);
    /// @notice No epoch was committed under this id.
    error UnknownEpoch(uint256 epoch);
    /// @notice The proof does not prove the leaf under the epoch's root.
    error InvalidProof(uint256 epoch, uint256 index);
    /// @notice The epoch's dispute window has not passed yet.
    error NotClaimableYet(uint256 epoch, uint64 claimableAt);
    /// @notice The leaf was claimed already.
    error AlreadyClaimed(uint256 epoch, uint256 index);
    /// @notice The claim would take more than the epoch's funded total.
    error EpochOverclaimed(uint256 epoch, uint256 total, uint256 claimedAfter);
    /// @notice The epoch was disputed: nothing of it can be claimed.
    error EpochIsDisputed(uint256 epoch);
    /// @notice The epoch's remainder was swept: nothing of it can be claimed.
    error EpochIsSwept(uint256 epoch);
    /// @notice The epoch is claimable already: too late to dispute it.
    error DisputeWindowClosed(uint256 epoch, uint64 claimableAt);
    /// @notice The epoch's funds may not be swept before `sweepableAt`.
    error SweepTooEarly(uint256 epoch, uint256 sweepableAt);
    /// @notice `claimMany` needs at least one claim.
    error NoClaims();

    /// @param token_ The payout token.
    /// @param governance The admin (the timelock): grants roles and sweeps.
    /// @param settler Granted SETTLER_ROLE.
    /// @param guardian Granted GUARDIAN_ROLE.
    /// @param disputeWindow_ Seconds from commit to claimable (at most 365 days).
    /// @param sweepDelay_ Seconds from claimable to sweepable (at least 30 days).
    constructor(
        IERC20 token_,
        address governance,
        address settler,
        address guardian,
        uint64 disputeWindow_,
        uint64 sweepDelay_
    ) {
        if (address(token_) == address(0) || governance == address(0) || settler == address(0) || guardian == address(0))
        {
            revert ZeroAddress();
        }
        if (disputeWindow_ > MAX_DISPUTE_WINDOW) revert DisputeWindowTooLong(disputeWindow_);
        if (sweepDelay_ < MIN_SWEEP_DELAY) revert SweepDelayTooShort(sweepDelay_);
        token = token_;
        disputeWindow = disputeWindow_;
        sweepDelay = sweepDelay_;
        _grantRole(DEFAULT_ADMIN_ROLE, governance);
        _grantRole(SETTLER_ROLE, settler);
        _grantRole(GUARDIAN_ROLE, guardian);
    }

    // ----------------------------------------------------------------------------------------
    // Settler
    // ----------------------------------------------------------------------------------------

    /// @notice Commit epoch `epoch`: its Merkle root and funded total, pulled from the caller
    /// (which must have approved this contract for `total`) in this same call.
    /// @dev Reverts unless exactly `total` arrives (fee-on-transfer tokens are refused), so the
    /// recorded total is always backed by tokens held here.
    /// @param epoch Any id not committed before (the settler's choice).
    /// @param merkleRoot Root of the epoch's `(index, account, amount)` StandardMerkleTree.
    /// @param total Sum of the leaf amounts, in token base units.
    /// @param inputsHash Hash of the epoch's public inputs (for auditors; emitted, not stored).
    /// @param usageRoot Root over the epoch's billed usage (for auditors; emitted, not stored).
    function commitEpoch(uint256 epoch, bytes32 merkleRoot, uint256 total, bytes32 inputsHash, bytes32 usageRoot)
        external
        nonReentrant
        onlyRole(SETTLER_ROLE)
        whenNotPaused
    {
        if (merkleRoot == bytes32(0)) revert ZeroRoot();
        if (_records[epoch].root != bytes32(0)) revert EpochAlreadyCommitted(epoch);
        if (total > type(uint104).max) revert TotalTooLarge(total);
        // Cannot overflow 40 bits before the year 36000 (disputeWindow <= 365 days).
        uint40 claimableAt = uint40(block.timestamp + disputeWindow);

        _records[epoch] = EpochRecord(merkleRoot, msg.sender);
        _states[epoch][merkleRoot] = EpochState(uint104(total), 0, claimableAt, EpochStatus.Committed);
        emit EpochCommitted(epoch, merkleRoot, total, inputsHash, usageRoot, claimableAt, msg.sender);

        uint256 balanceBefore = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), total);
        uint256 balanceAfter = token.balanceOf(address(this));
        uint256 received = balanceAfter > balanceBefore ? balanceAfter - balanceBefore : 0;
        if (received != total) revert FundingMismatch(epoch, total, received);
    }

    // ----------------------------------------------------------------------------------------
    // Claims
    // ----------------------------------------------------------------------------------------

    /// @notice Claim leaf `(index, account, amount)` of `epoch`. Anyone may send it; the tokens
    /// always go to `account`.
    /// @param proof The leaf's StandardMerkleTree proof (sibling hashes, leaf to root).
    function claim(uint256 epoch, uint256 index, address account, uint256 amount, bytes32[] calldata proof)
        external
        nonReentrant
        whenNotPaused
    {
        _markClaimed(epoch, index, account, amount, proof);
        if (amount != 0) token.safeTransfer(account, amount);
    }

    /// @notice Claim any number of leaves, of any epochs and accounts, in one call.
    /// @dev All or nothing: if any claim is invalid (bad proof, already claimed, not claimable,
    /// disputed, over the epoch's total...) the whole call reverts and nothing is claimed.
    /// All claims are recorded first, then tokens move: one transfer per run of consecutive
    /// claims with the same account (order claims by account to pay each account once).
    function claimMany(Claim[] calldata claims) external nonReentrant whenNotPaused {
        uint256 n = claims.length;
        if (n == 0) revert NoClaims();
        for (uint256 i; i < n; ++i) {
            Claim calldata c = claims[i];
            _markClaimed(c.epoch, c.index, c.account, c.amount, c.proof);
        }
        address account = claims[0].account;
        uint256 sum;
        for (uint256 i; i < n; ++i) {
            Claim calldata c = claims[i];
            if (c.account != account) {
                if (sum != 0) token.safeTransfer(account, sum);
                account = c.account;
                sum = 0;
            }
            sum += c.amount;
        }
        if (sum != 0) token.safeTransfer(account, sum);
    }

    // ----------------------------------------------------------------------------------------
    // Guardian
    // ----------------------------------------------------------------------------------------

    /// @notice Dispute `epoch` before it becomes claimable: it can never be claimed, and its
    /// total goes back to the funder. The epoch id stays used.
    function dispute(uint256 epoch) external nonReentrant onlyRole(GUARDIAN_ROLE) {
        EpochRecord memory record = _records[epoch];
        EpochState storage slot = _liveState(epoch, record.root);
        EpochState memory s = slot;
        if (block.timestamp >= s.claimableAt) revert DisputeWindowClosed(epoch, s.claimableAt);
        uint256 refund = s.total - s.claimed; // claimed is 0: nothing is claimable yet
        slot.status = EpochStatus.Disputed;
        emit EpochDisputed(epoch, msg.sender, refund);
        if (refund != 0) token.safeTransfer(record.funder, refund);
    }

    /// @notice Stop commits and claims. Guardian only.
    function pause() external onlyRole(GUARDIAN_ROLE) {
        _pause();
    }

    /// @notice Resume commits and claims. Guardian only.
    function unpause() external onlyRole(GUARDIAN_ROLE) {
        _unpause();
    }

    // ----------------------------------------------------------------------------------------
    // Governance
    // ----------------------------------------------------------------------------------------

    /// @notice Send what is still unclaimed of `epoch` to `to`, once `sweepDelay` has passed
    /// since the epoch became claimable. Governance (DEFAULT_ADMIN_ROLE) only. Claims of the
    /// epoch are refused afterwards.
    function sweep(uint256 epoch, address to) external nonReentrant onlyRole(DEFAULT_ADMIN_ROLE) {
        if (to == address(0)) revert ZeroAddress();
        EpochState storage slot = _liveState(epoch, _records[epoch].root);
        EpochState memory s = slot;
        uint256 sweepableAt = uint256(s.claimableAt) + sweepDelay;
        if (block.timestamp < sweepableAt) revert SweepTooEarly(epoch, sweepableAt);
        uint256 amount = s.total - s.claimed;
        slot.status = EpochStatus.Swept;
        emit Swept(epoch, to, amount);
        if (amount != 0) token.safeTransfer(to, amount);
    }

    // ----------------------------------------------------------------------------------------
    // Views
    // ----------------------------------------------------------------------------------------

    /// @notice Root, funder, total, claimed amount, claimable time and status of `epoch`.
    function epochInfo(uint256 epoch) external view returns (EpochInfo memory info) {
        EpochRecord memory record = _records[epoch];
        EpochState memory s = _states[epoch][record.root];
        return EpochInfo(record.root, record.funder, s.total, s.claimed, s.claimableAt, s.status);
    }

    /// @notice Whether leaf `index` of `epoch` has been claimed.
    function isClaimed(uint256 epoch, uint256 index) external view returns (bool) {
        (uint256 epochTile, uint256 mask) = _flag(epoch, index);
        return _claimedBits[index >> 4][epochTile] & mask != 0;
    }

    /// @notice The StandardMerkleTree leaf hash of `(index, account, amount)`.
    function leafHash(uint256 index, address account, uint256 amount) external pure returns (bytes32) {
        return _leaf(index, account, amount);
    }

    // ----------------------------------------------------------------------------------------
    // Internals
    // ----------------------------------------------------------------------------------------

    /// @dev Checks and records one claim, and emits `Claimed`; moves no tokens.
    /// The epoch state is read and written as one raw word (see the layout constants): one
    /// SLOAD and one SSTORE, nothing unpacked that is not needed.
    function _markClaimed(uint256 epoch, uint256 index, address account, uint256 amount, bytes32[] calldata proof)
        private
    {
        EpochState storage slot =
            _states[epoch][MerkleProof.processProofCalldata(proof, _leaf(index, account, amount))];
        uint256 state;
        assembly ("memory-safe") {
            state := sload(slot.slot)
        }
        if (state >> STATUS_SHIFT != uint256(EpochStatus.Committed)) {
            _revertUnclaimable(epoch, index, EpochStatus(state >> STATUS_SHIFT));
        }
        if (block.timestamp < (state >> CLAIMABLE_AT_SHIFT) & UINT40_MASK) {
            revert NotClaimableYet(epoch, uint64((state >> CLAIMABLE_AT_SHIFT) & UINT40_MASK));
        }
        {
            uint256 claimedAfter = ((state >> CLAIMED_SHIFT) & UINT104_MASK) + amount;
            (uint256 epochTile, uint256 mask) = _flag(epoch, index);
            mapping(uint256 => uint256) storage tiles = _claimedBits[index >> 4];
            uint256 word = tiles[epochTile];
            if (word & mask != 0) revert AlreadyClaimed(epoch, index);
            if (claimedAfter > state & UINT104_MASK) {
                revert EpochOverclaimed(epoch, state & UINT104_MASK, claimedAfter);
            }
            tiles[epochTile] = word | mask;
        }
        assembly ("memory-safe") {
            // claimed + amount <= total < 2^104: adding to the claimed field cannot carry.
            sstore(slot.slot, add(state, shl(CLAIMED_SHIFT, amount)))
        }
        emit Claimed(epoch, index, account, amount);
    }

    /// @dev The state of a committed, undisputed, unswept epoch, or the matching revert.
    function _liveState(uint256 epoch, bytes32 root) private view returns (EpochState storage slot) {
        if (root == bytes32(0)) revert UnknownEpoch(epoch);
        slot = _states[epoch][root];
        EpochStatus status = slot.status;
        if (status == EpochStatus.Disputed) revert EpochIsDisputed(epoch);
        if (status == EpochStatus.Swept) revert EpochIsSwept(epoch);
    }

    /// @dev Why a claim found no live state: a disputed or swept epoch, an unknown epoch, or
    /// (the epoch exists, so the computed root is not its root) an invalid proof.
    function _revertUnclaimable(uint256 epoch, uint256 index, EpochStatus status) private view {
        if (status == EpochStatus.Disputed) revert EpochIsDisputed(epoch);
        if (status == EpochStatus.Swept) revert EpochIsSwept(epoch);
        if (_records[epoch].root == bytes32(0)) revert UnknownEpoch(epoch);
        revert InvalidProof(epoch, index);
    }

    /// @dev The epoch tile of a flag and its bit within the tile's word.
    function _flag(uint256 epoch, uint256 index) private pure returns (uint256 epochTile, uint256 mask) {
        return (epoch >> 4, 1 << (((index & 15) << 4) | (epoch & 15)));
    }

    /// @dev keccak256(bytes.concat(keccak256(abi.encode(index, account, amount)))), hashed in
    /// place: the encoding goes to free memory (not allocated), the inner hash to scratch space.
    function _leaf(uint256 index, address account, uint256 amount) private pure returns (bytes32 leaf) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, index)
            mstore(add(ptr, 0x20), and(account, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(ptr, 0x40), amount)
            mstore(0x00, keccak256(ptr, 0x60))
            leaf := keccak256(0x00, 0x20)
        }
    }
}
