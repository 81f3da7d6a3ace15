// FHIR.js (the `fhir` npm package) as this project uses it: one resource checked against the R4
// StructureDefinitions FHIR.js ships, with its primitive formats applied anchored. Shared by
// fhir-validate.mjs and the EHR client programs, so every resource is held to the same rules.
import fhirPkg from 'fhir';
import constantsPkg from 'fhir/constants.js';

const { Fhir } = fhirPkg;
const { Constants } = constantsPkg;
const fhir = new Fhir();

// FHIR.js tests primitive formats with regular expressions that are not anchored, so it takes
// "7 December 2026" for a dateTime (the year matches). The same expressions, anchored, are
// applied to every primitive value through its property hook; `instant` (not in FHIR.js's
// list) uses the expression the R4 specification gives for the type.
const anchored = (re) => new RegExp(`^(?:${re.source})$`);
const FORMATS = {
  date: anchored(Constants.PrimitiveDateRegex),
  dateTime: anchored(Constants.PrimitiveDateTimeRegex),
  time: anchored(Constants.PrimitiveTimeRegex),
  code: anchored(Constants.PrimitiveCodeRegex),
  id: anchored(Constants.PrimitiveIdRegex),
  oid: anchored(Constants.PrimitiveOidRegex),
  instant: /^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$/,
};
function formatMessages(_resource, property, location, value) {
  const format = FORMATS[property._type];
  if (!format) return [];
  return [value].flat()
    .filter((v) => typeof v === 'string' && !format.test(v))
    .map((v) => ({ location, severity: 'error', message: `"${v}" is not a FHIR ${property._type}` }));
}

export function problems(resource) {
  const result = fhir.validate(resource, { errorOnUnexpected: true, onBeforeValidateProperty: formatMessages });
  const errors = result.messages.filter((m) => m.severity === 'error' || m.severity === 'fatal');
  const warnings = result.messages.filter((m) => m.severity === 'warning');
  return { valid: result.valid && errors.length === 0, errors, warnings };
}
