//! One route file being compiled: its problems, each reported at `file:line` with a hint.

use std::fmt;

/// One problem in one route file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message)?,
            None => write!(f, "{}: {}", self.file, self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileError {}

/// The file being compiled and where its problems go.
pub(super) struct FileCx<'a> {
    pub(super) name: &'a str,
    pub(super) text: &'a str,
    pub(super) errors: &'a mut Vec<CompileError>,
    /// The file's declared scope vocabulary (`[scopes] vocabulary`), when it has one.
    pub(super) declared: Option<Vec<String>>,
}

impl<'a> FileCx<'a> {
    pub(super) fn new(name: &'a str, text: &'a str, errors: &'a mut Vec<CompileError>) -> Self {
        FileCx {
            name,
            text,
            errors,
            declared: None,
        }
    }

    /// The 1-based line of byte `offset`.
    pub(super) fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    pub(super) fn error(&mut self, line: Option<usize>, message: String, hint: Option<String>) {
        self.errors.push(CompileError {
            file: self.name.to_owned(),
            line,
            message,
            hint,
        });
    }
}

/// "did you mean `x`?" for a near miss.
pub(super) fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| format!("did you mean `{c}`?"))
}
