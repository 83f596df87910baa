//! Each recipient's own part of a templated mailing (its display name and
//! its substitutions), kept on the recipient's line of the message's
//! address text, after the address.
//!
//! The line is what the journal keeps for a recipient, so a recipient's
//! variables are on disk exactly once and survive a restart with it. Most
//! mailings give every recipient the same few keys with short text values;
//! those are kept as the values alone, in the order of the mailing's key
//! list (the keys of its first recipient), which keeps a recipient with
//! three short variables at a few dozen bytes. Any other shape (other keys,
//! numbers, lists, text with control characters) is kept as compact JSON.

use serde_json::{Map, Value};

use crate::address_line::PERSONAL_SEPARATOR;

/// Ends the display name.
const NAME_END: char = '\u{1d}';
/// Starts values kept in the mailing's key order.
const BY_KEYS: char = '=';
/// Separates those values.
const VALUE_SEPARATOR: char = '\u{1c}';

/// A recipient's variables, as read back from its line.
#[derive(Debug, PartialEq)]
pub(crate) struct Personal<'a> {
    /// The display name; `None` when none was given.
    pub(crate) name: Option<&'a str>,
    /// The substitutions, a JSON object.
    pub(crate) substitutions: Map<String, Value>,
}

/// Whether `s` can be kept as it is between separators.
fn plain(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// Appends the personal part of a recipient with display name `name`
/// and substitutions `subs` to `line`, given the mailing's key list.
/// A name with control characters must have been refused before.
pub(crate) fn encode(
    line: &mut String,
    name: Option<&str>,
    subs: &Map<String, Value>,
    keys: &[String],
) {
    line.push(PERSONAL_SEPARATOR);
    line.push_str(name.unwrap_or(""));
    line.push(NAME_END);
    if subs.is_empty() {
        return;
    }
    let by_keys = subs.len() == keys.len()
        && keys
            .iter()
            .all(|k| subs.get(k).and_then(Value::as_str).is_some_and(plain));
    if by_keys {
        line.push(BY_KEYS);
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                line.push(VALUE_SEPARATOR);
            }
            line.push_str(subs[k].as_str().unwrap_or(""));
        }
    } else {
        // serde_json escapes every control character: the line stays one line.
        line.push_str(&Value::Object(subs.clone()).to_string());
    }
}

/// Reads back the personal part `part` (what follows the separator).
pub(crate) fn decode<'a>(part: &'a str, keys: &[String]) -> Result<Personal<'a>, String> {
    let (name, rest) = part
        .split_once(NAME_END)
        .ok_or("a recipient's variables are damaged (no name end)")?;
    let name = (!name.is_empty()).then_some(name);
    let substitutions = if rest.is_empty() {
        Map::new()
    } else if let Some(values) = rest.strip_prefix(BY_KEYS) {
        let values: Vec<&str> = values.split(VALUE_SEPARATOR).collect();
        if values.len() != keys.len() {
            return Err("a recipient's variables do not match the mailing's keys".into());
        }
        keys.iter()
            .zip(values)
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect()
    } else {
        match serde_json::from_str(rest) {
            Ok(Value::Object(m)) => m,
            _ => return Err("a recipient's variables are damaged (not a JSON object)".into()),
        }
    };
    Ok(Personal {
        name,
        substitutions,
    })
}

/// The key list of a mailing: the sorted keys of its first recipient's
/// substitutions.
pub(crate) fn key_list(first: Option<&Map<String, Value>>) -> Vec<String> {
    first
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn round_trip(name: Option<&str>, subs: Value, keys: &[String]) -> (String, Personal<'static>) {
        let mut line = String::from("a@b.example");
        encode(&mut line, name, &map(subs), keys);
        let leaked: &'static str = Box::leak(line.clone().into_boxed_str());
        let part = leaked.split_once(PERSONAL_SEPARATOR).unwrap().1;
        (line, decode(part, keys).unwrap())
    }

    #[test]
    fn short_text_values_of_the_mailings_keys_are_kept_as_values_alone() {
        let keys = key_list(Some(&map(json!({"city": "x", "code": "y", "first": "z"}))));
        let subs = json!({"first": "Ann", "code": "X12", "city": "Oslo"});
        let (line, back) = round_trip(Some("Ann Lee"), subs.clone(), &keys);
        assert_eq!(
            line,
            "a@b.example\u{1e}Ann Lee\u{1d}=Oslo\u{1c}X12\u{1c}Ann"
        );
        assert_eq!(back.name, Some("Ann Lee"));
        assert_eq!(Value::Object(back.substitutions), subs);
    }

    #[test]
    fn any_other_shape_is_kept_as_json_on_one_line() {
        let keys = vec!["first".to_string()];
        for subs in [
            json!({"first": "a\r\nBcc: x"}),
            json!({"first": 3}),
            json!({"other": "v"}),
            json!({"first": "v", "items": [1, {"a": null}]}),
        ] {
            let (line, back) = round_trip(None, subs.clone(), &keys);
            assert!(!line.contains(['\r', '\n']), "{line:?}");
            assert_eq!(back.name, None);
            assert_eq!(Value::Object(back.substitutions), subs);
        }
        let (line, back) = round_trip(Some("N"), json!({}), &keys);
        assert_eq!(line, "a@b.example\u{1e}N\u{1d}");
        assert!(back.substitutions.is_empty());
    }

    #[test]
    fn damaged_parts_are_errors_not_panics() {
        let keys = vec!["a".to_string(), "b".to_string()];
        assert!(decode("no end", &keys).is_err());
        assert!(decode("n\u{1d}=only one", &keys).is_err());
        assert!(decode("n\u{1d}[1]", &keys).is_err());
        assert!(decode("n\u{1d}{bad", &keys).is_err());
    }
}
