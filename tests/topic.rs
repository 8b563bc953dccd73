//! Topic names, topic filters and matching (MQTT 3.1.1 section 4.7).

use mqtt::protocol::topic::{matches, valid_topic_filter, valid_topic_name};

#[test]
fn valid_topic_names() {
    for name in [
        "a",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "/finance",
        "finance/",
        "/",
        "//",
        "a//b",
        "$SYS/broker/clients",
        "$",
        "ACCOUNTS",
        "Accounts payable",
        "ü/€/𝄞",
        "a$b",
    ] {
        assert!(valid_topic_name(name), "{name:?} should be a valid name");
    }
    assert!(valid_topic_name(&"x".repeat(65_535)));
}

#[test]
fn invalid_topic_names() {
    for name in [
        "",
        "+",
        "#",
        "sport/+",
        "sport/#",
        "sport/tennis#",
        "a+",
        "+/+",
        "a\0b",
        "\0",
    ] {
        assert!(
            !valid_topic_name(name),
            "{name:?} should be an invalid name"
        );
    }
    assert!(!valid_topic_name(&"x".repeat(65_536)));
}

#[test]
fn valid_topic_filters() {
    for filter in [
        "a",
        "#",
        "+",
        "/",
        "sport/tennis/player1/#",
        "sport/#",
        "sport/tennis/#",
        "sport/+",
        "sport/+/player1",
        "+/tennis/#",
        "+/+",
        "/+",
        "+/",
        "/finance",
        "$SYS/#",
        "$SYS/+/clients",
        "a//b",
        "+/+/+/#",
    ] {
        assert!(
            valid_topic_filter(filter),
            "{filter:?} should be a valid filter"
        );
    }
    assert!(valid_topic_filter(&"x".repeat(65_535)));
}

#[test]
fn invalid_topic_filters() {
    for filter in [
        "",
        "a/#/b",
        "#/a",
        "##",
        "a#",
        "#a",
        "a/#b",
        "sport/tennis#",
        "a+",
        "+a",
        "a/+b",
        "sport+",
        "++",
        "a/b+/c",
        "a\0",
        "+/\0",
    ] {
        assert!(
            !valid_topic_filter(filter),
            "{filter:?} should be an invalid filter"
        );
    }
    assert!(!valid_topic_filter(&"x".repeat(65_536)));
}

#[test]
fn multi_level_wildcard_spec_examples() {
    // 4.7.1.2: "sport/tennis/player1/#" matches all of these.
    let f = "sport/tennis/player1/#";
    assert!(matches(f, "sport/tennis/player1"));
    assert!(matches(f, "sport/tennis/player1/ranking"));
    assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
    assert!(!matches(f, "sport/tennis/player2"));
    assert!(!matches(f, "sport/tennis"));
    assert!(!matches(f, "sport/tennis/player10"));
    // "sport/#" also matches the singular "sport", its parent level.
    assert!(matches("sport/#", "sport"));
    assert!(matches("sport/#", "sport/"));
    assert!(matches("sport/#", "sport/tennis/player1"));
    assert!(!matches("sport/#", "sports"));
    assert!(!matches("sport/#", "/sport"));
}

#[test]
fn hash_alone_matches_everything_not_starting_with_dollar() {
    for topic in ["a", "/", "/finance", "a/b/c", "sport/tennis/player1", "a//"] {
        assert!(matches("#", topic), "{topic:?}");
    }
    assert!(!matches("#", "$SYS"));
    assert!(!matches("#", "$SYS/broker/load"));
}

#[test]
fn a_hash_matches_a_itself() {
    assert!(matches("a/#", "a"));
    assert!(matches("a/#", "a/b"));
    assert!(matches("a/#", "a/b/c"));
    assert!(!matches("a/#", "b"));
    assert!(!matches("a/#", "ab"));
    assert!(matches("a/b/#", "a/b"));
    assert!(!matches("a/b/#", "a"));
}

#[test]
fn single_level_wildcard_spec_examples() {
    // 4.7.1.3.
    assert!(matches("sport/tennis/+", "sport/tennis/player1"));
    assert!(matches("sport/tennis/+", "sport/tennis/player2"));
    assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
    // "sport/+" does not match "sport" but does match "sport/".
    assert!(!matches("sport/+", "sport"));
    assert!(matches("sport/+", "sport/"));
    assert!(matches("sport/+", "sport/tennis"));
    assert!(!matches("sport/+", "sport/tennis/x"));
    assert!(matches("sport/+/player1", "sport/tennis/player1"));
    assert!(!matches("sport/+/player1", "sport/tennis/player2"));
    // "+/tennis/#" mixes both.
    assert!(matches("+/tennis/#", "sport/tennis"));
    assert!(matches("+/tennis/#", "sport/tennis/player1/ranking"));
    assert!(!matches("+/tennis/#", "sport/golf"));
}

#[test]
fn plus_fills_exactly_one_level_even_an_empty_one() {
    assert!(matches("+", "a"));
    assert!(!matches("+", "a/b"));
    assert!(!matches("+", "/a"));
    assert!(!matches("+", "/"));
    assert!(matches("+/+", "/"));
    assert!(matches("+/+", "a/b"));
    assert!(!matches("+/+", "a"));
    assert!(!matches("+/+", "a/b/c"));
    assert!(matches("a/+/c", "a//c"));
    assert!(matches("+/#", "a"));
    assert!(matches("+/#", "a/b/c"));
    assert!(matches("+/+/#", "a/b"));
    assert!(!matches("+/+/#", "a"));
}

#[test]
fn leading_slash_spec_examples() {
    // "/finance" has an empty first level.
    assert!(matches("+/+", "/finance"));
    assert!(matches("/+", "/finance"));
    assert!(!matches("+", "/finance"));
    assert!(matches("/finance", "/finance"));
    assert!(!matches("finance", "/finance"));
    assert!(!matches("/finance", "finance"));
}

#[test]
fn dollar_topics_are_not_matched_by_a_leading_wildcard() {
    // 4.7.2.
    assert!(!matches("#", "$SYS/monitor/Clients"));
    assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert!(!matches("+", "$SYS"));
    assert!(matches("$SYS/#", "$SYS/"));
    assert!(matches("$SYS/#", "$SYS"));
    assert!(matches("$SYS/#", "$SYS/broker/clients"));
    assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    assert!(matches("$SYS/monitor/Clients", "$SYS/monitor/Clients"));
    // Only a leading `$` is special.
    assert!(matches("+/$SYS", "a/$SYS"));
    assert!(matches("#", "a/$b"));
}

#[test]
fn exact_matching_is_case_and_space_sensitive() {
    assert!(matches("ACCOUNTS", "ACCOUNTS"));
    assert!(!matches("ACCOUNTS", "Accounts"));
    assert!(matches("Accounts payable", "Accounts payable"));
    assert!(!matches("Accounts payable", "Accountspayable"));
    assert!(!matches("a/b", "a/b/"));
    assert!(!matches("a/b/", "a/b"));
    assert!(!matches("a/b", "a"));
    assert!(!matches("a", "a/b"));
    assert!(matches("ü/€", "ü/€"));
}

#[test]
fn invalid_arguments_never_match() {
    // Invalid filters.
    assert!(!matches("a/#/b", "a/x/b"));
    assert!(!matches("a+", "a+"));
    assert!(!matches("#a", "#a"));
    assert!(!matches("", ""));
    assert!(!matches("", "a"));
    // Invalid topic names (wildcards, empty, NUL).
    assert!(!matches("#", ""));
    assert!(!matches("+", ""));
    assert!(!matches("#", "a/+"));
    assert!(!matches("a/#", "a/#"));
    assert!(!matches("+", "+"));
    assert!(!matches("#", "a\0"));
}

#[test]
fn shared_subscription_filters() {
    for f in [
        "$share/g/a/b",
        "$share/group/#",
        "$share/g/+/x",
        "$share/g//",
    ] {
        assert!(valid_topic_filter(f), "{f}");
    }
    for f in [
        "$share/",
        "$share/g",
        "$share/g/",
        "$share//a",
        "$share/+/a",
        "$share/g#/a",
    ] {
        assert!(!valid_topic_filter(f), "{f}");
    }
    // A shared filter matches what its inner filter matches.
    assert!(matches("$share/g/a/+", "a/b"));
    assert!(matches("$share/g/#", "a/b/c"));
    assert!(!matches("$share/g/a/+", "a/b/c"));
    assert!(!matches("$share/g/a/+", "$share/g/a/b"));
    // Not a shared filter: an ordinary `$`-topic filter.
    assert!(matches("$shared/x", "$shared/x"));
}
