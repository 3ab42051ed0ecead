//! scopegate: a reverse proxy that lets a request through only when its credentials hold the
//! scopes and roles the matched endpoint requires.
//!
//! The data path, in module order (`src/LIFECYCLE.md` walks one request through it):
//! [`listener`] (accept loop, TLS, HTTP/1.1 and HTTP/2) -> [`hygiene`] (framing) -> [`path`]
//! (normalisation) -> [`routes`] (compiled table) -> [`credentials`] (bearer token, verified
//! once, cached) -> [`policy`] (the one decision) -> front ends: [`proxy`] (forwards),
//! [`admin`] -> [`forwarding`] (header rewriting) -> [`upstream`] (pool, connector; [`body`]
//! bounds what passes either way) -> [`telemetry`] (the one record: metrics, access log).
//! [`refusal`] turns every non-upstream outcome into a response; [`cors`] answers browser
//! preflights; [`scopes`] interns scope names. [`config`], [`app`], [`shutdown`] and [`cli`]
//! wire it up; [`demo`] and [`mint`] are the developer tools.

pub mod admin;
pub mod app;
pub mod body;
pub mod cli;
pub mod config;
pub mod cors;
pub mod credentials;
pub mod demo;
pub mod forwarding;
pub mod graphql;
pub mod hygiene;
pub mod listener;
pub mod mint;
pub mod params;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod refusal;
pub mod routes;
pub mod scopes;
pub mod shutdown;
pub mod telemetry;
pub mod upstream;
