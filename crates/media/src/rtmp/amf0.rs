//! AMF0 (Action Message Format, version 0): the encoding of RTMP commands and
//! of FLV script data such as `onMetaData`.
//!
//! Decoding is bounded: nesting deeper than [`Amf0Limits::max_depth`] or more
//! than [`Amf0Limits::max_values`] values in one call is an error, and no
//! allocation is sized by a length field alone.
//!
//! ```
//! use skylark_media::rtmp::amf0::{self, Amf0Value};
//!
//! let command = vec![
//!     Amf0Value::from("connect"),
//!     Amf0Value::Number(1.0),
//!     Amf0Value::object([("app", Amf0Value::from("live"))]),
//! ];
//! let bytes = amf0::encode_all(&command)?;
//! let decoded = amf0::decode_all(&bytes)?;
//! assert_eq!(decoded, command);
//! assert_eq!(decoded[2].get("app").and_then(Amf0Value::as_str), Some("live"));
//! # Ok::<(), skylark_media::rtmp::amf0::Amf0Error>(())
//! ```

/// Type markers (AMF0 spec §2.1).
mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const MOVIECLIP: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const REFERENCE: u8 = 0x07;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0a;
    pub const DATE: u8 = 0x0b;
    pub const LONG_STRING: u8 = 0x0c;
    pub const UNSUPPORTED: u8 = 0x0d;
    pub const XML_DOCUMENT: u8 = 0x0f;
    pub const TYPED_OBJECT: u8 = 0x10;
    pub const AVMPLUS: u8 = 0x11;
}

/// One AMF0 value.
///
/// Strings are decoded as UTF-8 (invalid sequences become U+FFFD). A
/// [`String`](Amf0Value::String) is written with the short string marker when
/// it fits 65535 bytes and as a long string otherwise, so both decode to the
/// same variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// An IEEE 754 double.
    Number(f64),
    /// A boolean.
    Boolean(bool),
    /// A string (short or long on the wire).
    String(String),
    /// An anonymous object: properties in wire order.
    Object(Vec<(String, Amf0Value)>),
    /// `null`.
    Null,
    /// `undefined`.
    Undefined,
    /// An associative ("ECMA") array: properties in wire order.
    EcmaArray(Vec<(String, Amf0Value)>),
    /// A dense array.
    StrictArray(Vec<Amf0Value>),
    /// A date: milliseconds since the Unix epoch, and a time zone that the
    /// spec reserves (should be 0).
    Date {
        /// Milliseconds since 1970-01-01T00:00:00Z.
        millis: f64,
        /// Reserved time zone offset.
        time_zone: i16,
    },
    /// An XML document (a long string on the wire).
    XmlDocument(String),
    /// An object of a registered class.
    TypedObject {
        /// The class name.
        class_name: String,
        /// Properties in wire order.
        properties: Vec<(String, Amf0Value)>,
    },
}

impl Amf0Value {
    /// An [`Object`](Amf0Value::Object) from `(key, value)` pairs.
    pub fn object<K: Into<String>>(props: impl IntoIterator<Item = (K, Amf0Value)>) -> Self {
        Self::Object(props.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// An [`EcmaArray`](Amf0Value::EcmaArray) from `(key, value)` pairs.
    pub fn ecma_array<K: Into<String>>(props: impl IntoIterator<Item = (K, Amf0Value)>) -> Self {
        Self::EcmaArray(props.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The string, for [`String`](Amf0Value::String) and
    /// [`XmlDocument`](Amf0Value::XmlDocument).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) | Self::XmlDocument(s) => Some(s),
            _ => None,
        }
    }

    /// The number, for [`Number`](Amf0Value::Number).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The boolean, for [`Boolean`](Amf0Value::Boolean).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The properties of an object, typed object or ECMA array.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Self::Object(p) | Self::EcmaArray(p) => Some(p),
            Self::TypedObject { properties, .. } => Some(properties),
            _ => None,
        }
    }

    /// The first property named `key` of an object, typed object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Decodes one value from the start of `data` with the default limits;
    /// returns it and the number of bytes it took.
    pub fn decode(data: &[u8]) -> Result<(Self, usize), Amf0Error> {
        let mut d = Decoder {
            data,
            pos: 0,
            limits: Amf0Limits::default(),
            values: 0,
        };
        let value = d.value(0)?;
        Ok((value, d.pos))
    }

    /// Appends the encoding of this value to `out`.
    ///
    /// Fails for an object key over 65535 bytes, a string, array or XML
    /// document over `u32::MAX` bytes or elements, or nesting deeper than
    /// [`Amf0Limits::default`]'s `max_depth`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Amf0Error> {
        encode_value(self, out, 0, Amf0Limits::default().max_depth)
    }

    /// The encoding of this value.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Amf0Error> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

impl From<&str> for Amf0Value {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl From<String> for Amf0Value {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}

impl From<f64> for Amf0Value {
    fn from(n: f64) -> Self {
        Self::Number(n)
    }
}

impl From<bool> for Amf0Value {
    fn from(b: bool) -> Self {
        Self::Boolean(b)
    }
}

/// Bounds on what one decode call accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amf0Limits {
    /// Deepest nesting of objects and arrays (the top level is depth 0).
    pub max_depth: usize,
    /// Most values in total, nested ones included.
    pub max_values: usize,
}

impl Default for Amf0Limits {
    /// Depth 32 and 65536 values: far above what any encoder sends in a
    /// command or `onMetaData`.
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_values: 65_536,
        }
    }
}

/// Why AMF0 data could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Amf0Error {
    /// The data ends inside a value.
    #[error("AMF0 {0} truncated")]
    Truncated(&'static str),
    /// A type marker this decoder does not handle (reference, AMF3 switch,
    /// movie clip, unsupported, or an unknown marker).
    #[error("unsupported AMF0 type marker 0x{0:02x}")]
    UnsupportedMarker(u8),
    /// Nesting deeper than the limit.
    #[error("AMF0 nesting deeper than {0}")]
    TooDeep(usize),
    /// More values than the limit.
    #[error("more than {0} AMF0 values")]
    TooManyValues(usize),
    /// A string, key or array too long for its length field.
    #[error("AMF0 {what} of {len} is too long to encode")]
    TooLong {
        /// What was being written.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

/// Decodes every value in `data` (e.g. an RTMP command message body) with
/// the default limits.
pub fn decode_all(data: &[u8]) -> Result<Vec<Amf0Value>, Amf0Error> {
    decode_all_with(data, Amf0Limits::default())
}

/// Decodes every value in `data` with the given limits (which apply to the
/// whole call, not to each value).
pub fn decode_all_with(data: &[u8], limits: Amf0Limits) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut d = Decoder {
        data,
        pos: 0,
        limits,
        values: 0,
    };
    let mut out = Vec::new();
    while d.pos < data.len() {
        out.push(d.value(0)?);
    }
    Ok(out)
}

/// Encodes `values` one after another.
pub fn encode_all(values: &[Amf0Value]) -> Result<Vec<u8>, Amf0Error> {
    let mut out = Vec::new();
    for v in values {
        v.encode(&mut out)?;
    }
    Ok(out)
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    limits: Amf0Limits,
    values: usize,
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Amf0Error> {
        let end = self.pos.checked_add(n).ok_or(Amf0Error::Truncated(what))?;
        let bytes = self
            .data
            .get(self.pos..end)
            .ok_or(Amf0Error::Truncated(what))?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Amf0Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Amf0Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Amf0Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self, what: &'static str) -> Result<f64, Amf0Error> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    fn string(&mut self, len: usize, what: &'static str) -> Result<String, Amf0Error> {
        Ok(String::from_utf8_lossy(self.take(len, what)?).into_owned())
    }

    fn short_string(&mut self) -> Result<String, Amf0Error> {
        let len = usize::from(self.u16("string length")?);
        self.string(len, "string")
    }

    fn long_string(&mut self) -> Result<String, Amf0Error> {
        let len = self.u32("long string length")? as usize;
        self.string(len, "long string")
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, Amf0Error> {
        self.values += 1;
        if self.values > self.limits.max_values {
            return Err(Amf0Error::TooManyValues(self.limits.max_values));
        }
        let m = self.u8("type marker")?;
        Ok(match m {
            marker::NUMBER => Amf0Value::Number(self.f64("number")?),
            marker::BOOLEAN => Amf0Value::Boolean(self.u8("boolean")? != 0),
            marker::STRING => Amf0Value::String(self.short_string()?),
            marker::LONG_STRING => Amf0Value::String(self.long_string()?),
            marker::XML_DOCUMENT => Amf0Value::XmlDocument(self.long_string()?),
            marker::NULL => Amf0Value::Null,
            marker::UNDEFINED => Amf0Value::Undefined,
            marker::OBJECT => Amf0Value::Object(self.properties(depth, None)?),
            marker::TYPED_OBJECT => {
                let class_name = self.short_string()?;
                Amf0Value::TypedObject {
                    class_name,
                    properties: self.properties(depth, None)?,
                }
            }
            marker::ECMA_ARRAY => {
                let count = self.u32("ECMA array count")?;
                Amf0Value::EcmaArray(self.properties(depth, Some(count))?)
            }
            marker::STRICT_ARRAY => {
                let count = self.u32("strict array count")? as usize;
                self.enter(depth)?;
                // Every value takes at least one byte: never reserve more
                // than what is left.
                let mut items = Vec::with_capacity(count.min(self.data.len() - self.pos));
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Amf0Value::StrictArray(items)
            }
            marker::DATE => {
                let millis = self.f64("date")?;
                let tz = self.u16("date time zone")?;
                Amf0Value::Date {
                    millis,
                    time_zone: tz as i16,
                }
            }
            marker::MOVIECLIP
            | marker::REFERENCE
            | marker::OBJECT_END
            | marker::UNSUPPORTED
            | marker::AVMPLUS => return Err(Amf0Error::UnsupportedMarker(m)),
            other => return Err(Amf0Error::UnsupportedMarker(other)),
        })
    }

    fn enter(&self, depth: usize) -> Result<(), Amf0Error> {
        if depth >= self.limits.max_depth {
            Err(Amf0Error::TooDeep(self.limits.max_depth))
        } else {
            Ok(())
        }
    }

    /// Reads `key, value` pairs up to the empty key + object-end marker.
    ///
    /// For an ECMA array (`count` given), a missing end marker is tolerated
    /// when the data ends right after `count` properties, as a few encoders
    /// omit it.
    fn properties(
        &mut self,
        depth: usize,
        count: Option<u32>,
    ) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
        self.enter(depth)?;
        let mut props = Vec::new();
        loop {
            if let Some(count) = count {
                if self.pos == self.data.len() && props.len() >= count as usize {
                    return Ok(props);
                }
            }
            let key = self.short_string()?;
            if key.is_empty() && self.data.get(self.pos) == Some(&marker::OBJECT_END) {
                self.pos += 1;
                return Ok(props);
            }
            let value = self.value(depth + 1)?;
            props.push((key, value));
        }
    }
}

fn put_u16_len(out: &mut Vec<u8>, len: usize, what: &'static str) -> Result<(), Amf0Error> {
    let l = u16::try_from(len).map_err(|_| Amf0Error::TooLong { what, len })?;
    out.extend_from_slice(&l.to_be_bytes());
    Ok(())
}

fn put_u32_len(out: &mut Vec<u8>, len: usize, what: &'static str) -> Result<(), Amf0Error> {
    let l = u32::try_from(len).map_err(|_| Amf0Error::TooLong { what, len })?;
    out.extend_from_slice(&l.to_be_bytes());
    Ok(())
}

fn encode_properties(
    props: &[(String, Amf0Value)],
    out: &mut Vec<u8>,
    depth: usize,
    max_depth: usize,
) -> Result<(), Amf0Error> {
    for (key, value) in props {
        put_u16_len(out, key.len(), "object key")?;
        out.extend_from_slice(key.as_bytes());
        encode_value(value, out, depth + 1, max_depth)?;
    }
    out.extend_from_slice(&[0, 0, marker::OBJECT_END]);
    Ok(())
}

fn encode_value(
    value: &Amf0Value,
    out: &mut Vec<u8>,
    depth: usize,
    max_depth: usize,
) -> Result<(), Amf0Error> {
    let nested = |depth: usize| {
        if depth >= max_depth {
            Err(Amf0Error::TooDeep(max_depth))
        } else {
            Ok(())
        }
    };
    match value {
        Amf0Value::Number(n) => {
            out.push(marker::NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf0Value::Boolean(b) => out.extend_from_slice(&[marker::BOOLEAN, u8::from(*b)]),
        Amf0Value::String(s) => {
            if s.len() <= usize::from(u16::MAX) {
                out.push(marker::STRING);
                put_u16_len(out, s.len(), "string")?;
            } else {
                out.push(marker::LONG_STRING);
                put_u32_len(out, s.len(), "long string")?;
            }
            out.extend_from_slice(s.as_bytes());
        }
        Amf0Value::XmlDocument(s) => {
            out.push(marker::XML_DOCUMENT);
            put_u32_len(out, s.len(), "XML document")?;
            out.extend_from_slice(s.as_bytes());
        }
        Amf0Value::Null => out.push(marker::NULL),
        Amf0Value::Undefined => out.push(marker::UNDEFINED),
        Amf0Value::Object(props) => {
            nested(depth)?;
            out.push(marker::OBJECT);
            encode_properties(props, out, depth, max_depth)?;
        }
        Amf0Value::TypedObject {
            class_name,
            properties,
        } => {
            nested(depth)?;
            out.push(marker::TYPED_OBJECT);
            put_u16_len(out, class_name.len(), "class name")?;
            out.extend_from_slice(class_name.as_bytes());
            encode_properties(properties, out, depth, max_depth)?;
        }
        Amf0Value::EcmaArray(props) => {
            nested(depth)?;
            out.push(marker::ECMA_ARRAY);
            put_u32_len(out, props.len(), "ECMA array")?;
            encode_properties(props, out, depth, max_depth)?;
        }
        Amf0Value::StrictArray(items) => {
            nested(depth)?;
            out.push(marker::STRICT_ARRAY);
            put_u32_len(out, items.len(), "strict array")?;
            for item in items {
                encode_value(item, out, depth + 1, max_depth)?;
            }
        }
        Amf0Value::Date { millis, time_zone } => {
            out.push(marker::DATE);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&time_zone.to_be_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Amf0Value) -> Amf0Value {
        let bytes = v.to_bytes().unwrap();
        let (decoded, used) = Amf0Value::decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        decoded
    }

    #[test]
    fn every_type_round_trips() {
        let values = [
            Amf0Value::Number(1935.5),
            Amf0Value::Number(-0.0),
            Amf0Value::Boolean(true),
            Amf0Value::Boolean(false),
            Amf0Value::from("live"),
            Amf0Value::from(""),
            Amf0Value::Null,
            Amf0Value::Undefined,
            Amf0Value::object([("app", Amf0Value::from("live")), ("", Amf0Value::Null)]),
            Amf0Value::ecma_array([("duration", Amf0Value::Number(0.0))]),
            Amf0Value::StrictArray(vec![Amf0Value::Number(1.0), Amf0Value::Null]),
            Amf0Value::Date {
                millis: 1.7e12,
                time_zone: 0,
            },
            Amf0Value::XmlDocument("<a/>".into()),
            Amf0Value::TypedObject {
                class_name: "Point".into(),
                properties: vec![("x".into(), Amf0Value::Number(1.0))],
            },
            Amf0Value::String("x".repeat(70_000)),
        ];
        for v in &values {
            assert_eq!(&round_trip(v), v);
        }
    }

    #[test]
    fn known_encodings() {
        assert_eq!(
            Amf0Value::from("connect").to_bytes().unwrap(),
            b"\x02\x00\x07connect"
        );
        assert_eq!(
            Amf0Value::Number(1.0).to_bytes().unwrap(),
            [0, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            Amf0Value::object([("a", Amf0Value::Null)])
                .to_bytes()
                .unwrap(),
            [3, 0, 1, b'a', 5, 0, 0, 9]
        );
        // Long string marker for > 65535 bytes.
        assert_eq!(
            Amf0Value::String("x".repeat(65_536)).to_bytes().unwrap()[..5],
            [0x0c, 0, 1, 0, 0]
        );
        // A short string sent with the long-string marker decodes the same.
        assert_eq!(
            Amf0Value::decode(&[0x0c, 0, 0, 0, 2, b'h', b'i']).unwrap(),
            (Amf0Value::from("hi"), 7)
        );
    }

    #[test]
    fn ecma_array_without_end_marker_is_tolerated_at_end() {
        let mut bytes = vec![8, 0, 0, 0, 1, 0, 1, b'a', 5];
        assert_eq!(
            decode_all(&bytes).unwrap(),
            [Amf0Value::ecma_array([("a", Amf0Value::Null)])]
        );
        // But not when a property is missing.
        bytes[4] = 2;
        assert_eq!(
            decode_all(&bytes),
            Err(Amf0Error::Truncated("string length"))
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let decoded = Amf0Value::decode(&[2, 0, 2, 0xff, b'a']).unwrap().0;
        assert_eq!(decoded.as_str(), Some("\u{fffd}a"));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Amf0Value::decode(&[]),
            Err(Amf0Error::Truncated("type marker"))
        );
        assert_eq!(
            Amf0Value::decode(&[0, 1, 2]),
            Err(Amf0Error::Truncated("number"))
        );
        assert_eq!(
            Amf0Value::decode(&[2, 0, 5, b'a']),
            Err(Amf0Error::Truncated("string"))
        );
        for m in [0x04, 0x07, 0x09, 0x0d, 0x0e, 0x11, 0x12, 0xff] {
            assert_eq!(
                Amf0Value::decode(&[m, 0, 0]),
                Err(Amf0Error::UnsupportedMarker(m))
            );
        }
        // An object that never ends.
        assert_eq!(
            Amf0Value::decode(&[3, 0, 1, b'a', 5]),
            Err(Amf0Error::Truncated("string length"))
        );
        // A huge strict array count with no data does not allocate it.
        assert_eq!(
            Amf0Value::decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 5]),
            Err(Amf0Error::Truncated("type marker"))
        );
    }

    #[test]
    fn depth_is_bounded_both_ways() {
        // 40 nested strict arrays.
        let mut bytes = Vec::new();
        for _ in 0..40 {
            bytes.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        bytes.push(5);
        assert_eq!(Amf0Value::decode(&bytes), Err(Amf0Error::TooDeep(32)));
        let limits = Amf0Limits {
            max_depth: 64,
            ..Amf0Limits::default()
        };
        assert_eq!(decode_all_with(&bytes, limits).unwrap().len(), 1);

        let mut deep = Amf0Value::Null;
        for _ in 0..40 {
            deep = Amf0Value::StrictArray(vec![deep]);
        }
        assert_eq!(deep.to_bytes(), Err(Amf0Error::TooDeep(32)));
        // Exactly at the limit works.
        let mut ok = Amf0Value::Null;
        for _ in 0..32 {
            ok = Amf0Value::object([("k", ok)]);
        }
        assert_eq!(round_trip(&ok), ok);
    }

    #[test]
    fn value_count_is_bounded() {
        let mut bytes = vec![0x0a, 0, 1, 0, 0];
        bytes.extend(std::iter::repeat_n(5, 65_536));
        assert_eq!(decode_all(&bytes), Err(Amf0Error::TooManyValues(65_536)));
    }

    #[test]
    fn key_too_long_to_encode() {
        let v = Amf0Value::object([("k".repeat(70_000), Amf0Value::Null)]);
        assert_eq!(
            v.to_bytes(),
            Err(Amf0Error::TooLong {
                what: "object key",
                len: 70_000
            })
        );
    }

    #[test]
    fn accessors() {
        let v = Amf0Value::object([
            ("n", Amf0Value::Number(2.0)),
            ("b", Amf0Value::Boolean(true)),
        ]);
        assert_eq!(v.get("n").and_then(Amf0Value::as_f64), Some(2.0));
        assert_eq!(v.get("b").and_then(Amf0Value::as_bool), Some(true));
        assert_eq!(v.get("missing"), None);
        assert_eq!(Amf0Value::Null.get("n"), None);
        assert_eq!(Amf0Value::Null.as_str(), None);
    }
}
