//! Name and label syntax checks with upstream's messages, mirroring
//! k8s.io/apimachinery/pkg/util/validation (`IsDNS1123Label`, `IsDNS1123Subdomain`,
//! `IsDNS1035Label`, `IsQualifiedName`, `IsValidLabelValue`, `IsValidPortName`,
//! `IsConfigMapKey`) and apimachinery's `path.IsValidPathSegmentName`. Each returns the list of
//! problems (empty when valid), as upstream does.

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

/// `validation.RegexError`.
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let ex: Vec<String> = examples.iter().map(|e| format!("'{e}'")).collect();
    format!(
        "{msg} (e.g. {}, regex used for validation is '{fmt}')",
        ex.join(", or ")
    )
}

/// `validation.MaxLenError`.
pub fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn label_shape(s: &str, first: fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && first(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !label_shape(s, is_lower_alnum) {
        errs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// `s.split('.')` gives only non-empty parts of `label_shape(_, is_lower_alnum)`, in one pass.
fn subdomain_shape(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !is_lower_alnum(b[0]) || !is_lower_alnum(b[b.len() - 1]) {
        return false;
    }
    // Each '.' sits between two alphanumerics: no empty part, and every part starts and ends
    // with one (the first and last were checked above).
    b.iter().enumerate().all(|(i, &c)| {
        if c == b'.' {
            is_lower_alnum(b[i - 1]) && is_lower_alnum(b[i + 1])
        } else {
            is_lower_alnum(c) || c == b'-'
        }
    })
}

pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !subdomain_shape(s) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

pub fn is_dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !label_shape(s, |c| c.is_ascii_lowercase()) {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

fn qualified_shape(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

const QUALIFIED_NAME_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

pub fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let slash = s.bytes().position(|b| b == b'/');
    let split = slash.map(|i| (&s[..i], &s[i + 1..]));
    let name = match split {
        None => s,
        Some((prefix, name)) if !name.bytes().any(|b| b == b'/') => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for m in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            name
        }
        Some(_) => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !qualified_shape(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

pub fn is_valid_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !s.is_empty() && !qualified_shape(s) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `IsValidPortNum`.
pub fn is_valid_port_num(p: i64) -> Vec<String> {
    if (1..=65535).contains(&p) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_string()]
    }
}

/// `IsValidPortName` (an IANA_SVC_NAME).
pub fn is_valid_port_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.is_empty() || s.len() > 15 {
        errs.push(max_len_error(15));
    }
    if !s.bytes().all(is_lower_alnum_or_dash) {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

fn is_lower_alnum_or_dash(c: u8) -> bool {
    is_lower_alnum(c) || c == b'-'
}

/// `IsConfigMapKey`: keys of ConfigMap and Secret data.
pub fn is_config_map_key(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
    {
        errs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if s == "." {
        errs.push("must not be '.'".to_string());
    } else if s == ".." {
        errs.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// `path.IsValidPathSegmentName` (RBAC object names).
pub fn is_path_segment_name(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    let mut errs = Vec::new();
    for bad in ["/", "%"] {
        if s.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

/// The name validator upstream applies to a kind's `metadata.name`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    PathSegment,
}

impl NameRule {
    /// Checks a name; `prefix` is true for `generateName`, whose trailing dashes are allowed.
    pub fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let name = if prefix {
            // maskTrailingDash: a trailing '-' is replaced so the prefix checks as a name.
            if name.len() > 1 && name.ends_with('-') {
                format!("{}a", &name[..name.len() - 1])
            } else {
                name.to_string()
            }
        } else {
            name.to_string()
        };
        match self {
            NameRule::Subdomain => is_dns1123_subdomain(&name),
            NameRule::Label => is_dns1123_label(&name),
            NameRule::Dns1035 => is_dns1035_label(&name),
            NameRule::PathSegment => is_path_segment_name(&name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        type Check = fn(&str) -> Vec<String>;
        let cases: &[(Check, &str, bool)] = &[
            (is_dns1123_label, "my-name", true),
            (is_dns1123_label, "123-abc", true),
            (is_dns1123_label, "My-name", false),
            (is_dns1123_label, "a.b", false),
            (is_dns1123_label, "-a", false),
            (is_dns1123_label, &"a".repeat(64), false),
            (is_dns1123_subdomain, "example.com", true),
            (is_dns1123_subdomain, "a..b", false),
            (is_dns1123_subdomain, "Example", false),
            (is_dns1123_subdomain, "", false),
            (is_dns1035_label, "abc-123", true),
            (is_dns1035_label, "1abc", false),
            (is_qualified_name, "app", true),
            (is_qualified_name, "example.com/My_Name", true),
            (is_qualified_name, "/x", false),
            (is_qualified_name, "a/b/c", false),
            (is_qualified_name, "-x", false),
            (is_qualified_name, "Example.com/x", false),
            (is_valid_label_value, "", true),
            (is_valid_label_value, "v1.2_3", true),
            (is_valid_label_value, "a b", false),
            (is_valid_label_value, &"a".repeat(64), false),
            (is_config_map_key, "key.name", true),
            (is_config_map_key, "KEY_NAME", true),
            (is_config_map_key, "a/b", false),
            (is_config_map_key, "..a", false),
            (is_config_map_key, ".", false),
            (is_valid_port_name, "http", true),
            (is_valid_port_name, "http-alt", true),
            (is_valid_port_name, "123", false),
            (is_valid_port_name, "a--b", false),
            (is_valid_port_name, "abcdefghijklmnop", false),
            (is_path_segment_name, "system:admin", true),
            (is_path_segment_name, "a/b", false),
            (is_path_segment_name, "..", false),
        ];
        for (f, s, ok) in cases {
            assert_eq!(f(s).is_empty(), *ok, "{s:?}: {:?}", f(s));
        }
    }

    #[test]
    fn messages_match_upstream() {
        assert_eq!(
            is_dns1123_subdomain("A")[0],
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert_eq!(
            is_dns1123_label("A")[0],
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        );
        assert!(NameRule::Subdomain.check("web-", true).is_empty());
        assert!(!NameRule::Subdomain.check("web-", false).is_empty());
    }
}
