//! A push-based splitter that finds CloudTrail records in a byte stream without parsing them.
//!
//! It tracks only strings and bracket nesting, so it runs near memory speed and keeps at most one
//! record buffered: a multi-GB `{"Records":[...]}` file streams through in constant memory. Each
//! record it yields is validated and parsed later by the flattener. Inside a record, where keys,
//! commas and scalars cannot change what is yielded, it only looks for quotes, backslashes and
//! brackets (`Splitter::skip_inside`). Accepted layouts:
//!
//! * `{"Records":[ {...}, {...} ]}`: S3 delivery files (the wrapper is dropped, each element is a record)
//! * `[ {...}, {...} ]`: a JSON array of events or envelopes
//! * `{...}` once, or many times back to back or one per line (NDJSON)
//!
//! The splitter knows nothing about I/O: feed it chunks with [`Splitter::push`] and call
//! [`Splitter::finish`] at end of input.
//!
//! ```
//! use keytrail::read::split::Splitter;
//! let mut found = Vec::new();
//! let mut splitter = Splitter::new();
//! splitter.push(br#"{"Records":[{"eventName":"Decrypt"},{"even"#, &mut |item| found.push(item.bytes.to_vec())).unwrap();
//! splitter.push(br#"tName":"Encrypt"}]}"#, &mut |item| found.push(item.bytes.to_vec())).unwrap();
//! splitter.finish().unwrap();
//! assert_eq!(found, vec![br#"{"eventName":"Decrypt"}"#.to_vec(), br#"{"eventName":"Encrypt"}"#.to_vec()]);
//! ```

use memchr::memchr2;

/// Where an item was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// An element of a top-level `{"Records": [...]}` array.
    Records,
    /// An element of a top-level JSON array.
    Array,
    /// A top-level JSON object (a single document, or one of several back to back / NDJSON).
    TopLevel,
}

/// One complete JSON value found by the splitter.
#[derive(Debug)]
pub struct RawItem<'a> {
    pub bytes: &'a [u8],
    /// Byte offset of the item's first byte in the (decompressed) input.
    pub offset: u64,
    pub container: Container,
}

/// The input is not a sequence of JSON objects/arrays the splitter can follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at byte {offset}")]
pub struct SplitError {
    pub offset: u64,
    pub message: String,
}

/// See the [module documentation](self).
#[derive(Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Absolute input offset of `buf[0]`.
    base: u64,
    pos: usize,
    stack: Vec<u8>,
    in_string: bool,
    /// Stack depth at which items start (1: top-level array, 2: Records array).
    item_depth: Option<usize>,
    item_start: Option<usize>,
    item_is_scalar: bool,
    /// Start of a top-level object that may turn out to be a single record.
    top_start: Option<usize>,
    /// In a top-level object: the next string at depth 1 is a key.
    expect_key: bool,
    key_start: Option<usize>,
    last_key_is_records: bool,
    awaiting_records_value: bool,
    bom_checked: bool,
    /// Tests compare the fast scan inside records with the general one.
    #[cfg(test)]
    general_scan_only: bool,
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// The bytes of a record that has started but not ended (and the offset of its first
    /// byte): what is left of it when the input fails or ends early.
    pub fn pending(&self) -> Option<(u64, &[u8])> {
        let start = self.item_start.or(self.top_start)?;
        Some((self.base + start as u64, &self.buf[start..]))
    }

    /// Total bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Feeds the next chunk; `sink` is called for every item completed by it.
    pub fn push(&mut self, chunk: &[u8], sink: &mut dyn FnMut(RawItem<'_>)) -> Result<(), SplitError> {
        self.buf.extend_from_slice(chunk);
        if !self.bom_checked {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Ok(());
            }
            if self.buf.starts_with(BOM) {
                self.buf.drain(..BOM.len());
                self.base += BOM.len() as u64;
            }
            self.bom_checked = true;
        }
        self.scan(sink)?;
        self.compact();
        Ok(())
    }

    /// Declares end of input; fails if a value is still open.
    pub fn finish(&self) -> Result<(), SplitError> {
        if self.item_is_scalar && self.item_start.is_some() {
            // A scalar element cannot end the input: it would still need a closing `]`.
            return Err(self.error_at(self.buf.len(), "unexpected end of input inside an array"));
        }
        if self.in_string || !self.stack.is_empty() {
            let start = self.item_start.or(self.top_start).unwrap_or(self.buf.len());
            let what = if self.item_start.is_some() || self.top_start.is_some() {
                format!(
                    "unexpected end of input: the record starting at byte {} is truncated",
                    self.base + start as u64
                )
            } else if self.item_depth == Some(2) {
                "unexpected end of input after the last complete record: the Records array is not \
                 closed (a truncated file: events after this point are missing)"
                    .to_string()
            } else if self.item_depth == Some(1) {
                "unexpected end of input after the last complete record: the array is not closed \
                 (a truncated file: events after this point are missing)"
                    .to_string()
            } else {
                "unexpected end of input: a container is not closed".to_string()
            };
            return Err(self.error_at(self.buf.len(), &what));
        }
        Ok(())
    }

    fn error_at(&self, pos: usize, message: &str) -> SplitError {
        SplitError {
            offset: self.base + pos as u64,
            message: message.to_string(),
        }
    }

    /// Drops bytes nothing refers to any more.
    fn compact(&mut self) {
        let keep = [self.item_start, self.top_start, self.key_start]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.pos)
            .min(self.pos);
        if keep > 0 {
            self.buf.drain(..keep);
            self.base += keep as u64;
            self.pos -= keep;
            for p in [&mut self.item_start, &mut self.top_start, &mut self.key_start]
                .into_iter()
                .flatten()
            {
                *p -= keep;
            }
        }
    }

    fn emit(&self, start: usize, end: usize, container: Container, sink: &mut dyn FnMut(RawItem<'_>)) {
        sink(RawItem {
            bytes: &self.buf[start..end],
            offset: self.base + start as u64,
            container,
        });
    }

    fn item_container(&self) -> Container {
        if self.item_depth == Some(2) {
            Container::Records
        } else {
            Container::Array
        }
    }

    /// Called when a value (not a closing bracket) starts at `self.pos`.
    fn value_starts(&mut self, scalar: bool) -> Result<(), SplitError> {
        let depth = self.stack.len();
        if depth == 0 {
            if scalar {
                return Err(self.error_at(self.pos, "expected a JSON object or array"));
            }
            return Ok(());
        }
        if Some(depth) == self.item_depth && self.item_start.is_none() {
            self.item_start = Some(self.pos);
            self.item_is_scalar = scalar;
        }
        Ok(())
    }

    /// Pops the container the closing bracket `byte` at `pos` ends; fails if it is not the one
    /// open. Inlined into both scans: called once per bracket, it was 0.2 % of a conversion's
    /// instructions as a call.
    #[inline]
    fn close(&mut self, byte: u8, pos: usize) -> Result<(), SplitError> {
        let open = if byte == b'}' { b'{' } else { b'[' };
        if self.stack.pop() == Some(open) {
            return Ok(());
        }
        Err(self.unexpected(byte, pos))
    }

    #[cold]
    fn unexpected(&self, byte: u8, pos: usize) -> SplitError {
        self.error_at(pos, &format!("unexpected `{}`", byte as char))
    }

    fn end_scalar_item(&mut self, end: usize, sink: &mut dyn FnMut(RawItem<'_>)) {
        if self.item_is_scalar && Some(self.stack.len()) == self.item_depth {
            if let Some(start) = self.item_start.take() {
                self.emit(start, end, self.item_container(), sink);
            }
            self.item_is_scalar = false;
        }
    }

    fn scan(&mut self, sink: &mut dyn FnMut(RawItem<'_>)) -> Result<(), SplitError> {
        let len = self.buf.len();
        while self.pos < len {
            if !self.in_string && self.stack.len() > self.item_depth.unwrap_or(1) {
                self.skip_inside()?;
                if self.pos >= len {
                    break;
                }
            }
            if self.in_string {
                match find_quote_or_backslash(&self.buf[self.pos..]) {
                    None => {
                        self.pos = len;
                        break;
                    }
                    Some(i) => {
                        let p = self.pos + i;
                        if self.buf[p] == b'\\' {
                            if p + 1 >= len {
                                // The escaped byte is in the next chunk.
                                self.pos = p;
                                return Ok(());
                            }
                            self.pos = p + 2;
                            continue;
                        }
                        self.in_string = false;
                        if let Some(key_start) = self.key_start.take() {
                            self.last_key_is_records = &self.buf[key_start..p] == b"Records";
                        }
                        self.pos = p + 1;
                        continue;
                    }
                }
            }
            let byte = self.buf[self.pos];
            match byte {
                b' ' | b'\n' | b'\r' | b'\t' => self.end_scalar_item(self.pos, sink),
                b'"' => {
                    if self.awaiting_records_value {
                        self.awaiting_records_value = false;
                    }
                    self.value_starts(false)?;
                    if self.item_start == Some(self.pos) {
                        self.item_is_scalar = true;
                    }
                    self.in_string = true;
                    if self.stack.len() == 1 && self.top_start.is_some() && self.expect_key {
                        self.expect_key = false;
                        self.key_start = Some(self.pos + 1);
                    }
                }
                b'{' | b'[' => {
                    if self.stack.is_empty() {
                        if byte == b'{' {
                            self.top_start = Some(self.pos);
                            self.expect_key = true;
                        } else {
                            self.item_depth = Some(1);
                        }
                    } else {
                        if self.awaiting_records_value && byte == b'[' && self.stack.len() == 1 {
                            // `{"Records": [` — stream the elements, forget the wrapper.
                            self.item_depth = Some(2);
                            self.top_start = None;
                        }
                        self.value_starts(false)?;
                    }
                    self.awaiting_records_value = false;
                    self.stack.push(byte);
                }
                b'}' | b']' => {
                    self.end_scalar_item(self.pos, sink);
                    self.close(byte, self.pos)?;
                    let depth = self.stack.len();
                    if Some(depth) == self.item_depth {
                        if let Some(start) = self.item_start.take() {
                            self.emit(start, self.pos + 1, self.item_container(), sink);
                        }
                    } else if self.item_depth == Some(depth + 1) && byte == b']' {
                        // The Records array or the top-level array closed.
                        self.item_depth = None;
                    }
                    if depth == 0 {
                        if let Some(start) = self.top_start.take() {
                            self.emit(start, self.pos + 1, Container::TopLevel, sink);
                        }
                        self.expect_key = false;
                    }
                }
                b',' => {
                    self.end_scalar_item(self.pos, sink);
                    if self.stack.len() == 1 && self.stack[0] == b'{' {
                        self.expect_key = true;
                    }
                }
                b':' => {
                    if self.stack.len() == 1 && self.stack[0] == b'{' {
                        self.awaiting_records_value = self.last_key_is_records;
                        self.last_key_is_records = false;
                    }
                }
                _ => {
                    self.awaiting_records_value = false;
                    if self.item_start.is_none() {
                        self.value_starts(true)?;
                    }
                }
            }
            self.pos += 1;
        }
        Ok(())
    }
}

impl Splitter {
    /// Scans below the level whose values are items (or below a top-level object's members),
    /// where keys, commas, colons and scalars change nothing the splitter yields: only strings
    /// and brackets are followed, in a loop that touches each byte once without the general
    /// scan's per-byte state. Stops at the bracket that closes back to that level (the general
    /// scan emits the item), at the end of the buffer, or inside a string cut by it.
    fn skip_inside(&mut self) -> Result<(), SplitError> {
        #[cfg(test)]
        if self.general_scan_only {
            return Ok(());
        }
        let floor = self.item_depth.unwrap_or(1);
        let len = self.buf.len();
        let mut pos = self.pos;
        while pos < len {
            let byte = self.buf[pos];
            match byte {
                b'"' => match find_string_end(&self.buf[pos + 1..]) {
                    StringEnd::At(end) => pos += end + 2,
                    StringEnd::Cut(at) => {
                        // The general scan resumes inside the string, at its last backslash or
                        // at the end of the buffer.
                        self.in_string = true;
                        self.pos = pos + 1 + at;
                        return Ok(());
                    }
                },
                b'{' | b'[' => {
                    self.stack.push(byte);
                    pos += 1;
                }
                b'}' | b']' => {
                    if self.stack.len() == floor + 1 {
                        break;
                    }
                    if let Err(error) = self.close(byte, pos) {
                        self.pos = pos;
                        return Err(error);
                    }
                    pos += 1;
                }
                _ => pos += 1,
            }
        }
        self.pos = pos;
        Ok(())
    }
}

/// Where a string's closing quote is, in the bytes after its opening quote.
enum StringEnd {
    /// The closing quote's position.
    At(usize),
    /// The buffer ends inside the string: at its last backslash (whose escaped byte may be in
    /// the next chunk) or at the buffer's end.
    Cut(usize),
}

fn find_string_end(bytes: &[u8]) -> StringEnd {
    let mut at = 0;
    loop {
        match find_quote_or_backslash(&bytes[at..]) {
            None => return StringEnd::Cut(bytes.len()),
            Some(i) if bytes[at + i] == b'"' => return StringEnd::At(at + i),
            Some(i) if at + i + 1 >= bytes.len() => return StringEnd::Cut(at + i),
            Some(i) => at += i + 2,
        }
    }
}

/// The first `"` or `\` in `bytes`. Most strings of a record are short (keys, names, ids):
/// eight bytes are tested at a time in a register first, and `memchr2`, faster on long text but
/// with a fixed cost per call that short strings notice, takes over after 32 bytes.
#[inline]
fn find_quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    // A byte of `x` is zero where the high bit of this is set; a false positive can only follow a
    // true zero (the borrow), so the lowest set bit is exact.
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut at = 0;
    while at < 32
        && let Some(word) = bytes.get(at..at + 8)
    {
        let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let found = zero_bytes(word ^ QUOTES) | zero_bytes(word ^ BACKSLASHES);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    memchr2(b'"', b'\\', &bytes[at..]).map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_chunked(input: &[u8], chunk: usize) -> Result<Vec<(String, Container, u64)>, SplitError> {
        split_with(input, chunk, false)
    }

    fn split_with(
        input: &[u8],
        chunk: usize,
        general_scan_only: bool,
    ) -> Result<Vec<(String, Container, u64)>, SplitError> {
        let mut out = Vec::new();
        let mut splitter = Splitter {
            general_scan_only,
            ..Splitter::default()
        };
        for piece in input.chunks(chunk.max(1)) {
            splitter.push(piece, &mut |item| {
                out.push((
                    String::from_utf8_lossy(item.bytes).into_owned(),
                    item.container,
                    item.offset,
                ))
            })?;
        }
        splitter.finish()?;
        Ok(out)
    }

    fn every_chunking(input: &str) -> Vec<(String, Container, u64)> {
        let whole = split_chunked(input.as_bytes(), input.len()).unwrap();
        for size in 1..input.len().min(40) {
            assert_eq!(
                split_chunked(input.as_bytes(), size).unwrap(),
                whole,
                "chunk size {size}"
            );
        }
        whole
    }

    #[test]
    fn records_wrapper_yields_elements_with_offsets() {
        let input = r#"{"Records":[{"a":"x}\"{"},{"b":[1,{"c":2}]}]}"#;
        let items = every_chunking(input);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].0, r#"{"a":"x}\"{"}"#);
        assert_eq!(items[0].1, Container::Records);
        assert_eq!(items[0].2, 12);
        assert_eq!(items[1].0, r#"{"b":[1,{"c":2}]}"#);
    }

    #[test]
    fn single_object_array_and_ndjson() {
        let single = every_chunking("\u{feff}{\"eventName\":\"X\",\"Recordsx\":[1]}\n");
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].1, Container::TopLevel);

        let array = every_chunking(" [ {\"a\":1} , {\"b\":2}, \"str\", 7 ] ");
        let kinds: Vec<_> = array.iter().map(|i| (i.0.as_str(), i.1)).collect();
        assert_eq!(
            kinds,
            vec![
                ("{\"a\":1}", Container::Array),
                ("{\"b\":2}", Container::Array),
                ("\"str\"", Container::Array),
                ("7", Container::Array)
            ]
        );

        let ndjson = every_chunking("{\"a\":1}\n{\"b\":2}\r\n\n{\"c\":[]}{\"d\":{}}");
        assert_eq!(ndjson.len(), 4);
        assert!(ndjson.iter().all(|i| i.1 == Container::TopLevel));
    }

    #[test]
    fn records_key_only_counts_at_top_level() {
        let nested = every_chunking(r#"{"detail":{"Records":[{"x":1}]},"Records":[{"y":2}]}"#);
        assert_eq!(nested.len(), 1);
        assert_eq!(nested[0].0, r#"{"y":2}"#);
    }

    #[test]
    fn errors_name_the_offset() {
        let cut_between_records = split_chunked(br#"{"Records":[{"a":1},"#, 5).unwrap_err();
        assert!(
            cut_between_records
                .message
                .contains("the Records array is not closed"),
            "{cut_between_records}"
        );
        let cut_array = split_chunked(br#"[{"a":1}"#, 3).unwrap_err();
        assert!(
            cut_array.message.contains("the array is not closed"),
            "{cut_array}"
        );
        let truncated = split_chunked(br#"{"Records":[{"a":1},{"b":"#, 7).unwrap_err();
        assert!(truncated.message.contains("starting at byte 20"), "{truncated}");
        let mismatched = split_chunked(br#"[{"a":1]]"#, 3).unwrap_err();
        assert_eq!(mismatched.offset, 7);
        let text = split_chunked(b"hello", 2).unwrap_err();
        assert_eq!(text.offset, 0);
    }

    #[test]
    fn quote_or_backslash_is_found_at_every_position() {
        for len in 0..80 {
            for at in 0..len {
                for stop in [b'"', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = stop;
                    // A byte just above a match must not hide it (the borrow of the zero test).
                    if at + 1 < len {
                        bytes[at + 1] = 0x80;
                    }
                    assert_eq!(find_quote_or_backslash(&bytes), Some(at), "{len} {at}");
                }
            }
            assert_eq!(find_quote_or_backslash(&vec![b'a'; len]), None);
        }
    }

    use proptest::prelude::*;

    /// JSON values whose strings hold what the scan must not be fooled by.
    fn value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let text = proptest::string::string_regex(r#"[a-z"\\{}\[\],:é \n]{0,40}"#).expect("regex");
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-zA-Z\"{]{1,8}", inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    fn object() -> impl Strategy<Value = serde_json::Value> {
        proptest::collection::vec(("[a-zA-Z]{1,8}", value()), 0..6)
            .prop_map(|members| serde_json::Value::Object(members.into_iter().collect()))
    }

    /// An input in one of the layouts, pretty or compact, and the text of each record in it.
    fn input() -> impl Strategy<Value = (String, Vec<String>)> {
        (
            proptest::collection::vec(object(), 0..5),
            0..3usize,
            any::<bool>(),
        )
            .prop_map(|(records, layout, pretty)| {
                let text = |v: &serde_json::Value| {
                    if pretty {
                        serde_json::to_string_pretty(v).expect("json")
                    } else {
                        v.to_string()
                    }
                };
                let items: Vec<String> = records.iter().map(text).collect();
                let input = match layout {
                    0 => format!(
                        r#"{{"before":{{"Records":[1]}},"Records":[{}],"after":[{{}}]}}"#,
                        items.join(",\n")
                    ),
                    1 => format!("[{}]", items.join(" , ")),
                    _ => items.join("\n"),
                };
                (input, items)
            })
    }

    proptest! {
        /// The scan inside records finds what the general scan finds, in every chunking, also in
        /// broken input (the same error at the same byte).
        #[test]
        fn the_scan_inside_records_agrees_with_the_general_scan(
            (input, items) in input(),
            chunk in 1..64usize,
            damage in proptest::option::of((any::<prop::sample::Index>(), prop::sample::select(&b"{}[]\"\\x"[..]))),
        ) {
            let mut bytes = input.into_bytes();
            if let Some((at, byte)) = damage && !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let fast = split_with(&bytes, chunk, false);
            let general = split_with(&bytes, chunk, true);
            prop_assert_eq!(&fast, &general);
            if damage.is_none() && !items.is_empty() {
                let found: Vec<String> = fast.expect("valid input splits").into_iter().map(|i| i.0).collect();
                prop_assert_eq!(found, items);
            }
        }
    }
}
