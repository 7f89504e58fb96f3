//! Who may link with this node: the admission policy, the operator's approvals and
//! denials, and the verdict on one authenticated peer.
//!
//! A peer reaches this decision only after the secure channel proved its node id
//! ([`super::channel`]) and the in-channel handshake checked the mesh secret without
//! exposing it ([`super::handshake`]). [`decide`] then admits it, keeps it `pending` until a
//! person approves it, or refuses it. The core ([`super::MeshCore`]) calls it and holds the
//! pending links; the runtime persists [`Approvals`] in the data directory.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The admission settings: mesh secret, allow list, and whether the mesh is open.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// The shared mesh secret (`--mesh-secret`), if any.
    pub secret: Option<String>,
    /// Node ids admitted without the secret (`--allow-peer`).
    pub allow: Vec<String>,
    /// `mesh_open = true`: every ymesh node is admitted (an explicit choice).
    pub open: bool,
}

// By hand so that the secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("allow", &self.allow)
            .field("open", &self.open)
            .finish()
    }
}

impl Admission {
    /// An open mesh: every ymesh node is admitted.
    pub fn open() -> Self {
        Admission {
            open: true,
            ..Admission::default()
        }
    }

    /// A mesh that admits the nodes proving `secret`.
    pub fn with_secret(secret: impl Into<String>) -> Self {
        Admission {
            secret: Some(secret.into()),
            ..Admission::default()
        }
    }

    /// The part the core needs (everything but the secret itself).
    pub fn policy(&self) -> AdmissionPolicy {
        AdmissionPolicy {
            open: self.open,
            allow: self.allow.iter().cloned().collect(),
            has_secret: self.secret.is_some(),
        }
    }
}

/// [`Admission`] without the secret: what [`decide`] needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionPolicy {
    /// Every ymesh node is admitted.
    pub open: bool,
    /// Node ids admitted by name.
    pub allow: BTreeSet<String>,
    /// A mesh secret is configured.
    pub has_secret: bool,
}

/// The operator's decisions about individual nodes (`ymesh peer approve` / `deny`), kept in
/// the data directory as JSON (`{"approved": [...], "denied": [...]}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approvals {
    /// Nodes a person approved.
    #[serde(default)]
    pub approved: BTreeSet<String>,
    /// Nodes a person denied: refused whatever else they prove.
    #[serde(default)]
    pub denied: BTreeSet<String>,
}

impl Approvals {
    /// Approves `node` (undoing a denial). False when nothing changed.
    pub fn approve(&mut self, node: &str) -> bool {
        let undenied = self.denied.remove(node);
        self.approved.insert(node.to_string()) || undenied
    }

    /// Denies `node` (undoing an approval). False when nothing changed.
    pub fn deny(&mut self, node: &str) -> bool {
        let unapproved = self.approved.remove(node);
        self.denied.insert(node.to_string()) || unapproved
    }
}

/// What the in-channel handshake learned about the mesh secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretCheck {
    /// This node has no mesh secret.
    NotConfigured,
    /// This node has one; the peer offered none.
    Missing,
    /// Both offered one, and they differ.
    Wrong,
    /// Both hold the same secret (proven both ways, without revealing it).
    Proven,
}

/// Which rule admitted a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdmittedBy {
    /// It proved the mesh secret.
    Secret,
    /// Its node id is in the allow list.
    AllowList,
    /// A person approved it.
    Approved,
    /// This node was told to dial it (`--peer`, `[[peers]]`).
    Configured,
    /// The mesh is open (`mesh_open = true`).
    Open,
}

/// The decision about one authenticated peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; the link may carry rooms once the peer admits this node too.
    Welcome(AdmittedBy),
    /// Held until a person approves the node; the reason is shown at both ends.
    Pending(String),
    /// Refused; the reason is sent to the peer.
    Refuse(String),
}

/// The verdict on `node`, authenticated by the channel, with `secret` as the handshake
/// found it. `configured` is true when this node was told to dial `node` (a `[[peers]]`
/// entry led to it). Order: a denial wins; then the secret, the allow list, an approval, a
/// configured peer, an open mesh; anything else waits for approval.
pub fn decide(
    policy: &AdmissionPolicy,
    approvals: &Approvals,
    node: &str,
    configured: bool,
    secret: SecretCheck,
) -> Verdict {
    if approvals.denied.contains(node) {
        return Verdict::Refuse(format!(
            "node {node} was denied by this node's operator (ymesh peer approve {node} undoes it)"
        ));
    }
    if secret == SecretCheck::Proven {
        return Verdict::Welcome(AdmittedBy::Secret);
    }
    if policy.allow.contains(node) {
        return Verdict::Welcome(AdmittedBy::AllowList);
    }
    if approvals.approved.contains(node) {
        return Verdict::Welcome(AdmittedBy::Approved);
    }
    if configured {
        return Verdict::Welcome(AdmittedBy::Configured);
    }
    if policy.open {
        return Verdict::Welcome(AdmittedBy::Open);
    }
    let why = match secret {
        SecretCheck::Wrong => "it does not hold this node's mesh secret (--mesh-secret differs)",
        SecretCheck::Missing => "it has no mesh secret and this node requires one",
        SecretCheck::NotConfigured | SecretCheck::Proven => "it is a new device",
    };
    Verdict::Pending(format!(
        "node {node} waits for approval because {why}; approve it with `ymesh peer approve \
         {node}` on this node"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(open: bool, allow: &[&str], has_secret: bool) -> AdmissionPolicy {
        AdmissionPolicy {
            open,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            has_secret,
        }
    }

    #[test]
    fn a_new_device_waits_unless_the_mesh_is_open() {
        let none = Approvals::default();
        let closed = policy(false, &[], false);
        assert!(matches!(
            decide(&closed, &none, "n", false, SecretCheck::NotConfigured),
            Verdict::Pending(r) if r.contains("ymesh peer approve n")
        ));
        assert_eq!(
            decide(
                &policy(true, &[], false),
                &none,
                "n",
                false,
                SecretCheck::NotConfigured
            ),
            Verdict::Welcome(AdmittedBy::Open)
        );
    }

    #[test]
    fn secret_allow_list_approval_and_configuration_each_admit() {
        let mut approvals = Approvals::default();
        let p = policy(false, &["listed"], true);
        assert_eq!(
            decide(&p, &approvals, "x", false, SecretCheck::Proven),
            Verdict::Welcome(AdmittedBy::Secret)
        );
        assert_eq!(
            decide(&p, &approvals, "listed", false, SecretCheck::Missing),
            Verdict::Welcome(AdmittedBy::AllowList)
        );
        assert_eq!(
            decide(&p, &approvals, "dialed", true, SecretCheck::Wrong),
            Verdict::Welcome(AdmittedBy::Configured)
        );
        assert!(matches!(
            decide(&p, &approvals, "x", false, SecretCheck::Wrong),
            Verdict::Pending(r) if r.contains("mesh secret")
        ));
        approvals.approve("x");
        assert_eq!(
            decide(&p, &approvals, "x", false, SecretCheck::Wrong),
            Verdict::Welcome(AdmittedBy::Approved)
        );
    }

    #[test]
    fn a_denial_wins_over_everything_and_approval_undoes_it() {
        let mut approvals = Approvals::default();
        assert!(approvals.deny("x"));
        assert!(!approvals.deny("x"));
        let p = policy(true, &["x"], true);
        assert!(matches!(
            decide(&p, &approvals, "x", true, SecretCheck::Proven),
            Verdict::Refuse(_)
        ));
        assert!(approvals.approve("x"));
        assert!(approvals.denied.is_empty());
        assert_eq!(
            decide(&p, &approvals, "x", true, SecretCheck::Proven),
            Verdict::Welcome(AdmittedBy::Secret)
        );
    }

    #[test]
    fn approvals_round_trip_as_json() {
        let mut a = Approvals::default();
        a.approve("one");
        a.deny("two");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"approved":["one"],"denied":["two"]}"#);
        assert_eq!(serde_json::from_str::<Approvals>(&json).unwrap(), a);
        assert_eq!(
            serde_json::from_str::<Approvals>("{}").unwrap(),
            Approvals::default()
        );
    }
}
