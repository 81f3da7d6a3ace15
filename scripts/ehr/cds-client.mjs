// An EHR's side of CDS Hooks, written apart from the service's own tests: its keys are made
// here with Node's crypto, published as a JWKS from this process, and its JWTs are signed with
// Node's crypto (not the Rust library the service checks them with). It starts the release
// binary against that JWKS on a fresh SQLite file, records a plan and a safety protocol
// through /v1, then calls CDS Hooks as an EHR booking appointments would: discovery, the
// appointment-book hook (ES384, ES256, RS384 and RS256 tokens), feedback, a browser's CORS preflight, and
// tokens that must be refused. Every card is checked against the CDS Hooks 2.0 rules for cards
// and every FHIR resource in a suggestion with FHIR.js.
//
// Usage: TELEMENTAL_BIN=target/release/telemental node scripts/ehr/cds-client.mjs
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { problems } from './fhir-check.mjs';

const bin = process.env.TELEMENTAL_BIN;
assert.ok(bin, 'TELEMENTAL_BIN must name the release binary');

// The EHR's keys, one per algorithm CDS Hooks names, and its JWKS, served on a port of its own.
const keys = {
  ES384: generateKeyPairSync('ec', { namedCurve: 'P-384' }),
  ES256: generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  RS384: generateKeyPairSync('rsa', { modulusLength: 2048 }),
  RS256: generateKeyPairSync('rsa', { modulusLength: 2048 }),
};
const kid = (alg) => `ehr-${alg.toLowerCase()}`;
const jwks = { keys: Object.entries(keys).map(([alg, pair]) => (
  { ...pair.publicKey.export({ format: 'jwk' }), kid: kid(alg), alg, use: 'sig' })) };
const jwksServer = http.createServer((_req, res) => {
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(jwks));
});
await new Promise((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
const jwksUrl = `http://127.0.0.1:${jwksServer.address().port}/jwks.json`;

// The service, on a free port and a fresh database.
const port = await new Promise((resolve) => {
  const probe = http.createServer().listen(0, '127.0.0.1', () => {
    const { port: p } = probe.address();
    probe.close(() => resolve(p));
  });
});
const base = `http://127.0.0.1:${port}`;
const issuer = 'https://ehr.example.org';
const origin = 'https://ehr-app.example.org';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'telemental-cds-client-'));
const env = {
  ...process.env,
  TELEMENTAL_BIND: `127.0.0.1:${port}`,
  TELEMENTAL_DATABASE_URL: `sqlite://${dir}/telemental.db`,
  TELEMENTAL_JWT_SECRET: 'cds-client-secret-cds-client-secret-0123',
  TELEMENTAL_ENCRYPTION_KEYS: 'scripts:KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=',
  TELEMENTAL_JWKS_URL: jwksUrl,
  TELEMENTAL_PUBLIC_URL: base,
  TELEMENTAL_CDS_ISSUERS: issuer,
  TELEMENTAL_CDS_ALLOWED_ORIGINS: origin,
  TELEMENTAL_LOG: 'warn',
};
const log = fs.openSync(path.join(dir, 'server.log'), 'w');
const server = spawn(bin, ['serve'], { env, stdio: ['ignore', log, log] });
const stop = () => { server.kill(); jwksServer.close(); };
process.on('exit', stop);
for (let i = 0; ; i += 1) {
  try {
    if ((await fetch(`${base}/readyz`)).ok) break;
  } catch { /* not listening yet */ }
  assert.ok(i < 100, `the service did not start: ${fs.readFileSync(path.join(dir, 'server.log'), 'utf8')}`);
  await new Promise((r) => setTimeout(r, 100));
}

// A plan (video first, a hearing barrier) and a safety protocol, written as a clinic's system
// writes them.
const tenant = 'leeds';
const v1Token = execFileSync(bin, ['token', '--tenant', tenant, '--scope', 'plans:write protocols:write'],
  { env }).toString().trim();
const patientId = `cds-${randomUUID().slice(0, 8)}`;
async function v1(pathname, body) {
  const response = await fetch(`${base}${pathname}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${v1Token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 201, `${pathname}: ${await response.text()}`);
}
await v1('/v1/plans', {
  subject: `Patient/${patientId}`,
  initial_conversation: { held_on: '2026-11-20', held_by: 'Practitioner/9' },
  preferences: { default: ['video', 'telephone', 'in_person'] },
  resources: { devices: ['smartphone', 'computer'], connectivity: 'reliable', digital_skills: 'basic' },
  barriers: [{ kind: 'hearing' }],
  backup_contact: { method: 'text', number: '+447700900123' },
});
await v1('/v1/safety-protocols', {
  subject: `Patient/${patientId}`,
  risk_level: 'low',
  call_back_numbers: ['+447700900123'],
  agreed_with_service_user_on: new Date().toISOString().slice(0, 10),
});

// JWTs as the EHR signs them: ECDSA signatures in JOSE's r||s form, RSA PKCS#1 v1.5.
const b64url = (data) => Buffer.from(data).toString('base64url');
function jwt(alg, claims = {}, header = {}) {
  const now = Math.floor(Date.now() / 1000);
  const head = { alg, typ: 'JWT', kid: kid(alg), ...header };
  const body = {
    iss: issuer, sub: 'ehr-cds-client', tenant, aud: `${base}/cds-services/telemental-modality`,
    iat: now, exp: now + 300, jti: randomUUID(), ...claims,
  };
  const input = `${b64url(JSON.stringify(head))}.${b64url(JSON.stringify(body))}`;
  const hash = `sha${alg.slice(2)}`;
  const { privateKey } = keys[alg];
  const signature = alg.startsWith('ES')
    ? sign(hash, Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' })
    : sign(hash, Buffer.from(input), privateKey);
  return `${input}.${b64url(signature)}`;
}
async function call(pathname, token, body, headers = {}) {
  const response = await fetch(`${base}${pathname}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : null };
}

// No null, "", [] or {} anywhere in what an EHR renders.
function noEmpty(value, where) {
  assert.ok(value !== null && value !== '', `${where} is null or empty`);
  if (Array.isArray(value)) {
    assert.ok(value.length > 0, `${where} is an empty list`);
    value.forEach((v, i) => noEmpty(v, `${where}[${i}]`));
  } else if (typeof value === 'object') {
    assert.ok(Object.keys(value).length > 0, `${where} is an empty object`);
    for (const [k, v] of Object.entries(value)) noEmpty(v, `${where}.${k}`);
  }
}
let resources = 0;
// The CDS Hooks 2.0 rules for a card.
function checkCard(card) {
  noEmpty(card, 'card');
  assert.ok(card.summary.length < 140, `summary of ${card.summary.length} characters`);
  assert.ok(['info', 'warning', 'critical'].includes(card.indicator));
  assert.ok(card.source.label);
  assert.match(card.uuid, /^[0-9a-f-]{36}$/);
  const rules = card.extension['org.telemental.guideline-rules'];
  assert.ok(rules.length > 0 && rules.every((r) => card.detail.includes(r)), 'rules named in detail');
  for (const suggestion of card.suggestions ?? []) {
    assert.ok(suggestion.label && suggestion.uuid);
    for (const action of suggestion.actions) {
      assert.ok(['create', 'update', 'delete'].includes(action.type));
      assert.ok(action.description);
      const { errors } = problems(action.resource);
      assert.deepEqual(errors, [], `${action.resource.resourceType} in a suggestion`);
      resources += 1;
    }
  }
  if (card.suggestions) assert.ok(['at-most-one', 'any'].includes(card.selectionBehavior));
  for (const reason of card.overrideReasons ?? []) assert.ok(reason.code && reason.system && reason.display);
}

const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationMode';
const hook = (code) => ({
  hook: 'appointment-book',
  hookInstance: randomUUID(),
  fhirServer: 'https://ehr.example.org/fhir',
  context: {
    userId: 'PractitionerRole/9',
    patientId,
    appointments: { resourceType: 'Bundle', type: 'collection', entry: [{ resource: {
      resourceType: 'Appointment', id: 'apt-1', status: 'proposed',
      serviceType: [{ coding: [{ system: PARTICIPATION, code }] }],
      start: '2026-12-10T10:00:00Z', end: '2026-12-10T10:50:00Z',
      participant: [{ actor: { reference: `Patient/${patientId}` }, status: 'needs-action' }],
    } }] },
  },
});
const HOOK = '/cds-services/telemental-modality';

// Discovery.
let r = await call('/cds-services', jwt('ES384', { aud: `${base}/cds-services` }));
assert.equal(r.status, 200, JSON.stringify(r.body));
assert.deepEqual(r.body.services.map((s) => [s.id, s.hook]), [['telemental-modality', 'appointment-book']]);
noEmpty(r.body, 'discovery');

// A telephone booking for a service user with a hearing barrier: a warning, video suggested.
let cards = [];
for (const alg of Object.keys(keys)) {
  r = await call(HOOK, jwt(alg), hook('PHONE'));
  assert.equal(r.status, 200, `${alg}: ${JSON.stringify(r.body)}`);
  cards = r.body.cards;
  cards.forEach(checkCard);
  const warning = cards.find((c) => c.indicator === 'warning');
  assert.ok(warning, `${alg}: a warning card`);
  const rebook = warning.suggestions.find((s) => s.actions[0].type === 'update');
  assert.equal(rebook.actions[0].resource.serviceType[0].coding[0].code, 'VIDEOCONF');
  assert.ok(warning.extension['org.telemental.guideline-rules'].includes('FLEX-5'));
}
// A video booking fits: no card.
r = await call(HOOK, jwt('ES384'), hook('VIDEOCONF'));
assert.equal(r.status, 200);
assert.deepEqual(r.body, { cards: [] });

// Feedback on the warning: overridden with one of its reasons.
const warning = cards.find((c) => c.indicator === 'warning');
r = await call(`${HOOK}/feedback`, jwt('ES384', { aud: `${base}${HOOK}/feedback` }), { feedback: [{
  card: warning.uuid, outcome: 'overridden', overrideReason: { reason: warning.overrideReasons[0] },
  outcomeTimestamp: new Date().toISOString(),
}] });
assert.equal(r.status, 200, JSON.stringify(r.body));

// Tokens an EHR's mistakes or an attacker would send.
const replayed = jwt('ES384');
assert.equal((await call(HOOK, replayed, hook('PHONE'))).status, 200);
const refusals = {
  'a replayed jti': replayed,
  'another audience': jwt('ES384', { aud: 'https://elsewhere.example.org' }),
  'another issuer': jwt('ES384', { iss: 'https://other-ehr.example.org' }),
  'an expired token': jwt('ES384', { exp: Math.floor(Date.now() / 1000) - 120 }),
  'no tenant': jwt('ES384', { tenant: undefined }),
  'an unknown key': jwt('ES384', {}, { kid: 'not-in-the-jwks' }),
  'the RSA key named for an ES384 signature': jwt('ES384', {}, { kid: kid('RS384') }),
  'the ES256 key named for an ES384 signature': jwt('ES384', {}, { kid: kid('ES256') }),
  'a tampered payload': (() => { const [h, , s] = jwt('ES384').split('.'); return `${h}.${b64url(JSON.stringify({ iss: issuer, tenant, aud: `${base}${HOOK}`, exp: 9999999999, jti: randomUUID() }))}.${s}`; })(),
};
for (const [what, token] of Object.entries(refusals)) {
  r = await call(HOOK, token, hook('PHONE'));
  assert.equal(r.status, 401, `${what}: ${r.status} ${JSON.stringify(r.body)}`);
  assert.match(r.headers.get('content-type'), /^application\/problem\+json/);
}
// A context without the patient: 412.
const noPatient = hook('PHONE');
delete noPatient.context.patientId;
r = await call(HOOK, jwt('ES384'), noPatient);
assert.equal(r.status, 412);

// A browser-based EHR's preflight: its origin is allowed, another is not.
const preflight = (from) => fetch(`${base}${HOOK}`, { method: 'OPTIONS', headers: {
  Origin: from, 'Access-Control-Request-Method': 'POST',
  'Access-Control-Request-Headers': 'authorization, content-type' } });
let p = await preflight(origin);
assert.equal(p.status, 204);
assert.equal(p.headers.get('access-control-allow-origin'), origin);
assert.match(p.headers.get('access-control-allow-headers').toLowerCase(), /authorization/);
p = await preflight('https://evil.example.org');
assert.equal(p.status, 403);
r = await call(HOOK, jwt('ES384'), hook('PHONE'), { Origin: origin });
assert.equal(r.status, 200);
assert.equal(r.headers.get('access-control-allow-origin'), origin);

console.log(`CDS Hooks client (Node's crypto): discovery, hook calls with ${Object.keys(keys).join(', ')} tokens, feedback, ${Object.keys(refusals).length} refused tokens, CORS; ${resources} suggested FHIR resources valid for FHIR.js`);
stop();
fs.rmSync(dir, { recursive: true, force: true });
