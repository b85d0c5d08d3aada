// Reference oracle for tests/test_merkle_oz_compat.py: runs the real @openzeppelin/merkle-tree
// on cases read as JSON from stdin and prints what the library computes, as JSON on stdout.
//
// Input:  {"cases": [{"leafEncoding": [...], "values": [[...]], "multiproofs": [[i, ...]],
//                     "dumps": ["<JSON text of a standard-v1 dump>", ...]}]}
// Output: {"results": [{"root", "proofs", "multiproofs", "dump", "dumpIndented", "reloaded"}]}
// where "reloaded" holds, for each input dump, {"root", "dump"} after StandardMerkleTree.load.
//
// The package is resolved through NODE_PATH (the test points it at contracts/node_modules):
// ESM `import` ignores NODE_PATH, so go through a CommonJS require.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const require = createRequire(import.meta.url);
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');

function run(testCase) {
  const tree = StandardMerkleTree.of(testCase.values, testCase.leafEncoding);
  const proofs = testCase.values.map((_, i) => tree.getProof(i));
  const multiproofs = (testCase.multiproofs ?? []).map(indices => tree.getMultiProof(indices));
  const reloaded = (testCase.dumps ?? []).map(text => {
    const loaded = StandardMerkleTree.load(JSON.parse(text));
    return { root: loaded.root, dump: JSON.stringify(loaded.dump()) };
  });
  return {
    root: tree.root,
    proofs,
    multiproofs,
    dump: JSON.stringify(tree.dump()),
    dumpIndented: JSON.stringify(tree.dump(), null, 2),
    reloaded,
  };
}

const input = JSON.parse(readFileSync(0, 'utf8'));
process.stdout.write(JSON.stringify({ results: input.cases.map(run) }));
