// Compile every contract under contracts/src with the pinned solc-js into contracts/artifacts.
//
//   node contracts/compile.mjs            # writes contracts/artifacts/ (the committed artifacts)
//   node contracts/compile.mjs --out DIR  # writes DIR instead (the reproducibility test uses it)
//
// Output is a pure function of the sources and the settings below: no timestamps, no absolute
// paths, sorted keys where order is ours to choose. So the committed artifacts can be checked
// byte for byte against a fresh compile (tests/contracts/test_artifacts_reproducible.py).

import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const SOLC_VERSION = "0.8.30";
const CONTRACTS_DIR = dirname(fileURLToPath(import.meta.url));
const SRC_DIR = join(CONTRACTS_DIR, "src");
const NODE_MODULES = join(CONTRACTS_DIR, "node_modules");
// Sources under these folders are test or benchmark fixtures, never deployed outside local chains.
const TEST_ONLY_PREFIXES = ["src/test/", "src/bench/"];

// Fixed compiler settings: part of the artifacts' identity (recorded in the manifest).
const SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 10000 },
  metadata: { bytecodeHash: "ipfs" },
  outputSelection: {
    "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
  },
};

function parseArgs(argv) {
  let out = join(CONTRACTS_DIR, "artifacts");
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === "--out") {
      out = resolve(argv[i + 1]);
      i += 1;
    } else {
      throw new Error(`unknown argument ${argv[i]} (usage: compile.mjs [--out DIR])`);
    }
  }
  return { out };
}

function listSolidity(dir) {
  const found = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...listSolidity(path));
    else if (name.endsWith(".sol")) found.push(path);
  }
  return found;
}

// Source unit names are repository-relative ("src/...") or npm-style ("@openzeppelin/...").
function unitName(path) {
  return relative(CONTRACTS_DIR, path).split(sep).join("/");
}

function findImport(path) {
  const file = path.startsWith("@") ? join(NODE_MODULES, path) : join(CONTRACTS_DIR, path);
  try {
    return { contents: readFileSync(file, "utf8") };
  } catch {
    return { error: `import not found: ${path}` };
  }
}

function sha256(text) {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

// JSON with object keys sorted at every level and no whitespace: the canonical form hashed
// for `abiSha256` (settlement/chain/artifacts.py computes the same).
function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

function writeJson(path, value) {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}

function main() {
  const { out } = parseArgs(process.argv.slice(2));
  const version = solc.version();
  if (!version.startsWith(`${SOLC_VERSION}+`)) {
    throw new Error(`solc ${SOLC_VERSION} expected, found ${version}; run npm ci in contracts/`);
  }

  const sources = {};
  for (const path of listSolidity(SRC_DIR)) {
    sources[unitName(path)] = { content: readFileSync(path, "utf8") };
  }
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));

  const errors = (output.errors || []).filter((e) => e.severity === "error");
  // Our own diagnostics, and errors anywhere; library warnings (e.g. OpenZeppelin's note on
  // transient storage, used here only by the reentrancy guard) are not ours to fix.
  for (const e of output.errors || []) {
    const file = e.sourceLocation ? e.sourceLocation.file : "";
    if (e.severity === "error" || !file.startsWith("@")) process.stderr.write(`${e.formattedMessage}\n`);
  }
  if (errors.length > 0) throw new Error(`compilation failed with ${errors.length} error(s)`);

  // Every source unit the compiler read, ours and OpenZeppelin's, with its content hash.
  const allSources = {};
  for (const name of Object.keys(output.sources).sort()) {
    const content = sources[name] ? sources[name].content : findImport(name).contents;
    allSources[name] = sha256(content);
  }
  const sourcesSha256 = sha256(canonicalJson(allSources));

  mkdirSync(out, { recursive: true });
  const written = new Set(["manifest.json"]);
  const contracts = {};
  for (const sourceName of Object.keys(output.contracts).sort()) {
    if (!sourceName.startsWith("src/")) continue; // library code is compiled into ours
    for (const name of Object.keys(output.contracts[sourceName]).sort()) {
      const c = output.contracts[sourceName][name];
      if (!c.evm.bytecode.object) continue; // interfaces and abstract contracts
      if (contracts[name]) throw new Error(`duplicate contract name ${name}`);
      const testOnly = TEST_ONLY_PREFIXES.some((p) => sourceName.startsWith(p));
      const abiSha256 = sha256(canonicalJson(c.abi));
      const artifact = {
        contractName: name,
        sourceName,
        testOnly,
        abiSha256,
        abi: c.abi,
        bytecode: `0x${c.evm.bytecode.object}`,
        deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
      };
      writeJson(join(out, `${name}.json`), artifact);
      written.add(`${name}.json`);
      contracts[name] = {
        sourceName,
        testOnly,
        abiSha256,
        deployedSize: c.evm.deployedBytecode.object.length / 2,
      };
    }
  }

  writeJson(join(out, "manifest.json"), {
    compiler: { name: "solc-js", version },
    settings: { evmVersion: SETTINGS.evmVersion, optimizer: SETTINGS.optimizer, metadata: SETTINGS.metadata },
    sourcesSha256,
    sources: allSources,
    contracts,
  });

  // Artifacts of contracts that no longer exist must not linger in the output folder.
  for (const name of readdirSync(out)) {
    if (name.endsWith(".json") && !written.has(name)) rmSync(join(out, name));
  }
  process.stdout.write(`compiled ${Object.keys(contracts).length} contracts into ${out}\n`);
}

main();
