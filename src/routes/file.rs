//! The route-file format as written on disk (`routes/*.toml`); unknown keys are errors.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub use super::equivalence::PathRulesSpec;

/// One route file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub preset: PresetSpec,
    #[serde(default)]
    pub scopes: ScopesSpec,
    /// Named principals: reusable conjunctions of token type, roles and scopes.
    #[serde(default)]
    pub principals: BTreeMap<String, Spanned<PrincipalSpec>>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RouteSpec>>,
    /// Sample requests shown by `scopegate demo` and checked by the tests.
    #[serde(default, rename = "example")]
    pub examples: Vec<Spanned<ExampleSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub error_style: ErrorStyle,
    /// Upstream (by name in the serve config) for routes that do not name one.
    pub upstream: Option<String>,
    /// Tenant binding for every route of the file that does not set its own.
    pub tenant: Option<Spanned<TenantSpec>>,
    /// How the upstream routes paths: which spellings are one path (`[preset.paths]`).
    pub paths: Option<Spanned<PathRulesSpec>>,
}

/// The request's store must be the token's (`store_id` claim): taken from a path capture
/// (`capture = "store_id"`) or from the Host (`host = "{tenant}.myshopify.com"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub capture: Option<String>,
    pub host: Option<String>,
}

/// The body shape of responses scopegate writes itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorStyle {
    /// RFC 9457 `application/problem+json`.
    #[default]
    Problem,
    /// Shopify's `{"errors": "..."}`.
    Shopify,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopesSpec {
    /// The complete list of scope names this file may use. When given, any other name in the
    /// file (a misspelling) is an error.
    pub vocabulary: Option<Spanned<Vec<String>>>,
    /// Scope names this file accepts in tokens even if no route requires them.
    #[serde(default)]
    pub known: Vec<Spanned<String>>,
    /// `write_orders = ["read_orders"]`: holding the key grants the listed scopes too.
    #[serde(default)]
    pub implies: BTreeMap<String, Spanned<Vec<String>>>,
    /// `read_order = "read_orders"`: another spelling of the same scope.
    #[serde(default)]
    pub aliases: BTreeMap<String, Spanned<String>>,
    /// Tokens holding one of these may lack `exp` (AmeriCommerce `no_expiry`); all others must
    /// have it.
    #[serde(default)]
    pub expiry_exempt: Vec<Spanned<String>>,
    /// Pairs that must not be held together (`["decrypt", "no_expiry"]`): such a token is refused.
    #[serde(default)]
    pub incompatible: Vec<Spanned<[String; 2]>>,
    /// Scopes that count only for clients on the operator's approval list
    /// (serve config `[presets.NAME] approved_clients`), e.g. Shopify `read_all_orders`.
    #[serde(default)]
    pub needs_approval: Vec<Spanned<String>>,
    /// Scopes that do not count for private apps (token claim `app_type = "private"`).
    #[serde(default)]
    pub not_for_private_apps: Vec<Spanned<String>>,
    /// `write_payment_gateways = "payment_gateway"`: the scope counts only for stores with that
    /// business function enabled (serve config `[presets.NAME.enabled_functions]`).
    #[serde(default)]
    pub needs_function: BTreeMap<String, Spanned<String>>,
}

/// Operator settings for one preset, from the serve config (`[presets.NAME]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetSettings {
    /// Clients (`client_id`) approved for the file's `needs_approval` scopes.
    #[serde(default)]
    pub approved_clients: Vec<String>,
    /// Business function -> stores (`store_id`) that have it enabled.
    #[serde(default)]
    pub enabled_functions: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSpec {
    pub token_type: Option<String>,
    /// Any one of these roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// All of these scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A valid companion token of this kind must come with the bearer token.
    pub companion: Option<Companion>,
}

/// Elastic Path companion credentials, each in its own header and verified with its own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Companion {
    /// `X-Moltin-Customer-Token`, `token_type` `customer`.
    Customer,
    /// `EP-Account-Management-Authentication-Token`, `token_type` `account_management`.
    AccountManagement,
}

impl Companion {
    pub const ALL: [Companion; 2] = [Companion::Customer, Companion::AccountManagement];

    /// The `token_type` a companion token of this kind carries.
    pub fn token_type(self) -> &'static str {
        match self {
            Companion::Customer => "customer",
            Companion::AccountManagement => "account_management",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// matchit pattern: `/v2/orders/{id}`.
    pub path: Spanned<String>,
    /// Also match everything below `path`.
    #[serde(default)]
    pub below: bool,
    pub upstream: Option<String>,
    pub tenant: Option<Spanned<TenantSpec>>,
    /// `false`: shadow mode. Decide and count `would_deny`, but forward anyway (for rolling a
    /// new rule out safely). Default `true`.
    #[serde(default = "enforce_default")]
    pub enforce: bool,
    /// GET and HEAD.
    pub read: Option<Spanned<RuleSpec>>,
    /// POST, PUT, PATCH and DELETE.
    pub write: Option<Spanned<RuleSpec>>,
    /// Every method of `read` and `write`.
    pub any: Option<Spanned<RuleSpec>>,
    #[serde(rename = "GET")]
    pub get: Option<Spanned<RuleSpec>>,
    #[serde(rename = "HEAD")]
    pub head: Option<Spanned<RuleSpec>>,
    #[serde(rename = "POST")]
    pub post: Option<Spanned<RuleSpec>>,
    #[serde(rename = "PUT")]
    pub put: Option<Spanned<RuleSpec>>,
    #[serde(rename = "PATCH")]
    pub patch: Option<Spanned<RuleSpec>>,
    #[serde(rename = "DELETE")]
    pub delete: Option<Spanned<RuleSpec>>,
    #[serde(rename = "OPTIONS")]
    pub options: Option<Spanned<RuleSpec>>,
}

/// What one method of a route requires. Every condition given must hold;
/// `principals` is satisfied by any one of the named principals.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// No credentials needed. Excludes every other key.
    #[serde(default)]
    pub public: bool,
    /// All of these scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// At least one of these scopes.
    #[serde(default)]
    pub any_scopes: Vec<String>,
    /// One of these token kinds (`token_type` claim).
    #[serde(default)]
    pub token_types: Vec<String>,
    /// One of these roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// One of these named principals (see `[principals]`).
    #[serde(default)]
    pub principals: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleSpec {
    pub title: String,
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    /// Claims of the demo token to send; no token when absent.
    pub claims: Option<toml::Table>,
    /// The status the example must produce.
    pub expect: u16,
}

fn default_method() -> String {
    "GET".into()
}

fn enforce_default() -> bool {
    true
}
