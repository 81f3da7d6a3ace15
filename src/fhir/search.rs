//! The search parameters each FHIR resource type answers to besides its subject (`_id`,
//! `_lastUpdated`, `status`, …), parsed once from a search's parameters into tests, then matched
//! against the resources the search would list, as FHIR defines them: a parameter repeated is
//! an AND, values separated by commas an OR.
//!
//! The tests read the FHIR resources themselves (the element each parameter's FHIRPath names),
//! so a search selects by exactly what the client is shown. Pure functions, no HTTP or SQL.

use chrono::{DateTime, Days, Duration, FixedOffset, Months, NaiveDate, NaiveTime, TimeZone, Utc};
use serde_json::Value;
use std::cmp::Ordering;

/// Where a parameter's values are in a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    /// `Resource.id`.
    Id,
    /// `Resource.meta.lastUpdated`.
    LastUpdated,
    /// A `code` element, its code system fixed by the element's binding.
    Code {
        field: &'static str,
        system: &'static str,
    },
    /// A list of CodeableConcepts; any of their codings.
    Concepts(&'static str),
    /// A `dateTime` element.
    DateTime(&'static str),
}

/// A FHIR search parameter type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Token,
    Date,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Token => "token",
            ParamType::Date => "date",
        }
    }
}

/// A search parameter besides the subject: its name, type, the SearchParameter that defines it
/// and how this server reads it.
#[derive(Debug)]
pub struct ParamDef {
    pub name: &'static str,
    pub kind: ParamType,
    pub definition: &'static str,
    pub documentation: &'static str,
    element: Element,
}

/// `_id`, every type's.
const ID: ParamDef = ParamDef {
    name: "_id",
    kind: ParamType::Token,
    definition: "http://hl7.org/fhir/SearchParameter/Resource-id",
    documentation: "The resource id; several separated by commas.",
    element: Element::Id,
};

/// `_lastUpdated`, every type's.
const LAST_UPDATED: ParamDef = ParamDef {
    name: "_lastUpdated",
    kind: ParamType::Date,
    definition: "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
    documentation: "When the record last changed (meta.lastUpdated), with a prefix: eq (the default), ne, gt, lt, ge, le, sa, eb. Repeat it for a range, e.g. _lastUpdated=ge2026-01-01&_lastUpdated=lt2026-02-01.",
    element: Element::LastUpdated,
};

/// CarePlan: `_id`, `_lastUpdated`, `status`, `category`.
pub const CARE_PLAN: &[ParamDef] = &[
    ID,
    LAST_UPDATED,
    ParamDef {
        name: "status",
        kind: ParamType::Token,
        definition: "http://hl7.org/fhir/SearchParameter/CarePlan-status",
        documentation: "The CarePlan's status (request-status); plans and protocols are active.",
        element: Element::Code {
            field: "status",
            system: "http://hl7.org/fhir/request-status",
        },
    },
    ParamDef {
        name: "category",
        kind: ParamType::Token,
        definition: "http://hl7.org/fhir/SearchParameter/CarePlan-category",
        documentation: "A category: https://telemental.org/fhir/CodeSystem/care-plan-kind|telemental-preference-plan or |telemental-safety-protocol for one kind; SNOMED CT 718347000 (Mental health care plan) for both.",
        element: Element::Concepts("category"),
    },
];

/// ServiceRequest: `_id`, `_lastUpdated`, `status`, `priority`, `authored`.
pub const SERVICE_REQUEST: &[ParamDef] = &[
    ID,
    LAST_UPDATED,
    ParamDef {
        name: "status",
        kind: ParamType::Token,
        definition: "http://hl7.org/fhir/SearchParameter/ServiceRequest-status",
        documentation: "The referral's status as request-status: active (requested, accepted or scheduled), completed or revoked (cancelled).",
        element: Element::Code {
            field: "status",
            system: "http://hl7.org/fhir/request-status",
        },
    },
    ParamDef {
        name: "priority",
        kind: ParamType::Token,
        definition: "http://hl7.org/fhir/SearchParameter/ServiceRequest-priority",
        documentation: "The referral's priority (request-priority): routine, urgent or stat (an emergency).",
        element: Element::Code {
            field: "priority",
            system: "http://hl7.org/fhir/request-priority",
        },
    },
    ParamDef {
        name: "authored",
        kind: ParamType::Date,
        definition: "http://hl7.org/fhir/SearchParameter/ServiceRequest-authored",
        documentation: "When the referral was made (authoredOn), with a prefix as for _lastUpdated.",
        element: Element::DateTime("authoredOn"),
    },
];

impl ParamDef {
    /// Whether `_sort` may name it: `_id` and the dates.
    fn sortable(&self) -> bool {
        self.kind == ParamType::Date || self.element == Element::Id
    }
}

/// Whether `name` (a parameter's name, without a modifier) is one of `defs`.
pub fn known(defs: &[ParamDef], name: &str) -> bool {
    defs.iter().any(|d| d.name == name)
}

/// A date prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
}

/// A span of time `[start, end)`: a date's or an instant's, to its precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// One date value of a search: a prefix and the span its date stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTest {
    prefix: Prefix,
    span: Span,
}

impl Span {
    /// Where the span starts.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }
}

impl DateTest {
    /// FHIR's comparison of a search's span with a resource's (both to their precision).
    fn matches(&self, t: Span) -> bool {
        let s = self.span;
        let within = s.start <= t.start && t.end <= s.end;
        match self.prefix {
            Prefix::Eq => within,
            Prefix::Ne => !within,
            Prefix::Gt => t.end > s.end,
            Prefix::Lt => t.start < s.start,
            Prefix::Ge => t.end > s.end || within,
            Prefix::Le => t.start < s.start || within,
            Prefix::Sa => t.start >= s.end,
            Prefix::Eb => t.end <= s.start,
        }
    }
}

/// A token value: `code`, `system|code`, `|code` (no system) or `system|` (any code).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    /// `None`: any system; `Some("")`: none.
    system: Option<String>,
    code: Option<String>,
}

impl Token {
    fn matches(&self, system: Option<&str>, code: &str) -> bool {
        let system_ok = match self.system.as_deref() {
            None => true,
            Some("") => system.is_none(),
            Some(s) => system == Some(s),
        };
        system_ok && self.code.as_deref().is_none_or(|c| c == code)
    }
}

/// One value of a parameter (the alternatives of a comma-separated list).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Alternative {
    Id(String),
    Token(Token),
    Date(DateTest),
}

/// One occurrence of a parameter: the resource matches when any alternative does.
#[derive(Debug)]
struct Test {
    def: &'static ParamDef,
    alternatives: Vec<Alternative>,
}

/// The tests of a search's parameters besides its subject and its paging, and those
/// parameters as given (for the Bundle's links).
#[derive(Debug, Default)]
pub struct Filters {
    tests: Vec<Test>,
    given: Vec<(String, String)>,
}

impl Filters {
    /// The tests of `params` (name, value, decoded) that are among `defs`; others are left to
    /// the caller. A parameter with an empty value is ignored, as FHIR says. Errors name the
    /// parameter and say what it takes.
    pub fn parse(defs: &'static [ParamDef], params: &[(String, String)]) -> Result<Self, String> {
        let mut filters = Filters::default();
        for (name, value) in params {
            let (base, modifier) = match name.split_once(':') {
                Some((b, m)) => (b, Some(m)),
                None => (name.as_str(), None),
            };
            let Some(def) = defs.iter().find(|d| d.name == base) else {
                continue;
            };
            if let Some(m) = modifier {
                return Err(format!(
                    "{base}:{m}: this server takes no modifier on {base} (give {base}=value)"
                ));
            }
            if value.is_empty() {
                continue;
            }
            let alternatives = split_unescaped(value, ',')
                .into_iter()
                .map(|v| alternative(def, &v))
                .collect::<Result<Vec<_>, _>>()?;
            filters.tests.push(Test { def, alternatives });
            filters.given.push((name.clone(), value.clone()));
        }
        Ok(filters)
    }

    /// Whether `resource` passes every test.
    pub fn matches(&self, resource: &Value) -> bool {
        self.tests.iter().all(|t| test_matches(t, resource))
    }

    /// The parameters the tests came from, as given, for a Bundle's links.
    pub fn given(&self) -> &[(String, String)] {
        &self.given
    }
}

/// The order a search lists its matches in (`_sort`): keys separated by commas, each `_id` or
/// a date parameter of the type, descending when prefixed by `-`; the records' own order
/// (oldest first) breaks ties and stands when no `_sort` is given.
#[derive(Debug, Default)]
pub struct Sort {
    keys: Vec<(&'static ParamDef, bool)>,
    given: Option<String>,
}

impl Sort {
    /// The `_sort` of a search on a type with `defs`; an empty value is no sort.
    pub fn parse(defs: &'static [ParamDef], value: Option<&str>) -> Result<Sort, String> {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Ok(Sort::default());
        };
        let sortable: Vec<&str> = defs
            .iter()
            .filter(|d| d.sortable())
            .map(|d| d.name)
            .collect();
        let mut keys = Vec::new();
        for key in value.split(',') {
            let (name, descending) = match key.strip_prefix('-') {
                Some(n) => (n, true),
                None => (key, false),
            };
            let def = defs
                .iter()
                .find(|d| d.name == name && d.sortable())
                .ok_or_else(|| {
                    format!(
                        "_sort: '{key}' is not a sort key here; sort by {} (a '-' before one for newest or last first)",
                        sortable.join(", ")
                    )
                })?;
            if keys
                .iter()
                .any(|(d, _): &(&ParamDef, bool)| d.name == def.name)
            {
                return Err(format!("_sort: {name} is given twice"));
            }
            keys.push((def, descending));
        }
        Ok(Sort {
            keys,
            given: Some(value.to_string()),
        })
    }

    /// `items` (a record and its resource) in this order; stable.
    pub fn apply<T>(&self, items: &mut [(T, Value)]) {
        if self.keys.is_empty() {
            return;
        }
        items.sort_by(|(_, a), (_, b)| {
            self.keys
                .iter()
                .map(|(def, descending)| {
                    let o = compare(def.element, a, b);
                    if *descending {
                        o.reverse()
                    } else {
                        o
                    }
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
    }

    /// `_sort` as given, for a Bundle's links.
    pub fn given(&self) -> Option<&str> {
        self.given.as_deref()
    }
}

/// Two resources compared on an element: ids as text, dates by when their span starts.
fn compare(element: Element, a: &Value, b: &Value) -> Ordering {
    let date = |v: &Value| v.as_str().and_then(|s| span(s).ok()).map(|s| s.start);
    match element {
        Element::Id => a["id"].as_str().cmp(&b["id"].as_str()),
        Element::LastUpdated => {
            date(&a["meta"]["lastUpdated"]).cmp(&date(&b["meta"]["lastUpdated"]))
        }
        Element::DateTime(field) => date(&a[field]).cmp(&date(&b[field])),
        Element::Code { .. } | Element::Concepts(_) => Ordering::Equal,
    }
}

fn alternative(def: &ParamDef, value: &str) -> Result<Alternative, String> {
    match (def.kind, def.element) {
        (_, Element::Id) => Ok(Alternative::Id(unescape(value))),
        (ParamType::Token, _) => token(def.name, value).map(Alternative::Token),
        (ParamType::Date, _) => date_test(value)
            .map(Alternative::Date)
            .map_err(|m| format!("{}: {m}", def.name)),
    }
}

fn test_matches(test: &Test, resource: &Value) -> bool {
    match test.def.element {
        Element::Id => {
            let id = resource["id"].as_str();
            test.alternatives
                .iter()
                .any(|a| matches!(a, Alternative::Id(want) if Some(want.as_str()) == id))
        }
        Element::LastUpdated => date_matches(test, &resource["meta"]["lastUpdated"]),
        Element::DateTime(field) => date_matches(test, &resource[field]),
        Element::Code { field, system } => match resource[field].as_str() {
            Some(code) => token_matches(test, &[(Some(system), code)]),
            None => false,
        },
        Element::Concepts(field) => {
            let codings: Vec<(Option<&str>, &str)> = resource[field]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|concept| concept["coding"].as_array().into_iter().flatten())
                .filter_map(|c| Some((c["system"].as_str(), c["code"].as_str()?)))
                .collect();
            token_matches(test, &codings)
        }
    }
}

fn token_matches(test: &Test, codings: &[(Option<&str>, &str)]) -> bool {
    test.alternatives.iter().any(
        |a| matches!(a, Alternative::Token(t) if codings.iter().any(|(s, c)| t.matches(*s, c))),
    )
}

fn date_matches(test: &Test, element: &Value) -> bool {
    let Some(span) = element.as_str().and_then(|s| span(s).ok()) else {
        return false;
    };
    test.alternatives
        .iter()
        .any(|a| matches!(a, Alternative::Date(d) if d.matches(span)))
}

fn token(name: &str, value: &str) -> Result<Token, String> {
    let parts: Vec<String> = split_unescaped(value, '|')
        .iter()
        .map(|p| unescape(p))
        .collect();
    let t = match parts.as_slice() {
        [code] => Token {
            system: None,
            code: Some(code.clone()),
        },
        [system, code] => Token {
            system: Some(system.clone()),
            code: (!code.is_empty()).then(|| code.clone()),
        },
        _ => {
            return Err(format!(
                "{name}: '{value}' is not a token (code, system|code, |code or system|)"
            ))
        }
    };
    let no_code = t.code.is_none() && t.system.as_deref().is_none_or(str::is_empty);
    if t.code.as_deref().is_some_and(str::is_empty) || no_code {
        return Err(format!(
            "{name}: '{value}' is not a token (code, system|code, |code or system|)"
        ));
    }
    Ok(t)
}

/// `value` split at each `sep` not escaped by a backslash (the parts still escaped).
fn split_unescaped(value: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let last = parts.last_mut().expect("one part at least");
                last.push('\\');
                if let Some(next) = chars.next() {
                    last.push(next);
                }
            }
            c if c == sep => parts.push(String::new()),
            c => parts.last_mut().expect("one part at least").push(c),
        }
    }
    parts
}

/// FHIR's search escapes: `\,`, `\|`, `\$` and `\\` stand for the character.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ (',' | '|' | '$' | '\\'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

const DATE_FORMS: &str = "a date is YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.sss]] with Z or an offset (+hh:mm written %2B in a URL)";

fn date_test(value: &str) -> Result<DateTest, String> {
    let (prefix, rest) = match value.get(..2) {
        Some("eq") => (Prefix::Eq, &value[2..]),
        Some("ne") => (Prefix::Ne, &value[2..]),
        Some("gt") => (Prefix::Gt, &value[2..]),
        Some("lt") => (Prefix::Lt, &value[2..]),
        Some("ge") => (Prefix::Ge, &value[2..]),
        Some("le") => (Prefix::Le, &value[2..]),
        Some("sa") => (Prefix::Sa, &value[2..]),
        Some("eb") => (Prefix::Eb, &value[2..]),
        Some("ap") => {
            return Err("the prefix ap (approximately) is not supported here; use ge and le".into())
        }
        _ => (Prefix::Eq, value),
    };
    let span = span(rest).map_err(|m| format!("'{value}': {m}"))?;
    Ok(DateTest { prefix, span })
}

/// The span a FHIR date or dateTime stands for, to its precision (a year, a month, a day, a
/// minute, a second or a fraction); a time without a zone is read as UTC.
pub fn span(s: &str) -> Result<Span, String> {
    let bad = || DATE_FORMS.to_string();
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let nums: Vec<&str> = date.split('-').collect();
    let all_digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    let year = match nums.first() {
        Some(y) if all_digits(y, 4) => y.parse::<i32>().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    if year < 1 {
        return Err(bad());
    }
    let month = match nums.get(1) {
        None => None,
        Some(m) if all_digits(m, 2) => Some(m.parse::<u32>().map_err(|_| bad())?),
        Some(_) => return Err(bad()),
    };
    let day = match nums.get(2) {
        None => None,
        Some(d) if all_digits(d, 2) => Some(d.parse::<u32>().map_err(|_| bad())?),
        Some(_) => return Err(bad()),
    };
    if nums.len() > 3 {
        return Err(bad());
    }
    let first_day = NaiveDate::from_ymd_opt(year, month.unwrap_or(1), day.unwrap_or(1))
        .ok_or_else(|| "no such date".to_string())?;
    let midnight = |d: NaiveDate| Utc.from_utc_datetime(&d.and_time(NaiveTime::MIN));
    let Some(time) = time else {
        let end = match (month, day) {
            (None, _) => first_day.checked_add_months(Months::new(12)),
            (Some(_), None) => first_day.checked_add_months(Months::new(1)),
            (Some(_), Some(_)) => first_day.checked_add_days(Days::new(1)),
        }
        .ok_or_else(bad)?;
        return Ok(Span {
            start: midnight(first_day),
            end: midnight(end),
        });
    };
    if day.is_none() {
        return Err(bad());
    }
    // A '+' left raw in a URL reaches here as a space.
    let time = time.replace(' ', "+");
    let (clock, zone) = split_zone(&time).ok_or_else(bad)?;
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, f))
            if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (hms, Some(f))
        }
        Some(_) => return Err(bad()),
        None => (clock, None),
    };
    let fields: Vec<&str> = hms.split(':').collect();
    if fields.len() < 2 || fields.len() > 3 || !fields.iter().all(|f| all_digits(f, 2)) {
        return Err(bad());
    }
    if fraction.is_some() && fields.len() != 3 {
        return Err(bad());
    }
    let n = |i: usize| fields.get(i).map_or(Ok(0), |f| f.parse::<u32>());
    let (h, m, sec) = (
        n(0).map_err(|_| bad())?,
        n(1).map_err(|_| bad())?,
        n(2).map_err(|_| bad())?,
    );
    let nanos = match fraction {
        Some(f) => format!("{f:0<9}").parse::<u32>().map_err(|_| bad())?,
        None => 0,
    };
    let clock_time =
        NaiveTime::from_hms_nano_opt(h, m, sec, nanos).ok_or_else(|| "no such time".to_string())?;
    let local = first_day.and_time(clock_time);
    let start = zone
        .from_local_datetime(&local)
        .single()
        .ok_or_else(bad)?
        .with_timezone(&Utc);
    let step = match (fields.len(), fraction) {
        (2, _) => Duration::minutes(1),
        (_, None) => Duration::seconds(1),
        (_, Some(f)) => Duration::nanoseconds(10_i64.pow(9 - f.len() as u32)),
    };
    Ok(Span {
        start,
        end: start + step,
    })
}

/// A time of day and its zone: `Z`, `+hh:mm`, `-hh:mm`, or none (UTC).
fn split_zone(time: &str) -> Option<(&str, FixedOffset)> {
    if let Some(clock) = time.strip_suffix('Z') {
        return Some((clock, FixedOffset::east_opt(0)?));
    }
    match time.rfind(['+', '-']) {
        None => Some((time, FixedOffset::east_opt(0)?)),
        Some(i) => {
            let (clock, zone) = time.split_at(i);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (hh, mm) = zone[1..].split_once(':')?;
            let ok = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
            if !ok(hh) || !ok(mm) {
                return None;
            }
            let (hh, mm) = (hh.parse::<i32>().ok()?, mm.parse::<i32>().ok()?);
            if hh > 14 || mm > 59 {
                return None;
            }
            Some((clock, FixedOffset::east_opt(sign * (hh * 3600 + mm * 60))?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn referral(id: &str, status: &str, priority: &str, updated: &str) -> Value {
        json!({"resourceType": "ServiceRequest", "id": id, "status": status, "priority": priority,
               "meta": {"versionId": "1", "lastUpdated": updated}, "authoredOn": updated})
    }

    #[test]
    fn spans_follow_the_precision_given() {
        for (text, start, end) in [
            ("2026", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            ("2026-02", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"),
            ("2026-12-31", "2026-12-31T00:00:00Z", "2027-01-01T00:00:00Z"),
            (
                "2026-03-04T10:30+01:00",
                "2026-03-04T09:30:00Z",
                "2026-03-04T09:31:00Z",
            ),
        ] {
            let s = span(text).unwrap();
            assert_eq!((s.start, s.end), (at(start), at(end)), "{text}");
        }
        let s = span("2026-03-04T10:30:15Z").unwrap();
        assert_eq!(s.end - s.start, Duration::seconds(1));
        let ms = span("2026-03-04T10:30:15.250Z").unwrap();
        assert_eq!(ms.start, at("2026-03-04T10:30:15.250Z"));
        assert_eq!(ms.end - ms.start, Duration::milliseconds(1));
        // No zone: UTC. A '+' decoded as a space: an offset.
        assert_eq!(
            span("2026-03-04T10:30:15").unwrap().start,
            at("2026-03-04T10:30:15Z")
        );
        assert_eq!(
            span("2026-03-04T10:30:15 02:00").unwrap().start,
            at("2026-03-04T08:30:15Z")
        );
        assert_eq!(
            span("2026-03-04T10:30:15-05:00").unwrap().start,
            at("2026-03-04T15:30:15Z")
        );
    }

    #[test]
    fn malformed_dates_are_refused() {
        for bad in [
            "",
            "26",
            "2026-1",
            "2026-13",
            "2026-02-30",
            "2026-02-03T",
            "2026-02T10:00Z",
            "2026-02-03T25:00Z",
            "2026-02-03T10Z",
            "2026-02-03T10:00:00.Z",
            "2026-02-03T10:00+5",
            "2026-02-03T10:00+15:00",
            "0000",
            "2026-02-03-04",
            "２０２６",
        ] {
            assert!(span(bad).is_err(), "{bad:?} was read as a date");
        }
    }

    #[test]
    fn prefixes_compare_spans_as_fhir_says() {
        let day = |p: &str| date_test(&format!("{p}2026-03-04")).unwrap();
        let t = |s: &str| span(s).unwrap();
        let inside = t("2026-03-04T12:00:00.000Z");
        let before = t("2026-03-03T23:59:59.999Z");
        let after = t("2026-03-05T00:00:00.000Z");
        let cases = [
            ("", [false, true, false]),
            ("eq", [false, true, false]),
            ("ne", [true, false, true]),
            ("gt", [false, false, true]),
            ("sa", [false, false, true]),
            ("ge", [false, true, true]),
            ("lt", [true, false, false]),
            ("eb", [true, false, false]),
            ("le", [true, true, false]),
        ];
        for (prefix, want) in cases {
            let got = [before, inside, after].map(|s| day(prefix).matches(s));
            assert_eq!(got, want, "prefix {prefix:?}");
        }
        // A coarser target (a whole day) against a finer search (an instant in it).
        let noon = date_test("gt2026-03-04T12:00:00Z").unwrap();
        assert!(noon.matches(t("2026-03-04")));
        assert!(!date_test("eq2026-03-04T12:00:00Z")
            .unwrap()
            .matches(t("2026-03-04")));
        assert!(date_test("ap2026").is_err());
        // Prefixes are lower case, as FHIR writes them.
        assert!(date_test("GE2026").is_err());
        assert!(date_test("ge2026-99").unwrap_err().contains("ge2026-99"));
    }

    #[test]
    fn tokens_take_the_four_forms() {
        let t = |v: &str| token("status", v).unwrap();
        let sys = Some("http://hl7.org/fhir/request-status");
        assert!(t("active").matches(sys, "active"));
        assert!(!t("active").matches(sys, "completed"));
        assert!(t("http://hl7.org/fhir/request-status|active").matches(sys, "active"));
        assert!(!t("http://example.org|active").matches(sys, "active"));
        assert!(t("http://hl7.org/fhir/request-status|").matches(sys, "revoked"));
        assert!(!t("|active").matches(sys, "active"));
        assert!(t("|active").matches(None, "active"));
        for bad in ["|", "a|b|c", ""] {
            assert!(token("status", bad).is_err(), "{bad}");
        }
        // Escapes: a comma or a bar that is part of a code.
        assert_eq!(split_unescaped(r"a\,b,c", ','), [r"a\,b", "c"]);
        assert_eq!(split_unescaped(r"s\|t\,u|c", '|'), [r"s\|t\,u", "c"]);
        assert_eq!(
            token("x", r"s\|t|c").unwrap().system.as_deref(),
            Some("s|t")
        );
        assert_eq!(unescape(r"x\\y\$"), r"x\y$");
        let f = Filters::parse(CARE_PLAN, &pairs(&[("_id", r"a\,b,c")])).unwrap();
        assert!(f.matches(&json!({"id": "a,b"})) && f.matches(&json!({"id": "c"})));
        assert!(!f.matches(&json!({"id": "a"})));
    }

    #[test]
    fn repeats_are_and_and_commas_are_or() {
        let rs = [
            referral("a", "active", "routine", "2026-01-10T09:00:00.000Z"),
            referral("b", "completed", "urgent", "2026-02-10T09:00:00.000Z"),
            referral("c", "revoked", "stat", "2026-03-10T09:00:00.000Z"),
        ];
        let ids = |p: &[(&str, &str)]| -> Vec<String> {
            let f = Filters::parse(SERVICE_REQUEST, &pairs(p)).unwrap();
            rs.iter()
                .filter(|r| f.matches(r))
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(&[]), ["a", "b", "c"]);
        assert_eq!(ids(&[("status", "active,revoked")]), ["a", "c"]);
        assert_eq!(
            ids(&[("status", "active,revoked"), ("priority", "stat")]),
            ["c"]
        );
        assert_eq!(
            ids(&[("_lastUpdated", "ge2026-02"), ("_lastUpdated", "lt2026-03")]),
            ["b"]
        );
        assert_eq!(ids(&[("authored", "gt2026-01-31")]), ["b", "c"]);
        assert_eq!(ids(&[("_id", "c,a")]), ["a", "c"]);
        assert_eq!(
            ids(&[("priority", "http://hl7.org/fhir/request-priority|urgent")]),
            ["b"]
        );
        // Empty values are ignored; other parameters are left to the caller.
        assert_eq!(
            ids(&[("status", ""), ("subject", "Patient/1")]),
            ["a", "b", "c"]
        );
        let f = Filters::parse(
            SERVICE_REQUEST,
            &pairs(&[("status", ""), ("priority", "stat")]),
        )
        .unwrap();
        assert_eq!(f.given(), pairs(&[("priority", "stat")]).as_slice());
    }

    #[test]
    fn sorts_take_ids_and_dates_either_way_and_keep_ties_in_order() {
        let rs = [
            referral("b", "active", "routine", "2026-02-10T09:00:00.000Z"),
            referral("a", "active", "urgent", "2026-03-10T09:00:00.000Z"),
            referral("c", "active", "stat", "2026-02-10T09:00:00.000Z"),
        ];
        let sorted = |v: Option<&str>| -> Vec<String> {
            let sort = Sort::parse(SERVICE_REQUEST, v).unwrap();
            let mut items: Vec<((), Value)> = rs.iter().map(|r| ((), r.clone())).collect();
            sort.apply(&mut items);
            items
                .iter()
                .map(|(_, r)| r["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(sorted(None), ["b", "a", "c"]);
        assert_eq!(sorted(Some("")), ["b", "a", "c"]);
        assert_eq!(sorted(Some("_id")), ["a", "b", "c"]);
        assert_eq!(sorted(Some("-_id")), ["c", "b", "a"]);
        assert_eq!(sorted(Some("-_lastUpdated")), ["a", "b", "c"]);
        assert_eq!(sorted(Some("authored,-_id")), ["c", "b", "a"]);
        assert_eq!(sorted(Some("authored")), ["b", "c", "a"]);
        assert_eq!(
            Sort::parse(SERVICE_REQUEST, Some("-authored"))
                .unwrap()
                .given(),
            Some("-authored")
        );
        for bad in [
            "status",
            "category",
            "_id,-_id",
            "authored,",
            "--_id",
            "date",
        ] {
            let e = Sort::parse(SERVICE_REQUEST, Some(bad)).unwrap_err();
            assert!(e.starts_with("_sort"), "{bad}: {e}");
        }
        assert!(Sort::parse(CARE_PLAN, Some("authored")).is_err());
        assert!(Sort::parse(CARE_PLAN, Some("-_lastUpdated,_id")).is_ok());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever a client sends, parsing answers (a test or an error naming the parameter)
        /// and never panics.
        #[test]
        fn any_value_parses_or_is_refused(
            name in proptest::sample::select(vec!["_id", "_lastUpdated", "status", "priority", "authored", "category", "_sort"]),
            value in "[-+ :.,|\\\\TZ0-9a-z]{0,40}",
        ) {
            let params = [(name.to_string(), value.clone())];
            if let Err(e) = Filters::parse(SERVICE_REQUEST, &params) {
                proptest::prop_assert!(e.starts_with(name), "{e}");
            }
            let _ = Sort::parse(SERVICE_REQUEST, Some(&value));
            let _ = span(&value);
        }

        /// A date written at any precision is a span of that length (start before end), and
        /// eq matches an instant at its start, not one at its end.
        #[test]
        fn every_valid_date_is_a_span_that_holds_its_start(
            y in 1i32..=9999, mo in 1u32..=12, d in 1u32..=28, h in 0u32..24, mi in 0u32..60,
            sec in 0u32..60, frac in 0usize..=9, zone in -14i32..=14, precision in 0usize..6,
        ) {
            let date = format!("{y:04}-{mo:02}-{d:02}");
            let zone = if zone == 0 { "Z".to_string() } else { format!("{}{:02}:00", if zone > 0 { '+' } else { '-' }, zone.abs()) };
            let text = match precision {
                0 => format!("{y:04}"),
                1 => format!("{y:04}-{mo:02}"),
                2 => date,
                3 => format!("{date}T{h:02}:{mi:02}{zone}"),
                4 => format!("{date}T{h:02}:{mi:02}:{sec:02}{zone}"),
                _ => format!("{date}T{h:02}:{mi:02}:{sec:02}.{}{zone}", "7".repeat(frac.max(1))),
            };
            let s = span(&text).unwrap();
            proptest::prop_assert!(s.start < s.end, "{text}");
            let eq = date_test(&text).unwrap();
            let instant = |start: DateTime<Utc>| Span { start, end: start + Duration::nanoseconds(1) };
            proptest::prop_assert!(eq.matches(instant(s.start)), "{text}");
            proptest::prop_assert!(!eq.matches(instant(s.end)), "{text}");
        }
    }

    #[test]
    fn care_plan_categories_match_any_coding() {
        let cp = json!({"resourceType": "CarePlan", "id": "p", "status": "active", "category": [
            {"coding": [{"system": "http://snomed.info/sct", "code": "718347000"}]},
            {"coding": [{"system": "https://telemental.org/fhir/CodeSystem/care-plan-kind",
                         "code": "telemental-preference-plan"}]}]});
        let m = |v: &str| {
            Filters::parse(CARE_PLAN, &pairs(&[("category", v)]))
                .unwrap()
                .matches(&cp)
        };
        assert!(m("718347000"));
        assert!(m(
            "https://telemental.org/fhir/CodeSystem/care-plan-kind|telemental-preference-plan"
        ));
        assert!(!m("telemental-safety-protocol"));
        assert!(!m("http://loinc.org|718347000"));
    }

    #[test]
    fn modifiers_and_bad_values_are_errors_that_name_the_parameter() {
        let e = Filters::parse(CARE_PLAN, &pairs(&[("status:not", "active")])).unwrap_err();
        assert!(e.starts_with("status:not"), "{e}");
        let e = Filters::parse(CARE_PLAN, &pairs(&[("_lastUpdated", "yesterday")])).unwrap_err();
        assert!(e.starts_with("_lastUpdated"), "{e}");
        let e = Filters::parse(SERVICE_REQUEST, &pairs(&[("priority", "a|b|c")])).unwrap_err();
        assert!(e.starts_with("priority"), "{e}");
        // Not one of ServiceRequest's: left alone (the caller decides on unknown parameters).
        assert!(Filters::parse(SERVICE_REQUEST, &pairs(&[("category", "x")])).is_ok());
        assert!(known(CARE_PLAN, "category") && !known(SERVICE_REQUEST, "category"));
    }
}
