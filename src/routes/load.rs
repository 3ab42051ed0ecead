//! Reading route files from disk: `.toml` files and directories of them.

use std::path::{Path, PathBuf};

use super::CompileError;

/// A route file's name (as shown in errors) and text.
#[derive(Debug, Clone)]
pub struct RouteSource {
    pub name: String,
    pub text: String,
}

/// Reads route files: each path is a `.toml` file or a directory whose `*.toml` files are read
/// in name order.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<RouteSource>, CompileError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| unreadable(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(CompileError {
                    file: path.display().to_string(),
                    line: None,
                    message: "directory holds no *.toml route file".into(),
                    hint: None,
                });
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|e| unreadable(&p, e))?;
            Ok(RouteSource {
                name: p.display().to_string(),
                text,
            })
        })
        .collect()
}

fn unreadable(path: &Path, e: std::io::Error) -> CompileError {
    CompileError {
        file: path.display().to_string(),
        line: None,
        message: format!("cannot read: {e}"),
        hint: None,
    }
}
