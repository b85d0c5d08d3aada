// Regenerates the golden OpenZeppelin dumps in tests/golden/merkle/ (run from the repo root):
//   NODE_PATH=contracts/node_modules node tests/merkle_oz_compat/make_golden.mjs
// The files are written by the real @openzeppelin/merkle-tree; tests/unit/test_merkle.py
// checks that our loader accepts them and that our dump reproduces them byte for byte.
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';

const require = createRequire(import.meta.url);
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');
const out = 'tests/golden/merkle/';

const payoutValues = [
  ['0', '0x1111111111111111111111111111111111111111', '5000000'],
  ['1', '0x5B38Da6a701c568545dCfcB03FcB875f56beddC4', '0'],
  ['2', '0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2', '115792089237316195423570985008687907853269984665640564039457584007913129639935'],
  ['3', '0x4B20993Bc481177ec7E8f571ceCaE8A9e22C02db', '1'],
  ['4', '0x78731D3Ca6b7E34aC0F824c42a7cC18A495cabaB', '123456789'],
];
const payout = StandardMerkleTree.of(payoutValues, ['uint256', 'address', 'uint256']);
writeFileSync(out + 'oz-standard-v1.json', JSON.stringify(payout.dump()));
writeFileSync(out + 'oz-standard-v1-indent2.json', JSON.stringify(payout.dump(), null, 2));

const unsorted = StandardMerkleTree.of(payoutValues.slice(0, 3), ['uint256', 'address', 'uint256'], {
  sortLeaves: false,
});
writeFileSync(out + 'oz-standard-v1-unsorted.json', JSON.stringify(unsorted.dump()));

const mixed = StandardMerkleTree.of(
  [
    ['0x5B38Da6a701c568545dCfcB03FcB875f56beddC4', true, '-7', '0x' + 'ab'.repeat(32), 'héllo', '0x01ff', ['1', '2']],
    ['0x0000000000000000000000000000000000000000', false, '0x7f', '0x' + '00'.repeat(32), '', '0x', []],
  ],
  ['address', 'bool', 'int8', 'bytes32', 'string', 'bytes', 'uint16[]'],
);
writeFileSync(out + 'oz-standard-v1-mixed-types.json', JSON.stringify(mixed.dump()));
console.log(payout.root, unsorted.root, mixed.root);
