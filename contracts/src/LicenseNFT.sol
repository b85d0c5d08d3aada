// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721Utils} from "@openzeppelin/contracts/token/ERC721/utils/ERC721Utils.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ModelRegistry} from "./ModelRegistry.sol";

/// @title LicenseNFT
/// @notice Each token is one license to use a model, with immutable terms: the model, the
/// usage price (payment-token base units per billing unit, scaled by 10^6) and an expiry
/// (unix seconds, 0 = never). Usage at time t is billed to the token's owner at t.
/// @dev Licenses are minted by the model's operator, or bought by anyone at the price the
/// operator lists. The operator (the current one, per ModelRegistry) may revoke a license; the
/// revocation time is recorded and the token stays in existence so history remains readable.
/// Every event carries what the indexer needs, so it never has to call back into the contract.
contract LicenseNFT is ERC721, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice The immutable terms of a license, plus its revocation time (0 = not revoked).
    struct Terms {
        uint256 modelId;
        uint256 pricePerUnitE6;
        uint64 expiresAt;
        uint64 revokedAt;
    }

    /// @notice A listed price at which anyone may buy a license of a model.
    struct Offer {
        uint256 salePrice;
        uint256 pricePerUnitE6;
        uint64 duration;
        bool active;
    }

    /// @notice The registry naming each model's operator.
    ModelRegistry public immutable registry;
    /// @notice The ERC-20 in which listed licenses are paid (to the model's operator).
    IERC20 public immutable paymentToken;

    uint256 private _nextLicenseId = 1;
    mapping(uint256 licenseId => Terms) private _terms;
    mapping(uint256 modelId => Offer) private _offers;

    /// @notice A license was minted (also signalled by the ERC-721 `Transfer` from address 0).
    event LicenseMinted(
        uint256 indexed licenseId, uint256 indexed modelId, address indexed to, uint256 pricePerUnitE6, uint64 expiresAt
    );
    /// @notice A license was revoked by its model's operator, effective at the block's timestamp.
    event LicenseRevoked(uint256 indexed licenseId, uint256 indexed modelId, address indexed by);
    /// @notice The model's license offer changed (`duration` 0 = bought licenses never expire).
    event LicenseOfferSet(uint256 indexed modelId, uint256 salePrice, uint256 pricePerUnitE6, uint64 duration, bool active);

    /// @notice No model has this id.
    error UnknownModel(uint256 modelId);
    /// @notice The caller is not the model's operator.
    error NotModelOperator(uint256 modelId, address caller);
    /// @notice The expiry is in the past (use 0 for a license that never expires).
    error ExpiryInPast(uint64 expiresAt);
    /// @notice The license is already revoked.
    error AlreadyRevoked(uint256 licenseId);
    /// @notice The model has no active offer.
    error NoActiveOffer(uint256 modelId);
    /// @notice The offer changed since the buyer read it (front-running protection).
    error OfferMismatch(uint256 modelId);

    constructor(ModelRegistry registry_, IERC20 paymentToken_) ERC721("Royalty Model License", "RML") {
        registry = registry_;
        paymentToken = paymentToken_;
    }

    modifier onlyOperator(uint256 modelId) {
        _checkOperator(modelId);
        _;
    }

    /// @notice Mint a license of `modelId` to `to` with the given terms. Operator only.
    /// @param expiresAt Unix seconds after which usage is no longer valid; 0 = never.
    /// @return licenseId The new token id.
    function mint(uint256 modelId, address to, uint256 pricePerUnitE6, uint64 expiresAt)
        external
        nonReentrant
        onlyOperator(modelId)
        returns (uint256 licenseId)
    {
        if (expiresAt != 0 && expiresAt <= block.timestamp) revert ExpiryInPast(expiresAt);
        return _mintLicense(modelId, to, pricePerUnitE6, expiresAt);
    }

    /// @notice List (or withdraw, with `active` false) the price at which anyone may buy a
    /// license of `modelId`. Operator only.
    /// @param salePrice What a buyer pays once, in payment-token base units.
    /// @param pricePerUnitE6 The usage price written into licenses bought under this offer.
    /// @param duration Seconds a bought license lasts; 0 = it never expires.
    function setOffer(uint256 modelId, uint256 salePrice, uint256 pricePerUnitE6, uint64 duration, bool active)
        external
        onlyOperator(modelId)
    {
        _offers[modelId] = Offer(salePrice, pricePerUnitE6, duration, active);
        emit LicenseOfferSet(modelId, salePrice, pricePerUnitE6, duration, active);
    }

    /// @notice Buy a license of `modelId` for `to` at the listed offer; the sale price goes
    /// straight to the model's operator. The caller restates the offer it read, and the call
    /// reverts if the operator changed it in between.
    /// @return licenseId The new token id.
    function buy(uint256 modelId, address to, uint256 salePrice, uint256 pricePerUnitE6, uint64 duration)
        external
        nonReentrant
        returns (uint256 licenseId)
    {
        Offer memory offer = _offers[modelId];
        if (!offer.active) revert NoActiveOffer(modelId);
        if (offer.salePrice != salePrice || offer.pricePerUnitE6 != pricePerUnitE6 || offer.duration != duration) {
            revert OfferMismatch(modelId);
        }
        address operator = registry.operatorOf(modelId);
        uint64 expiresAt = duration == 0 ? 0 : uint64(block.timestamp) + duration;
        licenseId = _mintLicense(modelId, to, pricePerUnitE6, expiresAt);
        if (salePrice != 0) paymentToken.safeTransferFrom(msg.sender, operator, salePrice);
    }

    /// @notice Revoke a license: usage after this block's timestamp is no longer valid.
    /// Only the current operator of the license's model may revoke.
    function revoke(uint256 licenseId) external {
        Terms storage t = _terms[licenseId];
        _requireOwned(licenseId);
        uint256 modelId = t.modelId;
        _checkOperator(modelId);
        if (t.revokedAt != 0) revert AlreadyRevoked(licenseId);
        t.revokedAt = uint64(block.timestamp);
        emit LicenseRevoked(licenseId, modelId, msg.sender);
    }

    /// @notice The terms of a license (reverts for a token that does not exist).
    function terms(uint256 licenseId) external view returns (Terms memory) {
        _requireOwned(licenseId);
        return _terms[licenseId];
    }

    /// @notice The current offer of `modelId`.
    function offerOf(uint256 modelId) external view returns (Offer memory) {
        return _offers[modelId];
    }

    /// @notice Whether the license is usable now: not revoked, not expired.
    function isValid(uint256 licenseId) external view returns (bool) {
        if (_ownerOf(licenseId) == address(0)) return false;
        Terms storage t = _terms[licenseId];
        return t.revokedAt == 0 && (t.expiresAt == 0 || block.timestamp < t.expiresAt);
    }

    /// @notice The id the next license will get.
    function nextLicenseId() external view returns (uint256) {
        return _nextLicenseId;
    }

    function _mintLicense(uint256 modelId, address to, uint256 pricePerUnitE6, uint64 expiresAt)
        private
        returns (uint256 licenseId)
    {
        if (!registry.exists(modelId)) revert UnknownModel(modelId);
        licenseId = _nextLicenseId++;
        _terms[licenseId] = Terms(modelId, pricePerUnitE6, expiresAt, 0);
        _mint(to, licenseId);
        emit LicenseMinted(licenseId, modelId, to, pricePerUnitE6, expiresAt);
        // Last, as in _safeMint: calls into `to` when it is a contract (guarded by nonReentrant).
        ERC721Utils.checkOnERC721Received(msg.sender, address(0), to, licenseId, "");
    }

    function _checkOperator(uint256 modelId) private view {
        address operator = registry.operatorOf(modelId);
        if (operator == address(0)) revert UnknownModel(modelId);
        if (operator != msg.sender) revert NotModelOperator(modelId, msg.sender);
    }
}
