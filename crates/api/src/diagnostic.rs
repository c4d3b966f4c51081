//! A problem found in config, printed in the analyzer format.

use serde::Serialize;
use std::fmt;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Accepted, but something the user should know (e.g. a field weft does not enforce yet).
    Warning,
    /// The resource is refused; its last good version stays in force.
    Error,
}

/// One problem, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file, as given to the parser.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// Resource kind (`VirtualService`), or `-` when the document could not be read that far.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Field path as users write it (`spec.http[0].route[1].destination.subset`), or `yaml` for syntax.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Istio's analyzer message code for the same problem (`IST0101`), when Istio has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
}

impl Diagnostic {
    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let warn = if self.severity == Severity::Warning {
            "warning: "
        } else {
            ""
        };
        write!(
            f,
            "{}:{}: {} {}/{}: {}: {}",
            self.file, self.line, self.kind, self.namespace, self.name, self.field, warn,
        )?;
        if let Some(code) = self.code {
            write!(f, "[{code}] ")?;
        }
        f.write_str(&self.message)
    }
}
