//! scopegate: a reverse proxy that lets a request through only when its credentials hold the
//! scopes and roles the matched endpoint requires.
//!
//! The data path, in module order: [`listener`] (TCP, TLS) -> [`service`] (one request, top to
//! bottom) -> [`path`] (normalisation) -> [`routes`] (compiled table) -> [`credentials`]
//! (bearer token, verified once, cached) -> [`policy`] (the decision) -> [`upstream`]
//! (forwarding, with [`body`] bounding what passes either way) -> [`telemetry`] (metrics,
//! access log). [`cors`] answers browser preflights. [`refusal`] turns every non-upstream
//! outcome into a response. [`config`], [`app`] and [`cli`] wire it up; [`demo`] and [`mint`]
//! are the developer tools.

pub mod admin;
pub mod app;
pub mod body;
pub mod cli;
pub mod config;
pub mod cors;
pub mod credentials;
pub mod demo;
pub mod listener;
pub mod mint;
pub mod path;
pub mod policy;
pub mod refusal;
pub mod routes;
pub mod scopes;
pub mod service;
pub mod telemetry;
pub mod tls;
pub mod upstream;
