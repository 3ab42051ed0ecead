//! Every response scopegate writes itself, and the one exhaustive mapping to status, headers
//! and body (problem+json by default, or the preset's native shape).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::body::BodyFault;
use crate::credentials::{AuthError, TokenError};
use crate::path::PathError;
use crate::routes::{ErrorStyle, Gate};
use crate::telemetry::names::decision;
use crate::upstream::{Unforwardable, UpstreamError};

/// Why a request was not forwarded, or why forwarding failed.
#[derive(Debug, Clone)]
pub enum Refusal {
    BadTarget(PathError),
    /// Host and request target disagree, or similar ambiguity in the request.
    Ambiguous(&'static str),
    /// Framing scopegate will not relay (a second Transfer-Encoding, an upgrade, no Host, a
    /// broken chunked body): 400 and the connection is closed.
    Malformed(&'static str),
    /// The request body stopped arriving: 408 and the connection is closed.
    BodyTimeout,
    /// A browser preflight from an origin, for a method or with headers `[cors]` does not allow.
    CorsRejected(&'static str),
    NoRoute,
    MethodNotAllowed {
        allow: HeaderValue,
    },
    MissingCredentials,
    AmbiguousCredentials,
    InvalidToken(TokenError),
    InsufficientScope {
        needed: Arc<str>,
    },
    /// The token holds the scope, but it does not count for this client, app or store.
    Gated {
        needed: Arc<str>,
        gate: Gate,
    },
    /// The request names a store the token is not for. Says nothing about either store.
    WrongTenant,
    BodyTooLarge,
    /// A form-encoded body too large to read whole, so it cannot be checked for an
    /// `access_token`: 413 and the connection is closed.
    FormTooLarge,
    /// An HTTP/2 request body longer than the read-ahead bound without `content-length`: once
    /// it streams, its end cannot be told from a stream reset. 411 and the connection (HTTP/1.1)
    /// closed.
    LengthRequired,
    /// Credentials could not be checked (no keys yet, introspection down); never an allow.
    CredentialsUnavailable(&'static str),
    UpstreamUnreachable,
    UpstreamFailed,
    UpstreamTimeout,
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Refusal {
        match e {
            AuthError::Missing => Refusal::MissingCredentials,
            AuthError::Ambiguous => Refusal::AmbiguousCredentials,
            AuthError::Invalid(t) => Refusal::InvalidToken(t),
            AuthError::Unavailable(why) => Refusal::CredentialsUnavailable(why),
        }
    }
}

impl From<BodyFault> for Refusal {
    /// A request body that could not be passed on.
    fn from(fault: BodyFault) -> Refusal {
        match fault {
            BodyFault::Idle => Refusal::BodyTimeout,
            BodyFault::TooLarge => Refusal::BodyTooLarge,
            BodyFault::Broken => Refusal::Malformed("bad_request_body"),
        }
    }
}

impl From<UpstreamError> for Refusal {
    fn from(e: UpstreamError) -> Refusal {
        match e {
            UpstreamError::Unreachable => Refusal::UpstreamUnreachable,
            UpstreamError::Failed => Refusal::UpstreamFailed,
            UpstreamError::Timeout => Refusal::UpstreamTimeout,
            UpstreamError::RequestBody(fault) => Refusal::from(fault),
        }
    }
}

impl From<Unforwardable> for Refusal {
    fn from(_: Unforwardable) -> Refusal {
        Refusal::Ambiguous("unforwardable_target")
    }
}

impl Refusal {
    /// A refusal about the credentials or what they grant (as opposed to a malformed request,
    /// an unknown route or an upstream failure): the kind shadow mode lets through.
    pub fn is_authorization(&self) -> bool {
        match self {
            Refusal::MissingCredentials
            | Refusal::InvalidToken(_)
            | Refusal::InsufficientScope { .. }
            | Refusal::Gated { .. }
            | Refusal::WrongTenant
            | Refusal::CredentialsUnavailable(_) => true,
            Refusal::BadTarget(_)
            | Refusal::Ambiguous(_)
            | Refusal::Malformed(_)
            | Refusal::BodyTimeout
            | Refusal::CorsRejected(_)
            | Refusal::NoRoute
            | Refusal::MethodNotAllowed { .. }
            | Refusal::AmbiguousCredentials
            | Refusal::BodyTooLarge
            | Refusal::FormTooLarge
            | Refusal::LengthRequired
            | Refusal::UpstreamUnreachable
            | Refusal::UpstreamFailed
            | Refusal::UpstreamTimeout => false,
        }
    }

    /// After this answer the connection is closed: what follows on it cannot be trusted to
    /// start where scopegate thinks it does.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Refusal::Malformed(_)
                | Refusal::BodyTimeout
                | Refusal::BodyTooLarge
                | Refusal::FormTooLarge
                | Refusal::LengthRequired
        )
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadTarget(_)
            | Refusal::Ambiguous(_)
            | Refusal::Malformed(_)
            | Refusal::AmbiguousCredentials => StatusCode::BAD_REQUEST,
            Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::CorsRejected(_) => StatusCode::FORBIDDEN,
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::MissingCredentials | Refusal::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Refusal::InsufficientScope { .. } | Refusal::Gated { .. } | Refusal::WrongTenant => {
                StatusCode::FORBIDDEN
            }
            Refusal::BodyTooLarge | Refusal::FormTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::LengthRequired => StatusCode::LENGTH_REQUIRED,
            Refusal::CredentialsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::UpstreamUnreachable | Refusal::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `decision` label.
    pub fn decision(&self) -> &'static str {
        match self {
            Refusal::BadTarget(_)
            | Refusal::Ambiguous(_)
            | Refusal::Malformed(_)
            | Refusal::BodyTimeout
            | Refusal::LengthRequired
            | Refusal::AmbiguousCredentials => decision::BAD_REQUEST,
            Refusal::CorsRejected(_) => decision::CORS_REJECTED,
            Refusal::NoRoute => decision::NO_ROUTE,
            Refusal::MethodNotAllowed { .. } => decision::METHOD_NOT_ALLOWED,
            Refusal::MissingCredentials => decision::UNAUTHENTICATED,
            Refusal::InvalidToken(_) => decision::INVALID_TOKEN,
            Refusal::InsufficientScope { .. } | Refusal::Gated { .. } | Refusal::WrongTenant => {
                decision::FORBIDDEN
            }
            Refusal::BodyTooLarge | Refusal::FormTooLarge => decision::BODY_TOO_LARGE,
            Refusal::CredentialsUnavailable(_) => decision::CREDENTIALS_UNAVAILABLE,
            Refusal::UpstreamUnreachable | Refusal::UpstreamFailed | Refusal::UpstreamTimeout => {
                decision::UPSTREAM_ERROR
            }
        }
    }

    /// Fixed machine-readable reason for logs and the `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadTarget(e) => e.reason(),
            Refusal::Ambiguous(r) | Refusal::Malformed(r) | Refusal::CorsRejected(r) => r,
            Refusal::BodyTimeout => "request_body_timeout",
            Refusal::NoRoute => "no_route",
            Refusal::MethodNotAllowed { .. } => "method_not_allowed",
            Refusal::MissingCredentials => "no_credentials",
            Refusal::AmbiguousCredentials => "multiple_authorization_headers",
            Refusal::InvalidToken(e) => e.reason(),
            Refusal::InsufficientScope { .. } => "insufficient_scope",
            Refusal::WrongTenant => "tenant_mismatch",
            Refusal::Gated { gate, .. } => match gate {
                Gate::NotApproved => "scope_not_approved",
                Gate::PrivateApp => "scope_not_for_private_apps",
                Gate::NoQualification => "no_qualification",
            },
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::FormTooLarge => "form_body_too_large",
            Refusal::LengthRequired => "length_required",
            Refusal::CredentialsUnavailable(why) => why,
            Refusal::UpstreamUnreachable => "upstream_unreachable",
            Refusal::UpstreamFailed => "upstream_failed",
            Refusal::UpstreamTimeout => "upstream_timeout",
        }
    }

    fn detail(&self) -> String {
        match self {
            Refusal::BadTarget(e) => e.to_string(),
            Refusal::Ambiguous(r) => format!("ambiguous request: {r}"),
            Refusal::Malformed(r) => format!("malformed request: {r}"),
            Refusal::BodyTimeout => "request body did not arrive in time".into(),
            Refusal::CorsRejected(r) => format!("cross-origin request not allowed: {r}"),
            Refusal::NoRoute => "no route for this path".into(),
            Refusal::MethodNotAllowed { .. } => "method not allowed on this route".into(),
            Refusal::MissingCredentials => "bearer token required".into(),
            Refusal::AmbiguousCredentials => "more than one Authorization header".into(),
            Refusal::InvalidToken(e) => e.to_string(),
            Refusal::InsufficientScope { needed } => {
                format!("token lacks what this endpoint requires: {needed}")
            }
            Refusal::WrongTenant => "token does not grant access to this store".into(),
            Refusal::Gated { needed, gate } => match gate {
                Gate::NotApproved => format!(
                    "this client is not approved for the scope this endpoint requires: {needed}"
                ),
                Gate::PrivateApp => format!(
                    "the scope this endpoint requires is not available to private apps: {needed}"
                ),
                Gate::NoQualification => "the app has no qualification".into(),
            },
            Refusal::BodyTooLarge => "request body too large".into(),
            Refusal::FormTooLarge => {
                "form-encoded request body too large to be checked for an access token".into()
            }
            Refusal::LengthRequired => {
                "an HTTP/2 request body this large must declare its content-length".into()
            }
            Refusal::CredentialsUnavailable(_) => "credentials cannot be checked right now".into(),
            Refusal::UpstreamUnreachable => "upstream unreachable".into(),
            Refusal::UpstreamFailed => "upstream failed".into(),
            Refusal::UpstreamTimeout => "upstream did not answer in time".into(),
        }
    }

    /// The response body, written straight out (a refusal is answered as often as a request is
    /// forwarded). Problem members in the order `serde_json` gives an object's keys (sorted),
    /// strings escaped by `serde_json`.
    fn body(&self, style: ErrorStyle, status: StatusCode) -> Vec<u8> {
        let mut out = Vec::with_capacity(192);
        let string = |out: &mut Vec<u8>, s: &str| {
            serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
        };
        let detail = self.detail();
        match style {
            ErrorStyle::Problem => {
                out.extend_from_slice(b"{\"detail\":");
                string(&mut out, &detail);
                if let Refusal::InsufficientScope { needed } | Refusal::Gated { needed, .. } = self
                {
                    out.extend_from_slice(b",\"scope\":");
                    string(&mut out, needed);
                }
                out.extend_from_slice(b",\"status\":");
                out.extend_from_slice(status.as_str().as_bytes());
                out.extend_from_slice(b",\"title\":");
                string(&mut out, status.canonical_reason().unwrap_or("Error"));
                out.extend_from_slice(b",\"type\":");
                let reason = self.reason();
                if reason
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    out.extend_from_slice(b"\"urn:scopegate:problem:");
                    out.extend_from_slice(reason.as_bytes());
                    out.push(b'"');
                } else {
                    string(&mut out, &format!("urn:scopegate:problem:{reason}"));
                }
                out.push(b'}');
            }
            ErrorStyle::Shopify => {
                out.extend_from_slice(b"{\"errors\":");
                string(&mut out, &format!("[API] {detail}"));
                out.push(b'}');
            }
        }
        out
    }

    /// The response, in `style`, with `WWW-Authenticate` for 401/403.
    pub fn into_response(self, style: ErrorStyle, realm: &str) -> Response<Full<Bytes>> {
        let status = self.status();
        let body = self.body(style, status);
        let content_type = match style {
            ErrorStyle::Problem => "application/problem+json",
            ErrorStyle::Shopify => "application/json; charset=utf-8",
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let challenge = match &self {
            Refusal::MissingCredentials => Some(format!("Bearer realm=\"{realm}\"")),
            Refusal::InvalidToken(e) => Some(format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{e}\""
            )),
            Refusal::InsufficientScope { needed } | Refusal::Gated { needed, .. } => Some(format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{needed}\""
            )),
            Refusal::WrongTenant => Some(format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\""
            )),
            _ => None,
        };
        if let Some(c) = challenge.and_then(|c| HeaderValue::from_maybe_shared(Bytes::from(c)).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, c);
        }
        if let Refusal::MethodNotAllowed { allow } = self {
            headers.insert(header::ALLOW, allow);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body as it was built before it was written by hand: a `serde_json` value.
    fn as_value(r: &Refusal, style: ErrorStyle) -> String {
        let status = r.status();
        let detail = r.detail();
        match style {
            ErrorStyle::Problem => {
                let mut problem = serde_json::json!({
                    "type": format!("urn:scopegate:problem:{}", r.reason()),
                    "title": status.canonical_reason().unwrap_or("Error"),
                    "status": status.as_u16(),
                    "detail": detail,
                });
                if let Refusal::InsufficientScope { needed } | Refusal::Gated { needed, .. } = r {
                    problem["scope"] = serde_json::Value::from(&**needed);
                }
                problem.to_string()
            }
            ErrorStyle::Shopify => {
                serde_json::json!({ "errors": format!("[API] {detail}") }).to_string()
            }
        }
    }

    #[test]
    fn bodies_are_byte_identical_to_the_serde_json_value() {
        let needed: Arc<str> = "read_orders \"quoted\" \\ \u{e9}\u{1}".into();
        let refusals = [
            Refusal::BadTarget(PathError::DotSegment),
            Refusal::Ambiguous("host_mismatch"),
            Refusal::Malformed("bad_request_body"),
            Refusal::BodyTimeout,
            Refusal::CorsRejected("origin_not_allowed"),
            Refusal::NoRoute,
            Refusal::MethodNotAllowed {
                allow: HeaderValue::from_static("GET, HEAD"),
            },
            Refusal::MissingCredentials,
            Refusal::AmbiguousCredentials,
            Refusal::InvalidToken(TokenError::Expired),
            Refusal::InsufficientScope {
                needed: needed.clone(),
            },
            Refusal::Gated {
                needed: needed.clone(),
                gate: Gate::PrivateApp,
            },
            Refusal::Gated {
                needed,
                gate: Gate::NotApproved,
            },
            Refusal::WrongTenant,
            Refusal::BodyTooLarge,
            Refusal::FormTooLarge,
            Refusal::LengthRequired,
            Refusal::CredentialsUnavailable("keys_not_loaded"),
            // A reason that would need escaping takes the escaped path.
            Refusal::CredentialsUnavailable("odd \"reason\""),
            Refusal::UpstreamUnreachable,
            Refusal::UpstreamFailed,
            Refusal::UpstreamTimeout,
        ];
        for r in &refusals {
            for style in [ErrorStyle::Problem, ErrorStyle::Shopify] {
                let written = String::from_utf8(r.body(style, r.status())).unwrap();
                assert_eq!(written, as_value(r, style), "{r:?} {style:?}");
            }
        }
    }
}
