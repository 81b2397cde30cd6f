//! What the API accepts in its constrained fields. Each rule both checks requests and
//! prints its OpenAPI schema, so the document and the server can't disagree: a request
//! valid by the schema passes the check, and one the check refuses is invalid by it.

use super::error::{ApiError, ApiResult};
use crate::webhooks::EventType;
use serde::{Deserialize, Deserializer};
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};
use utoipa::PartialSchema;

/// The characters `str::trim` removes (Unicode `White_Space`), as ranges. The patterns
/// need them spelled out: regex `\s` means something else in JSON Schema (ECMA-262),
/// in Python (clients, fuzzers) and in Rust. A test checks the list against the std.
const WHITESPACE: &[(char, char)] = &[
    ('\u{9}', '\u{d}'),
    (' ', ' '),
    ('\u{85}', '\u{85}'),
    ('\u{a0}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// The inside of a regex character class listing [`WHITESPACE`], as `\uXXXX` escapes
/// (which ECMA-262 and Python both read).
fn whitespace_class() -> String {
    WHITESPACE
        .iter()
        .map(|&(a, b)| {
            if a == b {
                format!("\\u{:04x}", a as u32)
            } else {
                format!("\\u{:04x}-\\u{:04x}", a as u32, b as u32)
            }
        })
        .collect()
}

/// PostgreSQL text can't hold NUL, so no stored text field may contain one.
const NUL: char = '\0';

fn string_type(nullable: bool) -> SchemaType {
    if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    }
}

/// A name people read (a room title, a display name): 1 to `max` characters as sent,
/// no NUL, not blank. Stored trimmed.
pub struct Label {
    pub field: &'static str,
    pub max: usize,
}

pub const TITLE: Label = Label {
    field: "title",
    max: 120,
};
pub const DISPLAY_NAME: Label = Label {
    field: "display_name",
    max: 64,
};

impl Label {
    pub fn check(&self, raw: &str) -> ApiResult<String> {
        let n = raw.chars().count();
        if !(1..=self.max).contains(&n)
            || raw.contains(NUL)
            || !raw.contains(|c: char| !c.is_whitespace())
        {
            return Err(ApiError::validation(format!(
                "{}: use 1 to {} characters, not all blank",
                self.field, self.max
            )));
        }
        Ok(raw.trim().to_string())
    }

    pub fn schema(&self, nullable: bool) -> Object {
        let ws = whitespace_class();
        ObjectBuilder::new()
            .schema_type(string_type(nullable))
            .min_length(Some(1))
            .max_length(Some(self.max))
            // Some character that is not blank, and no NUL anywhere.
            .pattern(Some(format!("^[^\\u0000]*[^\\u0000{ws}][^\\u0000]*$")))
            .description(Some(format!(
                "1 to {} characters, not all blank; leading and trailing blanks are dropped.",
                self.max
            )))
            .build()
    }
}

/// A password: `min` to `max` characters, anything (it is only hashed).
pub struct Password {
    pub min: usize,
    pub max: usize,
}

pub const PASSWORD: Password = Password { min: 8, max: 256 };

impl Password {
    pub fn check(&self, raw: &str) -> ApiResult<()> {
        if !(self.min..=self.max).contains(&raw.chars().count()) {
            return Err(ApiError::validation(format!(
                "password: use {} to {} characters",
                self.min, self.max
            )));
        }
        Ok(())
    }

    pub fn schema(&self) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(self.min))
            .max_length(Some(self.max))
            .description(Some(format!("{} to {} characters.", self.min, self.max)))
            .build()
    }
}

/// An email address at signup: `local@domain`, at most [`EMAIL_MAX`] characters as sent,
/// no blanks inside (around it they are dropped), a domain with a dot that neither
/// starts nor ends it. Stored trimmed and lowercased.
pub const EMAIL_MAX: usize = 254;

pub fn check_email(raw: &str) -> ApiResult<String> {
    let e = raw.trim();
    let valid = raw.chars().count() <= EMAIL_MAX
        && !raw.contains(NUL)
        && !e.contains(char::is_whitespace)
        && matches!(e.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.'));
    if valid {
        Ok(e.to_lowercase())
    } else {
        Err(ApiError::validation(
            "email: enter an address like name@example.com",
        ))
    }
}

pub fn email_schema() -> Object {
    let ws = whitespace_class();
    // local part: no `@`; domain: anything but a dot first and last, a dot in between.
    let (local, edge, inner) = (
        format!("[^@\\u0000{ws}]"),
        format!("[^.\\u0000{ws}]"),
        format!("[^\\u0000{ws}]"),
    );
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(EMAIL_MAX))
        .pattern(Some(format!(
            "^[{ws}]*{local}+@{edge}{inner}*\\.{inner}*{edge}[{ws}]*$"
        )))
        .description(Some("An address like `name@example.com`."))
        .build()
}

/// A whole number from `min` to `max`, `default` when left out.
pub struct Range {
    pub field: &'static str,
    pub min: u64,
    pub max: u64,
    pub default: u64,
}

/// A viewer token's lifetime in seconds: a minute to 7 days.
pub const VIEWER_TOKEN_TTL_S: Range = Range {
    field: "ttl_s",
    min: 60,
    max: 604_800,
    default: 3600,
};

impl Range {
    pub fn check(&self, v: Option<u64>) -> ApiResult<u64> {
        let v = v.unwrap_or(self.default);
        if !(self.min..=self.max).contains(&v) {
            return Err(ApiError::validation(format!(
                "{}: use {} to {}",
                self.field, self.min, self.max
            )));
        }
        Ok(v)
    }

    /// Nullable: `null` means the default too.
    pub fn schema(&self) -> Object {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
            .minimum(Some(self.min))
            .maximum(Some(self.max))
            .default(Some(self.default.into()))
            .description(Some(format!(
                "{} to {}; {} when left out or null.",
                self.min, self.max, self.default
            )))
            .build()
    }
}

/// Deserializes an optional whole number, written `82` or `82.0`: JSON Schema's
/// `integer` is any number without a fraction, so a schema-valid `82.0` must be taken.
pub fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(v) = n.as_u64() {
        return Ok(Some(v));
    }
    match n.as_f64() {
        // Beyond u64 saturates, and the range check refuses it.
        Some(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "{n} is not a whole number of zero or more"
        ))),
    }
}

/// A webhook endpoint's URL: `http://` or `https://`, a host name or IPv4 address
/// (letters, digits, `.`, `-`), an optional port, then a path, query or fragment of
/// URL characters; at most `max` characters. Nothing is trimmed.
pub struct UrlRule {
    pub max: usize,
}

pub const WEBHOOK_URL: UrlRule = UrlRule { max: 2048 };

/// The characters a webhook URL may have after its host and port (RFC 3986's
/// unreserved, sub-delims, `:@%/?#`).
fn url_tail_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._~!$&'()*+,;=:@%/?#-".contains(c)
}

impl UrlRule {
    pub fn check(&self, raw: &str) -> ApiResult<String> {
        let valid = raw.chars().count() <= self.max
            && raw
                .strip_prefix("https://")
                .or_else(|| raw.strip_prefix("http://"))
                .is_some_and(|rest| {
                    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                    let (authority, tail) = rest.split_at(end);
                    let (host, port) = match authority.split_once(':') {
                        Some((h, p)) => (h, Some(p)),
                        None => (authority, None),
                    };
                    !host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                        && port.is_none_or(|p| {
                            (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
                        })
                        && tail.chars().all(url_tail_char)
                });
        if valid {
            Ok(raw.to_string())
        } else {
            Err(ApiError::validation(format!(
                "url: use an http:// or https:// URL of at most {} characters, like https://example.com/hooks/skylark",
                self.max
            )))
        }
    }

    pub fn schema(&self) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(self.max))
            .pattern(Some(
                "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][A-Za-z0-9._~!$&'()*+,;=:@%/?#-]*)?$",
            ))
            .description(Some(format!(
                "An http:// or https:// URL (host name or IPv4 address), at most {} characters.",
                self.max
            )))
            .build()
    }
}

/// The event types of a webhook: 1 to `max` of them (repeats are dropped).
pub struct EventList {
    pub max: usize,
}

pub const WEBHOOK_EVENTS: EventList = EventList { max: 32 };

impl EventList {
    pub fn check(&self, mut events: Vec<EventType>) -> ApiResult<Vec<EventType>> {
        if !(1..=self.max).contains(&events.len()) {
            return Err(ApiError::validation(format!(
                "events: list 1 to {} event types, e.g. [\"room.live\", \"room.offline\"]",
                self.max
            )));
        }
        events.sort();
        events.dedup();
        Ok(events)
    }

    pub fn schema(&self) -> Array {
        ArrayBuilder::new()
            .items(EventType::schema())
            .min_items(Some(1))
            .max_items(Some(self.max))
            .description(Some(format!(
                "1 to {} event types; repeats are dropped.",
                self.max
            )))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn whitespace_list_is_what_trim_removes() {
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            let listed = WHITESPACE.iter().any(|&(a, b)| (a..=b).contains(&c));
            assert_eq!(listed, c.is_whitespace(), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn labels() {
        assert_eq!(TITLE.check("  My show ").unwrap(), "My show");
        assert_eq!(TITLE.check(&"é".repeat(120)).unwrap(), "é".repeat(120));
        for bad in ["", " \u{3000}\n", "a\0b", &"x".repeat(121)] {
            assert!(TITLE.check(bad).is_err(), "{bad:?}");
        }
        // Blanks count toward the limit: the schema's maxLength is on the text as sent.
        assert!(DISPLAY_NAME
            .check(&format!(" {} ", "x".repeat(63)))
            .is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(check_email(" Me@Example.COM\n").unwrap(), "me@example.com");
        assert_eq!(check_email("a@b@c.d").unwrap(), "a@b@c.d");
        for bad in [
            "",
            "a",
            "@b.c",
            "a@b",
            "a@.b",
            "a@b.",
            "a b@c.d",
            "a@b.c\0",
            "a@\u{a0}b.c",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(EMAIL_MAX));
        assert!(check_email(&long).is_err());
    }

    #[test]
    fn whole_numbers() {
        let parse = |j: &str| {
            let mut de = serde_json::Deserializer::from_str(j);
            whole_number(&mut de).ok()
        };
        assert_eq!(parse("82"), Some(Some(82)));
        assert_eq!(parse("82.0"), Some(Some(82)));
        assert_eq!(parse("8.2e1"), Some(Some(82)));
        assert_eq!(parse("null"), Some(None));
        assert_eq!(parse("1e300"), Some(Some(u64::MAX)));
        for bad in ["82.5", "-1", "-1.0", "\"82\""] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    /// Strings of the characters the rules care about, and any others.
    fn texts() -> impl Strategy<Value = String> {
        let c = prop_oneof![
            prop::sample::select(vec![
                '@', '.', ' ', '\0', '\n', '\t', '\u{a0}', '\u{3000}', '\u{85}', '\u{1c}',
                '\u{feff}', '\u{200b}',
            ]),
            prop::char::range('a', 'c'),
            any::<char>(),
        ];
        prop::collection::vec(c, 0..12).prop_map(|v| v.into_iter().collect())
    }

    /// Strings shaped like URLs, and near misses.
    fn urls() -> impl Strategy<Value = String> {
        let prefix = prop::sample::select(vec!["http://", "https://", "ftp://", "http:/", ""]);
        let c = prop_oneof![
            prop::sample::select(vec![':', '/', '?', '#', '.', '-', '%', ' ', '\0', '<', 'é']),
            prop::char::range('a', 'c'),
            prop::char::range('0', '9'),
        ];
        (prefix, prop::collection::vec(c, 0..30))
            .prop_map(|(p, v)| format!("{p}{}", v.into_iter().collect::<String>()))
    }

    /// Whether `s` is valid by a string schema (the keywords these rules print).
    fn schema_allows(schema: &Object, s: &str) -> bool {
        let n = s.chars().count();
        schema.min_length.is_none_or(|m| n >= m)
            && schema.max_length.is_none_or(|m| n <= m)
            && schema
                .pattern
                .as_ref()
                .is_none_or(|p| regex::Regex::new(p).unwrap().is_match(s))
    }

    proptest! {
        #[test]
        fn label_schema_is_the_check(s in texts()) {
            let rule = Label { field: "t", max: 6 };
            prop_assert_eq!(schema_allows(&rule.schema(false), &s), rule.check(&s).is_ok());
        }

        #[test]
        fn email_schema_is_the_check(s in texts()) {
            prop_assert_eq!(schema_allows(&email_schema(), &s), check_email(&s).is_ok());
        }

        #[test]
        fn url_schema_is_the_check(s in urls()) {
            let rule = UrlRule { max: 24 };
            prop_assert_eq!(schema_allows(&rule.schema(), &s), rule.check(&s).is_ok());
        }

        #[test]
        fn password_schema_is_the_check(s in texts()) {
            let rule = Password { min: 2, max: 6 };
            prop_assert_eq!(schema_allows(&rule.schema(), &s), rule.check(&s).is_ok());
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(VIEWER_TOKEN_TTL_S.check(None).unwrap(), 3600);
        assert_eq!(VIEWER_TOKEN_TTL_S.check(Some(60)).unwrap(), 60);
        assert!(VIEWER_TOKEN_TTL_S.check(Some(59)).is_err());
        assert!(VIEWER_TOKEN_TTL_S.check(Some(604_801)).is_err());
    }
}
