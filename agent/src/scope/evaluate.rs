//! Comparing one event with its agent's compiled scope.

use super::*;

/// What a tamper attempt did, in words (`ptrace PTRACE_SEIZE of the daemon
/// (thread 812)`).
#[must_use]
pub fn tamper_words(x: &crate::event::TamperAttempt) -> String {
    let mut s = x.method.clone();
    if !x.detail.is_empty() {
        s.push(' ');
        s.push_str(&x.detail);
    }
    if let Some(t) = x.target_tid {
        let _ = write!(s, " of the daemon (thread {t})");
    }
    s
}

/// The reason of a `session_escape` anomaly.
#[must_use]
pub fn escape_reason(x: &crate::event::SessionEscape, agent: &str, outcome: &str) -> String {
    format!(
        "process {} of agent {agent} {} out of its session, in {}: {outcome}",
        x.moved_pid,
        if x.self_move {
            "moved itself"
        } else if x.created_there {
            "was created by its parent"
        } else {
            "was moved by another of its processes"
        },
        x.to_cgroup
            .clone()
            .unwrap_or_else(|| format!("cgroup id {}", x.to_cgroup_id))
    )
}

impl Scope {
    /// The verdict on one event of `agent`. `now` is the monotonic clock
    /// used for DNS expiry and the symlink cache.
    pub fn evaluate(&self, agent: AgentId, event: &Event, dns: &DnsCache, now: Instant) -> Verdict {
        let Some(a) = self.get(agent) else {
            return Verdict::Violation(Violation {
                kind: AnomalyKind::Unattributed,
                severity: Severity::Medium,
                reason: "event carries an agent id of a replaced config".into(),
                identity: None,
            });
        };
        match &event.payload {
            Payload::Exec(e) => self.eval_exec(a, e, event.process.as_ref(), now),
            Payload::Connect(c) => self.eval_connect(a, c, dns, now),
            Payload::FileOpen(f) => self.eval_open(a, f),
            Payload::DnsQuery(q) => self.eval_query(a, q),
            Payload::FileLink(l) => self.eval_link(a, l),
            Payload::IoUring(u) if u.op == "setup" => Self::eval_io_uring(a),
            Payload::Socket(s) => Self::eval_socket(a, s),
            Payload::UnixConnect(u) => self.eval_unix(a, u),
            Payload::SessionEscape(x) => Verdict::Violation(Violation {
                kind: AnomalyKind::SessionEscape,
                severity: Severity::Critical,
                reason: escape_reason(x, &a.info.name, "still watched as part of its session"),
                identity: None,
            }),
            Payload::TamperAttempt(x) => Verdict::Violation(Violation {
                kind: AnomalyKind::TamperAttempt,
                severity: Severity::Critical,
                reason: format!("{} by {}", tamper_words(x), a.info.name),
                identity: None,
            }),
            _ => Verdict::InScope,
        }
    }

    fn eval_unix(&self, a: &CompiledAgent, u: &crate::event::UnixConnect) -> Verdict {
        if let Some(&id) = self.identities.endpoints.unix.get(&u.path)
            && !a.identities.contains(id)
        {
            return self.identity_violation(a, &format!("unix {} {}", u.op, u.path), id);
        }
        if a.systems.unix.contains_key(&u.path) {
            return Verdict::InScope;
        }
        Verdict::Violation(Violation {
            kind: AnomalyKind::UnapprovedSystem,
            severity: Severity::High,
            reason: format!(
                "unix socket {} is outside systems of {}",
                u.path, a.info.name
            ),
            identity: None,
        })
    }

    fn eval_socket(a: &CompiledAgent, s: &crate::event::Socket) -> Verdict {
        if a.info
            .scope
            .socket_families
            .iter()
            .any(|f| f.as_str() == s.class)
        {
            return Verdict::InScope;
        }
        Verdict::Violation(Violation {
            kind: AnomalyKind::UnusualSocket,
            severity: Severity::High,
            reason: format!(
                "{} socket ({}, type {}, protocol {}) created by {}, outside its socket_families",
                s.class, s.family_name, s.sock_type, s.protocol, a.info.name
            ),
            identity: None,
        })
    }

    fn eval_io_uring(a: &CompiledAgent) -> Verdict {
        if a.info.io_uring == IoUringPolicy::Allow {
            return Verdict::InScope;
        }
        Verdict::Violation(Violation {
            kind: AnomalyKind::IoUringUsed,
            severity: Severity::High,
            reason: format!(
                "io_uring set up by {}: its requests pass no syscall the file and network sensors see",
                a.info.name
            ),
            identity: None,
        })
    }

    fn identity_violation(&self, a: &CompiledAgent, what: &str, id: usize) -> Verdict {
        let name = &self.identities.names[id];
        Verdict::Violation(Violation {
            kind: AnomalyKind::IdentityOutsideScope,
            severity: Severity::Critical,
            reason: format!(
                "{what} touches identity {name}, outside identities of {}",
                a.info.name
            ),
            identity: Some(name.clone()),
        })
    }

    fn eval_exec(
        &self,
        a: &CompiledAgent,
        e: &Exec,
        process: Option<&Process>,
        now: Instant,
    ) -> Verdict {
        let path = normalize(&e.filename);
        let known = process.and_then(|p| p.exe.as_deref());
        if e.from_memory && !a.info.scope.exec_from_memory {
            return Verdict::Violation(Violation {
                kind: AnomalyKind::ExecFromMemory,
                severity: Severity::Critical,
                reason: format!(
                    "exec of {} ({path}), a program no file system names, by {}",
                    known.unwrap_or("an unnamed file"),
                    a.info.name
                ),
                identity: None,
            });
        }
        // The dynamic loader run directly (`ld-linux-x86-64.so.2 /tmp/x`)
        // runs the program its arguments name: that program is the tool,
        // whether or not the loader itself is allowed.
        if (tools::is_loader(&path) || known.is_some_and(tools::is_loader))
            && let Some((program, args)) = tools::loader_program(&e.argv)
        {
            let run = Exec {
                filename: program.to_owned(),
                argv: args.to_vec(),
                argv_truncated: e.argv_truncated,
                blocked: e.blocked,
                from_memory: e.from_memory,
                inode: None,
            };
            return match self.eval_exec(a, &run, None, now) {
                Verdict::Violation(mut v) => {
                    v.reason = format!("{} (run through the dynamic loader {path})", v.reason);
                    Verdict::Violation(v)
                }
                Verdict::InScope => Verdict::InScope,
            };
        }
        let cand = Candidate::from_bytes(path.as_bytes());
        if let Touch::Denied(id) = self.identities.touch_file(&cand, &a.identities) {
            return self.identity_violation(a, &format!("exec of {path}"), id);
        }
        // The program the kernel runs (`mm->exe_file`, resolved in the
        // kernel within the process's root) is the tool, whatever name ran it.
        let pid = process.map(|p| p.pid);
        if let Some(x) = known
            && a.tools.is_match(x, now)
        {
            return self.pinned_check(a, pid, true, x, &path);
        }
        // The file the name leads to, on the daemon's view of the file
        // system: without the kernel's name it is the program; when it is
        // another file than the program, it is a script the program (its
        // interpreter) runs, and the script is the tool.
        let judged = self.exe_cache.with_canonical(&path, now, |canonical| {
            let judged = match (known, canonical) {
                (None, None) => Some(&path[..]),
                (None, Some(c)) => Some(c),
                (Some(x), Some(c)) if c != x => Some(c),
                (Some(_), _) => None,
            };
            if let Some(p) = judged.filter(|p| a.tools.is_match(p, now)) {
                // A script is read from its path; a program without the
                // kernel's name is the process's own.
                return Ok(self.pinned_check(a, pid, known.is_none(), p, &path));
            }
            // Only a violation names it, and pays for the copy.
            Err(canonical.filter(|c| *c != path).map(str::to_owned))
        });
        let canonical = match judged {
            Ok(v) => return v,
            Err(c) => c,
        };
        let exe = known.filter(|x| **x != *path);
        let mut reason = format!("exec of {path}");
        let mut shown: Vec<&str> = Vec::new();
        for alt in exe.into_iter().chain(canonical.as_deref()) {
            if !shown.contains(&alt) {
                shown.push(alt);
            }
        }
        if !shown.is_empty() {
            let _ = write!(reason, " ({})", shown.join(", "));
        }
        let _ = write!(reason, " is outside tools of {}", a.info.name);
        Verdict::Violation(Violation {
            kind: AnomalyKind::UnapprovedTool,
            severity: Severity::High,
            reason,
            identity: None,
        })
    }

    /// An exec whose program matched `tools` by path: with `tools_by_hash`,
    /// its content must also be one of the pinned tools'.
    fn pinned_check(
        &self,
        a: &CompiledAgent,
        pid: Option<u32>,
        binary: bool,
        file: &str,
        name: &str,
    ) -> Verdict {
        let Some(pinned) = &a.pinned else {
            return Verdict::InScope;
        };
        let problem = match self.digests.of_exec(pid, binary, file) {
            Ok(d) if pinned.contains(&d) => return Verdict::InScope,
            Ok(d) => {
                let hex = d[..8].iter().fold(String::new(), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                });
                format!("its content (sha256 {hex}…) is not that of any pinned tool")
            }
            // Fail closed: what cannot be read cannot be shown to be a tool.
            Err(e) => format!("its content could not be read ({e})"),
        };
        let shown = if file == name {
            String::new()
        } else {
            format!(" ({file})")
        };
        Verdict::Violation(Violation {
            kind: AnomalyKind::UnapprovedTool,
            severity: Severity::High,
            reason: format!(
                "exec of {name}{shown} matches tools of {} by path, but {problem} (tools_by_hash)",
                a.info.name
            ),
            identity: None,
        })
    }

    fn eval_connect(
        &self,
        a: &CompiledAgent,
        c: &Connect,
        dns: &DnsCache,
        now: Instant,
    ) -> Verdict {
        let ip = canonical_ip(c.address);
        let (port, proto) = (c.port, c.protocol);
        let granted = |id: usize| a.identities.contains(id);
        let endpoints = &self.identities.endpoints;
        let mut denied = endpoints.nets.find(ip, port, proto, |id| !granted(id));
        let mut identity_ok = endpoints.nets.find(ip, port, proto, granted).is_some();
        let mut system_ok = a.systems.nets.find(ip, port, proto, |()| true).is_some();
        let names_matter = !endpoints.hosts.is_empty()
            || (!identity_ok && !system_ok && !a.systems.hosts.is_empty());
        if denied.is_none() && names_matter {
            // One pass over the names learnt for this address serves both the
            // identity endpoints (an allowed CIDR does not excuse touching a
            // credential endpoint) and the agent's host rules.
            dns.any_name(&a.info.name, ip, now, |name| {
                if let Some(id) = endpoints.hosts.find(name, port, proto, |id| !granted(id)) {
                    denied = Some(id);
                    return true;
                }
                identity_ok |= endpoints.hosts.find(name, port, proto, granted).is_some();
                system_ok |= a.systems.hosts.find(name, port, proto, |()| true).is_some();
                false
            });
        }
        if let Some(id) = denied {
            return self.identity_violation(a, &connect_words(c, ip, dns, &a.info.name, now), id);
        }
        if identity_ok || system_ok {
            return Verdict::InScope;
        }
        // glibc's getaddrinfo picks source addresses by connecting UDP
        // sockets to each candidate with port 0; no datagram can go there.
        if proto == Protocol::Udp && port == 0 && c.op == "connect" {
            return Verdict::InScope;
        }
        Verdict::Violation(Violation {
            kind: AnomalyKind::UnapprovedSystem,
            severity: Severity::High,
            reason: format!(
                "{} is outside systems of {}",
                connect_words(c, ip, dns, &a.info.name, now),
                a.info.name
            ),
            identity: None,
        })
    }

    /// True when a host rule of the agent's `systems`, or an endpoint of an
    /// identity it was given, names `name` (on any port: a query says
    /// nothing of the port).
    fn name_in_scope(&self, a: &CompiledAgent, name: &str) -> bool {
        let hosts = &self.identities.endpoints.hosts;
        a.systems.hosts.find_name(name, |()| true).is_some()
            || hosts
                .find_name(name, |id| a.identities.contains(id))
                .is_some()
    }

    /// Whether a queried name is an allowed one, also as a resolver's
    /// search list expands it (`api.example.com.ns.svc.cluster.local` for
    /// `api.example.com` in a pod, whose resolver tries that first).
    fn query_in_scope(&self, a: &CompiledAgent, name: &str) -> bool {
        if self.name_in_scope(a, name) {
            return true;
        }
        self.dns_search_domains.iter().any(|d| {
            name.match_indices('.').any(|(i, _)| {
                let tail = &name[i + 1..];
                let searched = tail == d
                    || tail.len() > d.len()
                        && tail.ends_with(d.as_str())
                        && tail.as_bytes()[tail.len() - d.len() - 1] == b'.';
                searched && self.name_in_scope(a, &name[..i])
            })
        })
    }

    /// A query's name is data that reaches the resolver and the servers of
    /// its domain, whichever resolver it is sent to: it must be a name of
    /// the agent's systems, and it must not look like encoded data.
    fn eval_query(&self, a: &CompiledAgent, q: &DnsQuery) -> Verdict {
        let in_scope = self.query_in_scope(a, &q.name);
        let server = SocketAddr::new(canonical_ip(q.server), q.server_port);
        let agent = &a.info.name;
        if let Some((why, domain)) = dns::suspicious_label(&q.name, &self.dns_labels) {
            let limits = &self.dns_labels;
            let what = match why {
                dns::Suspicion::Long { .. } => {
                    format!("a label longer than {} characters", limits.long_label)
                }
                dns::Suspicion::Entropy { .. } => format!(
                    "a label with {} or more characters of more than {} bits of entropy each",
                    limits.entropy_label, limits.entropy_bits
                ),
            };
            let domain = if domain.is_empty() { "." } else { domain };
            // Names differ query by query; the domain and the test do
            // not, so a tunnel folds into one report with a count.
            let mut reason = format!(
                "dns query to {server} under {domain} has {what}: data may be encoded in the name"
            );
            if !in_scope {
                let _ = write!(reason, ", and the name is outside systems of {agent}");
            }
            return Verdict::Violation(Violation {
                kind: AnomalyKind::DnsExfiltrationSuspected,
                severity: Severity::High,
                reason,
                identity: None,
            });
        }
        if in_scope {
            return Verdict::InScope;
        }
        Verdict::Violation(Violation {
            kind: AnomalyKind::UnapprovedSystem,
            severity: Severity::Medium,
            reason: format!(
                "dns query for {} to {server} is outside systems of {agent}",
                q.name
            ),
            identity: None,
        })
    }

    /// A new name for a credential, or for data the agent may not read,
    /// is a way to read it under a name no rule names (and to keep it where
    /// the agent works): the link itself is the violation, before any open.
    /// The file is known by the target's path (resolved, and as passed) and
    /// by the inode the new name reaches.
    fn eval_link(&self, a: &CompiledAgent, l: &FileLink) -> Verdict {
        let target = normalize(&l.target);
        let cand = Candidate::from_bytes(target.as_bytes());
        let mut touch = self.identities.touch_file(&cand, &a.identities);
        if !matches!(touch, Touch::Denied(_))
            && let Some(raw) = l.raw_target.as_deref().filter(|r| r.starts_with('/'))
        {
            let raw = normalize(raw);
            if let Touch::Denied(id) = self
                .identities
                .touch_file(&Candidate::from_bytes(raw.as_bytes()), &a.identities)
            {
                touch = Touch::Denied(id);
            }
        }
        if !matches!(touch, Touch::Denied(_))
            && let Some(inode) = l.inode
        {
            match self
                .identities
                .touch_inode(inode.dev, inode.ino, &a.identities)
            {
                Touch::None => {}
                by_inode => touch = by_inode,
            }
        }
        let words = || {
            let mut s = match l.op.as_str() {
                "rename" => format!("rename of {target} to {}", l.path),
                "symlink" => format!("symbolic link {} to {target}", l.path),
                _ => format!("hard link {} to {target}", l.path),
            };
            if let Some(err) = &l.error {
                let _ = write!(s, " (failed: {err})");
            }
            s
        };
        if let Touch::Denied(id) = touch {
            let name = &self.identities.names[id];
            return Verdict::Violation(Violation {
                kind: AnomalyKind::LinkToProtected,
                severity: Severity::Critical,
                reason: format!(
                    "{} names identity {name}, outside identities of {}",
                    words(),
                    a.info.name
                ),
                identity: Some(name.clone()),
            });
        }
        if touch == Touch::None
            && let ReadCheck::Foreign(class) = self.data.check_read(&cand, &a.data)
        {
            return Verdict::Violation(Violation {
                kind: AnomalyKind::LinkToProtected,
                severity: Severity::High,
                reason: format!(
                    "{} names data class {}, outside data of {}",
                    words(),
                    self.data.names[class],
                    a.info.name
                ),
                identity: None,
            });
        }
        Verdict::InScope
    }

    fn eval_open(&self, a: &CompiledAgent, f: &FileOpen) -> Verdict {
        let path = normalize(&f.path);
        let cand = Candidate::from_bytes(path.as_bytes());
        let words = || open_words(f, &path);
        let mut touch = self.identities.touch_file(&cand, &a.identities);
        // The same credential under another name: a hard link, a rename,
        // a bind mount.
        if !matches!(touch, Touch::Denied(_))
            && let Some(inode) = f.inode
        {
            match self
                .identities
                .touch_inode(inode.dev, inode.ino, &a.identities)
            {
                Touch::None => {}
                by_inode => touch = by_inode,
            }
        }
        // The name used matters too: a path rule names what the agent asked for.
        if !matches!(touch, Touch::Denied(_))
            && let Some(raw) = f.raw_path.as_deref().filter(|r| r.starts_with('/'))
        {
            let raw = normalize(raw);
            if let Touch::Denied(id) = self
                .identities
                .touch_file(&Candidate::from_bytes(raw.as_bytes()), &a.identities)
            {
                touch = Touch::Denied(id);
            }
        }
        if let Touch::Denied(id) = touch {
            return self.identity_violation(a, &words(), id);
        }
        if f.access.reads()
            && touch == Touch::None
            && let ReadCheck::Foreign(class) = self.data.check_read(&cand, &a.data)
        {
            return Verdict::Violation(Violation {
                kind: AnomalyKind::DataOutsideScope,
                severity: Severity::Medium,
                reason: format!(
                    "{} is in data class {}, outside data of {}",
                    words(),
                    self.data.names[class],
                    a.info.name
                ),
                identity: None,
            });
        }
        if f.access.writes() && !self.data.may_write(&cand, &a.data) {
            return Verdict::Violation(Violation {
                kind: AnomalyKind::DataOutsideScope,
                severity: Severity::High,
                reason: format!(
                    "{} is outside the writable data of {}",
                    words(),
                    a.info.name
                ),
                identity: None,
            });
        }
        Verdict::InScope
    }
}

/// `read of /x`, `write to /x`, `read-write open of /x`, plus a failure.
fn open_words(f: &FileOpen, path: &str) -> String {
    let mut s = match f.access {
        Access::Read => format!("read of {path}"),
        Access::Write => format!("write to {path}"),
        Access::ReadWrite => format!("read-write open of {path}"),
    };
    if let Some(err) = &f.error {
        let _ = write!(s, " (failed: {err})");
    }
    s
}

/// `connect to 10.9.9.9:22`, `udp send to [::1]:53 (dns.example)`.
fn connect_words(c: &Connect, ip: IpAddr, dns: &DnsCache, agent: &str, now: Instant) -> String {
    let verb = match (c.protocol, c.op.as_str()) {
        (Protocol::Tcp, _) => "connect to",
        (Protocol::Udp, "sendmsg") => "udp send to",
        (Protocol::Udp, _) => "udp connect to",
        (Protocol::Other, _) => "connection to",
    };
    let mut s = format!("{verb} {}", SocketAddr::new(ip, c.port));
    let names = dns.names_for(agent, ip, now);
    if !names.is_empty() {
        let _ = write!(s, " ({})", names.join(", "));
    }
    s
}
