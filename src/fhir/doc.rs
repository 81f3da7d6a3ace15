//! The FHIR operations' errors in the OpenAPI document: OperationOutcomes (not problem
//! documents), as shared responses that every FHIR operation refers to.

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};
use utoipa::PartialSchema;

const ERRORS: &[(&str, &str, &str)] = &[
    (
        "FhirBadRequest",
        "400",
        "A missing, repeated or bad search parameter",
    ),
    ("FhirUnauthorized", "401", "Missing or invalid bearer token"),
    ("FhirForbidden", "403", "The token lacks the scope"),
    ("FhirNotFound", "404", "No such resource for this tenant"),
    (
        "FhirNotAcceptable",
        "406",
        "A format other than JSON was asked for",
    ),
    (
        "FhirRequestTimeout",
        "408",
        "The form did not arrive in time (POST-based search)",
    ),
    (
        "FhirPayloadTooLarge",
        "413",
        "The form is over 64 KiB (POST-based search)",
    ),
    (
        "FhirUnsupportedMediaType",
        "415",
        "The body is not application/x-www-form-urlencoded (POST-based search)",
    ),
    (
        "FhirInternal",
        "500",
        "Unexpected error (never caused by the request)",
    ),
    (
        "FhirUnavailable",
        "503",
        "The database is unavailable; retry",
    ),
];

/// Adds the OperationOutcome schema and error responses, and refers every `/fhir/` operation
/// to them (404 only where the path names a resource).
pub fn document_errors(api: &mut OpenApi) {
    let components = api.components.get_or_insert_with(Default::default);
    components.schemas.insert(
        "OperationOutcome".into(),
        super::handlers::OperationOutcome::schema(),
    );
    for (name, _, description) in ERRORS {
        components.responses.insert(
            name.to_string(),
            RefOr::T(
                ResponseBuilder::new()
                    .description(*description)
                    .content(
                        "application/fhir+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("OperationOutcome")))
                            .build(),
                    )
                    .build(),
            ),
        );
    }
    for (path, item) in api.paths.paths.iter_mut() {
        if !path.starts_with("/fhir/") {
            continue;
        }
        if let Some(op) = item.get.as_mut() {
            add_errors(op, path.contains('{'), false);
        }
        if let Some(op) = item.post.as_mut() {
            add_errors(op, path.contains('{'), true);
        }
    }
}

/// The errors an operation can answer: 404 only where the path names a resource; 408, 413
/// and 415 only where there is a body.
fn add_errors(op: &mut Operation, names_a_resource: bool, has_body: bool) {
    for (name, code, _) in ERRORS {
        if (*code == "404" && !names_a_resource)
            || (matches!(*code, "408" | "413" | "415") && !has_body)
        {
            continue;
        }
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))));
    }
    let sorted: std::collections::BTreeMap<_, _> = std::mem::take(&mut op.responses.responses)
        .into_iter()
        .collect();
    op.responses.responses.extend(sorted);
}
