//! `scopegate explain`: the decision on one request, with the reasons behind it, from the same
//! [`Policy::decide`] as live traffic.

use std::sync::Arc;

use http::request::Parts;

use super::{Decision, Policy, RequestHead, Verdict};
use crate::credentials::Identity;
use crate::routes::Rule;

/// A decision explained.
#[derive(Debug)]
pub struct Explanation {
    pub verdict: Verdict,
    /// The path that would be forwarded (allowed or would-deny).
    pub canonical_path: Option<String>,
    /// Template, `file:line`, preset.
    pub route: Option<(String, String, String)>,
    pub identity: Option<Arc<Identity>>,
    /// Scopes held in the route's file, implication applied.
    pub held: Option<String>,
    /// What the method's rule needs.
    pub needed: Option<String>,
}

impl Policy {
    /// The decision for a request, without forwarding anything.
    pub async fn explain(&self, parts: &Parts) -> Explanation {
        let table = self.table();
        let decision = self.decide(&table, &RequestHead::of(parts)).await;
        let verdict = decision.verdict();
        let route = decision.route();
        let identity = decision.identity().cloned();
        let held = identity.as_ref().zip(route).map(|(id, r)| {
            let vocabulary = &table.preset(r.preset).vocabulary;
            vocabulary.describe(&id.scopes_in(&table, r.preset))
        });
        let needed = route
            .and_then(|r| r.rule(&parts.method))
            .map(|rule| match &**rule {
                Rule::Public => "nothing (public)".to_owned(),
                Rule::Protected(requirement) => requirement.needed.to_string(),
            });
        let route_shown = route.map(|r| {
            (
                r.template.to_string(),
                r.source.to_string(),
                table.preset(r.preset).name.to_string(),
            )
        });
        let canonical_path = match &decision {
            Decision::Forward { path, .. } => Some(path.to_string()),
            Decision::Refuse { .. } => None,
        };
        Explanation {
            verdict,
            canonical_path,
            route: route_shown,
            identity,
            held,
            needed,
        }
    }
}
