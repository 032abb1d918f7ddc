//! A template expression: JSONPath or JMESPath source, compiled, with Azure's single- and
//! multi-token selection rules (`SelectToken` / `SelectTokens`).

use crate::jmespath::JmesPath;
use crate::jsonpath::JsonPath;
use serde_json::Value;
use std::fmt;

/// The expression languages of CalculatedContent templates (`"language"` / `defaultExpressionLanguage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpressionLanguage {
    JsonPath,
    JmesPath,
}

impl ExpressionLanguage {
    /// Reads `JsonPath` or `JmesPath`, ignoring case as Newtonsoft's enum converter does.
    pub(crate) fn parse(text: &str) -> Option<ExpressionLanguage> {
        if text.eq_ignore_ascii_case("JsonPath") {
            Some(ExpressionLanguage::JsonPath)
        } else if text.eq_ignore_ascii_case("JmesPath") {
            Some(ExpressionLanguage::JmesPath)
        } else {
            None
        }
    }
}

impl fmt::Display for ExpressionLanguage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExpressionLanguage::JsonPath => "JsonPath",
            ExpressionLanguage::JmesPath => "JmesPath",
        })
    }
}

/// A compiled expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expression {
    JsonPath(JsonPath),
    JmesPath(JmesPath),
}

/// Why a single value could not be selected.
pub(crate) enum SelectError {
    Multiple(usize),
    Evaluation(String),
}

impl Expression {
    /// Compiles `source` in `language`; the error message says which language failed and where.
    pub(crate) fn compile(source: &str, language: ExpressionLanguage) -> Result<Expression, String> {
        if source.trim().is_empty() {
            return Err("the expression is empty".to_owned());
        }
        match language {
            ExpressionLanguage::JsonPath => JsonPath::parse(source)
                .map(Expression::JsonPath)
                .map_err(|e| format!("invalid JSONPath '{source}': {e}")),
            ExpressionLanguage::JmesPath => JmesPath::parse(source)
                .map(Expression::JmesPath)
                .map_err(|e| format!("invalid JMESPath '{source}': {e}")),
        }
    }

    pub fn language(&self) -> ExpressionLanguage {
        match self {
            Expression::JsonPath(_) => ExpressionLanguage::JsonPath,
            Expression::JmesPath(_) => ExpressionLanguage::JmesPath,
        }
    }

    pub fn source(&self) -> &str {
        match self {
            Expression::JsonPath(p) => p.source(),
            Expression::JmesPath(p) => p.source(),
        }
    }

    /// Every matching token (`SelectTokens`): all JSONPath matches; for JMESPath the elements of a
    /// projection, or the one non-null result.
    pub(crate) fn select_all(&self, data: &Value) -> Result<Vec<Value>, String> {
        match self {
            Expression::JsonPath(p) => Ok(p.select(data).into_iter().cloned().collect()),
            Expression::JmesPath(p) => {
                let result = p.search(data).map_err(|e| e.0)?;
                Ok(match result {
                    Value::Array(items) if p.is_projection() => items,
                    Value::Null => Vec::new(),
                    other => vec![other],
                })
            }
        }
    }

    /// The one matching token (`SelectToken`), `None` when nothing (or JSON `null`) matches. More than
    /// one match is an error, as in Newtonsoft and in Azure's JMESPath evaluator. (A JMESPath projection
    /// with exactly one element yields that element; JMESPath.Net would yield a one-element array, which
    /// no value can be read from.)
    pub(crate) fn select_one(&self, data: &Value) -> Result<Option<Value>, SelectError> {
        match self {
            Expression::JsonPath(p) => {
                let found = p.select(data);
                match found.len() {
                    0 => Ok(None),
                    1 => Ok(Some(found[0].clone()).filter(|v| !v.is_null())),
                    n => Err(SelectError::Multiple(n)),
                }
            }
            Expression::JmesPath(p) => match p.search(data).map_err(|e| SelectError::Evaluation(e.0))? {
                Value::Null => Ok(None),
                Value::Array(mut items) if p.is_projection() => match items.len() {
                    0 => Ok(None),
                    1 => Ok(items.pop()),
                    n => Err(SelectError::Multiple(n)),
                },
                other => Ok(Some(other)),
            },
        }
    }
}
