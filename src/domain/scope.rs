//! SMART system scopes, v1 (`system/Patient.read`, `system/*.read`) and v2 (`system/Patient.rs`,
//! `system/*.rs`), parsed at the boundary. The gateway is a read-only Bulk Data service: it grants at most
//! `r` and `s`, never `c`, `u` or `d`, whatever a client asks for or a source is configured with.

use super::ResourceType;
use super::resource_type::shorten;
use serde::Deserialize;
use std::fmt;

/// The five SMART v2 permissions, as bits, in their canonical order `c r u d s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permissions(u8);

impl Permissions {
    const LETTERS: [(char, u8); 5] = [('c', 1), ('r', 2), ('u', 4), ('d', 8), ('s', 16)];
    pub const READ: Permissions = Permissions(2);
    /// What a Bulk Data export can use: read and search.
    pub const READ_SEARCH: Permissions = Permissions(2 | 16);
    const WRITE: Permissions = Permissions(1 | 4 | 8);
    const ALL: Permissions = Permissions(31);
    const NONE: Permissions = Permissions(0);

    pub fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersect(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Reads a v2 permission string: one or more of `c r u d s`, each once, in that order.
    fn from_v2(text: &str) -> Option<Permissions> {
        let mut bits = 0u8;
        let mut last = 0usize;
        for ch in text.chars() {
            let pos = Self::LETTERS.iter().position(|(c, _)| *c == ch)?;
            if bits != 0 && pos <= last {
                return None;
            }
            bits |= Self::LETTERS[pos].1;
            last = pos;
        }
        (bits != 0).then_some(Permissions(bits))
    }

    fn v2_letters(self) -> String {
        Self::LETTERS
            .iter()
            .filter(|(_, bit)| self.0 & bit != 0)
            .map(|(c, _)| *c)
            .collect()
    }
}

/// Which grammar a scope was written in; a granted scope is answered in the grammar it was asked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeVersion {
    V1,
    V2,
}

/// One `system/…` scope: a resource type (or every type) and what may be done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SystemScope {
    /// `None` is the wildcard `*`.
    resource: Option<ResourceType>,
    permissions: Permissions,
    version: ScopeVersion,
}

/// Why a scope string was refused; the message is safe to show (values are shortened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeError(pub String);

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScopeError {}

impl SystemScope {
    pub fn resource(&self) -> Option<ResourceType> {
        self.resource
    }

    pub fn permissions(&self) -> Permissions {
        self.permissions
    }

    /// Whether this scope lets a client read resources of `name`.
    pub fn reads(&self, name: &str) -> bool {
        self.permissions.contains(Permissions::READ)
            && self.resource.is_none_or(|r| r.as_str() == name)
    }

    /// What both scopes allow, in this scope's grammar, or `None` when they share nothing.
    fn meet(&self, other: &SystemScope) -> Option<SystemScope> {
        let resource = match (self.resource, other.resource) {
            (None, r) | (r, None) => r,
            (Some(a), Some(b)) if a == b => Some(a),
            _ => return None,
        };
        let permissions = self.permissions.intersect(other.permissions);
        (!permissions.is_empty()).then_some(SystemScope {
            resource,
            permissions,
            version: self.version,
        })
    }
}

impl TryFrom<&str> for SystemScope {
    type Error = ScopeError;

    fn try_from(text: &str) -> Result<Self, Self::Error> {
        let shown = shorten(text);
        let rest = text.strip_prefix("system/").ok_or_else(|| {
            ScopeError(format!(
                "'{shown}' is not a system scope: this gateway grants only system/<ResourceType>.<permissions> scopes"
            ))
        })?;
        if rest.contains('?') {
            return Err(ScopeError(format!(
                "'{shown}' narrows a scope with search parameters, which this gateway cannot enforce on a Bulk Data export"
            )));
        }
        let (resource, action) = rest.rsplit_once('.').ok_or_else(|| {
            ScopeError(format!(
                "'{shown}' is malformed: expected system/<ResourceType or *>.<read or permissions such as rs>"
            ))
        })?;
        let resource = match resource {
            "*" => None,
            name => Some(ResourceType::try_from(name).map_err(|_| {
                ScopeError(format!(
                    "'{shown}' names '{}', which is not a FHIR R4 resource type",
                    shorten(name)
                ))
            })?),
        };
        let (permissions, version) = match action {
            "read" => (Permissions::READ_SEARCH, ScopeVersion::V1),
            "write" => (Permissions::WRITE, ScopeVersion::V1),
            "*" => (Permissions::ALL, ScopeVersion::V1),
            v2 => (
                Permissions::from_v2(v2).ok_or_else(|| {
                    ScopeError(format!(
                        "'{shown}' asks for an unknown action: use read, write or * (SMART v1) or some of c, r, u, d, s in that order (SMART v2)"
                    ))
                })?,
                ScopeVersion::V2,
            ),
        };
        Ok(SystemScope {
            resource,
            permissions,
            version,
        })
    }
}

impl TryFrom<String> for SystemScope {
    type Error = ScopeError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        SystemScope::try_from(text.as_str())
    }
}

impl<'de> Deserialize<'de> for SystemScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SystemScope::try_from(text.as_str()).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SystemScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = self.resource.map_or("*", ResourceType::as_str);
        let action = match (self.version, self.permissions) {
            (ScopeVersion::V1, Permissions::READ_SEARCH) => "read".to_owned(),
            (ScopeVersion::V1, Permissions::WRITE) => "write".to_owned(),
            (ScopeVersion::V1, Permissions::ALL) => "*".to_owned(),
            // Anything else has no v1 spelling.
            (_, p) => p.v2_letters(),
        };
        write!(f, "system/{resource}.{action}")
    }
}

/// A set of scopes: what a client asked for, what a source is registered with, or what was granted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(Vec<SystemScope>);

impl Scopes {
    /// `system/*.read`: what a source has when its configuration names no scopes.
    pub fn all_read() -> Scopes {
        Scopes(vec![SystemScope {
            resource: None,
            permissions: Permissions::READ_SEARCH,
            version: ScopeVersion::V1,
        }])
    }

    pub fn new(scopes: Vec<SystemScope>) -> Scopes {
        Scopes(scopes)
    }

    /// Parses OAuth's space-separated `scope` parameter; every item must be a valid system scope.
    pub fn parse(text: &str) -> Result<Scopes, ScopeError> {
        let scopes = text
            .split_ascii_whitespace()
            .map(SystemScope::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        if scopes.is_empty() {
            return Err(ScopeError(
                "is empty: ask for at least one scope, such as system/*.read".to_owned(),
            ));
        }
        Ok(Scopes(scopes))
    }

    pub fn iter(&self) -> impl Iterator<Item = &SystemScope> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any scope asks for read or search at all (a write-only request is refused whole).
    pub fn asks_to_read(&self) -> bool {
        self.0
            .iter()
            .any(|s| !s.permissions.intersect(Permissions::READ_SEARCH).is_empty())
    }

    /// What to grant: each requested scope narrowed to what `allowed` covers and to read and search,
    /// in the grammar it was asked in, without repeats.
    pub fn grant(&self, allowed: &Scopes) -> Scopes {
        let mut granted: Vec<SystemScope> = Vec::new();
        for requested in &self.0 {
            let readable = SystemScope {
                permissions: requested.permissions.intersect(Permissions::READ_SEARCH),
                ..*requested
            };
            if readable.permissions == Permissions::NONE {
                continue;
            }
            for permit in &allowed.0 {
                if let Some(scope) = readable.meet(permit)
                    && !granted.contains(&scope)
                {
                    granted.push(scope);
                }
            }
        }
        Scopes(granted)
    }

    /// Whether any scope lets the client read some resource type.
    pub fn reads_anything(&self) -> bool {
        self.0
            .iter()
            .any(|s| s.permissions.contains(Permissions::READ))
    }

    /// Whether these scopes let the client read resources of `name`.
    pub fn reads(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.reads(name))
    }

    /// The resource types these scopes let a client read; `None` when a wildcard covers every type.
    pub fn readable_types(&self) -> Option<Vec<ResourceType>> {
        let mut types = Vec::new();
        for scope in &self.0 {
            if !scope.permissions.contains(Permissions::READ) {
                continue;
            }
            match scope.resource {
                None => return None,
                Some(t) if !types.contains(&t) => types.push(t),
                Some(_) => {}
            }
        }
        Some(types)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{scope}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(requested: &str, allowed: &str) -> String {
        Scopes::parse(requested)
            .unwrap()
            .grant(&Scopes::parse(allowed).unwrap())
            .to_string()
    }

    #[test]
    fn v1_and_v2_system_scopes_parse_and_print_as_written() {
        for text in [
            "system/*.read",
            "system/Patient.read",
            "system/*.rs",
            "system/Observation.r",
            "system/Patient.cruds",
            "system/Patient.write",
            "system/*.*",
        ] {
            assert_eq!(SystemScope::try_from(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn malformed_non_system_unknown_and_out_of_order_scopes_are_refused() {
        for text in [
            "",
            "   ",
            "invalid test value",
            "undefined",
            "launch fhirUser",
            "patient/*.read",
            "user/Patient.rs",
            "system/Patient",
            "system/UnknownResource.read",
            "system/UnknownResource.r",
            "system/Patient.unknownAction",
            "system/Patient.xyz",
            "system/Patient.sr",
            "system/Patient.rr",
            "system/Patient.rs?category=laboratory",
            "system/patient.read",
        ] {
            assert!(Scopes::parse(text).is_err(), "{text:?} must be refused");
        }
    }

    #[test]
    fn a_grant_is_the_intersection_with_the_sources_scopes_and_never_writes() {
        assert_eq!(granted("system/*.read", "system/*.read"), "system/*.read");
        assert_eq!(granted("system/*.*", "system/*.read"), "system/*.read");
        assert_eq!(granted("system/*.cruds", "system/*.read"), "system/*.rs");
        assert_eq!(
            granted("system/Patient.read system/Observation.rs", "system/*.read"),
            "system/Patient.read system/Observation.rs"
        );
        assert_eq!(
            granted("system/*.read", "system/Patient.read system/Observation.rs"),
            "system/Patient.read system/Observation.read"
        );
        assert_eq!(
            granted(
                "system/Patient.read system/Encounter.read",
                "system/Patient.rs"
            ),
            "system/Patient.read"
        );
        assert_eq!(
            granted("system/*.rs", "system/Patient.r"),
            "system/Patient.r"
        );
        assert_eq!(granted("system/Patient.cud", "system/*.read"), "");
        assert_eq!(granted("system/Encounter.read", "system/Patient.read"), "");
    }

    #[test]
    fn readable_types_are_listed_unless_a_wildcard_reads_everything() {
        let some =
            Scopes::parse("system/Patient.read system/Observation.rs system/Encounter.s").unwrap();
        let names: Vec<&str> = some
            .readable_types()
            .unwrap()
            .iter()
            .map(|t| t.as_str())
            .collect();
        assert_eq!(names, ["Patient", "Observation"]);
        assert!(some.reads("Patient") && !some.reads("Encounter"));
        assert!(Scopes::all_read().readable_types().is_none());
        assert!(Scopes::all_read().reads("Encounter"));
    }
}
