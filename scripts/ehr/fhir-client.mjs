// An EHR app's view of the FHIR R4 endpoints, through fhir-kit-client (a FHIR client library
// for JavaScript apps) against a running telemental: records are written through /v1 as a
// clinician's system would, then read back only through the client's own calls (capability
// statement, read, type search, next-page links, reference resolution), and every resource
// the client receives is checked with FHIR.js as fhir-validate.mjs checks the samples
// (fhir-check.mjs).
//
// Usage: TELEMENTAL_URL=http://127.0.0.1:8080 TELEMENTAL_TOKEN=<token> node scripts/ehr/fhir-client.mjs
//   The token needs the write scopes of plans, protocols and referrals (for the records it
//   makes first) and read access to the FHIR views: the service's read scopes, or SMART scopes
//   such as system/CarePlan.rs system/ServiceRequest.rs (scripts/contract.sh uses these).
//   TELEMENTAL_FHIR_ORIGIN=<origin> also checks CORS for a browser app from that origin (the
//   service must run with it in TELEMENTAL_FHIR_ALLOWED_ORIGINS).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Client, CapabilityTool } from 'fhir-kit-client';
import { problems } from './fhir-check.mjs';

const base = process.env.TELEMENTAL_URL;
const token = process.env.TELEMENTAL_TOKEN;
assert.ok(base && token, 'TELEMENTAL_URL and TELEMENTAL_TOKEN must be set');

let checked = 0;
function valid(resource) {
  const { errors } = problems(resource);
  assert.deepEqual(errors, [], `${resource.resourceType} ${resource.id ?? ''} is not valid FHIR R4`);
  checked += 1;
  return resource;
}

async function v1(method, path, body, headers = {}) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

// A service user of this run's own, so the walk can run against any database.
const patient = `ehr-${randomUUID().slice(0, 8)}`;
const subject = `Patient/${patient}`;
const plan = await v1('POST', '/v1/plans', {
  subject,
  initial_conversation: { held_on: '2026-11-20', held_by: 'Practitioner/9' },
  preferences: { default: ['video', 'telephone', 'in_person'] },
  resources: { devices: ['smartphone'], connectivity: 'reliable', digital_skills: 'basic' },
  backup_contact: { method: 'telephone', number: '+447700900123' },
  review_interval_days: 90,
});
const protocol = await v1('POST', '/v1/safety-protocols', {
  subject,
  risk_level: 'high',
  call_back_numbers: ['+447700900123'],
  crisis_response: { team: 'Crisis team', phone: '+441130000000', in_person_plan: 'Attends within 4 hours', hours: '24/7' },
  agreed_with_service_user_on: '2026-11-20',
  review_interval_days: 30,
});
const urgencies = ['routine', 'urgent', 'emergency', 'routine', 'urgent'];
const referrals = [];
for (const urgency of urgencies) {
  referrals.push(await v1('POST', '/v1/referrals', { subject, reason: 'not_accessible', urgency }));
}

const client = new Client({ baseUrl: `${base}/fhir/R4`, bearerToken: token });

// What the server says it can do, as an app checks it before calling.
const capabilities = valid(await client.capabilityStatement());
assert.equal(capabilities.fhirVersion, '4.0.1');
const tool = new CapabilityTool(capabilities);
for (const type of ['CarePlan', 'ServiceRequest']) {
  assert.deepEqual(tool.interactionsFor({ resourceType: type }).sort(),
    ['history-instance', 'read', 'search-type', 'vread']);
  assert.ok(tool.resourceSearch(type, 'subject') && tool.resourceSearch(type, 'patient'));
}
assert.ok(!tool.resourceCan('CarePlan', 'update') && !tool.resourceCan('Patient', 'read'));

// The plan as a CarePlan, then again after a change: its version follows.
let carePlan = valid(await client.read({ resourceType: 'CarePlan', id: plan.id }));
assert.equal(carePlan.meta.versionId, '1');
assert.equal(carePlan.subject.reference, subject);
assert.ok(carePlan.category.some((c) => c.coding?.some((k) => k.code === 'telemental-preference-plan')));
let http = Client.httpFor(carePlan).response;
assert.match(http.headers.get('content-type'), /^application\/fhir\+json/);
assert.equal(http.headers.get('etag'), 'W/"1"');
await v1('PUT', `/v1/plans/${plan.id}`, { ...plan, review_interval_days: 60 }, { 'If-Match': '"1"' });
carePlan = valid(await client.read({ resourceType: 'CarePlan', id: plan.id }));
assert.equal(carePlan.meta.versionId, '2');
assert.equal(Client.httpFor(carePlan).response.headers.get('etag'), 'W/"2"');
// The plan as it was (vread), and its history, newest first, each version as it was.
const first = valid(await client.vread({ resourceType: 'CarePlan', id: plan.id, version: '1' }));
assert.equal(first.meta.versionId, '1');
assert.equal(Client.httpFor(first).response.headers.get('etag'), 'W/"1"');
const history = valid(await client.history({ resourceType: 'CarePlan', id: plan.id }));
assert.equal(history.type, 'history');
assert.equal(history.total, 2);
assert.deepEqual(history.entry.map((e) => e.resource.meta.versionId), ['2', '1']);
assert.deepEqual(history.entry.map((e) => e.request.method), ['PUT', 'POST']);
assert.deepEqual(history.entry[1].resource, first);

const protocolPlan = valid(await client.read({ resourceType: 'CarePlan', id: protocol.id }));
assert.ok(protocolPlan.category.some((c) => c.coding?.some((k) => k.code === 'telemental-safety-protocol')));
assert.equal(protocolPlan.activity[0].detail.status, 'not-started');

// Both CarePlans by subject; the references in the Bundle resolve through the client.
const carePlans = valid(await client.search({ resourceType: 'CarePlan', searchParams: { subject } }));
assert.equal(carePlans.type, 'searchset');
assert.equal(carePlans.total, 2);
assert.deepEqual(carePlans.entry.map((e) => e.resource.id).sort(), [plan.id, protocol.id].sort());
const resolved = valid(await client.resolve({ reference: `CarePlan/${protocol.id}` }));
assert.equal(resolved.id, protocol.id);
const byFullUrl = valid(await client.resolve({ reference: carePlans.entry[0].fullUrl }));
assert.equal(byFullUrl.id, carePlans.entry[0].resource.id);

// The referrals, two a page, followed through the client's next-page links to the end.
const seen = [];
let pages = 0;
let page = valid(await client.search({
  resourceType: 'ServiceRequest',
  searchParams: { patient, _count: 2 },
}));
while (page) {
  pages += 1;
  assert.equal(page.total, referrals.length);
  assert.ok((page.entry ?? []).length <= 2);
  for (const entry of page.entry ?? []) seen.push(valid(entry.resource));
  const next = client.nextPage({ bundle: page });
  page = next ? valid(await next) : undefined;
}
assert.equal(pages, 3);
assert.deepEqual(seen.map((r) => r.id), referrals.map((r) => r.id), 'every referral once, oldest first');
assert.deepEqual(seen.map((r) => r.priority), ['routine', 'urgent', 'stat', 'routine', 'urgent']);
assert.ok(seen.every((r) => r.status === 'active' && r.intent === 'order'));
// The same searches by POST to _search, the parameters as a form (the client's postSearch):
// the same entries, and next links a GET follows.
const posted = valid(await client.search({ resourceType: 'CarePlan', searchParams: { subject }, options: { postSearch: true } }));
assert.deepEqual(posted.entry.map((e) => e.resource.id), carePlans.entry.map((e) => e.resource.id));
let postedPage = valid(await client.search({
  resourceType: 'ServiceRequest', searchParams: { patient, _count: 2 }, options: { postSearch: true },
}));
const postedSeen = [];
while (postedPage) {
  for (const entry of postedPage.entry ?? []) postedSeen.push(entry.resource.id);
  const next = client.nextPage({ bundle: postedPage });
  postedPage = next ? valid(await next) : undefined;
}
assert.deepEqual(postedSeen, seen.map((r) => r.id));
// Narrowed searches: by category, priority (a comma is an or), status and a _lastUpdated range
// (the parameter repeated: an and), by GET and by POST.
const protocolsOnly = valid(await client.search({
  resourceType: 'CarePlan', searchParams: { subject, category: 'telemental-safety-protocol' },
}));
assert.deepEqual(protocolsOnly.entry.map((e) => e.resource.id), [protocol.id]);
const pressing = valid(await client.search({
  resourceType: 'ServiceRequest', searchParams: { patient, priority: 'urgent,stat' },
}));
assert.deepEqual(pressing.entry.map((e) => e.resource.id), seen.filter((r) => r.priority !== 'routine').map((r) => r.id));
for (const options of [{}, { postSearch: true }]) {
  const ranged = valid(await client.search({
    resourceType: 'ServiceRequest',
    searchParams: { patient, status: 'active', _lastUpdated: ['gt2000-01-01', 'lt2100-01-01'] },
    options,
  }));
  assert.equal(ranged.total, referrals.length, JSON.stringify(options));
  const none = valid(await client.search({
    resourceType: 'ServiceRequest', searchParams: { patient, status: 'completed,revoked' }, options,
  }));
  assert.equal(none.total, 0);
}
// Sorted: newest referral first (by when it was made, ties by id).
const newestFirst = valid(await client.search({
  resourceType: 'ServiceRequest', searchParams: { patient, _sort: '-authored,-_id' },
}));
const expected = [...seen].sort((a, b) => (b.authoredOn.localeCompare(a.authoredOn) || b.id.localeCompare(a.id)));
assert.deepEqual(newestFirst.entry.map((e) => e.resource.id), expected.map((r) => r.id));
const one = valid(await client.read({ resourceType: 'ServiceRequest', id: referrals[2].id }));
const referralHistory = valid(await client.history({ resourceType: 'ServiceRequest', id: referrals[2].id }));
assert.equal(referralHistory.total, 1);
assert.deepEqual(referralHistory.entry[0].resource, one);
assert.equal(one.priority, 'stat');

// Errors reach the app as OperationOutcomes with the HTTP status.
async function failure(call) {
  try {
    await call();
  } catch (error) {
    const data = typeof error.response?.data === 'string' ? JSON.parse(error.response.data) : error.response?.data;
    return { status: error.response?.status, outcome: valid(data) };
  }
  assert.fail('the call succeeded');
}
let { status, outcome } = await failure(() => client.read({ resourceType: 'CarePlan', id: randomUUID() }));
assert.equal(status, 404);
assert.equal(outcome.issue[0].code, 'not-found');
({ status, outcome } = await failure(() => new Client({ baseUrl: `${base}/fhir/R4` })
  .read({ resourceType: 'CarePlan', id: plan.id })));
assert.equal(status, 401);
assert.equal(outcome.issue[0].code, 'login');
({ status, outcome } = await failure(() => client.search({ resourceType: 'CarePlan', searchParams: {} })));
assert.equal(status, 400);
assert.equal(outcome.issue[0].code, 'invalid');

// A SMART app in the EHR's browser (when the service runs with this origin in
// TELEMENTAL_FHIR_ALLOWED_ORIGINS): the browser's preflight, then a read through the client.
const origin = process.env.TELEMENTAL_FHIR_ORIGIN;
if (origin) {
  const preflight = await fetch(`${base}/fhir/R4/CarePlan/${plan.id}`, {
    method: 'OPTIONS',
    headers: { Origin: origin, 'Access-Control-Request-Method': 'GET',
      'Access-Control-Request-Headers': 'authorization' },
  });
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get('access-control-allow-origin'), origin);
  const browser = new Client({ baseUrl: `${base}/fhir/R4`, bearerToken: token, customHeaders: { Origin: origin } });
  const seenByPage = valid(await browser.read({ resourceType: 'CarePlan', id: plan.id }));
  const headers = Client.httpFor(seenByPage).response.headers;
  assert.equal(headers.get('access-control-allow-origin'), origin);
  assert.match(headers.get('access-control-expose-headers'), /ETag/);
}

console.log(`fhir-kit-client: capability statement, reads, versions (vread, history), GET and POST searches, ${pages} pages of referrals${origin ? ', CORS for a browser app' : ''}; ${checked} resources received, each valid for FHIR.js`);
