//! A route file's [`Preset`]: its settings, scope gates and examples, once its routes are in.

use http::Method;
use toml::Spanned;

use super::context::{FileCx, suggest};
use super::equivalence::PathRules;
use super::file::{ExampleSpec, PresetSettings, RouteFile};
use super::vocabulary::scope_set;
use super::{Example, Gates, Preset};
use crate::scopes::Vocabulary;

impl FileCx<'_> {
    /// The file's preset, with the operator's `settings` for it from the serve config.
    pub(super) fn preset(
        &mut self,
        file: &RouteFile,
        vocabulary: Vocabulary,
        paths: PathRules,
        settings: Option<&PresetSettings>,
    ) -> Preset {
        let examples = file
            .examples
            .iter()
            .filter_map(|e| self.example(e))
            .collect();
        let expiry_exempt = scope_set(&vocabulary, names(&file.scopes.expiry_exempt));
        let incompatible = file
            .scopes
            .incompatible
            .iter()
            .filter_map(|p| {
                let [a, b] = p.get_ref();
                Some((vocabulary.bit(a)?, vocabulary.bit(b)?))
            })
            .collect();
        let gates = self.gates(file, &vocabulary, settings);
        Preset {
            name: file.preset.name.as_str().into(),
            file: self.name.into(),
            error_style: file.preset.error_style,
            paths,
            vocabulary,
            expiry_exempt,
            incompatible,
            gates,
            examples,
        }
    }

    fn gates(
        &mut self,
        file: &RouteFile,
        v: &Vocabulary,
        settings: Option<&PresetSettings>,
    ) -> Gates {
        let empty = PresetSettings::default();
        let settings = settings.unwrap_or(&empty);
        self.check_functions(file, settings);
        Gates {
            needs_approval: scope_set(v, names(&file.scopes.needs_approval)),
            approved_clients: settings
                .approved_clients
                .iter()
                .map(|c| c.as_str().into())
                .collect(),
            not_for_private_apps: scope_set(v, names(&file.scopes.not_for_private_apps)),
            needs_function: file
                .scopes
                .needs_function
                .iter()
                .filter_map(|(scope, function)| {
                    let stores = settings
                        .enabled_functions
                        .get(function.get_ref())
                        .map(|s| s.iter().map(|x| x.as_str().into()).collect())
                        .unwrap_or_default();
                    Some((v.bit(scope)?, stores))
                })
                .collect(),
        }
    }

    /// The serve config may enable only business functions the file declares.
    fn check_functions(&mut self, file: &RouteFile, settings: &PresetSettings) {
        let declared: Vec<&str> = file
            .scopes
            .needs_function
            .values()
            .map(|f| f.get_ref().as_str())
            .collect();
        for function in settings.enabled_functions.keys() {
            if !declared.contains(&function.as_str()) {
                self.error(
                    None,
                    format!("serve config enables business function `{function}`, which this file does not declare"),
                    suggest(function, declared.iter().copied()),
                );
            }
        }
    }

    fn example(&mut self, spec: &Spanned<ExampleSpec>) -> Option<Example> {
        let line = self.line(spec.span().start);
        let e = spec.get_ref();
        let method = match Method::from_bytes(e.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                self.error(
                    Some(line),
                    format!("example method `{}` is not a method", e.method),
                    None,
                );
                return None;
            }
        };
        if http::StatusCode::from_u16(e.expect).is_err() {
            self.error(
                Some(line),
                format!("example expects `{}`, not a status", e.expect),
                None,
            );
            return None;
        }
        let claims = match &e.claims {
            None => None,
            Some(t) => match serde_json::to_value(t) {
                Ok(v) => Some(v),
                Err(err) => {
                    self.error(Some(line), format!("example claims: {err}"), None);
                    return None;
                }
            },
        };
        Some(Example {
            title: e.title.clone(),
            method,
            path: e.path.clone(),
            claims,
            expect: e.expect,
        })
    }
}

fn names(list: &[Spanned<String>]) -> impl Iterator<Item = &str> {
    list.iter().map(|n| n.get_ref().as_str())
}
