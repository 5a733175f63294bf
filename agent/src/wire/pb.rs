//! Code generated from `proto/vigil/v1` (messages, clients and servers).

// Generated code follows prost's conventions, not this crate's lints.
#[allow(clippy::pedantic, clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("vigil.v1");
}

pub use generated::*;

/// The encoded `FileDescriptorSet` of `vigil.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vigil_descriptor");

#[cfg(test)]
mod tests {
    //! The API must stay clean under `buf lint` STANDARD so it can grow
    //! without breaking clients; `buf` is not available offline, so the rules
    //! that matter most are checked here against the compiled descriptors.

    use prost::Message as _;
    use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

    use super::FILE_DESCRIPTOR_SET;

    fn vigil_files() -> Vec<prost_types::FileDescriptorProto> {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        set.file
            .into_iter()
            .filter(|f| f.package() == "vigil.v1")
            .collect()
    }

    fn upper_snake(s: &str) -> String {
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
        out
    }

    fn check_enum(e: &EnumDescriptorProto, problems: &mut Vec<String>) {
        let prefix = format!("{}_", upper_snake(e.name()));
        let first = &e.value[0];
        if first.number() != 0 || first.name() != format!("{prefix}UNSPECIFIED") {
            problems.push(format!(
                "enum {}: zero value must be {prefix}UNSPECIFIED",
                e.name()
            ));
        }
        for v in &e.value {
            if !v.name().starts_with(&prefix) {
                problems.push(format!("enum value {} lacks prefix {prefix}", v.name()));
            }
        }
    }

    fn check_message(m: &DescriptorProto, problems: &mut Vec<String>) {
        if !m.name().starts_with(|c: char| c.is_ascii_uppercase()) || m.name().contains('_') {
            problems.push(format!("message {} is not PascalCase", m.name()));
        }
        for f in &m.field {
            if f.name() != f.name().to_ascii_lowercase() {
                problems.push(format!(
                    "field {}.{} is not lower_snake_case",
                    m.name(),
                    f.name()
                ));
            }
        }
        for e in &m.enum_type {
            check_enum(e, problems);
        }
        for n in &m.nested_type {
            if !n
                .options
                .as_ref()
                .is_some_and(prost_types::MessageOptions::map_entry)
            {
                check_message(n, problems);
            }
        }
    }

    #[test]
    fn descriptors_follow_buf_standard_lint_rules() {
        let files = vigil_files();
        assert!(
            files.len() >= 4,
            "expected the vigil.v1 files, got {}",
            files.len()
        );
        let mut problems = Vec::new();
        let mut used_types = std::collections::HashSet::new();
        for f in &files {
            if !f.name().starts_with("vigil/v1/") {
                problems.push(format!("file {} is not under vigil/v1/", f.name()));
            }
            for e in &f.enum_type {
                check_enum(e, &mut problems);
            }
            for m in &f.message_type {
                check_message(m, &mut problems);
            }
            for s in &f.service {
                if !s.name().ends_with("Service") {
                    problems.push(format!("service {} must end in Service", s.name()));
                }
                for m in &s.method {
                    let req = format!(".vigil.v1.{}Request", m.name());
                    let resp = format!(".vigil.v1.{}Response", m.name());
                    if m.input_type() != req {
                        problems.push(format!("{}: request must be {req}", m.name()));
                    }
                    if m.output_type() != resp {
                        problems.push(format!("{}: response must be {resp}", m.name()));
                    }
                    if !used_types.insert(m.input_type().to_owned())
                        || !used_types.insert(m.output_type().to_owned())
                    {
                        problems.push(format!("{}: request or response type reused", m.name()));
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn lint_checks_reject_bad_names() {
        let value = |name: &str, number| prost_types::EnumValueDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            options: None,
        };
        let bad = EnumDescriptorProto {
            name: Some("AgentState".into()),
            value: vec![
                value("UNKNOWN", 0),
                value("AGENT_STATE_ACTIVE", 1),
                value("REVOKED", 2),
            ],
            ..EnumDescriptorProto::default()
        };
        let mut problems = Vec::new();
        check_enum(&bad, &mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn descriptor_set_names_every_service() {
        let services: Vec<String> = vigil_files()
            .iter()
            .flat_map(|f| f.service.iter().map(|s| s.name().to_owned()))
            .collect();
        for s in ["EventService", "GovernanceService", "NodeService"] {
            assert!(
                services.iter().any(|x| x == s),
                "{s} missing from {services:?}"
            );
        }
    }
}
