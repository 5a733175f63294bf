//! Enforcement in the kernel: revocation, task approvals and enforced
//! `systems`, read from pinned maps the daemon writes. Because the maps (and
//! the links of these programs) are pinned, enforcement holds while the
//! daemon is down and an approval expires on the kernel clock.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{HashMap, LpmTrie, lpm_trie::Key},
};
use vigil_common::{KernelConfig, Policy, SystemKey, SystemRules, policy, verdict};

/// Policy by cgroup id (session, agent directory or container cgroup).
#[map]
pub static POLICY: HashMap<u64, Policy> = HashMap::pinned(16384, 0);

/// Allowed destinations of agents with enforced `systems`.
#[map]
pub static SYSTEMS: LpmTrie<SystemKey, SystemRules> = LpmTrie::pinned(65536, 0);

/// The merged policy of the current task: its own cgroup, and for `vigil
/// exec` sessions the session and agent directories above it.
#[inline(always)]
pub fn current_policy(cfg: &KernelConfig, cgroup_id: u64) -> Option<Policy> {
    let mut merged = Policy::default();
    let mut found = false;
    // SAFETY: map lookups by value; entries are copied out.
    if let Some(p) = unsafe { POLICY.get(cgroup_id) } {
        merge(&mut merged, p);
        found = true;
    }
    if cfg.session_parent_level != 0 {
        for extra in 1..=2 {
            let level = (cfg.session_parent_level + extra) as i32;
            // SAFETY: helper without memory arguments; out of range gives 0.
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
            if id != 0
                && id != cgroup_id
                && let Some(p) = unsafe { POLICY.get(id) }
            {
                merge(&mut merged, p);
                found = true;
            }
        }
    }
    found.then_some(merged)
}

/// Whether the task's records must reach the daemon at once: its agent's
/// violations are acted on (kill, revoke).
#[inline(always)]
pub fn prompt(cfg: &KernelConfig, cgroup_id: u64) -> bool {
    is_prompt(current_policy(cfg, cgroup_id).as_ref())
}

/// [`prompt`] for a policy already looked up.
#[inline(always)]
pub fn is_prompt(p: Option<&Policy>) -> bool {
    p.is_some_and(|p| p.flags & policy::PROMPT != 0)
}

#[inline(always)]
fn merge(into: &mut Policy, p: &Policy) {
    into.flags |= p.flags;
    if into.agent_key == 0 {
        into.agent_key = p.agent_key;
    }
    if p.grant_expires_ns > into.grant_expires_ns {
        into.grant_expires_ns = p.grant_expires_ns;
    }
}

/// Whether the task may act at all: a verdict code when it may not.
#[inline(always)]
pub fn blocked(p: &Policy) -> Option<u32> {
    if p.flags & policy::REVOKED != 0 {
        return Some(verdict::BLOCKED_REVOKED);
    }
    if p.flags & policy::REQUIRE_APPROVAL != 0 {
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_boot_ns() };
        if p.grant_expires_ns <= now {
            return Some(verdict::BLOCKED_NO_TASK);
        }
    }
    None
}

/// Whether an enforced agent may reach `addr` (v4-mapped for IPv4) on
/// `port` with `protocol`.
#[inline(always)]
pub fn system_allowed(p: &Policy, addr: &[u8; 16], port: u16, protocol: u8) -> bool {
    if p.flags & policy::ENFORCE_SYSTEMS == 0 {
        return true;
    }
    let key = Key::new(
        32 + 128,
        SystemKey {
            agent_be: p.agent_key.to_be_bytes(),
            addr: *addr,
        },
    );
    let Some(rules) = SYSTEMS.get(&key) else {
        return false;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    rules.allows(port, protocol, now)
}
