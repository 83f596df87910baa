//! TLSA records (RFC 6698) as DANE for SMTP (RFC 7672) uses them, with
//! what DNSSEC validation said of the answer.

/// What DNSSEC validation said of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// Signed, and the signatures chain up to a trust anchor.
    Secure,
    /// Not signed, or validation is off: nothing is proven.
    Insecure,
    /// Signed, but the signatures do not validate: an attack or a broken
    /// zone; RFC 7672 says not to deliver to such a host.
    Bogus,
}

impl Validation {
    /// What a set of records is, given what one more of them is: secure
    /// only if every one is, bogus if any is.
    pub(crate) fn and(self, other: Validation) -> Validation {
        match (self, other) {
            (Validation::Bogus, _) | (_, Validation::Bogus) => Validation::Bogus,
            (Validation::Secure, Validation::Secure) => Validation::Secure,
            _ => Validation::Insecure,
        }
    }
}

/// One TLSA record: which certificate (usage), which part of it
/// (selector), how it is given (matching type) and the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsaRecord {
    /// 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0 the whole certificate, 1 its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 the data itself, 1 its SHA-256, 2 its SHA-512.
    pub matching: u8,
    /// The certificate association data.
    pub data: Vec<u8>,
}

/// The TLSA records of one MX host's SMTP service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsaAnswer {
    /// Empty when the name has none.
    pub records: Vec<TlsaRecord>,
    /// What DNSSEC validation said of the answer (insecure when empty).
    pub validation: Validation,
}
