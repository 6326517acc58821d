//! A push-based splitter that finds CloudTrail records in a byte stream without parsing them.
//!
//! It tracks only strings and bracket nesting, so it runs near memory speed and keeps at most one
//! record buffered: a multi-GB `{"Records":[...]}` file streams through in constant memory. Each
//! record it yields is validated and parsed later by the flattener. Accepted layouts:
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
            if self.in_string {
                match memchr2(b'"', b'\\', &self.buf[self.pos..]) {
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
                    let open = if byte == b'}' { b'{' } else { b'[' };
                    match self.stack.pop() {
                        Some(o) if o == open => {}
                        _ => {
                            return Err(self.error_at(self.pos, &format!("unexpected `{}`", byte as char)));
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn split_chunked(input: &[u8], chunk: usize) -> Result<Vec<(String, Container, u64)>, SplitError> {
        let mut out = Vec::new();
        let mut splitter = Splitter::new();
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
}
