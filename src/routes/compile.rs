//! Route files -> [`RouteTable`]: parse, validate, intern scopes, close implication, build the router.
//! Every error names the file, the line and what would be right; nothing is checked at request time.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use toml::Spanned;

use super::context::{CompileError, FileCx, suggest};
use super::equivalence::PathRules;
use super::file::{PresetSettings, RouteFile, RouteSpec};
use super::load::{RouteSource, load_paths};
use super::patterns::{conflict, cross_preset_overlaps, patterns};
use super::{Dispatch, Group, Preset, Route, RouteTable};

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// What the serve config adds to route files. `routes check` uses the default: any upstream
/// name, no operator settings.
#[derive(Debug, Default, Clone, Copy)]
pub struct CompileOptions<'a> {
    /// Upstream names a route may refer to.
    pub upstreams: Option<&'a [String]>,
    /// Operator settings per preset name.
    pub settings: Option<&'a BTreeMap<String, PresetSettings>>,
}

/// Compiles route files into one table.
pub fn compile(
    sources: &[RouteSource],
    options: &CompileOptions<'_>,
) -> Result<RouteTable, Vec<CompileError>> {
    let no_settings = BTreeMap::new();
    let settings = options.settings.unwrap_or(&no_settings);
    let mut errors = Vec::new();
    let mut table = Table::default();
    // Preset name -> the file that uses it.
    let mut names: HashMap<String, String> = HashMap::new();
    for source in sources {
        let mut cx = FileCx::new(&source.name, &source.text, &mut errors);
        let Some(file) = cx.parse() else {
            continue;
        };
        cx.claim_name(&file.preset.name, &mut names);
        let preset_index = table.presets.len() as u16;
        let rules = cx.path_rules(&file);
        let Some(vocabulary) = cx.vocabulary(&file) else {
            continue;
        };
        let group = table.group(&rules);
        for spec in &file.routes {
            let upstreams = options.upstreams;
            if let Some(route) = cx.route(spec, &file, &vocabulary, preset_index, upstreams) {
                table.insert(&mut cx, spec, &route, group);
            }
        }
        let preset = cx.preset(&file, vocabulary, rules, settings.get(&file.preset.name));
        table.presets.push(preset);
    }
    cross_preset_overlaps(&table.routes, &table.presets, &mut errors);
    unknown_presets(settings, &names, &mut errors);
    if errors.is_empty() {
        Ok(table.finish())
    } else {
        Err(errors)
    }
}

/// Reads and compiles route files from disk.
pub fn compile_paths(
    paths: &[PathBuf],
    options: &CompileOptions<'_>,
) -> Result<RouteTable, Vec<CompileError>> {
    let sources = load_paths(paths).map_err(|e| vec![e])?;
    compile(&sources, options)
}

/// The table as it is assembled, file by file.
#[derive(Default)]
struct Table {
    groups: Vec<Group>,
    dispatch: Dispatch,
    /// (group, pattern key) -> the route inserted under it.
    keys: HashMap<(usize, String), usize>,
    routes: Vec<Route>,
    presets: Vec<Preset>,
}

impl Table {
    /// The group of presets with these path rules, added if it is the first.
    fn group(&mut self, rules: &PathRules) -> usize {
        if let Some(i) = self.groups.iter().position(|g| g.rules == *rules) {
            return i;
        }
        self.groups.push(Group {
            rules: rules.clone(),
            router: matchit::Router::new(),
        });
        self.groups.len() - 1
    }

    /// Adds `route` under the key of each pattern its `spec` inserts. A pattern whose key is
    /// already taken names the same resource for this upstream: fine when it is judged alike
    /// (the first stays), an error otherwise.
    fn insert(
        &mut self,
        cx: &mut FileCx<'_>,
        spec: &Spanned<RouteSpec>,
        route: &Route,
        group: usize,
    ) {
        let line = cx.line(spec.span().start);
        for pattern in &patterns(spec.get_ref()) {
            let r = route.clone_for(pattern);
            let key = self.groups[group].rules.pattern_key(pattern);
            if let Some(&other) = self.keys.get(&(group, key.clone())) {
                self.same_resource(cx, line, &r, other, group);
                continue;
            }
            let index = self.routes.len();
            match self.groups[group].router.insert(key.as_str(), index as u32) {
                Ok(()) => {
                    self.dispatch.add(group as u16, &key);
                    self.keys.insert((group, key), index);
                    self.routes.push(r);
                }
                Err(e) => cx.error(
                    Some(line),
                    format!(
                        "route `{pattern}` cannot be added: {}",
                        conflict(&e, &self.routes)
                    ),
                    Some("each request path must match exactly one route".into()),
                ),
            }
        }
    }

    /// `route` has the key of the route at `other`: one resource, which must be judged alike.
    fn same_resource(
        &self,
        cx: &mut FileCx<'_>,
        line: usize,
        route: &Route,
        other: usize,
        group: usize,
    ) {
        let first = &self.routes[other];
        if first.judges_like(route) {
            return;
        }
        cx.error(
            Some(line),
            format!(
                "route `{}` is the same resource as `{}` ({}) for this upstream ({}), but is judged differently",
                route.template,
                first.template,
                first.source,
                self.groups[group].rules.describe()
            ),
            Some("give both spellings one rule, or declare in [preset.paths] how the upstream really routes".into()),
        );
    }

    fn finish(self) -> RouteTable {
        RouteTable {
            groups: self.groups.into(),
            dispatch: self.dispatch,
            routes: self.routes.into(),
            presets: self.presets.into(),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl FileCx<'_> {
    /// The file as written, or `None` after reporting where it is not valid TOML or not a
    /// route file.
    fn parse(&mut self) -> Option<RouteFile> {
        match toml::from_str(self.text) {
            Ok(file) => Some(file),
            Err(e) => {
                let line = e.span().map(|s| self.line(s.start));
                self.error(line, e.message().trim().to_owned(), None);
                None
            }
        }
    }

    /// The file's `[preset.paths]`, or the defaults after reporting why they cannot be used.
    fn path_rules(&mut self, file: &RouteFile) -> PathRules {
        let Some(spec) = &file.preset.paths else {
            return PathRules::default();
        };
        match PathRules::new(spec.get_ref()) {
            Ok(rules) => rules,
            Err(e) => {
                let line = self.line(spec.span().start);
                self.error(Some(line), format!("[preset.paths]: {e}"), None);
                PathRules::default()
            }
        }
    }

    /// Each preset name belongs to one file.
    fn claim_name(&mut self, name: &str, names: &mut HashMap<String, String>) {
        if let Some(other) = names.insert(name.to_owned(), self.name.to_owned()) {
            self.error(
                None,
                format!("preset name `{name}` is also used by {other}"),
                None,
            );
        }
    }
}

/// Operator settings must name a loaded preset.
fn unknown_presets(
    settings: &BTreeMap<String, PresetSettings>,
    names: &HashMap<String, String>,
    errors: &mut Vec<CompileError>,
) {
    for name in settings.keys() {
        if !names.contains_key(name) {
            errors.push(CompileError {
                file: "serve config".into(),
                line: None,
                message: format!("[presets.{name}] names no loaded route file"),
                hint: suggest(name, names.keys().map(String::as_str)),
            });
        }
    }
}
