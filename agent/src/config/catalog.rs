//! Built-in identity catalog: credentials that exist on most nodes whether
//! or not the config mentions them. They are watched for every agent; an
//! agent may touch one only when its name is in the agent's `identities`.

/// One built-in identity.
#[derive(Debug)]
pub struct CatalogEntry {
    /// The name agents list in `identities` to be allowed.
    pub name: &'static str,
    pub description: &'static str,
    /// Path globs (same syntax as config globs).
    pub files: &'static [&'static str],
    /// Globs carved out of `files` (public keys, example env files).
    pub except: &'static [&'static str],
    /// Endpoints, in `systems` syntax.
    pub endpoints: &'static [&'static str],
}

/// `**/` instead of `/root/` and `/home/*/`: home directories also live in
/// `/var/lib/...`, in containers, and under service accounts.
pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "cloud-metadata",
        description: "instance metadata services: AWS IMDS, GCP and Azure metadata",
        files: &[],
        except: &[],
        endpoints: &[
            "169.254.169.254",
            "[fd00:ec2::254]",
            "[fd20:ce::254]",
            "metadata.google.internal",
        ],
    },
    CatalogEntry {
        name: "azure-wireserver",
        description: "Azure WireServer and host agent (port 53 there is the VM's DNS, not a credential)",
        files: &[],
        except: &[],
        endpoints: &["168.63.129.16:80", "168.63.129.16:32526"],
    },
    CatalogEntry {
        name: "aws-ecs-credentials",
        description: "AWS ECS task credentials endpoint",
        files: &[],
        except: &[],
        endpoints: &["169.254.170.2"],
    },
    CatalogEntry {
        name: "aws-eks-pod-identity",
        description: "AWS EKS Pod Identity agent",
        files: &[],
        except: &[],
        endpoints: &["169.254.170.23", "[fd00:ec2::23]"],
    },
    CatalogEntry {
        name: "kubernetes-service-account",
        description: "Kubernetes service-account token, CA and namespace",
        files: &[
            "/var/run/secrets/kubernetes.io/serviceaccount",
            "/var/run/secrets/kubernetes.io/serviceaccount/**",
            "/run/secrets/kubernetes.io/serviceaccount",
            "/run/secrets/kubernetes.io/serviceaccount/**",
        ],
        except: &[],
        endpoints: &[],
    },
    CatalogEntry {
        name: "aws-web-identity-token",
        description: "projected AWS web identity tokens (EKS IRSA and Pod Identity)",
        files: &[
            "/var/run/secrets/eks.amazonaws.com/**",
            "/run/secrets/eks.amazonaws.com/**",
            "/var/run/secrets/pods.eks.amazonaws.com/**",
            "/run/secrets/pods.eks.amazonaws.com/**",
        ],
        except: &[],
        endpoints: &[],
    },
    CatalogEntry {
        name: "aws-credentials",
        description: "AWS CLI/SDK shared credentials and cached SSO tokens",
        files: &[
            "**/.aws/credentials",
            "**/.aws/sso/cache/**",
            "**/.aws/cli/cache/**",
        ],
        except: &[],
        endpoints: &[],
    },
    CatalogEntry {
        name: "gcloud-credentials",
        description: "Google Cloud SDK configuration and credentials",
        files: &["**/.config/gcloud/**"],
        except: &[],
        endpoints: &[],
    },
    CatalogEntry {
        name: "azure-credentials",
        description: "Azure CLI profile and token cache",
        files: &["**/.azure/**"],
        except: &[],
        endpoints: &[],
    },
    CatalogEntry {
        name: "kube-config",
        description: "kubectl configuration with cluster credentials",
        files: &["**/.kube/config"],
        except: &[],
        endpoints: &[],
    },
    CatalogEntry {
        name: "ssh-keys",
        description: "SSH private keys",
        files: &["**/.ssh/id_*"],
        except: &["**/.ssh/id_*.pub"],
        endpoints: &[],
    },
    CatalogEntry {
        name: "docker-config",
        description: "Docker registry credentials",
        files: &["**/.docker/config.json"],
        except: &[],
        endpoints: &[],
    },
    CatalogEntry {
        name: "dotenv",
        description: ".env files, which conventionally hold secrets",
        files: &["**/.env", "**/.env.*"],
        except: &[
            "**/.env.example",
            "**/.env.sample",
            "**/.env.template",
            "**/.env.dist",
        ],
        endpoints: &[],
    },
    CatalogEntry {
        name: "netrc",
        description: "netrc login credentials",
        files: &["**/.netrc"],
        except: &[],
        endpoints: &[],
    },
    CatalogEntry {
        name: "git-credentials",
        description: "git credential store",
        files: &["**/.git-credentials", "**/.config/git/credentials"],
        except: &[],
        endpoints: &[],
    },
];

/// The catalog entry with this name.
#[must_use]
pub fn find(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PathGlob, SystemEntry};

    #[test]
    fn every_entry_parses_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for e in CATALOG {
            assert!(names.insert(e.name), "duplicate {}", e.name);
            crate::config::check_name(e.name).unwrap();
            assert!(!e.files.is_empty() || !e.endpoints.is_empty(), "{}", e.name);
            for g in e.files.iter().chain(e.except) {
                g.parse::<PathGlob>()
                    .unwrap_or_else(|err| panic!("{}: {err}", e.name));
            }
            for s in e.endpoints {
                s.parse::<SystemEntry>()
                    .unwrap_or_else(|err| panic!("{}: {err}", e.name));
            }
        }
    }

    #[test]
    fn find_by_name() {
        assert_eq!(find("aws-credentials").unwrap().name, "aws-credentials");
        assert!(find("nope").is_none());
    }
}
