//! The layout of one line of a message's address text: the address, then
//! the DSN parameters its Composer gave with it, then (for a recipient of
//! a templated mailing) the recipient's own variables.
//!
//! Addresses and DSN parameters never hold control characters, so two of
//! them mark where each part starts. The journal keeps each line whole, so
//! the parameters and the variables survive a restart without fields of
//! their own.

/// Separates an address from its DSN parameters (RFC 3461: RET and ENVID
/// after the sender, NOTIFY and ORCPT after a recipient), kept in their
/// SMTP form (xtext).
pub(crate) const PARAMS_SEPARATOR: char = '\u{1f}';

/// Where a templated recipient's personal part starts on its line.
pub(crate) const PERSONAL_SEPARATOR: char = '\u{1e}';

/// The address of one line, without its DSN parameters or a templated
/// recipient's variables.
pub(crate) fn address_of(line: &str) -> &str {
    line.split([PARAMS_SEPARATOR, PERSONAL_SEPARATOR])
        .next()
        .unwrap_or("")
}

/// The DSN parameters of one line ("" when none).
pub(crate) fn params_of(line: &str) -> &str {
    let line = line.split(PERSONAL_SEPARATOR).next().unwrap_or("");
    line.split_once(PARAMS_SEPARATOR).map_or("", |(_, p)| p)
}

/// The personal part of one line, without its separator; `None` for a
/// line that has none.
pub(crate) fn personal_of(line: &str) -> Option<&str> {
    line.split_once(PERSONAL_SEPARATOR).map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_of_a_line_is_found_whatever_follows_it() {
        let line = "d@w.example\u{1f}ORCPT=rfc822;d@w.example\u{1e}Ann\u{1d}";
        assert_eq!(address_of(line), "d@w.example");
        assert_eq!(params_of(line), "ORCPT=rfc822;d@w.example");
        assert_eq!(personal_of(line), Some("Ann\u{1d}"));
        assert_eq!(address_of("e@v.example\u{1e}x"), "e@v.example");
        assert_eq!(params_of("e@v.example\u{1e}x\u{1f}y"), "");
        assert_eq!(personal_of("e@v.example\u{1f}NOTIFY=NEVER"), None);
    }
}
