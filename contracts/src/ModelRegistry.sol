// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title ModelRegistry
/// @notice The registry of community-owned models: model id → operator address and metadata URI.
/// @dev Registration is permissionless: the first caller to claim an unused id names its operator.
/// Id 0 is reserved (RoyaltyPolicy uses it for the default policy), so it can never be
/// registered. The operator alone mints and revokes licenses of its model (LicenseNFT) and may
/// hand the model over to a new operator.
contract ModelRegistry {
    struct Model {
        address operator;
        string metadataURI;
    }

    mapping(uint256 modelId => Model) private _models;

    /// @notice A model was registered.
    event ModelRegistered(uint256 indexed modelId, address indexed operator, string metadataURI);
    /// @notice The model's operator changed.
    event ModelOperatorTransferred(
        uint256 indexed modelId, address indexed previousOperator, address indexed newOperator
    );
    /// @notice The model's metadata URI changed.
    event ModelMetadataUpdated(uint256 indexed modelId, string metadataURI);

    /// @notice Model id 0 is reserved for the default royalty policy.
    error ReservedModelId();
    /// @notice The id is already registered.
    error ModelAlreadyRegistered(uint256 modelId);
    /// @notice No model has this id.
    error UnknownModel(uint256 modelId);
    /// @notice The caller is not the model's operator.
    error NotModelOperator(uint256 modelId, address caller);
    /// @notice The zero address cannot operate a model.
    error ZeroOperator();

    modifier onlyOperator(uint256 modelId) {
        address operator = _models[modelId].operator;
        if (operator == address(0)) revert UnknownModel(modelId);
        if (operator != msg.sender) revert NotModelOperator(modelId, msg.sender);
        _;
    }

    /// @notice Register model `modelId`, operated by `operator`.
    /// @param modelId Any unused id except 0.
    /// @param operator The address that will mint and revoke the model's licenses.
    /// @param uri Where the model's description lives (IPFS, HTTPS...).
    function registerModel(uint256 modelId, address operator, string calldata uri) external {
        if (modelId == 0) revert ReservedModelId();
        if (operator == address(0)) revert ZeroOperator();
        if (_models[modelId].operator != address(0)) revert ModelAlreadyRegistered(modelId);
        _models[modelId] = Model(operator, uri);
        emit ModelRegistered(modelId, operator, uri);
    }

    /// @notice Hand the model over to `newOperator` (takes effect at once). Operator only.
    function transferOperator(uint256 modelId, address newOperator) external onlyOperator(modelId) {
        if (newOperator == address(0)) revert ZeroOperator();
        _models[modelId].operator = newOperator;
        emit ModelOperatorTransferred(modelId, msg.sender, newOperator);
    }

    /// @notice Replace the model's metadata URI. Operator only.
    function setMetadataURI(uint256 modelId, string calldata uri) external onlyOperator(modelId) {
        _models[modelId].metadataURI = uri;
        emit ModelMetadataUpdated(modelId, uri);
    }

    /// @notice The operator of `modelId`, or the zero address when it is not registered.
    function operatorOf(uint256 modelId) external view returns (address) {
        return _models[modelId].operator;
    }

    /// @notice The metadata URI of `modelId` (empty when it is not registered).
    function metadataURI(uint256 modelId) external view returns (string memory) {
        return _models[modelId].metadataURI;
    }

    /// @notice Whether `modelId` is registered.
    function exists(uint256 modelId) external view returns (bool) {
        return _models[modelId].operator != address(0);
    }
}
