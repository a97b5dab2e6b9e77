#!/usr/bin/env node
// sigstack.js — a loopback Sigstore stack for perry-sandbox's tests.
//
// Serves @sigstore/mock's Fulcio CA (+ CT log), Rekor v1, Rekor v2 and RFC 3161 TSA over plain HTTP on
// 127.0.0.1 (ephemeral ports), writes the matching trusted_root.json, and answers signing requests on a
// control port so tests written in Rust can sign images with the real sigstore-js signer
// (@sigstore/sign) and attach with the real @sigstore/oci.
//
// usage: node sigstack.js OUTDIR [--cleanup]   (--cleanup: remove OUTDIR on exit)
//   writes OUTDIR/trusted_root.json and OUTDIR/stack.json ({control, fulcio, rekor, rekorV2, tsa}),
//   prints one line `READY <control-url>` on stdout, and runs until SIGTERM or until stdin closes
//   (so a crashed test never leaves it behind).
//
// control API (POST, JSON in, JSON out; errors are {error} with status 500):
//   /sign-image  {image: "127.0.0.1:PORT/repo", attach_digest, subject_digest?, identity?, issuer?,
//                 tamper?: bool, attach?: bool}
//       Signs a DSSE in-toto statement whose subject is `subject_digest` (default `attach_digest`),
//       logged in Rekor v1 (dsse 0.0.1) with a TSA timestamp, self-verifies it with @sigstore/verify
//       (unless tamper), optionally tampers with the signed payload, and attaches it to
//       image@attach_digest with @sigstore/oci (OCI referrer; on a registry without the referrers API
//       this is the `sha256-<hex>` tag index). -> {bundle, descriptor}
//   /sign-blob   {payload_b64, identity?, issuer?, rekor_v2?: bool, tsa?: bool}
//       Signs raw bytes (a cosign simple-signing payload, say) with a Fulcio certificate, logged as a
//       hashedrekord entry. -> {bundle, signature_b64, certificate_pem, chain_pem, rekor_bundle}
//       where rekor_bundle is the legacy cosign `dev.sigstore.cosign/bundle` annotation value
//       {SignedEntryTimestamp, Payload: {body, integratedTime, logIndex, logID}} (Rekor v1 only).
//
// Mock fidelity fixes (each otherwise breaks sigstore-rs / sigstore-python verification):
// 1. mock Rekor stores the *proposed* entry verbatim: re-canonicalise PEM to 64-column lines (real Rekor
//    does), and turn dsse `proposedContent` into the canonical dsse 0.0.1 body.
// 2. mock inclusion proof is treeSize=1/logIndex=0/hashes=[] (proto3 JSON drops the defaults): rebuilt as a
//    genuine 2-leaf RFC 6962 proof with a re-signed checkpoint.
// 3. mock Rekor v2: the body must be the hashedrekord 0.0.2 Entry, and the proof's logIndex was random
//    with treeSize 1.
// 4. mock TSA encodes genTime with milliseconds (the Rust `der` crate rejects it): whole seconds.
'use strict';
const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const mock = require('@sigstore/mock');
const sign = require('@sigstore/sign');
const { bundleToJSON, bundleFromJSON } = require('@sigstore/bundle');
const { toTrustMaterial, toSignedEntity, Verifier } = require('@sigstore/verify');
const { TrustedRoot } = require('@sigstore/protobuf-specs');
const { attachArtifactToImage } = require('@sigstore/oci');

const DEFAULT_IDENTITY = 'https://github.com/perry-sandbox/demo/.github/workflows/release.yml@refs/heads/main';
const DEFAULT_ISSUER = 'https://token.actions.githubusercontent.com';
const BUNDLE_MEDIA_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';

const b64 = (buf) => Buffer.from(buf).toString('base64');
const der = (v) => Buffer.from(v.buffer ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : v);
const spki = (k) => k.publicKey.export({ format: 'der', type: 'spki' });
const genKey = () => crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const pem = (type, derBytes) => `-----BEGIN ${type}-----\n${b64(derBytes).match(/.{1,64}/g).join('\n')}\n-----END ${type}-----\n`;

// Serve a mutable list of @sigstore/mock handlers ({path, fn(body)->{statusCode,response,contentType}}).
function serve(handlers) {
  return new Promise((resolve) => {
    const srv = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', async () => {
        const h = srv.handlers.find((x) => x.path === req.url && req.method === 'POST');
        if (!h) { res.writeHead(404); return res.end('not found'); }
        try {
          const r = await h.fn(Buffer.concat(chunks).toString());
          if (r.statusCode >= 400) console.error(`mock ${req.url}: HTTP ${r.statusCode}: ${r.response}`);
          res.writeHead(r.statusCode, { 'Content-Type': r.contentType || 'text/plain' });
          res.end(typeof r.response === 'string' ? r.response : Buffer.from(r.response.buffer, r.response.byteOffset, r.response.byteLength));
        } catch (e) {
          res.writeHead(500); res.end(String(e && e.stack || e));
        }
      });
    });
    srv.handlers = handlers;
    // The signer's keep-alive agent drops idle sockets after 4 s; Node's server closes them after 5 s.
    // On a loaded host those timers fire late and the client can reuse a socket the server is closing
    // (ECONNRESET -> "error creating tlog entry"). The server keeps idle sockets longer than any client.
    srv.keepAliveTimeout = 120000;
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

// Fix 2: a genuine 2-leaf RFC 6962 proof (entry at index 1, random sibling at 0) + re-signed checkpoint.
function twoLeafProof(body, host, privateKey, logID, tsSec) {
  const sib = crypto.randomBytes(32);
  const leaf = crypto.createHash('sha256').update(Buffer.from([0])).update(body).digest();
  const root = crypto.createHash('sha256').update(Buffer.from([1])).update(sib).update(leaf).digest();
  const note = [`${host} - ${crypto.randomInt(2 ** 47)}`, '2', root.toString('base64'), `Timestamp: ${tsSec * 1e9}`, ''].join('\n');
  const sig = crypto.sign('sha256', Buffer.from(note), privateKey);
  const checkpoint = [note, `\u2014 ${host} ${Buffer.concat([logID.subarray(0, 4), sig]).toString('base64')}`, ''].join('\n');
  return { logIndex: 1, treeSize: 2, root, sib, checkpoint };
}

// Fix 1: real Rekor v1 re-encodes keys/certs as Go pem.EncodeToMemory does (64-column lines).
function canonPEMb64(b64pem) {
  const text = Buffer.from(b64pem, 'base64').toString();
  const m = text.match(/-----BEGIN ([A-Z ]+)-----([\s\S]*?)-----END \1-----/);
  const body = m[2].replace(/\s+/g, '');
  return Buffer.from(`-----BEGIN ${m[1]}-----\n${body.match(/.{1,64}/g).join('\n')}\n-----END ${m[1]}-----\n`).toString('base64');
}

function fakeJWT(claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  return `${enc({ alg: 'none', typ: 'JWT' })}.${enc({ aud: 'sigstore', iat: now, exp: now + 600, ...claims })}.`;
}

async function startStack(outDir) {
  fs.mkdirSync(outDir, { recursive: true });
  const caKey = genKey(), ctKey = genKey(), tlogKey = genKey(), tlog2Key = genKey(), tsaKey = genKey();
  const fulcioSrv = await serve([]), rekorSrv = await serve([]), rekor2Srv = await serve([]), tsaSrv = await serve([]);
  const url = (s) => `http://127.0.0.1:${s.address().port}`;
  const FULCIO = url(fulcioSrv), REKOR = url(rekorSrv), REKOR2 = url(rekor2Srv), TSA = url(tsaSrv);

  const ctlog = await mock.initializeCTLog(ctKey);
  const ca = await mock.initializeCA(caKey, ctlog);
  const tlog = await mock.initializeTLog(REKOR, tlogKey);
  const tlog2 = await mock.initializeTLog(REKOR2, tlog2Key);
  const tsa = await mock.initializeTSA(tsaKey);
  // Fix 4: whole-second genTime.
  tsa.getCurrentTime = () => new Date(Math.floor(Date.now() / 1000) * 1000);

  // Fixes 1 + 2 (Rekor v1).
  const origLog = tlog.log.bind(tlog);
  tlog.log = async (pe) => {
    if (pe && pe.kind === 'dsse' && pe.spec && pe.spec.proposedContent) {
      const envStr = pe.spec.proposedContent.envelope;
      const env = JSON.parse(envStr);
      pe = { apiVersion: '0.0.1', kind: 'dsse', spec: {
        envelopeHash: { algorithm: 'sha256', value: crypto.createHash('sha256').update(envStr).digest('hex') },
        payloadHash: { algorithm: 'sha256', value: crypto.createHash('sha256').update(Buffer.from(env.payload, 'base64')).digest('hex') },
        signatures: env.signatures.map((sg, i) => ({ signature: sg.sig, verifier: canonPEMb64(pe.spec.proposedContent.verifiers[i]) })),
      } };
    } else if (pe && pe.kind === 'hashedrekord' && pe.spec?.signature?.publicKey?.content) {
      pe.spec.signature.publicKey.content = canonPEMb64(pe.spec.signature.publicKey.content);
    }
    const out = await origLog(pe);
    const [uuid] = Object.keys(out); const e = out[uuid];
    const logID = crypto.createHash('sha256').update(spki(tlogKey)).digest();
    const p = twoLeafProof(Buffer.from(e.body, 'base64'), new URL(REKOR).host, tlogKey.privateKey, logID, e.integratedTime);
    e.verification.inclusionProof = { logIndex: p.logIndex, treeSize: p.treeSize, rootHash: p.root.toString('hex'), hashes: [p.sib.toString('hex')], checkpoint: p.checkpoint };
    return out;
  };
  // Fix 3 (Rekor v2).
  const origLogV2 = tlog2.logV2.bind(tlog2);
  tlog2.logV2 = async (req) => {
    const spec = req.spec;
    if (!spec || spec.$case !== 'hashedRekordRequestV002') throw new Error('sigstack only maps hashedrekord v0.0.2');
    const r = spec.hashedRekordRequestV002;
    const v = r.signature.verifier;
    const verifier = { keyDetails: 'PKIX_ECDSA_P256_SHA_256' };
    if (v.verifier.$case === 'x509Certificate') verifier.x509Certificate = { rawBytes: b64(v.verifier.x509Certificate.rawBytes) };
    else verifier.publicKey = { rawBytes: b64(v.verifier.publicKey.rawBytes) };
    const entry = { apiVersion: '0.0.2', kind: 'hashedrekord', spec: { hashedRekordV002: {
      data: { algorithm: 'SHA2_256', digest: b64(r.digest) },
      signature: { content: b64(r.signature.content), verifier },
    } } };
    const e = await origLogV2(entry);
    e.kindVersion = { kind: 'hashedrekord', version: '0.0.2' };
    const logID = crypto.createHash('sha256').update(spki(tlog2Key)).digest();
    const p = twoLeafProof(Buffer.from(e.canonicalizedBody), new URL(REKOR2).host, tlog2Key.privateKey, logID, Number(e.integratedTime));
    e.logIndex = '1';
    e.integratedTime = '0';
    e.inclusionProof = { logIndex: '1', treeSize: '2', rootHash: p.root, hashes: [p.sib], checkpoint: { envelope: p.checkpoint } };
    return e;
  };
  fulcioSrv.handlers = [mock.fulcioHandler(ca, { strict: true })];
  rekorSrv.handlers = [mock.rekorHandler(tlog, { strict: true })];
  rekor2Srv.handlers = [mock.rekorV2Handler(tlog2, { strict: true })];
  tsaSrv.handlers = [mock.tsaHandler(tsa, { strict: true })];

  const start = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
  const tlogEntry = (base, k) => ({
    baseUrl: base, hashAlgorithm: 'SHA2_256',
    publicKey: { rawBytes: b64(spki(k)), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start } },
    logId: { keyId: b64(crypto.createHash('sha256').update(spki(k)).digest()) },
  });
  const trustedRoot = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [tlogEntry(REKOR, tlogKey), tlogEntry(REKOR2, tlog2Key)],
    certificateAuthorities: [{
      subject: { organization: 'sigstore.mock', commonName: 'sigstore' }, uri: FULCIO,
      certChain: { certificates: [{ rawBytes: b64(der(ca.rootCertificate)) }] }, validFor: { start },
    }],
    ctlogs: [{
      baseUrl: 'https://ctfe.mock', hashAlgorithm: 'SHA2_256',
      publicKey: { rawBytes: b64(ctlog.publicKey), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start } },
      logId: { keyId: b64(der(ctlog.logID)) },
    }],
    timestampAuthorities: [{
      subject: { organization: 'sigstore.mock', commonName: 'sigstore-tsa' }, uri: TSA,
      certChain: { certificates: [{ rawBytes: b64(der(tsa.intCertificate)) }, { rawBytes: b64(der(tsa.rootCertificate)) }] },
      validFor: { start },
    }],
  };
  const tmp = path.join(outDir, 'trusted_root.json.tmp');
  fs.writeFileSync(tmp, JSON.stringify(trustedRoot, null, 2));
  fs.renameSync(tmp, path.join(outDir, 'trusted_root.json'));

  return {
    FULCIO, REKOR, REKOR2, TSA, trustedRoot, caRootPem: pem('CERTIFICATE', der(ca.rootCertificate)),
    servers: [fulcioSrv, rekorSrv, rekor2Srv, tsaSrv],
  };
}

function makeSigner(stack, identity, issuer) {
  const identityProvider = { getToken: async () => fakeJWT({ iss: issuer, sub: identity }) };
  return new sign.FulcioSigner({ fulcioBaseURL: stack.FULCIO, identityProvider, ...CLIENT_OPTS });
}

// Every client of the stack retries transport failures and 5xx the way a real signer does (cosign and
// sigstore-js's own defaults: a few retries, a bounded timeout); the witnesses built here would
// otherwise get no retry and no timeout at all.
const CLIENT_OPTS = { retry: { retries: 3, minTimeout: 200 }, timeout: 30000 };

// The mock TSA fails now and then (rarely: "error creating timestamp"; before fix 4 also "invalid time"
// in @sigstore/core). A real signer retries; keep a bounded retry of those two only.
async function withRetry(fn) {
  let last;
  for (let attempt = 1; attempt <= 4; attempt++) {
    try { return await fn(); } catch (e) {
      last = e;
      console.error(`sign attempt ${attempt} failed: ${e && e.message}`);
      if (!/invalid time|error creating timestamp/.test(String(e && e.message))) throw e;
    }
  }
  throw last;
}

function selfVerify(stack, json, data, identity, issuer) {
  const tm = toTrustMaterial(TrustedRoot.fromJSON(stack.trustedRoot));
  const v = new Verifier(tm, { tlogThreshold: 1, ctlogThreshold: 1, timestampThreshold: 0 });
  v.verify(toSignedEntity(bundleFromJSON(json), data), { subjectAlternativeName: identity, extensions: { issuer } });
}

async function signImage(stack, req) {
  const identity = req.identity || DEFAULT_IDENTITY, issuer = req.issuer || DEFAULT_ISSUER;
  if (!req.image || !req.attach_digest) throw new Error('sign-image needs image and attach_digest');
  const subject = (req.subject_digest || req.attach_digest).replace(/^sha256:/, '');
  const statement = Buffer.from(JSON.stringify({
    _type: 'https://in-toto.io/Statement/v1',
    subject: [{ name: req.image, digest: { sha256: subject } }],
    predicateType: 'https://perry-sandbox.dev/test/v1', predicate: { signedBy: 'perry-testworld' },
  }));
  const builder = new sign.DSSEBundleBuilder({
    signer: makeSigner(stack, identity, issuer),
    witnesses: [new sign.RekorWitness({ rekorBaseURL: stack.REKOR, entryType: 'dsse', ...CLIENT_OPTS }), new sign.TSAWitness({ tsaBaseURL: stack.TSA, ...CLIENT_OPTS })],
  });
  const json = await withRetry(async () => {
    const j = bundleToJSON(await builder.create({ data: statement, type: 'application/vnd.in-toto+json' }));
    selfVerify(stack, j, undefined, identity, issuer);
    return j;
  });
  if (req.tamper) {
    // Change what the statement says after signing (predicate), keeping the subject: the DSSE
    // signature and the Rekor entry no longer match the payload.
    const env = json.dsseEnvelope;
    const st = JSON.parse(Buffer.from(env.payload, 'base64').toString());
    st.predicate = { signedBy: 'mallory' };
    env.payload = b64(Buffer.from(JSON.stringify(st)));
  }
  let descriptor = null;
  if (req.attach !== false) {
    descriptor = await attachArtifactToImage({
      imageName: req.image, imageDigest: req.attach_digest,
      artifact: Buffer.from(JSON.stringify(json)), mediaType: BUNDLE_MEDIA_TYPE,
      annotations: { 'dev.sigstore.bundle.content': 'dsse-envelope', 'dev.sigstore.bundle.predicateType': 'https://perry-sandbox.dev/test/v1' },
      credentials: undefined, // anonymous loopback registry: a value would force a token sign-in
      fetchOpts: { timeout: 10000 },
    });
  }
  return { bundle: json, descriptor };
}

async function signBlob(stack, req) {
  const identity = req.identity || DEFAULT_IDENTITY, issuer = req.issuer || DEFAULT_ISSUER;
  const data = Buffer.from(req.payload_b64 || '', 'base64');
  const witnesses = [req.rekor_v2
    ? new sign.RekorWitness({ rekorBaseURL: stack.REKOR2, majorApiVersion: 2, ...CLIENT_OPTS })
    : new sign.RekorWitness({ rekorBaseURL: stack.REKOR, ...CLIENT_OPTS })];
  if (req.tsa || req.rekor_v2) witnesses.push(new sign.TSAWitness({ tsaBaseURL: stack.TSA, ...CLIENT_OPTS }));
  const builder = new sign.MessageSignatureBundleBuilder({ signer: makeSigner(stack, identity, issuer), witnesses });
  const json = await withRetry(async () => {
    const j = bundleToJSON(await builder.create({ data }));
    selfVerify(stack, j, data, identity, issuer);
    return j;
  });
  const vm = json.verificationMaterial;
  const certDer = vm.certificate ? vm.certificate.rawBytes : vm.x509CertificateChain.certificates[0].rawBytes;
  const entry = vm.tlogEntries[0];
  let rekorBundle = null;
  if (!req.rekor_v2) {
    rekorBundle = JSON.stringify({
      SignedEntryTimestamp: entry.inclusionPromise.signedEntryTimestamp,
      Payload: {
        body: entry.canonicalizedBody,
        integratedTime: Number(entry.integratedTime),
        logIndex: Number(entry.logIndex),
        logID: Buffer.from(entry.logId.keyId, 'base64').toString('hex'),
      },
    });
  }
  return {
    bundle: json,
    signature_b64: json.messageSignature.signature,
    certificate_pem: pem('CERTIFICATE', Buffer.from(certDer, 'base64')),
    chain_pem: stack.caRootPem,
    rekor_bundle: rekorBundle,
  };
}

async function main() {
  const outDir = process.argv[2];
  if (!outDir) { console.error('usage: node sigstack.js OUTDIR'); process.exit(2); }
  const stack = await startStack(outDir);
  const routes = { '/sign-image': signImage, '/sign-blob': signBlob };
  const control = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const route = routes[req.url];
      if (!route || req.method !== 'POST') { res.writeHead(404); return res.end('{"error":"no such route"}'); }
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString() || '{}');
        const out = await route(stack, body);
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(out));
      } catch (e) {
        res.writeHead(500, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: String(e && e.stack || e) }));
      }
    });
  });
  control.keepAliveTimeout = 120000; // as in serve(): idle sockets outlive every client's
  await new Promise((r) => control.listen(0, '127.0.0.1', r));
  const CONTROL = `http://127.0.0.1:${control.address().port}`;
  const info = { control: CONTROL, fulcio: stack.FULCIO, rekor: stack.REKOR, rekorV2: stack.REKOR2, tsa: stack.TSA,
    identity: DEFAULT_IDENTITY, issuer: DEFAULT_ISSUER };
  const tmp = path.join(outDir, 'stack.json.tmp');
  fs.writeFileSync(tmp, JSON.stringify(info, null, 2));
  fs.renameSync(tmp, path.join(outDir, 'stack.json'));
  const stop = () => {
    for (const s of [...stack.servers, control]) s.close();
    if (process.argv.includes('--cleanup')) fs.rmSync(outDir, { recursive: true, force: true });
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop); // parent gone
  process.stdin.on('error', stop);
  process.stdin.resume();
  console.log(`READY ${CONTROL}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
