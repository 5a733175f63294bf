//! The shape of a query name: whether its labels look like data encoded
//! into the name (DNS tunnels and exfiltration through a resolver) rather
//! than the names people and services give hosts.
//!
//! Two tests, both per label (the text between dots) of the name as the
//! query carried it, lower-case:
//!
//! - **long**: more than `long_label` characters. Tunnels (iodine, dnscat2)
//!   fill labels to the 63-byte limit; the longest names of ordinary
//!   services stay below 50 (an AWS load balancer's own label reaches 43:
//!   32 characters of name, a dash and a 10-digit id).
//! - **high entropy**: a run of at least `entropy_label` characters
//!   between dashes whose Shannon entropy (bits per character, over the
//!   run's own characters) exceeds `entropy_bits`. A run of n characters
//!   has at most log2(n) bits, so the test needs long runs to mean
//!   anything; it is taken between dashes because machine-made names join
//!   short random parts with dashes (`k8s-ns-name-0a1b2c3d4e-1234567890`
//!   load balancers reach 4.6 bits over the whole label, under 3.5 per
//!   part). Hex (content hashes in CDN names, and dnscat2's encoding) has
//!   at most 4 bits per character, so a bound of 4 never flags it; random
//!   data in base32 or base64 has about 4.2 to 4.3 bits over 32 characters
//!   and 4.35 to 4.45 over 40 (medians; 99 % of them above 3.8 and 4.0),
//!   base32 of ASCII text about 4.2 over 40.

/// The bounds of the two tests; `[scope]` `dns_long_label`,
/// `dns_entropy_label` and `dns_entropy_bits` in the config.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LabelLimits {
    pub long_label: usize,
    pub entropy_label: usize,
    pub entropy_bits: f64,
}

/// Why a label looks like encoded data.
#[derive(Clone, Debug, PartialEq)]
pub enum Suspicion {
    /// A label longer than the limit.
    Long { len: usize },
    /// A label with a long enough run (between dashes) of more bits per
    /// character than the bound; `bits` is the run's.
    Entropy { len: usize, bits: f64 },
}

/// The suspicious label of `name`, with the part of the name after
/// it (where the data is sent: the domain whose servers receive it).
#[must_use]
pub fn suspicious_label<'a>(name: &'a str, limits: &LabelLimits) -> Option<(Suspicion, &'a str)> {
    let mut rest = name;
    let mut found = None;
    // The rightmost suspicious label decides the domain named in the
    // reason: every label left of it reaches the same servers.
    while !rest.is_empty() {
        let (label, after) = rest.split_once('.').unwrap_or((rest, ""));
        let len = label_len(label);
        if len > limits.long_label {
            found = Some((Suspicion::Long { len }, after));
        } else if let Some(bits) = label
            .split('-')
            .filter(|run| label_len(run) >= limits.entropy_label)
            .map(entropy)
            .reduce(f64::max)
            && bits > limits.entropy_bits
        {
            found = Some((Suspicion::Entropy { len, bits }, after));
        }
        rest = after;
    }
    found
}

/// Length in bytes on the wire: the parser writes odd bytes as `\DDD`.
fn label_len(label: &str) -> usize {
    let escapes = label.matches('\\').count();
    label.len() - escapes * 3
}

/// Shannon entropy of the label's characters, bits per character.
#[must_use]
pub fn entropy(label: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in label.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = f64::from(u32::try_from(label.len()).unwrap_or(u32::MAX));
    if n == 0.0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: LabelLimits = LabelLimits {
        long_label: 50,
        entropy_label: 32,
        entropy_bits: 4.0,
    };

    #[test]
    fn ordinary_names_are_not_flagged() {
        for name in [
            "api.github.com",
            "objects.githubusercontent.com",
            // An AWS load balancer at the longest its label gets (43).
            "k8s-default-ingressw-0123abcd45-1234567890.us-east-1.elb.amazonaws.com",
            // Content hashes: hex never exceeds 4 bits per character.
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4.cdn.example.net",
            "0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com",
            "storage-account-prod-westeurope-01.blob.core.windows.net",
            "vpce-0123456789abcdef0-abcdefgh.s3.us-east-1.vpce.amazonaws.com",
            "my-loadbalancer-1234567890.us-west-2.elb.amazonaws.com",
            "r3---sn-ab5l6nzr.googlevideo.com",
            "xn--bcher-kva.example",
            "",
        ] {
            assert_eq!(suspicious_label(name, &DEFAULT), None, "{name}");
        }
    }

    #[test]
    fn long_labels_are_flagged_with_their_domain() {
        let data = "a".repeat(51);
        let name = format!("{data}.t.evil.example");
        assert_eq!(
            suspicious_label(&name, &DEFAULT),
            Some((Suspicion::Long { len: 51 }, "t.evil.example"))
        );
        // At the limit: not long.
        let fifty = format!("{}.evil.example", "a".repeat(50));
        assert_eq!(suspicious_label(&fifty, &DEFAULT), None);
        // The rightmost suspicious label names the domain.
        let two = format!("{data}.{data}.evil.example");
        assert_eq!(
            suspicious_label(&two, &DEFAULT).map(|s| s.1),
            Some("evil.example")
        );
        // Escaped bytes count once, as on the wire.
        let escaped = format!("{}.x", "\\000".repeat(50));
        assert_eq!(suspicious_label(&escaped, &DEFAULT), None);
    }

    #[test]
    fn encoded_data_has_high_entropy() {
        // The first 40 characters of base32 of "the api key is
        // sk-live-4f9a2b7c1d" (lower-case, as parsed): 4.18 bits.
        let b32 = "orugkidbobusa23fpeqgs4zaonvs23djozss2ndg";
        let bits = entropy(b32);
        assert!(bits > 4.0 && bits < 4.2, "{bits}");
        let name = format!("{b32}.x.evil.example");
        match suspicious_label(&name, &DEFAULT) {
            Some((Suspicion::Entropy { len: 40, .. }, "x.evil.example")) => {}
            other => panic!("{other:?}"),
        }
        // Below the length the test needs, it is not judged (4.2 bits).
        let short = &b32[..31];
        assert!(entropy(short) > 4.0);
        assert_eq!(suspicious_label(short, &DEFAULT), None);
        // Nor when dashes cut it into short runs.
        let cut = format!("{}-{}", &b32[..20], &b32[20..]);
        assert_eq!(suspicious_label(&cut, &DEFAULT), None);
    }

    #[test]
    fn entropy_of_known_strings() {
        assert!(entropy("aaaa").abs() < f64::EPSILON);
        assert!((entropy("ab") - 1.0).abs() < 1e-9);
        assert!((entropy("0123456789abcdef") - 4.0).abs() < 1e-9);
        assert!(entropy("").abs() < f64::EPSILON);
    }

    #[test]
    fn limits_are_tunable() {
        let strict = LabelLimits {
            long_label: 20,
            ..DEFAULT
        };
        assert!(suspicious_label("elasticloadbalancing-x.example", &strict).is_some());
        assert!(suspicious_label("elasticloadbalancing-x.example", &DEFAULT).is_none());
    }
}
