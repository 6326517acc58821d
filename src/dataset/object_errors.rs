//! How object-store errors are shown: one line naming S3's own code and message, or the
//! innermost cause, instead of the HTTP client's nested chain.

/// One line a person can act on. object_store nests the HTTP client's errors and repeats the
/// whole S3 XML error body at each level; S3's own `Code: Message` says it best, else the
/// innermost cause (connection refused, DNS, TLS) does.
pub(crate) fn one_line(error: &object_store::Error) -> String {
    let mut chain = vec![error.to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    let all = chain.join(" ");
    if let Some(code) = xml_text(&all, "Code") {
        return match xml_text(&all, "Message") {
            Some(message) => format!("{code}: {message}"),
            None => code.to_string(),
        };
    }
    let text = match error {
        object_store::Error::NotFound { .. } => "not found".to_string(),
        _ => {
            let top = chain[0].strip_prefix("Generic S3 error: ").unwrap_or(&chain[0]);
            // Timing and retry counts are noise next to the cause.
            let top = top.split(" - ").next().unwrap_or_default();
            let top = top.split(" in ").next().unwrap_or_default();
            let root = chain.last().map(String::as_str).unwrap_or_default();
            let root = root.rsplit(" - ").next().unwrap_or_default();
            if chain.len() > 1 && !top.contains(root) {
                format!("{top}: {root}")
            } else {
                top.to_string()
            }
        }
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn xml_text<'t>(text: &'t str, tag: &str) -> Option<&'t str> {
    let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = text[start..].find(&format!("</{tag}>"))? + start;
    Some(text[start..end].trim())
}
