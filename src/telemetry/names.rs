//! Every label value scopegate writes into a metric or an access line, as a named constant, so
//! that a front end cannot spell one differently from another (sozu's `metrics/names.rs`).
//! Reasons of refusals live with the refusal that has them (`Refusal::reason`); the ones here
//! belong to no refusal.

/// `route` label for requests that matched no route.
pub const NO_ROUTE: &str = "(none)";

/// `decision`: what happened to the request, one value per outcome class.
pub mod decision {
    /// Forwarded: the rule held.
    pub const ALLOW: &str = "allow";
    /// Forwarded in shadow mode although the rule did not hold.
    pub const WOULD_DENY: &str = "would_deny";
    /// A CORS preflight answered at the edge.
    pub const PREFLIGHT: &str = "preflight";
    pub const BAD_REQUEST: &str = "bad_request";
    pub const CORS_REJECTED: &str = "cors_rejected";
    pub const NO_ROUTE: &str = "no_route";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    pub const INVALID_TOKEN: &str = "invalid_token";
    pub const FORBIDDEN: &str = "forbidden";
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    pub const CREDENTIALS_UNAVAILABLE: &str = "credentials_unavailable";
    /// Allowed, then the upstream failed (the `reason` says how).
    pub const UPSTREAM_ERROR: &str = "upstream_error";

    /// Whether an outcome of this decision is a refusal by scopegate (counted in
    /// `scopegate_denials_total`): not a forward, a preflight or an upstream failure.
    pub fn is_denial(decision: &str) -> bool {
        !matches!(decision, ALLOW | WOULD_DENY | PREFLIGHT | UPSTREAM_ERROR)
    }
}

/// `reason` values that are not a refusal's.
pub mod reason {
    /// An allowed request.
    pub const PERMITTED: &str = "permitted";
    /// A forwarded request whose client went away before the upstream answered (status 499).
    pub const CLIENT_CLOSED: &str = "client_closed";
    /// A permitted request whose client reset its HTTP/2 stream (or whose connection went)
    /// before its body was in: never forwarded (status 499, decision `bad_request`).
    pub const REQUEST_BODY_RESET: &str = "request_body_reset";
    /// A CORS preflight answered.
    pub const CORS_PREFLIGHT: &str = "cors_preflight";
    /// `scopegate_upstream_errors_total{kind}`: a streamed response body that broke.
    pub const RESPONSE_TRUNCATED: &str = "response_truncated";
}

/// `listener` label of `scopegate_open_connections`.
pub mod listener {
    pub const HTTPS: &str = "https";
    pub const HTTP: &str = "http";
    pub const ADMIN: &str = "admin";
}

/// `result` values of the reload and verification counters.
pub mod result {
    pub const SUCCESS: &str = "success";
    pub const FAILURE: &str = "failure";
    /// A bearer token verified.
    pub const VALID: &str = "valid";
    /// A companion token verified.
    pub const VALID_COMPANION: &str = "valid_companion";
}

/// Status logged for a forwarded request whose client went away (nginx's convention).
pub const STATUS_CLIENT_CLOSED: u16 = 499;
