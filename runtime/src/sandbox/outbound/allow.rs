//! The hosts a queue's handler may send HTTP requests to:
//! `allowed_outbound_hosts` in the queue's config (default: none, so every
//! request is denied).
//!
//! Each entry is `scheme://host[:port]`: scheme `http` or `https`; host a
//! DNS name, an IPv4 address, a bracketed IPv6 address, or `*.` and a
//! domain of at least two labels, which allows every name one or more
//! labels below that domain (never the domain itself); the port defaults to
//! the scheme's (80, 443). A request is allowed when its scheme, host and
//! port all match one entry. Matching is on the text of the request; the
//! addresses a name resolves to are checked separately (see
//! [`super::addr`]).

use std::fmt;
use std::net::IpAddr;

/// Longest entry accepted, in bytes: a host name is at most 253 bytes, and
/// the scheme, brackets and port fit in what is left.
const MAX_ENTRY: usize = 300;

/// Longest DNS name, in bytes, without the trailing dot.
const MAX_NAME: usize = 253;

/// Longest label of a DNS name, in bytes.
const MAX_LABEL: usize = 63;

/// Longest part of a request's host echoed in a denial hint; a host that
/// cannot be allowed at all may be any text the handler chose.
const MAX_ECHO: usize = 80;

/// The forms an entry may take, for error messages.
const ENTRY_FORMS: &str = "write scheme://host[:port], e.g. \"https://api.example.com\", \
     \"http://10.0.0.5:8080\" or \"https://*.example.com:8443\"";

/// `http` or `https`: the schemes a handler's request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The scheme named by `text`, in any case (schemes are
    /// case-insensitive).
    fn parse(text: &str) -> Option<Scheme> {
        if text.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if text.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The host part of an entry, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// A DNS name, lowercase, without a trailing dot.
    Name(String),
    /// `*.` and this domain (lowercase, no trailing dot): names one or more
    /// labels below it.
    Below(String),
    /// An IP address; an IPv4-mapped IPv6 address is kept as its IPv4
    /// address, as both forms reach the same host.
    Ip(IpAddr),
}

/// One parsed entry of `allowed_outbound_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    scheme: Scheme,
    host: HostPattern,
    port: u16,
}

impl Entry {
    fn matches(&self, scheme: Scheme, host: &RequestHost, port: u16) -> bool {
        if self.scheme != scheme || self.port != port {
            return false;
        }
        match (&self.host, host) {
            (HostPattern::Name(want), RequestHost::Name(name)) => want == name,
            (HostPattern::Below(domain), RequestHost::Name(name)) => name
                .strip_suffix(domain.as_str())
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|front| !front.is_empty()),
            (HostPattern::Ip(want), RequestHost::Ip(ip)) => want == ip,
            _ => false,
        }
    }
}

impl Entry {
    /// Whether every request `other` allows, this entry allows too.
    fn covers(&self, other: &Entry) -> bool {
        if self.scheme != other.scheme || self.port != other.port {
            return false;
        }
        let below = |domain: &str, name: &str| {
            name.strip_suffix(domain)
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|front| !front.is_empty())
        };
        match (&self.host, &other.host) {
            (HostPattern::Below(domain), HostPattern::Name(name)) => below(domain, name),
            (HostPattern::Below(domain), HostPattern::Below(inner)) => {
                domain == inner || below(domain, inner)
            }
            (mine, theirs) => mine == theirs,
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        match &self.host {
            HostPattern::Name(name) => f.write_str(name)?,
            HostPattern::Below(domain) => write!(f, "*.{domain}")?,
            HostPattern::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
        }
        if self.port != self.scheme.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// The parsed `allowed_outbound_hosts` of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// Parses the entries of `allowed_outbound_hosts`, refusing the first
    /// that is not `scheme://host[:port]` in one of the accepted forms.
    pub fn parse(entries: &[String]) -> Result<AllowList, EntryError> {
        let entries = entries
            .iter()
            .enumerate()
            .map(|(index, text)| {
                parse_entry(text).map_err(|problem| EntryError {
                    index,
                    shown: shown(text),
                    problem,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowList { entries })
    }

    /// The entries of this list that `ceiling` does not cover (some
    /// request they allow, it does not), written in their normal form.
    pub fn beyond(&self, ceiling: &AllowList) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| !ceiling.entries.iter().any(|c| c.covers(e)))
            .map(Entry::to_string)
            .collect()
    }

    /// This list without the entries `ceiling` does not cover.
    pub fn within(&self, ceiling: &AllowList) -> AllowList {
        AllowList {
            entries: self
                .entries
                .iter()
                .filter(|e| ceiling.entries.iter().any(|c| c.covers(e)))
                .cloned()
                .collect(),
        }
    }

    /// Whether no request at all is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a request may go to `scheme://host:port`, given the scheme
    /// and host of its URI as the HTTP layer hands them: any case, perhaps
    /// a trailing dot, an IPv6 address with or without brackets. `port`
    /// None means the scheme's default. A host that is not plain ASCII
    /// (percent-encoded, Unicode), not a well-formed name or address, or
    /// an abbreviated IPv4 form such as `127.1` is never allowed.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let Some(scheme) = Scheme::parse(scheme) else {
            return false;
        };
        let Some(host) = RequestHost::parse(host) else {
            return false;
        };
        let port = port.unwrap_or(scheme.default_port());
        self.entries
            .iter()
            .any(|entry| entry.matches(scheme, &host, port))
    }

    /// The entry that would allow a request to `scheme://host:port`, e.g.
    /// `"https://api.example.com"` (with `:port` only when not the
    /// scheme's default), for the line telling the operator how to allow a
    /// denied request; or, when no entry can allow it, a sentence saying
    /// why. Any text from the request is escaped and cut short.
    pub fn hint(scheme: &str, host: &str, port: Option<u16>) -> String {
        let Some(parsed_scheme) = Scheme::parse(scheme) else {
            return format!(
                "no entry can allow scheme {}: only http and https",
                echo(scheme)
            );
        };
        let Some(parsed_host) = RequestHost::parse(host) else {
            return format!(
                "no entry can allow host {}: a host must be a plain ASCII DNS name \
                 or an IP address",
                echo(host)
            );
        };
        let port = port.unwrap_or(parsed_scheme.default_port());
        if port == 0 {
            return "no entry can allow port 0".to_string();
        }
        let entry = Entry {
            scheme: parsed_scheme,
            host: match parsed_host {
                RequestHost::Name(name) => HostPattern::Name(name),
                RequestHost::Ip(ip) => HostPattern::Ip(ip),
            },
            port,
        };
        entry.to_string()
    }
}

impl fmt::Display for AllowList {
    /// The entries in their normalised form, e.g. `https://api.example.com,
    /// https://*.example.com:8443`, or `(none)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("(none)");
        }
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

/// An entry of `allowed_outbound_hosts` that is not an accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "entry {number} {shown} is not an outbound host: {problem}; {ENTRY_FORMS}",
    number = .index + 1
)]
pub struct EntryError {
    /// Position of the entry in the list, from 0 (the message counts from
    /// 1).
    pub index: usize,
    /// The entry as shown in the message: quoted and escaped, with any
    /// user name, password, path, query and fragment replaced by `…` (they
    /// may hold secrets, such as a webhook URL's token).
    shown: String,
    problem: EntryProblem,
}

/// Why an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum EntryProblem {
    #[error("it is {len} bytes long, more than {MAX_ENTRY}")]
    TooLong { len: usize },
    #[error("it contains whitespace or a control character")]
    Whitespace,
    #[error(
        "it contains a character that is not plain ASCII; write an \
         internationalised name in its xn-- form"
    )]
    NotAscii,
    #[error("\"*\" would allow every host; list the hosts the handler needs")]
    Everything,
    #[error("it has no scheme (http:// or https://)")]
    NoScheme,
    #[error("the scheme cannot be a wildcard")]
    WildcardScheme,
    #[error("scheme {0} is not supported, only http and https")]
    UnsupportedScheme(String),
    #[error(
        "it has a user name or password (before \"@\"), which do not belong \
         here: the handler sends its own credentials"
    )]
    UserInfo,
    #[error(
        "it has a path, query or fragment; an entry names only the host, and \
         allows every path on it"
    )]
    PathQueryFragment,
    #[error("the host is empty")]
    EmptyHost,
    #[error("a host of \"*\" would allow every host; list the hosts the handler needs")]
    WildcardHost,
    #[error(
        "a wildcard must be the whole leftmost label followed by a domain, \
         as in *.example.com"
    )]
    WildcardPosition,
    #[error(
        "*.{0} is too broad: a wildcard needs a domain of at least two \
         labels, as in *.example.com"
    )]
    WildcardTooBroad(String),
    #[error("the port must be a whole number from 1 to 65535")]
    BadPort,
    #[error("an IPv6 address goes in brackets, as in http://[2001:db8::5]:8080")]
    UnbracketedIpv6,
    #[error("the text in brackets is not an IPv6 address (zones such as %eth0 are not supported)")]
    BadIpv6,
    #[error(
        "the host looks like an abbreviated or non-decimal IPv4 address; \
         write all four decimal parts, as in 10.0.0.5"
    )]
    NumericName,
    #[error("the host name {0}")]
    BadName(NameProblem),
}

/// Why a DNS name is not well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum NameProblem {
    #[error("has a character other than letters, digits, \"-\" and \".\"")]
    Character,
    #[error("has an empty label (two dots in a row, or a dot at the start)")]
    EmptyLabel,
    #[error("has a label longer than {MAX_LABEL} bytes")]
    LongLabel,
    #[error("is longer than {MAX_NAME} bytes")]
    TooLong,
}

/// The host of a request, normalised as entries are matched against it,
/// and as the sender looks it up in `[sandbox.resolve]` or connects to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestHost {
    /// A DNS name: lowercased, without its trailing dot.
    Name(String),
    /// An address (an IPv4-mapped IPv6 one as its IPv4 address).
    Ip(IpAddr),
}

impl RequestHost {
    /// The host of a request's URI, or None when no entry could allow it.
    /// Anything but plain ASCII fails: neither a name's letters, digits,
    /// `-` and `.` nor an IP address include any other character.
    pub fn parse(host: &str) -> Option<RequestHost> {
        let unbracketed = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if unbracketed.contains(':') {
            return unbracketed
                .parse::<IpAddr>()
                .ok()
                .map(|ip| RequestHost::Ip(canonical_ip(ip)));
        }
        if unbracketed.len() != host.len() {
            // Brackets hold only IPv6 addresses.
            return None;
        }
        match parse_host_name(host) {
            Ok(Host::Name(name)) => Some(RequestHost::Name(name)),
            Ok(Host::Ip(ip)) => Some(RequestHost::Ip(ip)),
            Err(_) => None,
        }
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address; any other as it is.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// A host without brackets or port: a DNS name or an IPv4 address.
#[derive(Debug)]
enum Host {
    Name(String),
    Ip(IpAddr),
}

/// Parses a DNS name or IPv4 address: lowercases it and removes one
/// trailing dot. A name whose last label is all digits, or `0x` and hex,
/// is taken by URL parsers and resolvers as an IPv4 address (`127.1`,
/// `2130706433`, `0x7f.1`), so only a plain dotted quad is accepted as one
/// and the rest are refused.
fn parse_host_name(text: &str) -> Result<Host, EntryProblem> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    if name.is_empty() {
        return Err(EntryProblem::EmptyHost);
    }
    let last = name.rsplit('.').next().unwrap_or_default();
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit())));
    if numeric {
        return match name.parse() {
            Ok(ip) => Ok(Host::Ip(IpAddr::V4(ip))),
            Err(_) => Err(EntryProblem::NumericName),
        };
    }
    check_name(&name).map_err(EntryProblem::BadName)?;
    Ok(Host::Name(name))
}

/// Checks a lowercase DNS name without its trailing dot.
fn check_name(name: &str) -> Result<(), NameProblem> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(NameProblem::Character);
    }
    if name.len() > MAX_NAME {
        return Err(NameProblem::TooLong);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameProblem::EmptyLabel);
        }
        if label.len() > MAX_LABEL {
            return Err(NameProblem::LongLabel);
        }
    }
    Ok(())
}

fn parse_entry(text: &str) -> Result<Entry, EntryProblem> {
    if text.len() > MAX_ENTRY {
        return Err(EntryProblem::TooLong { len: text.len() });
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EntryProblem::Whitespace);
    }
    if !text.is_ascii() {
        return Err(EntryProblem::NotAscii);
    }
    if text == "*" {
        return Err(EntryProblem::Everything);
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(EntryProblem::NoScheme);
    };
    let scheme = match Scheme::parse(scheme) {
        Some(scheme) => scheme,
        None if scheme == "*" => return Err(EntryProblem::WildcardScheme),
        None => return Err(EntryProblem::UnsupportedScheme(echo(scheme))),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '\\']) {
        return Err(EntryProblem::PathQueryFragment);
    }
    if authority.contains('@') {
        return Err(EntryProblem::UserInfo);
    }
    let (host, port) = split_port(authority)?;
    let port = match port {
        Some(port) => parse_port(port)?,
        None => scheme.default_port(),
    };
    Ok(Entry {
        scheme,
        host: parse_host_pattern(host)?,
        port,
    })
}

/// Splits `host[:port]`, where the host may be a bracketed IPv6 address.
fn split_port(authority: &str) -> Result<(&str, Option<&str>), EntryProblem> {
    if authority.starts_with('[') {
        let Some(end) = authority.find(']') else {
            return Err(EntryProblem::BadIpv6);
        };
        let (host, after) = authority.split_at(end + 1);
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(EntryProblem::BadIpv6),
            },
        };
    }
    match authority.split_once(':') {
        Some((_, port)) if port.contains(':') => Err(EntryProblem::UnbracketedIpv6),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

/// A port in plain decimal, 1 to 65535.
fn parse_port(text: &str) -> Result<u16, EntryProblem> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EntryProblem::BadPort);
    }
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(EntryProblem::BadPort),
    }
}

fn parse_host_pattern(host: &str) -> Result<HostPattern, EntryProblem> {
    if host.is_empty() {
        return Err(EntryProblem::EmptyHost);
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(EntryProblem::BadIpv6)?;
        let ip: IpAddr = inner
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| EntryProblem::BadIpv6)?
            .into();
        return Ok(HostPattern::Ip(canonical_ip(ip)));
    }
    if host == "*" {
        return Err(EntryProblem::WildcardHost);
    }
    if let Some(domain) = host.strip_prefix("*.") {
        if domain.contains('*') {
            return Err(EntryProblem::WildcardPosition);
        }
        return match parse_host_name(domain)? {
            Host::Name(name) if name.contains('.') => Ok(HostPattern::Below(name)),
            Host::Name(name) => Err(EntryProblem::WildcardTooBroad(name)),
            Host::Ip(_) => Err(EntryProblem::NumericName),
        };
    }
    if host.contains('*') {
        return Err(EntryProblem::WildcardPosition);
    }
    match parse_host_name(host)? {
        Host::Name(name) => Ok(HostPattern::Name(name)),
        Host::Ip(ip) => Ok(HostPattern::Ip(ip)),
    }
}

/// An entry for an error message: quoted and escaped, with the parts that
/// may hold secrets (user name and password, path, query, fragment)
/// replaced by `…`; an over-long entry is not shown at all.
fn shown(text: &str) -> String {
    if text.len() > MAX_ENTRY {
        return format!("({} bytes)", text.len());
    }
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, text),
    };
    // Everything up to the last "@", even past a "/": a password may hold
    // any character.
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((_, rest)) => ("…@", rest),
        None => ("", rest),
    };
    let (host, tail) = match rest.find(['/', '?', '#', '\\']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let tail = if tail.is_empty() || tail == "/" {
        tail
    } else {
        "/…"
    };
    let shown = match scheme {
        Some(scheme) => format!("{scheme}://{userinfo}{host}{tail}"),
        None => format!("{userinfo}{host}{tail}"),
    };
    format!("{shown:?}")
}

/// Text from a request or config, quoted, escaped and cut short.
fn echo(text: &str) -> String {
    let mut cut: String = text.chars().take(MAX_ECHO).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        AllowList::parse(&entries).expect("test entries parse")
    }

    #[test]
    fn a_ceiling_covers_what_it_allows_and_nothing_more() {
        let ceiling = list(&[
            "https://*.example.com",
            "http://10.0.0.1:8080",
            "https://api.other.net",
        ]);
        let inside = list(&[
            "https://a.example.com",
            "https://*.b.example.com",
            "https://*.example.com",
            "http://10.0.0.1:8080",
            "https://API.other.net.",
        ]);
        assert!(
            inside.beyond(&ceiling).is_empty(),
            "{:?}",
            inside.beyond(&ceiling)
        );
        assert_eq!(inside.within(&ceiling), inside);
        let outside = list(&[
            "https://example.com",
            "http://a.example.com",
            "https://a.example.com:8443",
            "https://*.co.example.org",
            "https://aexample.com",
            "http://10.0.0.1",
            "https://*.api.other.net",
            "https://other.net",
        ]);
        assert_eq!(
            outside.beyond(&ceiling).len(),
            8,
            "{:?}",
            outside.beyond(&ceiling)
        );
        assert!(outside.within(&ceiling).is_empty());
        assert_eq!(
            list(&["https://a.example.com", "https://evil.test"]).beyond(&ceiling),
            ["https://evil.test"]
        );
    }

    fn refusal(entry: &str) -> String {
        AllowList::parse(&[entry.to_string()])
            .expect_err(entry)
            .to_string()
    }

    #[test]
    fn accepted_entries_are_normalised() {
        let table: &[(&str, &str)] = &[
            ("https://api.example.com", "https://api.example.com"),
            ("https://api.example.com/", "https://api.example.com"),
            ("HTTPS://API.Example.COM", "https://api.example.com"),
            ("https://api.example.com.", "https://api.example.com"),
            (
                "https://api.example.com.:8443/",
                "https://api.example.com:8443",
            ),
            ("https://api.example.com:443", "https://api.example.com"),
            ("http://api.example.com:80", "http://api.example.com"),
            ("http://api.example.com:443", "http://api.example.com:443"),
            ("https://api.example.com:80", "https://api.example.com:80"),
            ("http://localhost:8080", "http://localhost:8080"),
            ("http://10.0.0.5:8080", "http://10.0.0.5:8080"),
            ("http://10.0.0.5", "http://10.0.0.5"),
            ("http://[2001:db8::5]:8080", "http://[2001:db8::5]:8080"),
            ("http://[2001:DB8:0:0::5]", "http://[2001:db8::5]"),
            ("http://[::ffff:10.0.0.5]", "http://10.0.0.5"),
            ("https://*.example.com:8443", "https://*.example.com:8443"),
            ("https://*.Example.com.", "https://*.example.com"),
            (
                "https://*.s3.eu-west-1.amazonaws.com",
                "https://*.s3.eu-west-1.amazonaws.com",
            ),
            ("https://1.example.com", "https://1.example.com"),
            ("https://example.123abc", "https://example.123abc"),
            ("http://x:65535", "http://x:65535"),
            ("http://x:00080", "http://x"),
            (
                "https://xn--bcher-kva.example",
                "https://xn--bcher-kva.example",
            ),
        ];
        for (entry, normal) in table {
            assert_eq!(list(&[entry]).to_string(), *normal, "{entry}");
        }
        let long_label = format!("https://{}.com", "a".repeat(63));
        assert_eq!(list(&[&long_label]).to_string(), long_label);
        let long_name = format!("https://{}a.com", "a.".repeat(124));
        assert_eq!(long_name.len() - "https://".len(), MAX_NAME);
        assert_eq!(list(&[&long_name]).to_string(), long_name);
    }

    #[test]
    fn refused_entries_name_the_reason() {
        let table: &[(&str, &str)] = &[
            ("localhost", "no scheme"),
            ("api.example.com:443", "no scheme"),
            ("//api.example.com", "no scheme"),
            ("", "no scheme"),
            ("ftp://files.example.com", "scheme \"ftp\" is not supported"),
            ("ws://example.com", "scheme \"ws\" is not supported"),
            ("://example.com", "scheme \"\" is not supported"),
            ("*", "would allow every host"),
            ("*://example.com", "scheme cannot be a wildcard"),
            ("https://*", "host of \"*\" would allow every host"),
            ("https://*:443", "host of \"*\" would allow every host"),
            ("https://*.com", "*.com is too broad"),
            ("https://*.com.", "*.com is too broad"),
            ("https://api.*.com", "whole leftmost label"),
            ("https://*foo.com", "whole leftmost label"),
            ("https://foo*.example.com", "whole leftmost label"),
            ("https://*.*.example.com", "whole leftmost label"),
            ("https://**.example.com", "whole leftmost label"),
            ("https://*.", "host is empty"),
            ("https://user@example.com", "user name or password"),
            ("https://user:pw@example.com", "user name or password"),
            ("https://@example.com", "user name or password"),
            ("https://example.com/v1", "path, query or fragment"),
            ("https://example.com//", "path, query or fragment"),
            ("https://example.com?x=1", "path, query or fragment"),
            ("https://example.com#top", "path, query or fragment"),
            ("https://example.com/#", "path, query or fragment"),
            ("https://example.com\\evil.net", "path, query or fragment"),
            (
                "https://example.com:0",
                "port must be a whole number from 1 to 65535",
            ),
            ("https://example.com:65536", "from 1 to 65535"),
            ("https://example.com:99999999", "from 1 to 65535"),
            ("https://example.com:", "from 1 to 65535"),
            ("https://example.com:+443", "from 1 to 65535"),
            ("https://example.com:https", "from 1 to 65535"),
            ("https://[::1]:0", "from 1 to 65535"),
            ("https://", "host is empty"),
            ("https://:443", "host is empty"),
            ("https://.", "host is empty"),
            ("https:// example.com", "whitespace or a control character"),
            ("https://example.com ", "whitespace or a control character"),
            ("https://exa\tmple.com", "whitespace or a control character"),
            ("https://example.com\n", "whitespace or a control character"),
            (
                "https://exa\u{0}mple.com",
                "whitespace or a control character",
            ),
            ("https://b\u{fc}cher.example", "not plain ASCII"),
            ("https://exa%6dple.com", "character other than letters"),
            ("https://exa_mple.com", "character other than letters"),
            ("https://example..com", "empty label"),
            ("https://example.com..", "empty label"),
            ("https://.example.com", "empty label"),
            ("https://2001:db8::5", "IPv6 address goes in brackets"),
            ("https://[2001:db8::5", "not an IPv6 address"),
            ("https://[2001:db8::5]x", "not an IPv6 address"),
            ("https://[fe80::1%25eth0]", "not an IPv6 address"),
            ("https://[10.0.0.5]", "not an IPv6 address"),
            ("https://[example.com]", "not an IPv6 address"),
            ("http://127.1", "abbreviated or non-decimal IPv4"),
            ("http://2130706433", "abbreviated or non-decimal IPv4"),
            ("http://0x7f.0.0.1", "abbreviated or non-decimal IPv4"),
            ("http://example.0x7f", "abbreviated or non-decimal IPv4"),
            ("http://010.0.0.1", "abbreviated or non-decimal IPv4"),
            ("http://256.0.0.1", "abbreviated or non-decimal IPv4"),
            ("http://example.com.1", "abbreviated or non-decimal IPv4"),
            ("https://*.0.0.1", "abbreviated or non-decimal IPv4"),
            ("https://*.10.0.0.1", "abbreviated or non-decimal IPv4"),
        ];
        for (entry, reason) in table {
            let err = refusal(entry);
            assert!(err.contains(reason), "{entry:?}: {err}");
            assert!(err.contains(ENTRY_FORMS), "{entry:?}: {err}");
        }
        let long_label = format!("https://{}.com", "a".repeat(64));
        assert!(refusal(&long_label).contains("label longer than 63"));
        let long_name = format!("https://{}aa.com", "a.".repeat(124));
        assert!(refusal(&long_name).contains("longer than 253"));
        let too_long = format!("https://{}.com", "a".repeat(300));
        assert!(refusal(&too_long).contains("more than 300"));
    }

    #[test]
    fn an_error_names_the_entry_and_its_position() {
        let entries = [
            "https://ok.example.com".to_string(),
            "localhost".to_string(),
        ];
        let err = AllowList::parse(&entries).expect_err("second entry is bad");
        assert_eq!(err.index, 1);
        assert_eq!(
            err.to_string(),
            "entry 2 \"localhost\" is not an outbound host: it has no scheme \
             (http:// or https://); write scheme://host[:port], e.g. \
             \"https://api.example.com\", \"http://10.0.0.5:8080\" or \
             \"https://*.example.com:8443\""
        );
    }

    #[test]
    fn errors_hide_credentials_paths_and_long_entries() {
        let secret = "s3cr3t";
        for entry in [
            format!("https://user:{secret}@example.com"),
            format!("https://hooks.example.com/services/{secret}"),
            format!("https://example.com?token={secret}"),
            format!("https://example.com#{secret}"),
            format!("https://example.com\\{secret}"),
            format!("user:{secret}@example.com/x"),
            format!("https://{secret}{}.com", "a".repeat(300)),
            format!("https://user:{secret}@example.com/ x"),
            format!("https://user:pa/{secret}@example.com"),
            format!("https://user:pa?{secret}@example.com"),
        ] {
            let err = refusal(&entry);
            assert!(!err.contains(secret), "{entry}: {err}");
        }
        assert!(refusal("https://u:p@example.com").contains("\"https://…@example.com\""));
        assert!(refusal("https://example.com/a/b").contains("\"https://example.com/…\""));
        assert!(refusal("https://x.com\n").contains("\"https://x.com\\n\""));
        assert!(refusal(&"a".repeat(301)).contains("(301 bytes)"));
    }

    #[test]
    fn requests_match_entries() {
        let allow = list(&[
            "https://api.example.com",
            "https://*.example.com:8443",
            "http://10.0.0.5:8080",
            "http://[2001:db8::5]",
            "http://[::ffff:7f00:1]",
            "https://*.corp.example.net",
        ]);
        let table: &[(&str, &str, Option<u16>, bool)] = &[
            ("https", "api.example.com", None, true),
            ("https", "api.example.com", Some(443), true),
            ("HTTPS", "API.EXAMPLE.COM", None, true),
            ("https", "api.example.com.", None, true),
            ("https", "API.example.com.", Some(443), true),
            ("https", "api.example.com..", None, false),
            ("https", ".api.example.com", None, false),
            ("https", "api.example.com", Some(8444), false),
            ("https", "api.example.com", Some(0), false),
            ("http", "api.example.com", None, false),
            ("http", "api.example.com", Some(443), false),
            ("ftp", "api.example.com", None, false),
            ("", "api.example.com", None, false),
            ("https", "api.example.com.evil.net", None, false),
            ("https", "evil.net", None, false),
            ("https", "evilapi.example.com", None, false),
            ("https", "api.example.co", None, false),
            ("https", "api.example.com:443", None, false),
            ("https", "user@api.example.com", None, false),
            ("https", "api%2eexample.com", None, false),
            ("https", "api.example.com%00", None, false),
            ("https", "\u{430}pi.example.com", None, false),
            ("https", "api.example.com\u{3002}", None, false),
            ("https", "api.ex\u{e4}mple.com", None, false),
            ("https", "", None, false),
            ("https", ".", None, false),
            // Wildcard: one or more labels in front, on its own port only.
            ("https", "a.example.com", Some(8443), true),
            ("https", "a.b.example.com", Some(8443), true),
            ("https", "A.B.Example.Com.", Some(8443), true),
            ("https", "example.com", Some(8443), false),
            ("https", "badexample.com", Some(8443), false),
            ("https", ".example.com", Some(8443), false),
            ("https", "a.example.com", None, false),
            ("https", "a.example.com.evil.net", Some(8443), false),
            ("https", "x.corp.example.net", None, true),
            ("https", "corp.example.net", None, false),
            ("https", "x.evilcorp.example.net", None, false),
            // IP addresses compare as addresses.
            ("http", "10.0.0.5", Some(8080), true),
            ("http", "10.0.0.5", None, false),
            ("http", "[::ffff:10.0.0.5]", Some(8080), true),
            ("http", "[::ffff:a00:5]", Some(8080), true),
            ("http", "::ffff:a00:5", Some(8080), true),
            ("http", "010.0.0.5", Some(8080), false),
            ("http", "10.0.5", Some(8080), false),
            ("http", "167772165", Some(8080), false),
            ("http", "0xa.0.0.5", Some(8080), false),
            ("http", "10.0.0.5.", Some(8080), true),
            ("http", "[2001:db8::5]", None, true),
            ("http", "[2001:DB8:0:0:0:0:0:5]", None, true),
            ("http", "2001:db8::5", None, true),
            ("http", "[2001:db8::6]", None, false),
            ("http", "[2001:db8::5%25eth0]", None, false),
            ("http", "[2001:db8::5]:80", None, false),
            ("http", "[10.0.0.5]", Some(8080), false),
            ("http", "[::ffff:127.0.0.1]", None, true),
            ("http", "[::ffff:7f00:1]", None, true),
            ("http", "127.0.0.1", None, true),
            ("http", "127.1", None, false),
            ("http", "[::127.0.0.1]", None, false),
            ("http", "localhost", None, false),
        ];
        for (scheme, host, port, want) in table {
            assert_eq!(
                allow.allows(scheme, host, *port),
                *want,
                "{scheme} {host:?} {port:?}"
            );
        }
    }

    #[test]
    fn an_empty_list_denies_everything() {
        let empty = AllowList::parse(&[]).expect("empty list parses");
        assert!(empty.is_empty());
        assert_eq!(empty.to_string(), "(none)");
        assert!(!empty.allows("https", "api.example.com", None));
        assert!(!empty.allows("http", "10.0.0.5", Some(80)));
        assert!(!list(&["https://api.example.com"]).is_empty());
    }

    #[test]
    fn hints_give_the_entry_that_would_allow_a_request() {
        let table: &[(&str, &str, Option<u16>, &str)] = &[
            ("https", "api.example.com", None, "https://api.example.com"),
            (
                "https",
                "API.Example.com.",
                Some(443),
                "https://api.example.com",
            ),
            (
                "https",
                "api.example.com",
                Some(8443),
                "https://api.example.com:8443",
            ),
            (
                "http",
                "api.example.com",
                Some(443),
                "http://api.example.com:443",
            ),
            ("HTTP", "10.0.0.5", Some(8080), "http://10.0.0.5:8080"),
            ("http", "[2001:DB8::5]", None, "http://[2001:db8::5]"),
            ("http", "[::ffff:7f00:1]", None, "http://127.0.0.1"),
        ];
        for (scheme, host, port, want) in table {
            let hint = AllowList::hint(scheme, host, *port);
            assert_eq!(hint, *want, "{scheme} {host:?} {port:?}");
            // The hint is itself an entry that allows the request.
            assert!(list(&[&hint]).allows(scheme, host, *port), "{hint}");
        }
        assert_eq!(
            AllowList::hint("ftp", "example.com", None),
            "no entry can allow scheme \"ftp\": only http and https"
        );
        let hint = AllowList::hint("https", "exa\nmple.com\u{202e}", None);
        assert_eq!(
            hint,
            "no entry can allow host \"exa\\nmple.com\\u{202e}\": a host must be a \
             plain ASCII DNS name or an IP address"
        );
        let hint = AllowList::hint("https", &"\u{e4}".repeat(10_000), None);
        assert!(hint.len() < 300, "{hint}");
        assert_eq!(
            AllowList::hint("https", "example.com", Some(0)),
            "no entry can allow port 0"
        );
    }

    #[test]
    fn display_lists_normalised_entries() {
        let allow = list(&["HTTPS://API.example.com:443/", "http://[::1]:8080"]);
        assert_eq!(
            allow.to_string(),
            "https://api.example.com, http://[::1]:8080"
        );
    }
}
