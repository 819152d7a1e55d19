//! Label and field selectors, as the `labelSelector` / `fieldSelector` list and watch parameters
//! carry them. Mirrors k8s.io/apimachinery `pkg/labels/selector.go` (the lexer/parser grammar,
//! requirement semantics, key/value validation and error texts), `pkg/fields/selector.go` (`=`,
//! `==`, `!=` terms with `\`-escaping of `\`, `,` and `=`), `metav1.LabelSelectorAsSelector` for
//! the structured form, and the per-resource `GetAttrs`/`ToSelectableFields` plus field-label
//! conversion functions of `pkg/registry/*/strategy.go` and `pkg/apis/*/v1/conversion.go`.

use std::fmt;

use serde_json::{Map, Value};

use crate::resources::ResourceInfo;

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// A requirement operator (`selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One `key op values` requirement; all requirements of a selector must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, validating it as upstream's `NewRequirement` does.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        let mut errs: Vec<String> = Vec::new();
        if let Err(e) = validate_label_key(key, "key") {
            errs.push(e);
        }
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    errs.push(format!(
                        "values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty",
                        go_json_list(&values)
                    ));
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    errs.push(format!(
                        "values: Invalid value: {}: exact-match compatibility requires one single value",
                        go_json_list(&values)
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    errs.push(format!(
                        "values: Invalid value: {}: values set must be empty for exists and does not exist",
                        go_json_list(&values)
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(format!(
                        "values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required",
                        go_json_list(&values)
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(format!(
                            "values[{i}]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                        ));
                    }
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            let msgs = label_value_errors(v);
            if !msgs.is_empty() {
                errs.push(format!(
                    "values[{i}][{key}]: Invalid value: {v:?}: {}",
                    msgs.join("; ")
                ));
            }
        }
        if !errs.is_empty() {
            return Err(aggregate(errs));
        }
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    fn has_value(&self, v: &str) -> bool {
        self.values.iter().any(|x| x == v)
    }

    /// Whether the label set satisfies this requirement (upstream `Requirement.Matches`).
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let got = labels.and_then(|l| l.get(&self.key)).map(label_str);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                got.is_some_and(|v| self.has_value(v))
            }
            Operator::NotIn | Operator::NotEquals => got.is_none_or(|v| !self.has_value(v)),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(v), [want]) = (got, self.values.as_slice()) else {
                    return false;
                };
                let (Ok(have), Ok(want)) = (v.parse::<i64>(), want.parse::<i64>()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

fn label_str(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        let mut vals = self.values.clone();
        vals.sort();
        f.write_str(&vals.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector. The default value selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// `labels.Nothing()`: the structured form of a nil selector matches no object.
    nothing: bool,
}

impl LabelSelector {
    /// Selects every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Selects no object (what a nil structured selector means upstream).
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses the string form (`labels.Parse`), with upstream's grammar and error texts.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Parser {
            items: lex_all(s),
            pos: 0,
        };
        let mut requirements = p.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Builds a selector from requirements (sorted by key as `Selector.Add` does).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector does not restrict the selection (`Selector.Empty`).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True for the selector that matches nothing.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// For watch-index fast paths: the single value required for `key` (upstream
    /// `RequiresExactMatch`: `=`, `==`, or `in` with one value, on the first requirement for key).
    pub fn required_value(&self, key: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == key)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// Converts a structured `metav1.LabelSelector` (`matchLabels` + `matchExpressions`) as
/// `metav1.LabelSelectorAsSelector` does: `null` selects nothing, `{}` selects everything.
pub fn label_selector_from_api(sel: &Value) -> Result<LabelSelector, String> {
    let obj = match sel {
        Value::Null => return Ok(LabelSelector::nothing()),
        Value::Object(o) => o,
        _ => return Err("label selector must be an object".to_string()),
    };
    let match_labels = obj.get("matchLabels").and_then(Value::as_object);
    let exprs = obj.get("matchExpressions").and_then(Value::as_array);
    let mut reqs = Vec::new();
    for (k, v) in match_labels.into_iter().flatten() {
        reqs.push(Requirement::new(
            k,
            Operator::Equals,
            vec![label_str(v).to_string()],
        )?);
    }
    for e in exprs.into_iter().flatten() {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let op_s = e.get("operator").and_then(Value::as_str).unwrap_or("");
        let op = match op_s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => return Err(format!("{other:?} is not a valid label selector operator")),
        };
        let values: Vec<String> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|v| label_str(v).to_string()).collect())
            .unwrap_or_default();
        reqs.push(Requirement::new(key, op, values)?);
    }
    Ok(LabelSelector::from_requirements(reqs))
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, or `<none>`.
pub fn format_labels(labels: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<String> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", label_str(v)))
        .collect();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs.sort();
    pairs.join(",")
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when empty or nil, `<error>` when
/// it does not convert.
pub fn format_label_selector(sel: Option<&Value>) -> String {
    match label_selector_from_api(sel.unwrap_or(&Value::Null)) {
        Ok(s) => {
            let out = s.to_string();
            if out.is_empty() {
                "<none>".to_string()
            } else {
                out
            }
        }
        Err(_) => "<error>".to_string(),
    }
}

// --- lexer ------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn literal_token(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    /// The byte at the cursor, or 0 at the end (a NUL byte also ends the input, as upstream).
    fn read(&mut self) -> u8 {
        if self.pos < self.s.len() {
            let b = self.s[self.pos];
            self.pos += 1;
            b
        } else {
            0
        }
    }

    fn unread(&mut self) {
        self.pos -= 1;
    }

    fn lex(&mut self) -> (Token, String) {
        let mut c = self.read();
        while is_whitespace(c) {
            c = self.read();
        }
        if c == 0 {
            return (Token::EndOfString, String::new());
        }
        self.unread();
        if is_special(c) {
            self.scan_special()
        } else {
            self.scan_id_or_keyword()
        }
    }

    fn scan_id_or_keyword(&mut self) -> (Token, String) {
        let mut buf = Vec::new();
        loop {
            let c = self.read();
            if c == 0 {
                break;
            }
            if is_special(c) || is_whitespace(c) {
                self.unread();
                break;
            }
            buf.push(c);
        }
        let s = String::from_utf8_lossy(&buf).into_owned();
        match literal_token(&s) {
            Some(t) => (t, s),
            None => (Token::Identifier, s),
        }
    }

    fn scan_special(&mut self) -> (Token, String) {
        let mut last: Option<(Token, String)> = None;
        let mut buf = Vec::new();
        loop {
            let c = self.read();
            if c == 0 {
                break;
            }
            if is_special(c) {
                buf.push(c);
                let s = String::from_utf8_lossy(&buf).into_owned();
                if let Some(t) = literal_token(&s) {
                    last = Some((t, s));
                } else if last.is_some() {
                    self.unread();
                    break;
                }
            } else {
                self.unread();
                break;
            }
        }
        match last {
            Some(x) => x,
            None => (
                Token::Error,
                format!(
                    "error expected: keyword found '{}'",
                    String::from_utf8_lossy(&buf)
                ),
            ),
        }
    }
}

fn lex_all(s: &str) -> Vec<(Token, String)> {
    let mut l = Lexer {
        s: s.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        let (t, lit) = l.lex();
        out.push((t, lit));
        if t == Token::EndOfString {
            return out;
        }
    }
}

// --- parser -----------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    pos: usize,
}

impl Parser {
    fn item(&self, i: usize, ctx: Ctx) -> (Token, String) {
        let (t, lit) = self.items[i.min(self.items.len() - 1)].clone();
        let t = match (ctx, t) {
            (Ctx::Values, Token::In | Token::NotIn) => Token::Identifier,
            _ => t,
        };
        (t, lit)
    }

    fn lookahead(&self, ctx: Ctx) -> (Token, String) {
        self.item(self.pos, ctx)
    }

    fn consume(&mut self, ctx: Ctx) -> (Token, String) {
        let r = self.item(self.pos, ctx);
        self.pos += 1;
        r
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (t, lit) = self.lookahead(Ctx::Values);
            match t {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.consume(Ctx::Values);
                    match t {
                        Token::EndOfString => return Ok(reqs),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Ctx::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Token::EndOfString => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Operator::Exists | Operator::DoesNotExist)) = op {
            return Requirement::new(&key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, op, values)
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut op = None;
        let (mut t, mut lit) = self.consume(Ctx::Values);
        if t == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (t, lit) = self.consume(Ctx::Values);
        }
        if t != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        validate_label_key(&lit, "<nil>")?;
        let (next, _) = self.lookahead(Ctx::Values);
        if (next == Token::EndOfString || next == Token::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (t, lit) = self.consume(Ctx::KeyAndOperator);
        Ok(match t {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ))
            }
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (t, lit) = self.consume(Ctx::Values);
        if t != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (t, lit) = self.lookahead(Ctx::Values);
        match t {
            Token::Identifier | Token::Comma => {
                let s = self.parse_identifiers_list()?;
                let (t, _) = self.consume(Ctx::Values);
                if t != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Token::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// Sorted, de-duplicated like upstream's `sets.String`.
    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut s: Vec<String> = Vec::new();
        let insert = |s: &mut Vec<String>, v: String| {
            if let Err(i) = s.binary_search(&v) {
                s.insert(i, v);
            }
        };
        loop {
            let (t, lit) = self.consume(Ctx::Values);
            match t {
                Token::Identifier => {
                    insert(&mut s, lit);
                    let (t2, l2) = self.lookahead(Ctx::Values);
                    match t2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(s),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if s.is_empty() {
                        insert(&mut s, String::new());
                    }
                    let (t2, _) = self.lookahead(Ctx::Values);
                    if t2 == Token::ClosedPar {
                        insert(&mut s, String::new());
                        return Ok(s);
                    }
                    if t2 == Token::Comma {
                        self.consume(Ctx::Values);
                        insert(&mut s, String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (t, _) = self.lookahead(Ctx::Values);
        if t == Token::EndOfString || t == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (t, lit) = self.consume(Ctx::Values);
        if t == Token::Identifier {
            Ok(vec![lit])
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

// --- validation (k8s.io/apimachinery/pkg/util/validation) ---------------------------------------

const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{e}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|l| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

/// `validation.IsQualifiedName`.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errs.push("prefix part must be no more than 253 characters".to_string());
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!(
                        "prefix part {}",
                        regex_error(
                            DNS1123_SUBDOMAIN_ERR,
                            DNS1123_SUBDOMAIN_FMT,
                            &["example.com"]
                        )
                    ));
                }
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            )]
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `validation.IsValidLabelValue`.
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            &format!("({QUALIFIED_NAME_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `validateLabelKey` rendered as a `field.Error` at `path`.
fn validate_label_key(key: &str, path: &str) -> Result<(), String> {
    let errs = qualified_name_errors(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{path}: Invalid value: {key:?}: {}",
            errs.join("; ")
        ))
    }
}

fn go_json_list(v: &[String]) -> String {
    if v.is_empty() {
        // A nil Go slice marshals as null, an empty one as [].
        return "[]".to_string();
    }
    serde_json::to_string(v).unwrap_or_default()
}

/// `utilerrors.NewAggregate(...).Error()`: one message alone, several in brackets.
fn aggregate(errs: Vec<String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    if seen.len() == 1 {
        seen.remove(0)
    } else {
        format!("[{}]", seen.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

/// One `field=value` / `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub value: String,
    /// `!=`
    pub negated: bool,
}

/// A parsed field selector; the default value selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// The selectable fields of one object (upstream `fields.Set`). Missing fields read as "".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(pub Vec<(&'static str, String)>);

impl FieldSet {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == field)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, field: &'static str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == field) {
            Some(e) => e.1 = value,
            None => self.0.push((field, value)),
        }
    }
}

impl FieldSelector {
    /// Parses the string form (`fields.ParseSelector`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(part) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let value = unescape_value(rhs)?;
            terms.push(FieldTerm {
                field: lhs.to_string(),
                value,
                negated: op == "!=",
            });
        }
        Ok(FieldSelector { terms })
    }

    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    pub fn matches(&self, fields: &FieldSet) -> bool {
        self.terms.iter().all(|t| {
            let got = fields.get(&t.field).unwrap_or("");
            (got == t.value) != t.negated
        })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value an `=`/`==` term requires for `field` (e.g. `spec.nodeName` for kubelet watches).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| !t.negated && t.field == field)
            .map(|t| t.value.as_str())
    }

    /// Checks every field is one upstream's field-label conversion accepts for this resource.
    pub fn validate_for(&self, info: &ResourceInfo) -> Result<(), String> {
        let (allowed, style) = supported_fields(info);
        for t in &self.terms {
            if !allowed.contains(&t.field.as_str()) {
                return Err(match style {
                    ErrStyle::Default => format!(
                        "{:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                        t.field
                    ),
                    ErrStyle::NotSupported => format!("field label not supported: {}", t.field),
                    ErrStyle::Job => {
                        format!("field label {:?} not supported for batchv1.Job", t.field)
                    }
                    ErrStyle::StatefulSet => format!(
                        "field label not supported for appsv1.StatefulSet: {}",
                        t.field
                    ),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let op = if t.negated { "!=" } else { "=" };
                format!("{}{op}{}", t.field, escape_value(&t.value))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// `fields.EscapeValue`.
pub fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

fn unescape_value(s: &str) -> Result<String, String> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ))
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                // Upstream formats the rune with %v, i.e. as its number.
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], op, rhs));
            }
        }
    }
    None
}

enum ErrStyle {
    Default,
    NotSupported,
    Job,
    StatefulSet,
}

const META: &[&str] = &["metadata.name", "metadata.namespace"];

fn supported_fields(info: &ResourceInfo) -> (&'static [&'static str], ErrStyle) {
    use ErrStyle::*;
    match (info.group, info.plural) {
        ("", "pods") => (
            &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
                "spec.host",
            ],
            NotSupported,
        ),
        ("", "nodes") => (&["metadata.name", "spec.unschedulable"], NotSupported),
        ("", "namespaces") => (&["metadata.name", "status.phase"], NotSupported),
        ("", "secrets") => (
            &["metadata.name", "metadata.namespace", "type"],
            NotSupported,
        ),
        ("", "services") => (
            &[
                "metadata.name",
                "metadata.namespace",
                "spec.clusterIP",
                "spec.type",
            ],
            NotSupported,
        ),
        ("", "replicationcontrollers") | ("apps", "replicasets") => (
            &["metadata.name", "metadata.namespace", "status.replicas"],
            NotSupported,
        ),
        ("", "persistentvolumes") => (&["metadata.name"], NotSupported),
        ("", "events") => (
            &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
                "metadata.namespace",
                "metadata.name",
            ],
            NotSupported,
        ),
        ("events.k8s.io", "events") => (
            &[
                "reason",
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "regarding.apiVersion",
                "regarding.resourceVersion",
                "regarding.fieldPath",
                "reportingController",
                "type",
                "metadata.namespace",
                "metadata.name",
            ],
            NotSupported,
        ),
        ("batch", "jobs") => (
            &["metadata.name", "metadata.namespace", "status.successful"],
            Job,
        ),
        ("apps", "statefulsets") => (
            &["metadata.name", "metadata.namespace", "status.successful"],
            StatefulSet,
        ),
        _ => (META, Default),
    }
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

fn int(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return 0,
        }
    }
    cur.as_i64().unwrap_or(0)
}

fn boolean(v: &Value, path: &[&str]) -> bool {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return false,
        }
    }
    cur.as_bool().unwrap_or(false)
}

/// The selectable fields of an object, as upstream's `GetAttrs`/`ToSelectableFields` compute them
/// for the resource (the object is in the resource's own wire form).
pub fn field_set(info: &ResourceInfo, obj: &Value) -> FieldSet {
    let mut f = FieldSet::default();
    f.set("metadata.name", s(obj, &["metadata", "name"]));
    if info.namespaced {
        f.set("metadata.namespace", s(obj, &["metadata", "namespace"]));
    }
    match (info.group, info.plural) {
        ("", "pods") => {
            let node = s(obj, &["spec", "nodeName"]);
            f.set("spec.nodeName", node);
            f.set("spec.host", node);
            f.set("spec.restartPolicy", s(obj, &["spec", "restartPolicy"]));
            f.set("spec.schedulerName", s(obj, &["spec", "schedulerName"]));
            f.set(
                "spec.serviceAccountName",
                s(obj, &["spec", "serviceAccountName"]),
            );
            f.set(
                "spec.hostNetwork",
                boolean(obj, &["spec", "hostNetwork"]).to_string(),
            );
            f.set("status.phase", s(obj, &["status", "phase"]));
            let ip = obj
                .pointer("/status/podIPs/0/ip")
                .and_then(Value::as_str)
                .unwrap_or("");
            f.set("status.podIP", ip);
            f.set(
                "status.nominatedNodeName",
                s(obj, &["status", "nominatedNodeName"]),
            );
        }
        ("", "nodes") => {
            f.set(
                "spec.unschedulable",
                boolean(obj, &["spec", "unschedulable"]).to_string(),
            );
        }
        ("", "namespaces") => {
            f.set("status.phase", s(obj, &["status", "phase"]));
            // Legacy field upstream still sets.
            f.set("name", s(obj, &["metadata", "name"]));
        }
        ("", "secrets") => f.set("type", s(obj, &["type"])),
        ("", "services") => {
            f.set("spec.clusterIP", s(obj, &["spec", "clusterIP"]));
            f.set("spec.type", s(obj, &["spec", "type"]));
        }
        ("", "replicationcontrollers") | ("apps", "replicasets") => {
            f.set(
                "status.replicas",
                int(obj, &["status", "replicas"]).to_string(),
            );
        }
        ("batch", "jobs") => {
            f.set(
                "status.successful",
                int(obj, &["status", "succeeded"]).to_string(),
            );
        }
        ("", "events") => {
            for (field, key) in [
                ("involvedObject.kind", "kind"),
                ("involvedObject.namespace", "namespace"),
                ("involvedObject.name", "name"),
                ("involvedObject.uid", "uid"),
                ("involvedObject.apiVersion", "apiVersion"),
                ("involvedObject.resourceVersion", "resourceVersion"),
                ("involvedObject.fieldPath", "fieldPath"),
            ] {
                f.set(field, s(obj, &["involvedObject", key]));
            }
            f.set("reason", s(obj, &["reason"]));
            let rc = s(obj, &["reportingComponent"]);
            f.set("reportingComponent", rc);
            let mut source = s(obj, &["source", "component"]);
            if source.is_empty() {
                source = rc;
            }
            f.set("source", source);
            f.set("type", s(obj, &["type"]));
        }
        ("events.k8s.io", "events") => {
            for (field, key) in [
                ("regarding.kind", "kind"),
                ("regarding.namespace", "namespace"),
                ("regarding.name", "name"),
                ("regarding.uid", "uid"),
                ("regarding.apiVersion", "apiVersion"),
                ("regarding.resourceVersion", "resourceVersion"),
                ("regarding.fieldPath", "fieldPath"),
            ] {
                f.set(field, s(obj, &["regarding", key]));
            }
            f.set("reason", s(obj, &["reason"]));
            f.set("reportingController", s(obj, &["reportingController"]));
            f.set("type", s(obj, &["type"]));
        }
        _ => {}
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn label_selector_matching() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "5"}));
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("n>4", true),
            ("n>5", false),
            ("n<6", true),
            ("app>1", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("app=web, tier in (front, back)", true),
            ("x in (in,notin)", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(Some(&l)), *want, "{sel}");
        }
        assert!(LabelSelector::parse("app=web").unwrap().matches(Some(&l)));
        assert!(!LabelSelector::parse("app").unwrap().matches(None));
        assert!(LabelSelector::parse("!app").unwrap().matches(None));
    }

    #[test]
    fn label_selector_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("=a", "found '=', expected: !, identifier, or 'end of string'"),
            ("a,", "found '', expected: identifier after ','"),
            ("a in b", "unable to parse requirement: found 'b' expected: '('"),
            ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
            (
                "a in (b c)",
                "unable to parse requirement: found 'c', expected: ',' or ')'",
            ),
            (
                "x>a",
                "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer",
            ),
            (
                "a!",
                "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "-a=b",
                "unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ),
            (
                "a=b c",
                "found 'c', expected: ',' or 'end of string'",
            ),
            (
                "a=-b",
                "unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ),
        ];
        for (sel, want) in cases {
            assert_eq!(
                LabelSelector::parse(sel).unwrap_err(),
                *want,
                "selector {sel:?}"
            );
        }
        let e = LabelSelector::parse("Example.com/a=b").unwrap_err();
        assert!(
            e.contains("prefix part a lowercase RFC 1123 subdomain"),
            "{e}"
        );
    }

    #[test]
    fn label_selector_string_and_parse_details() {
        let cases: &[(&str, &str)] = &[
            ("b=2,a=1", "a=1,b=2"),
            (
                "x in (foo,,baz),y,z notin ()",
                "x in (,baz,foo),y,z notin ()",
            ),
            ("a in (c,b,c)", "a in (b,c)"),
            ("!a,b!=c,d==e", "!a,b!=c,d==e"),
            ("a=", "a="),
            ("k8s.io/app=x", "k8s.io/app=x"),
            ("value in (in)", "value in (in)"),
        ];
        for (sel, want) in cases {
            assert_eq!(LabelSelector::parse(sel).unwrap().to_string(), *want);
        }
        let s = LabelSelector::parse("app=web,tier in (a),x in (a,b)").unwrap();
        assert_eq!(s.required_value("app"), Some("web"));
        assert_eq!(s.required_value("tier"), Some("a"));
        assert_eq!(s.required_value("x"), None);
        assert_eq!(s.required_value("nope"), None);
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(LabelSelector::parse(" ").unwrap().is_empty());
    }

    #[test]
    fn structured_label_selectors() {
        let l = labels(json!({"app": "web", "env": "prod"}));
        let cases: &[(Value, bool, &str)] = &[
            (json!({"matchLabels": {"app": "web"}}), true, "app=web"),
            (
                json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]}),
                true,
                "env in (dev,prod)",
            ),
            (
                json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}),
                false,
                "env notin (prod)",
            ),
            (
                json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}),
                true,
                "!x",
            ),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "Exists"}]}),
                true,
                "app=web,env",
            ),
            (json!({}), true, ""),
            (Value::Null, false, ""),
        ];
        for (sel, want, text) in cases {
            let s = label_selector_from_api(sel).unwrap();
            assert_eq!(s.matches(Some(&l)), *want, "{sel}");
            assert_eq!(s.to_string(), *text);
        }
        assert_eq!(
            label_selector_from_api(
                &json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})
            )
            .unwrap_err(),
            "\"Gt\" is not a valid label selector operator"
        );
        assert!(label_selector_from_api(
            &json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})
        )
        .unwrap_err()
        .contains("values set can't be empty"));
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(
            format_labels(Some(&labels(json!({"b": "2", "a": "1"})))),
            "a=1,b=2"
        );
        assert_eq!(format_labels(None), "<none>");
    }

    #[test]
    fn field_selector_parse_and_match() {
        let mut fs = FieldSet::default();
        fs.set("metadata.name", "a,b=c");
        fs.set("status.phase", "Running");
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("status.phase=Running", true),
            ("status.phase==Running", true),
            ("status.phase!=Running", false),
            ("metadata.name=a\\,b\\=c", true),
            ("metadata.name=a\\,b\\=c,status.phase=Running", true),
            ("spec.nodeName=", true),
            ("spec.nodeName=x", false),
            ("spec.nodeName!=x", true),
        ];
        for (sel, want) in cases {
            let s = FieldSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&fs), *want, "{sel}");
        }
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").unwrap();
        assert_eq!(s.required_value("spec.nodeName"), Some("n1"));
        assert_eq!(s.required_value("status.phase"), None);
        assert_eq!(s.to_string(), "spec.nodeName=n1,status.phase!=Failed");
        assert_eq!(
            FieldSelector::parse("metadata.name=a\\,b")
                .unwrap()
                .to_string(),
            "metadata.name=a\\,b"
        );
    }

    #[test]
    fn field_selector_errors() {
        let cases: &[(&str, &str)] = &[
            ("abc", "invalid selector: 'abc'; can't understand 'abc'"),
            (
                "a=b=c",
                "invalid field selector: unescaped character in value: 61",
            ),
            (
                "a=b\\x",
                "invalid field selector: invalid escape sequence: \\x",
            ),
            (
                "a=b\\",
                "invalid field selector: invalid escape sequence: \\",
            ),
        ];
        for (sel, want) in cases {
            assert_eq!(FieldSelector::parse(sel).unwrap_err(), *want, "{sel}");
        }
    }

    #[test]
    fn field_validation_per_resource() {
        let pods = find("", "v1", "pods").unwrap();
        let nodes = find("", "v1", "nodes").unwrap();
        let deploy = find("apps", "v1", "deployments").unwrap();
        let jobs = find("batch", "v1", "jobs").unwrap();
        let cases: &[(&ResourceInfo, &str, Result<(), &str>)] = &[
            (pods, "spec.nodeName=a,status.phase=Running", Ok(())),
            (pods, "spec.foo=a", Err("field label not supported: spec.foo")),
            (nodes, "spec.unschedulable=true", Ok(())),
            (
                nodes,
                "metadata.namespace=x",
                Err("field label not supported: metadata.namespace"),
            ),
            (deploy, "metadata.name=x", Ok(())),
            (
                deploy,
                "foo.bar=baz",
                Err("\"foo.bar\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""),
            ),
            (jobs, "status.successful=1", Ok(())),
            (
                jobs,
                "x=1",
                Err("field label \"x\" not supported for batchv1.Job"),
            ),
        ];
        for (info, sel, want) in cases {
            let got = FieldSelector::parse(sel).unwrap().validate_for(info);
            assert_eq!(got, want.map_err(str::to_string), "{} {sel}", info.plural);
        }
    }

    #[test]
    fn field_sets() {
        let pods = find("", "v1", "pods").unwrap();
        let pod = json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]}
        });
        let f = field_set(pods, &pod);
        for (k, v) in [
            ("metadata.name", "p"),
            ("metadata.namespace", "ns"),
            ("spec.nodeName", "n1"),
            ("spec.restartPolicy", "Always"),
            ("spec.schedulerName", "default-scheduler"),
            ("spec.serviceAccountName", "default"),
            ("spec.hostNetwork", "false"),
            ("status.phase", "Running"),
            ("status.podIP", "10.0.0.1"),
            ("status.nominatedNodeName", ""),
        ] {
            assert_eq!(f.get(k), Some(v), "{k}");
        }
        let ev = find("", "v1", "events").unwrap();
        let e = json!({"metadata": {"name": "e", "namespace": "ns"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "ns", "uid": "u"},
            "reason": "Started", "type": "Normal", "reportingComponent": "kubelet"});
        let f = field_set(ev, &e);
        assert_eq!(f.get("involvedObject.kind"), Some("Pod"));
        assert_eq!(f.get("source"), Some("kubelet"));
        assert!(FieldSelector::parse("involvedObject.name=p,type=Normal")
            .unwrap()
            .matches(&f));
        let ev2 = find("events.k8s.io", "v1", "events").unwrap();
        let e2 = json!({"metadata": {"name": "e"}, "regarding": {"kind": "Node", "name": "n"},
            "reportingController": "kubelet", "reason": "R", "type": "Warning"});
        let f = field_set(ev2, &e2);
        assert_eq!(f.get("regarding.kind"), Some("Node"));
        assert_eq!(f.get("reportingController"), Some("kubelet"));
        let ns = find("", "v1", "namespaces").unwrap();
        let f = field_set(
            ns,
            &json!({"metadata": {"name": "x"}, "status": {"phase": "Active"}}),
        );
        assert_eq!(f.get("status.phase"), Some("Active"));
        assert_eq!(f.get("metadata.namespace"), None);
        let rs = find("apps", "v1", "replicasets").unwrap();
        let f = field_set(
            rs,
            &json!({"metadata": {"name": "x"}, "status": {"replicas": 3}}),
        );
        assert_eq!(f.get("status.replicas"), Some("3"));
        let sec = find("", "v1", "secrets").unwrap();
        let f = field_set(sec, &json!({"metadata": {"name": "x"}, "type": "Opaque"}));
        assert_eq!(f.get("type"), Some("Opaque"));
        let nodes = find("", "v1", "nodes").unwrap();
        let f = field_set(
            nodes,
            &json!({"metadata": {"name": "x"}, "spec": {"unschedulable": true}}),
        );
        assert_eq!(f.get("spec.unschedulable"), Some("true"));
        let svc = find("", "v1", "services").unwrap();
        let f = field_set(
            svc,
            &json!({"metadata": {"name": "x"}, "spec": {"clusterIP": "10.96.0.1", "type": "ClusterIP"}}),
        );
        assert_eq!(f.get("spec.clusterIP"), Some("10.96.0.1"));
        assert_eq!(f.get("spec.type"), Some("ClusterIP"));
        let jobs = find("batch", "v1", "jobs").unwrap();
        let f = field_set(
            jobs,
            &json!({"metadata": {"name": "x"}, "status": {"succeeded": 1}}),
        );
        assert_eq!(f.get("status.successful"), Some("1"));
    }
}
