#!/usr/bin/env node
// cosmos-launcher.js starts @vercel/cosmosdb-server 1.0.1 for credvault's
// tests: over plain HTTP, on --host/--port, with the package installed under
// --modules (make tools puts it in .tools/npm/node_modules).
//
//   node cosmos-launcher.js --modules <node_modules> --host 127.0.0.1 --port N
//
// The emulator differs from Azure Cosmos DB in ways that would let a test
// pass here and fail on Azure. This script patches, by wrapping the
// package's route handlers before its router captures them, the gaps it can
// close; internal/store/cosmos designs around the rest (no transactional
// batch, no ReadMany, no cross-partition ORDER BY):
//
//  1. A point read of a missing item answers 404 NotFound with Cosmos' error
//     body (the package throws on it and answers 500).
//  2. A query sent with a partition key header only sees that partition (the
//     package ignores the header and searches every partition).
//  3. A create, replace or upsert whose body holds a partition key value
//     other than the header's is refused with 400 BadRequest, substatus 1001
//     (the package accepts it).
//  4. A query without a partition key header that the Cosmos gateway cannot
//     serve on its own (ORDER BY, TOP, OFFSET, DISTINCT, GROUP BY,
//     aggregates) is refused with 400 BadRequest, substatus 1004, as the
//     gateway refuses it to the Go SDK, which has no query-plan engine.
//  5. A malformed continuation token is refused with 400 BadRequest (the
//     package silently starts over from the first page).
//  6. Error answers without a Cosmos error code get one ("NotFound",
//     "PreconditionFailed", …), as the SDK reports it in ResponseError.
//  7. The account document advertises the endpoint the client used
//     (http://<Host header>/) as its read and write region, so that a client
//     reaching the emulator through a proxy keeps going through it (the
//     package advertises https://<listen address>/, and the Go SDK routes
//     every request to the advertised region's host).
//
// Keys are still not checked, and transactional batch and ReadMany still
// fail: tests must not rely on either.
"use strict";

const path = require("path");

const PACKAGE = "@vercel/cosmosdb-server";
const VERSION = "1.0.1"; // the patches below reach into this version's internals
const PK_HEADER = "x-ms-documentdb-partitionkey";

function parseArgs(argv) {
  const args = { host: "127.0.0.1", port: 0, modules: "" };
  for (let i = 0; i < argv.length; i += 1) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case "--modules":
        args.modules = value;
        i += 1;
        break;
      case "--host":
        args.host = value;
        i += 1;
        break;
      case "--port":
        args.port = parseInt(value, 10);
        i += 1;
        break;
      default:
        fail(`unknown argument ${argv[i]}`);
    }
  }
  if (!args.modules) fail("--modules <node_modules directory> is required");
  if (!(args.port >= 0 && args.port < 65536)) fail("--port must be a TCP port");
  return args;
}

function fail(msg) {
  console.error(`cosmos-launcher: ${msg}`);
  process.exit(2);
}

const args = parseArgs(process.argv.slice(2));
const root = path.join(path.resolve(args.modules), PACKAGE);
const { version } = require(path.join(root, "package.json"));
if (version !== VERSION) {
  fail(`${PACKAGE} ${version} is installed; these patches are written for ${VERSION}`);
}
const lib = (name) => require(path.join(root, "lib", name));

// A Cosmos error answer: status, error code, message, optional substatus.
function cosmosError(res, status, code, message, substatus) {
  res.statusCode = status;
  if (substatus !== undefined) res.setHeader("x-ms-substatus", String(substatus));
  return { code, message };
}

const codes = { 400: "BadRequest", 404: "NotFound", 409: "Conflict", 412: "PreconditionFailed" };

// The partition key header as a list of values: undefined when absent or
// empty (the SDK sends no header for a cross-partition query), null when
// unparseable.
function headerPartitionKey(req) {
  let raw = req.headers[PK_HEADER];
  if (Array.isArray(raw)) [raw] = raw;
  if (!raw || raw === "[]") return undefined;
  try {
    const v = JSON.parse(raw);
    return Array.isArray(v) && v.length > 0 ? v : null;
  } catch (err) {
    return null;
  }
}

// The partition key paths of a collection, as lists of property names.
function partitionPaths(collection) {
  const def = (collection.read() || {}).partitionKey;
  return ((def && def.paths) || []).map((p) => p.slice(1).split("/"));
}

function valueAt(keys, obj) {
  return keys.reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), obj);
}

// samePartitionValue compares a document's partition key value with one
// from the header; [{}] in the header stands for "undefined".
function samePartitionValue(docValue, headerValue) {
  const isUndefinedMarker =
    headerValue && typeof headerValue === "object" && !Array.isArray(headerValue) && Object.keys(headerValue).length === 0;
  if (isUndefinedMarker) return docValue === undefined;
  return JSON.stringify(docValue) === JSON.stringify(headerValue);
}

// wrap replaces a handler module's export with fn(original, ...args), and
// gives error answers a Cosmos error code (patch 6).
function wrap(name, fn) {
  const mod = lib(path.join("handler", name));
  const original = mod.default;
  mod.default = async (account, req, res, params) => {
    const body = await fn(original, account, req, res, params);
    if (res.statusCode >= 400 && body && typeof body === "object" && !body.code && codes[res.statusCode]) {
      body.code = codes[res.statusCode];
      if (!body.message) body.message = "";
    }
    return body;
  };
}

// The package reads a request body once, in its handlers; the patches read
// it before them, so the parsed body is kept on the request (patch 3).
{
  const json = lib("json");
  const read = json.default;
  json.default = (req) => {
    if (!req.cosmosLauncherBody) req.cosmosLauncherBody = read(req);
    return req.cosmosLauncherBody;
  };
}
const readBody = (req) => lib("json").default(req);

// Patch 1: point reads of missing items.
wrap("read-document", (original, account, req, res, params) => {
  const collection = account.database(params.dbId).collection(params.collId);
  if (collection.read() && partitionPaths(collection).length > 0) {
    const pk = headerPartitionKey(req);
    if (!pk) {
      return cosmosError(res, 400, "BadRequest", "PartitionKey value must be supplied for this operation.");
    }
    const key = typeof pk[0] === "object" ? params.docId : pk[0]; // as the package indexes it
    if (!collection.document(params.docId, key).read()) {
      return cosmosError(res, 404, "NotFound", "Entity with the specified id does not exist in the system.");
    }
  }
  return original(account, req, res, params);
});

// Patch 3: writes whose body and header disagree on the partition key.
async function checkBodyPartition(account, req, res, params) {
  const collection = account.database(params.dbId).collection(params.collId);
  const paths = collection.read() ? partitionPaths(collection) : [];
  if (paths.length === 0) return undefined;
  const pk = headerPartitionKey(req);
  if (!pk) {
    return cosmosError(res, 400, "BadRequest", "PartitionKey value must be supplied for this operation.");
  }
  const body = await readBody(req);
  const mismatch = paths.some((keys, i) => !samePartitionValue(valueAt(keys, body), pk[i]));
  if (mismatch) {
    return cosmosError(
      res,
      400,
      "BadRequest",
      "PartitionKey extracted from document doesn't match the one specified in the header.",
      1001,
    );
  }
  return undefined;
}
for (const name of ["create-document", "replace-document", "upsert-document"]) {
  wrap(name, async (original, account, req, res, params) => {
    const refused = await checkBodyPartition(account, req, res, params);
    return refused || original(account, req, res, params);
  });
}

// Patches 2, 4 and 5: queries.
// A textual check, enough for the queries credvault sends.
const GATEWAY_REFUSES = [
  /\bORDER\s+BY\b/i,
  /\bGROUP\s+BY\b/i,
  /\bSELECT\s+(DISTINCT\s+)?(VALUE\s+)?TOP\b/i,
  /\bSELECT\s+DISTINCT\b/i,
  /\bOFFSET\s+[@\d]/i,
  /\b(COUNT|SUM|MIN|MAX|AVG)\s*\(/i,
];

function validContinuation(raw) {
  if (raw === undefined) return true;
  try {
    const c = JSON.parse(Array.isArray(raw) ? raw[0] : raw);
    return c !== null && typeof c === "object" && typeof c.token === "string" && c.token.startsWith("+RID:");
  } catch (err) {
    return false;
  }
}

wrap("query-documents", async (original, account, req, res, params) => {
  if (!validContinuation(req.headers["x-ms-continuation"])) {
    return cosmosError(res, 400, "BadRequest", "Invalid Continuation Token: malformed.");
  }
  const pk = headerPartitionKey(req);
  if (pk === null) {
    return cosmosError(res, 400, "BadRequest", "The partition key header is malformed.");
  }
  const collection = account.database(params.dbId).collection(params.collId);
  const paths = collection.read() ? partitionPaths(collection) : [];
  if (paths.length === 0) return original(account, req, res, params);
  if (pk === undefined) {
    const body = await readBody(req);
    if (typeof body.query === "string" && GATEWAY_REFUSES.some((re) => re.test(body.query))) {
      return cosmosError(
        res,
        400,
        "BadRequest",
        "The provided cross partition query can not be directly served by the gateway.",
        1004,
      );
    }
    return original(account, req, res, params);
  }
  // Run the package's handler against a view of the collection whose
  // documents are those of the header's partition: paging and continuation
  // tokens then work on the filtered set, as on Cosmos DB.
  const items = collection.documents;
  const view = Object.create(items);
  view._data = new Map(
    [...items._data].filter(([, doc]) => paths.every((keys, i) => samePartitionValue(valueAt(keys, doc.read()), pk[i]))),
  );
  const scoped = Object.create(collection);
  scoped.documents = view;
  const database = Object.create(account.database(params.dbId));
  database.collection = () => scoped;
  const scopedAccount = Object.create(account);
  scopedAccount.database = () => database;
  return original(scopedAccount, req, res, params);
});

// Patch 7: the account advertises the endpoint the client reached.
wrap("read-meta", (original, account, req, res, params) => {
  const meta = original(account, req, res, params);
  const endpoint = `http://${req.headers.host}/`;
  const region = (loc) => ({ ...loc, databaseAccountEndpoint: endpoint });
  return {
    ...meta,
    writableLocations: meta.writableLocations.map(region),
    readableLocations: meta.readableLocations.map(region),
  };
});

// Plain HTTP (the package's --no-ssl), keeping connections alive so that
// benchmarks measure the emulator rather than TCP handshakes.
const { createHttpServer } = lib("index");
const server = createHttpServer({ keepAlive: true });
server.listen(args.port, args.host, () => {
  const { address, port } = server.address();
  console.log(`cosmos-launcher: ${PACKAGE} ${VERSION} ready over HTTP at ${address}:${port}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0)); // the data is in memory only
}
