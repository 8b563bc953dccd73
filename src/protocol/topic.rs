//! Topic names, topic filters and matching (MQTT 3.1.1 section 4.7).

/// A topic name a PUBLISH may carry: 1..=65535 bytes, no wildcard, no U+0000.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= u16::MAX as usize
        && !topic.bytes().any(|b| b == b'+' || b == b'#' || b == 0)
}

/// A topic filter a SUBSCRIBE or UNSUBSCRIBE may carry: `+` fills a whole level,
/// `#` fills a whole level and is the last one. A shared subscription
/// (`$share/<name>/<filter>`, MQTT 5.0 section 4.8.2) needs a share name
/// without wildcards and a filter after it.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > u16::MAX as usize || filter.as_bytes().contains(&0) {
        return false;
    }
    if filter.starts_with("$share/") && shared_filter(filter).is_none() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        match level {
            "#" if is_last => {}
            "+" => {}
            _ if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// The filter of a shared subscription `$share/<name>/<filter>` (`None` when
/// `filter` is not one, or is malformed: an empty or wildcard share name, no
/// filter after it).
pub fn shared_filter(filter: &str) -> Option<&str> {
    let rest = filter.strip_prefix("$share/")?;
    let (name, inner) = rest.split_once('/')?;
    let name_ok = !name.is_empty() && !name.contains(['+', '#']);
    (name_ok && !inner.is_empty()).then_some(inner)
}

/// Whether `topic` (a valid topic name) matches `filter` (a valid topic filter).
/// Topics starting with `$` are not matched by a filter starting with a wildcard.
/// A shared subscription's filter matches what its inner filter matches.
pub fn matches(filter: &str, topic: &str) -> bool {
    if !valid_topic_filter(filter) || !valid_topic_name(topic) {
        return false;
    }
    let filter = shared_filter(filter).unwrap_or(filter);
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // `#` also matches the parent level: "a/#" matches "a".
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}
