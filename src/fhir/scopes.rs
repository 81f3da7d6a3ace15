//! Which FHIR reads a token's scopes allow: the service's own scopes (`plans:read`,
//! `protocols:read`, `referrals:read`), or SMART on FHIR scopes as an EHR's authorization server
//! issues them to a backend service or a user's app (v1 `system/CarePlan.read`, v2
//! `system/CarePlan.rs`).
//!
//! Honoured SMART scopes name the `system` or `user` context, a resource type or `*`, and
//! either v1 permissions (`read`, `*`) or v2 ones (a subset of `c r u d s` in that order: `r`
//! allows a read, `s` a search). Not honoured, so granting nothing here: `patient/` scopes
//! (they stand for the one patient chosen at an app's launch, which a token to this service
//! does not name), v2 scopes narrowed by a query (`system/CarePlan.rs?category=…`), and
//! anything malformed (`system/CarePlan.sr`, `system/careplan.read`). SMART scopes reach only
//! the FHIR views, never `/v1`.

use crate::auth::Scope;

/// A FHIR interaction the views serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Read,
    Search,
}

/// A kind of record behind a FHIR resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A preference plan, as a CarePlan.
    PreferencePlan,
    /// A safety protocol, as a CarePlan.
    SafetyProtocol,
    /// A fallback referral, as a ServiceRequest.
    Referral,
}

impl Kind {
    /// The service's own scope for reading this kind.
    pub fn native(self) -> Scope {
        match self {
            Kind::PreferencePlan => Scope::PlansRead,
            Kind::SafetyProtocol => Scope::ProtocolsRead,
            Kind::Referral => Scope::ReferralsRead,
        }
    }

    /// The FHIR resource type this kind is read as.
    pub fn resource_type(self) -> &'static str {
        match self {
            Kind::PreferencePlan | Kind::SafetyProtocol => "CarePlan",
            Kind::Referral => "ServiceRequest",
        }
    }
}

/// A SMART scope the service honours.
#[derive(Debug, PartialEq, Eq)]
struct Smart<'a> {
    /// A resource type, or `*` for all.
    resource: &'a str,
    read: bool,
    search: bool,
}

fn smart(scope: &str) -> Option<Smart<'_>> {
    let (context, rest) = scope.split_once('/')?;
    if !matches!(context, "system" | "user") {
        return None;
    }
    let (resource, permissions) = rest.split_once('.')?;
    let resource_ok = resource == "*"
        || (resource.starts_with(|c: char| c.is_ascii_uppercase())
            && resource.chars().all(|c| c.is_ascii_alphanumeric()));
    if !resource_ok {
        return None;
    }
    let (read, search) = match permissions {
        "read" | "*" => (true, true),
        other => v2_permissions(other)?,
    };
    Some(Smart {
        resource,
        read,
        search,
    })
}

/// SMART v2 permissions: a non-empty subset of `cruds`, in that order, each at most once.
fn v2_permissions(p: &str) -> Option<(bool, bool)> {
    const ORDER: &str = "cruds";
    let mut last: Option<usize> = None;
    for c in p.chars() {
        let i = ORDER.find(c)?;
        if last.is_some_and(|l| i <= l) {
            return None;
        }
        last = Some(i);
    }
    last?;
    Some((p.contains('r'), p.contains('s')))
}

/// Whether `scope` is a SMART scope the FHIR views honour (for the `token` command, which
/// refuses scopes that would grant nothing).
pub fn is_honoured_smart(scope: &str) -> bool {
    smart(scope).is_some()
}

/// Whether any of `scopes` allows `interaction` on records of `kind`.
pub fn allows<'a>(
    scopes: impl IntoIterator<Item = &'a str>,
    kind: Kind,
    interaction: Interaction,
) -> bool {
    scopes.into_iter().any(|s| {
        s == kind.native().as_str()
            || smart(s).is_some_and(|m| {
                (m.resource == "*" || m.resource == kind.resource_type())
                    && match interaction {
                        Interaction::Read => m.read,
                        Interaction::Search => m.search,
                    }
            })
    })
}

#[cfg(test)]
mod tests {
    use super::Interaction::{Read, Search};
    use super::Kind::{PreferencePlan, Referral, SafetyProtocol};
    use super::*;

    fn can(scope: &str, kind: Kind, interaction: Interaction) -> bool {
        allows(scope.split_whitespace(), kind, interaction)
    }

    #[test]
    fn the_services_own_scopes_allow_read_and_search_of_their_kind_only() {
        for i in [Read, Search] {
            assert!(can("plans:read", PreferencePlan, i));
            assert!(!can("plans:read", SafetyProtocol, i));
            assert!(can("protocols:read", SafetyProtocol, i));
            assert!(can("referrals:read", Referral, i));
            assert!(!can("referrals:read", PreferencePlan, i));
            assert!(!can("plans:write", PreferencePlan, i));
        }
    }

    #[test]
    fn smart_v1_scopes_allow_read_and_search() {
        for scope in [
            "system/CarePlan.read",
            "user/CarePlan.read",
            "system/CarePlan.*",
            "system/*.read",
            "user/*.*",
        ] {
            for i in [Read, Search] {
                assert!(can(scope, PreferencePlan, i), "{scope}");
                assert!(can(scope, SafetyProtocol, i), "{scope}");
            }
        }
        assert!(can("system/ServiceRequest.read", Referral, Read));
        assert!(!can("system/ServiceRequest.read", PreferencePlan, Read));
        assert!(!can("system/CarePlan.read", Referral, Search));
        assert!(!can("system/CarePlan.write", PreferencePlan, Read));
    }

    #[test]
    fn smart_v2_permissions_are_an_ordered_subset_of_cruds() {
        assert!(can("system/CarePlan.rs", PreferencePlan, Read));
        assert!(can("system/CarePlan.rs", PreferencePlan, Search));
        assert!(can("system/CarePlan.r", SafetyProtocol, Read));
        assert!(!can("system/CarePlan.r", SafetyProtocol, Search));
        assert!(can("system/CarePlan.s", SafetyProtocol, Search));
        assert!(!can("system/CarePlan.s", SafetyProtocol, Read));
        assert!(can("user/ServiceRequest.cruds", Referral, Read));
        assert!(can("system/*.rs", Referral, Search));
        assert!(!can("system/CarePlan.cud", PreferencePlan, Read));
        // Out of order, repeated, unknown letters, empty.
        for bad in [
            "system/CarePlan.sr",
            "system/CarePlan.rrs",
            "system/CarePlan.rx",
            "system/CarePlan.",
            "system/CarePlan.RS",
        ] {
            assert!(!can(bad, PreferencePlan, Read), "{bad}");
            assert!(!can(bad, PreferencePlan, Search), "{bad}");
        }
    }

    #[test]
    fn patient_granular_and_malformed_scopes_grant_nothing() {
        for scope in [
            "patient/CarePlan.read",
            "patient/CarePlan.rs",
            "patient/*.read",
            "system/CarePlan.rs?category=http://snomed.info/sct|718347000",
            "system/careplan.read",
            "system/Care-Plan.read",
            "CarePlan.read",
            "system/CarePlan",
            "launch/patient",
            "openid fhirUser",
            "",
        ] {
            for kind in [PreferencePlan, SafetyProtocol, Referral] {
                for i in [Read, Search] {
                    assert!(!can(scope, kind, i), "{scope}");
                }
            }
        }
    }

    #[test]
    fn the_token_command_knows_which_smart_scopes_count() {
        assert!(is_honoured_smart("system/CarePlan.rs"));
        assert!(is_honoured_smart("user/*.read"));
        assert!(!is_honoured_smart("patient/CarePlan.rs"));
        assert!(!is_honoured_smart("system/CarePlan.sr"));
        assert!(!is_honoured_smart("plans:read"));
    }

    #[test]
    fn any_one_scope_of_several_is_enough() {
        let scopes = "openid patient/CarePlan.read system/ServiceRequest.s plans:read";
        assert!(can(scopes, Referral, Search));
        assert!(!can(scopes, Referral, Read));
        assert!(can(scopes, PreferencePlan, Read));
        assert!(!can(scopes, SafetyProtocol, Read));
    }
}
