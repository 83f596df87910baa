//! The configuration file as a spanned TOML document: every problem in it
//! found in one pass, each with its line and the text it is about.
//!
//! A plain `toml::from_str` stops at the first wrong value. Here the file
//! is parsed once into a tree that keeps every key's and value's place;
//! deserializing it is repeated, and each time it fails the entry the
//! error points into is reported and taken out, so the next try goes on to
//! the next wrong value. What is left deserializes to a `Config` with
//! defaults where the removed entries were, which the semantic checks then
//! see too.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Config, ConfigError};

/// More wrong values than anyone types by hand: the loop stops there.
const MAX_VALUE_ERRORS: usize = 100;

/// A parsed configuration file.
pub(super) struct Document<'i> {
    text: &'i str,
    root: Spanned<DeTable<'i>>,
}

impl<'i> Document<'i> {
    /// Parses TOML syntax; every syntax error is reported (the parser
    /// recovers where it can), and with any of them there is no document.
    pub(super) fn parse(text: &'i str) -> Result<Document<'i>, Vec<ConfigError>> {
        let (root, errors) = DeTable::parse_recoverable(text);
        if errors.is_empty() {
            return Ok(Document { text, root });
        }
        Err(errors
            .iter()
            .map(|e| ConfigError {
                line: e.span().map(|s| line_at(text, s.start)),
                message: e.message().trim().to_string(),
            })
            .collect())
    }

    /// The configuration, with defaults in place of every value that could
    /// not be read, and one error per such value.
    pub(super) fn config(&self) -> (Config, Vec<ConfigError>) {
        let mut root = self.root.clone();
        let mut errors = Vec::new();
        loop {
            let attempt = Config::deserialize(toml::de::Deserializer::from(root.clone()));
            let e = match attempt {
                Ok(config) => return (config, errors),
                Err(e) => e,
            };
            let span = e.span();
            let mut path = Vec::new();
            let removed = match &span {
                Some(span) if errors.len() < MAX_VALUE_ERRORS => {
                    remove_entry_at(root.get_mut(), span, &mut path)
                }
                _ => false,
            };
            errors.push(ConfigError {
                line: span.as_ref().map(|s| line_at(self.text, s.start)),
                message: self.describe(&path, span.as_ref(), e.message().trim()),
            });
            if !removed {
                // Nothing left to take out: the rest cannot be read.
                return (Config::default(), errors);
            }
        }
    }

    /// The line that sets `path` (`ingest.max_recipients`,
    /// `queue[1].limits.connect_timeout`), or none when the file leaves
    /// it at its default.
    pub(super) fn line_of(&self, path: &str) -> Option<usize> {
        let mut span = self.root.span();
        let mut table = Some(self.root.get_ref());
        for segment in path.split('.') {
            let (key, index) = match segment.split_once('[') {
                Some((key, rest)) => (key, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (segment, None),
            };
            let mut value = table?.get(key)?;
            if let Some(i) = index {
                match value.get_ref() {
                    DeValue::Array(items) => value = items.get(i)?,
                    _ => return None,
                }
            }
            span = value.span();
            table = match value.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        Some(line_at(self.text, span.start))
    }

    /// `path: "value": why`, or as much of it as is known.
    fn describe(&self, path: &[String], span: Option<&Range<usize>>, why: &str) -> String {
        let value = span
            .and_then(|s| self.text.get(s.clone()))
            .filter(|v| !v.contains('\n') && v.len() <= 80);
        let path = path.join(".").replace(".[", "[");
        match (path.is_empty(), value) {
            (false, Some(v)) if !path.ends_with(v.trim_matches('"')) => {
                format!("{path}: {v}: {why}")
            }
            (false, _) => format!("{path}: {why}"),
            (true, Some(v)) => format!("{v}: {why}"),
            (true, None) => why.to_string(),
        }
    }
}

/// Takes out the innermost entry of `table` whose key or value holds
/// `span`, pushing its path; false when no entry holds it. Every table is
/// searched: the span the parser gives a `[table]` covers its header only,
/// not the entries below it.
fn remove_entry_at(table: &mut DeTable<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    let holds = |s: Range<usize>| s.start <= span.start && span.end <= s.end;
    let keys: Vec<String> = table.keys().map(|k| k.get_ref().to_string()).collect();
    for key in keys {
        let Some(value) = table.get_mut(key.as_str()) else {
            continue;
        };
        let here = holds(value.span());
        path.push(key.clone());
        let inner = match value.get_mut() {
            DeValue::Table(t) => remove_entry_at(t, span, path),
            DeValue::Array(items) => {
                let mut found = false;
                for (i, item) in items.iter_mut().enumerate() {
                    if let DeValue::Table(t) = item.get_mut() {
                        path.push(format!("[{i}]"));
                        found = remove_entry_at(t, span, path);
                        if found {
                            break;
                        }
                        path.pop();
                    }
                }
                found
            }
            _ => false,
        };
        if inner {
            return true;
        }
        let key_holds = table
            .get_key_value(key.as_str())
            .is_some_and(|(k, _)| holds(k.span()));
        if here || key_holds {
            table.remove(key.as_str());
            return true;
        }
        path.pop();
    }
    false
}

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
