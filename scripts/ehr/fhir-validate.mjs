// Validates every FHIR resource the integration tests received (target/fhir-samples, written
// by tests/api) with FHIR.js (the `fhir` npm package), a second validator beside
// scripts/fhir-validate.py. FHIR.js walks each resource against the R4 StructureDefinitions it
// ships (parsed from the specification's profiles): unknown elements, missing required
// elements, lists and single values, datatypes and formats, nested datatypes and the resources
// inside Bundle entries, and codes of required bindings against the specification's value sets.
//
// Errors fail the run. Warnings are counted and printed: FHIR.js warns about codes it cannot
// find in example and preferred bindings (SNOMED CT, the service's own code systems), which
// FHIR allows.
//
// Usage: node scripts/ehr/fhir-validate.mjs [--self-test] DIR
//   --self-test: also breaks each kind of sample on purpose and fails unless FHIR.js refuses
//   every broken variant, so a validator that accepts anything cannot pass.
import fs from 'node:fs';
import path from 'node:path';
import { problems } from './fhir-check.mjs';

const args = process.argv.slice(2);
const selfTest = args.includes('--self-test');
const dir = args.find((a) => !a.startsWith('--'));
if (!dir) {
  console.error('usage: node scripts/ehr/fhir-validate.mjs [--self-test] DIR');
  process.exit(2);
}

// Every kind of resource the service produces must be among the samples: an empty or partial
// folder (tests skipped, samples not written) must not pass.
const EXPECTED = ['Appointment', 'Bundle', 'CapabilityStatement', 'CarePlan', 'OperationOutcome',
  'ServiceRequest'];

const samples = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()
  .map((f) => ({ file: f, resource: JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) }));

const kinds = {};
const warningKinds = {};
let failed = 0;
for (const { file, resource } of samples) {
  kinds[resource.resourceType] = (kinds[resource.resourceType] || 0) + 1;
  const { valid, errors, warnings } = problems(resource);
  if (!valid) {
    failed += 1;
    console.log(`INVALID ${file}`);
    for (const e of errors) console.log(`  ${e.location}: ${e.message}`);
  }
  for (const w of warnings) {
    const key = `${w.location.replace(/\[\d+\]/g, '[]')}: ${w.message.replace(/"[^"]*"/, '"…"')}`;
    warningKinds[key] = (warningKinds[key] || 0) + 1;
  }
}

const missing = EXPECTED.filter((k) => !kinds[k]);
console.log(`FHIR.js: ${samples.length} samples (${Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(', ')}), ${failed} invalid`);
for (const [k, n] of Object.entries(warningKinds).sort()) console.log(`  warning x${n}: ${k}`);
if (missing.length) {
  console.log(`no sample of: ${missing.join(', ')} (run cargo test first)`);
  process.exit(1);
}
if (failed) process.exit(1);

if (selfTest) {
  const first = (type) => structuredClone(samples.find((s) => s.resource.resourceType === type).resource);
  const withEntry = () => structuredClone(
    samples.find((s) => s.resource.resourceType === 'Bundle' && (s.resource.entry || []).length).resource);
  const variants = {
    'CarePlan with an unknown element': () => ({ ...first('CarePlan'), dueDate: '2026-12-01' }),
    'CarePlan without status': () => { const r = first('CarePlan'); delete r.status; return r; },
    'CarePlan without subject': () => { const r = first('CarePlan'); delete r.subject; return r; },
    'CarePlan with a status outside its value set': () => ({ ...first('CarePlan'), status: 'paused' }),
    'CarePlan with intent outside its value set': () => ({ ...first('CarePlan'), intent: 'wish' }),
    'CarePlan with category given as one': () => { const r = first('CarePlan'); r.category = r.category[0]; return r; },
    'CarePlan with a bad created dateTime': () => ({ ...first('CarePlan'), created: '7 December 2026' }),
    'CarePlan with an extension without url': () => { const r = first('CarePlan'); delete r.extension[0].url; return r; },
    'CarePlan with an unknown value[x]': () => { const r = first('CarePlan'); r.extension.push({ url: 'https://telemental.org/x', valueWhatever: 1 }); return r; },
    'CarePlan with a period.start that is not a dateTime': () => { const r = first('CarePlan'); r.period = { start: '2026-12-01 10:00' }; return r; },
    'CarePlan with an id holding a space': () => ({ ...first('CarePlan'), id: 'plan 1' }),
    'Bundle with a timestamp that is not an instant': () => ({ ...first('Bundle'), timestamp: '2026-12-07' }),
    'CarePlan with a period that is a string': () => ({ ...first('CarePlan'), period: '2026-12-01' }),
    'ServiceRequest with priority outside its value set': () => ({ ...first('ServiceRequest'), priority: 'soon' }),
    'ServiceRequest without intent': () => { const r = first('ServiceRequest'); delete r.intent; return r; },
    'Appointment with a status outside its value set': () => ({ ...first('Appointment'), status: 'maybe' }),
    'Bundle with a type outside its value set': () => ({ ...first('Bundle'), type: 'list' }),
    'Bundle with a total that is a string': () => ({ ...first('Bundle'), total: 'two' }),
    'Bundle with a broken resource in an entry': () => { const r = withEntry(); delete r.entry[0].resource.status; return r; },
    'CapabilityStatement with kind outside its value set': () => ({ ...first('CapabilityStatement'), kind: 'wishlist' }),
    'CapabilityStatement without fhirVersion': () => { const r = first('CapabilityStatement'); delete r.fhirVersion; return r; },
    'OperationOutcome without issue': () => { const r = first('OperationOutcome'); delete r.issue; return r; },
    'OperationOutcome with an issue code outside its value set': () => { const r = first('OperationOutcome'); r.issue[0].code = 'oops'; return r; },
  };
  let accepted = 0;
  for (const [name, make] of Object.entries(variants)) {
    const { valid, errors } = problems(make());
    if (valid) {
      accepted += 1;
      console.log(`self-test: FHIR.js accepted a broken variant: ${name}`);
    } else if (process.env.FHIR_VALIDATE_VERBOSE) {
      console.log(`self-test: refused ${name}: ${errors[0].location}: ${errors[0].message}`);
    }
  }
  console.log(`FHIR.js self-test: ${Object.keys(variants).length - accepted} of ${Object.keys(variants).length} broken variants refused`);
  if (accepted) process.exit(1);
}
