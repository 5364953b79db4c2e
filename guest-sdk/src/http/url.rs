//! The parts of an `http://` or `https://` URL that `wasi:http` takes
//! separately, checked before anything reaches the host.
//!
//! Messages about a bad URL never repeat the URL: its path or query may
//! hold a token. They name the part that is wrong.

/// The scheme of a request: the only two `wasi:http` hosts speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

/// A URL split into what `outgoing-request` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) scheme: Scheme,
    /// `host` or `host:port`, as written (IPv6 literals in brackets).
    pub(crate) authority: String,
    /// Starts with `/`; the fragment is dropped (it never goes on the wire).
    pub(crate) path_and_query: String,
}

impl Target {
    /// `scheme://authority`: what errors name, and what a queue's
    /// `allowed_outbound_hosts` has to allow. Never the path or query.
    pub(crate) fn origin(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", self.authority)
    }
}

/// Splits `url` into scheme, authority and path; an error says which part
/// is wrong and how to write it.
pub(crate) fn parse(url: &str) -> Result<Target, String> {
    if url.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("the URL has spaces, control or non-ASCII characters: \
                    percent-encode them (IDN host names in their xn-- form)"
            .into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("the URL does not start with http:// or https://".into());
    };
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => {
            // The scheme is at most a word; anything longer is not shown.
            let shown: String = scheme.chars().take(16).collect();
            return Err(format!(
                "the URL's scheme {shown:?} is not supported: use http:// or https://"
            ));
        }
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(
            "the URL carries credentials (user@host), which wasi:http cannot send: \
                    send them in a header, such as authorization"
                .into(),
        );
    }
    check_authority(authority)?;
    let tail = tail.split_once('#').map_or(tail, |(before, _)| before);
    let path_and_query = if tail.starts_with('/') {
        tail.to_string()
    } else {
        format!("/{tail}")
    };
    Ok(Target {
        scheme,
        authority: authority.to_string(),
        path_and_query,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, with a port of 1 to 65535.
fn check_authority(authority: &str) -> Result<(), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((address, after)) = v6.split_once(']') else {
            return Err("the URL's IPv6 address has no closing ]".into());
        };
        if address.is_empty()
            || !address
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(format!("the URL's IPv6 address [{address}] is not one"));
        }
        match after {
            "" => (address, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (address, Some(port)),
                None => return Err(format!("unexpected {after:?} after the URL's IPv6 address")),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
    {
        return Err(format!(
            "the URL's host {host:?} has characters no host name has"
        ));
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(n) if n > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => {
                return Err(format!(
                    "the URL's port {port:?} is not a number from 1 to 65535"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> Target {
        parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn err(url: &str) -> String {
        match parse(url) {
            Ok(t) => panic!("{url} parsed as {t:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn splits_scheme_authority_and_path() {
        let t = ok("https://api.mailer.example/v1/send?x=1#frag");
        assert_eq!(t.scheme, Scheme::Https);
        assert_eq!(t.authority, "api.mailer.example");
        assert_eq!(t.path_and_query, "/v1/send?x=1");
        assert_eq!(t.origin(), "https://api.mailer.example");

        let t = ok("HTTP://127.0.0.1:8080");
        assert_eq!(t.scheme, Scheme::Http);
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path_and_query, "/");
        assert_eq!(t.origin(), "http://127.0.0.1:8080");

        assert_eq!(ok("http://h?q=1").path_and_query, "/?q=1");
        assert_eq!(ok("http://h#only-fragment").path_and_query, "/");
        assert_eq!(ok("http://[::1]:9/x").authority, "[::1]:9");
        assert_eq!(
            ok("http://[::ffff:10.0.0.1]").authority,
            "[::ffff:10.0.0.1]"
        );
    }

    #[test]
    fn refuses_what_wasi_http_cannot_send() {
        assert!(err("ftp://example.com/").contains("\"ftp\" is not supported"));
        assert!(err("example.com/x").contains("http:// or https://"));
        assert!(err("https://user:pass@example.com/").contains("credentials"));
        assert!(err("https:///path").contains("no host"));
        assert!(err("https://:443/").contains("no host"));
        assert!(err("https://example.com:0/").contains("port \"0\""));
        assert!(err("https://example.com:65536/").contains("port \"65536\""));
        assert!(err("https://example.com:+80/").contains("port \"+80\""));
        assert!(err("https://example.com:/").contains("port \"\""));
        assert!(err("https://exa mple.com/").contains("spaces"));
        assert!(err("https://example.com/\u{e9}").contains("non-ASCII"));
        assert!(err("https://example.com/\r\nx: y").contains("control"));
        assert!(err("https://[::1/").contains("closing ]"));
        assert!(err("https://[::1]x/").contains("after the URL's IPv6"));
        assert!(err("https://[zz]/").contains("is not one"));
        assert!(err("https://exa%6dple.com/").contains("characters no host name has"));
    }

    #[test]
    fn errors_never_repeat_the_path_or_query() {
        for url in [
            "https://user:s3cret@example.com/?token=s3cret",
            "gopher://example.com/s3cret",
            "https://example.com:99999/s3cret",
            "https://example.com/s3cret\u{7f}",
        ] {
            let e = err(url);
            assert!(!e.contains("s3cret"), "{url}: {e}");
        }
    }
}
