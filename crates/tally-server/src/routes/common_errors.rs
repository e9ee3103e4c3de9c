//! Error answers that every operation can give, added to the OpenAPI
//! document in one place rather than in each handler's annotation.
//!
//! They come from layers and extractors shared by all handlers, not from the
//! handlers' own logic, so listing them per handler would be repeated and
//! would drift: a malformed path id, query or body is `400 invalid_request`
//! (the extractors in `extract.rs`), a body with the wrong `Content-Type` is
//! `415 unsupported_media_type`, and any request can time out into `503
//! unavailable` (the request timeout layer). schemathesis (tests/schemathesis)
//! checks that every answer the server gives is in the document.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

/// The WebSocket upgrade: its rejections are the live module's own.
const SKIPPED: &[&str] = &["/v1/live"];

/// Adds the shared error answers where an operation does not document them.
pub fn add(openapi: &mut OpenApi) {
    for (path, item) in openapi.paths.paths.iter_mut() {
        if SKIPPED.contains(&path.as_str()) {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            add_to(operation);
        }
    }
}

fn add_to(operation: &mut Operation) {
    let has_input = operation.parameters.as_ref().is_some_and(|p| !p.is_empty())
        || operation.request_body.is_some();
    if has_input {
        insert(
            operation,
            "400",
            "`invalid_request`: a malformed id, query or body",
        );
    }
    if operation.request_body.is_some() {
        insert(
            operation,
            "415",
            "`unsupported_media_type`: the body's `Content-Type` is not the one documented",
        );
    }
    insert(
        operation,
        "503",
        "`unavailable`: the request timed out or a store is unavailable",
    );
}

fn insert(operation: &mut Operation, status: &str, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        });
}
