//! Masking profiles: the serde file format, the built-in `default` profile, and compiled
//! profiles looked up by name.
//!
//! ```yaml
//! profiles:
//!   - name: strict
//!     kinds:
//!       - kind: Secret
//!         paths:
//!           - { path: "data.*", base64: true }
//!           - "stringData.*"
//!       - kind: ConfigMap
//!         paths: ["data.~(?i)password|token|secret|key"]
//!       - kind: Pod
//!         paths: ["spec.containers[*].env[?name~(?i)PASSWORD|TOKEN|SECRET|KEY].value"]
//!         tableColumns: ["Token"]
//!     lastAppliedConfiguration: true
//!     text:
//!       detectors: [aws-access-key-id, aws-secret-access-key, jwt, pem-private-key, password-pair]
//!       custom:
//!         - { name: ticket, regex: "TKT-[0-9]{6}" }
//! ```
//! A file may redefine `default`; otherwise the built-in one is used.

use super::path::JsonPath;
use super::text::{BUILTIN_DETECTORS, TextDetectors};
use super::{MaskError, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// Name of the built-in profile.
pub const DEFAULT_PROFILE: &str = "default";

/// A profile file: a list of profiles.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesFile {
    /// The profiles, by unique name.
    #[serde(default)]
    pub profiles: Vec<ProfileSpec>,
}

/// One profile as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProfileSpec {
    /// Name that policy rules and `--default-mask-profile` refer to.
    pub name: String,
    /// Rules per object kind.
    #[serde(default)]
    pub kinds: Vec<KindRuleSpec>,
    /// Mask the `kubectl.kubernetes.io/last-applied-configuration` annotation (a JSON
    /// copy of the object) with the same rules. Default true.
    #[serde(default = "yes")]
    pub last_applied_configuration: bool,
    /// Text detectors for logs and exec/attach output.
    #[serde(default)]
    pub text: TextSpec,
}

fn yes() -> bool {
    true
}

/// What to mask in objects of one kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KindRuleSpec {
    /// Object `kind`, e.g. `Secret`.
    pub kind: String,
    /// Paths of the values to mask (see [`super::path`]).
    #[serde(default)]
    pub paths: Vec<PathSpec>,
    /// `Table` column names whose cells are masked in rows of this kind.
    #[serde(default)]
    pub table_columns: Vec<String>,
}

/// A path, optionally marked as base64-valued.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PathSpec {
    /// A plain path: values become the plain marker.
    Plain(String),
    /// A path with options.
    Detailed {
        /// The path.
        path: String,
        /// The values are base64 by contract: replace with the base64 of the marker.
        #[serde(default)]
        base64: bool,
    },
}

/// Text detectors of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// Built-in detectors turned on (default: all of them; `[]` for none).
    #[serde(default = "all_detectors")]
    pub detectors: Vec<String>,
    /// Extra patterns.
    #[serde(default)]
    pub custom: Vec<CustomDetector>,
}

impl Default for TextSpec {
    fn default() -> Self {
        Self {
            detectors: all_detectors(),
            custom: Vec::new(),
        }
    }
}

fn all_detectors() -> Vec<String> {
    BUILTIN_DETECTORS.iter().map(|s| s.to_string()).collect()
}

/// A custom text detector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// Name, for the operator.
    pub name: String,
    /// Pattern (`regex` crate syntax); the whole match is replaced.
    pub regex: String,
}

/// A compiled path rule.
#[derive(Debug, Clone)]
pub struct PathRule {
    /// The path.
    pub path: JsonPath,
    /// Replace with the base64 marker.
    pub base64: bool,
}

/// A compiled kind rule.
#[derive(Debug, Clone)]
pub struct KindRule {
    /// Object kind.
    pub kind: String,
    /// Value paths.
    pub paths: Vec<PathRule>,
    /// Table columns.
    pub table_columns: Vec<String>,
}

/// A compiled profile.
#[derive(Debug)]
pub struct Profile {
    /// Its name.
    pub name: String,
    /// Kind rules.
    pub kinds: Vec<KindRule>,
    /// Mask `last-applied-configuration` annotations.
    pub last_applied_configuration: bool,
    /// Text detectors, `None` when the profile has none.
    pub text: Option<Arc<TextDetectors>>,
}

impl Profile {
    /// Compiles `spec`.
    pub fn compile(spec: &ProfileSpec) -> Result<Self> {
        let kinds = spec
            .kinds
            .iter()
            .map(|k| {
                let paths = k
                    .paths
                    .iter()
                    .map(|p| {
                        let (path, base64) = match p {
                            PathSpec::Plain(path) => (path, false),
                            PathSpec::Detailed { path, base64 } => (path, *base64),
                        };
                        Ok(PathRule {
                            path: JsonPath::parse(path)?,
                            base64,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(KindRule {
                    kind: k.kind.clone(),
                    paths,
                    table_columns: k.table_columns.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let custom: Vec<(String, String)> = spec
            .text
            .custom
            .iter()
            .map(|c| (c.name.clone(), c.regex.clone()))
            .collect();
        let text = if spec.text.detectors.is_empty() && custom.is_empty() {
            None
        } else {
            Some(Arc::new(TextDetectors::new(&spec.text.detectors, &custom)?))
        };
        Ok(Self {
            name: spec.name.clone(),
            kinds,
            last_applied_configuration: spec.last_applied_configuration,
            text,
        })
    }

    /// The rules for objects of `kind`.
    pub fn rules_for<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a KindRule> + 'a {
        self.kinds.iter().filter(move |r| r.kind == kind)
    }

    /// The built-in `default` profile.
    pub fn builtin_default() -> Result<Self> {
        Self::compile(&default_spec())
    }
}

/// The built-in `default` profile: Secret data, secret-looking env values of workloads,
/// secret-looking ConfigMap keys, last-applied annotations, all text detectors.
pub fn default_spec() -> ProfileSpec {
    const ENV: &str = "env[?name~(?i)PASSWORD|PASSWD|TOKEN|SECRET|KEY|CREDENTIAL].value";
    let pod_spec = |prefix: &str| -> Vec<PathSpec> {
        ["containers", "initContainers", "ephemeralContainers"]
            .iter()
            .map(|c| PathSpec::Plain(format!("{prefix}{c}[*].{ENV}")))
            .collect()
    };
    let rule = |kind: &str, paths: Vec<PathSpec>| KindRuleSpec {
        kind: kind.to_string(),
        paths,
        table_columns: Vec::new(),
    };
    let mut kinds = vec![
        rule(
            "Secret",
            vec![
                PathSpec::Detailed {
                    path: "data.*".into(),
                    base64: true,
                },
                PathSpec::Plain("stringData.*".into()),
            ],
        ),
        rule(
            "ConfigMap",
            vec![PathSpec::Plain(
                "data.~(?i)password|passwd|secret|token|api[_-]?key|private[_-]?key|credential"
                    .into(),
            )],
        ),
        rule("Pod", pod_spec("spec.")),
        rule("PodTemplate", pod_spec("template.spec.")),
    ];
    for kind in [
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "ReplicationController",
        "Job",
    ] {
        kinds.push(rule(kind, pod_spec("spec.template.spec.")));
    }
    kinds.push(rule(
        "CronJob",
        pod_spec("spec.jobTemplate.spec.template.spec."),
    ));
    ProfileSpec {
        name: DEFAULT_PROFILE.to_string(),
        kinds,
        last_applied_configuration: true,
        text: TextSpec::default(),
    }
}

/// Compiled profiles by name (always including `default`).
#[derive(Debug, Clone)]
pub struct ProfileSet {
    by_name: HashMap<String, Arc<Profile>>,
}

impl ProfileSet {
    /// The built-in `default` profile alone.
    pub fn builtin() -> Result<Self> {
        Self::from_file(&ProfilesFile::default())
    }

    /// Compiles `file`'s profiles, plus the built-in `default` unless the file defines one.
    pub fn from_file(file: &ProfilesFile) -> Result<Self> {
        let mut by_name = HashMap::new();
        for spec in &file.profiles {
            let profile = Arc::new(Profile::compile(spec)?);
            if by_name.insert(spec.name.clone(), profile).is_some() {
                return Err(MaskError::DuplicateProfile(spec.name.clone()));
            }
        }
        if !by_name.contains_key(DEFAULT_PROFILE) {
            by_name.insert(
                DEFAULT_PROFILE.to_string(),
                Arc::new(Profile::builtin_default()?),
            );
        }
        Ok(Self { by_name })
    }

    /// The profile named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Profile>> {
        self.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| MaskError::UnknownProfile(name.to_string()))
    }

    /// Profile names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use super::*;

    #[test]
    fn a_yaml_file_compiles_and_keeps_the_builtin_default() {
        let yaml = r#"
profiles:
  - name: strict
    kinds:
      - kind: Secret
        paths:
          - { path: "data.*", base64: true }
          - "stringData.*"
      - kind: ConfigMap
        paths: ["data.~(?i)password"]
        tableColumns: [Data]
    lastAppliedConfiguration: false
    text:
      detectors: [jwt]
      custom:
        - { name: ticket, regex: "TKT-[0-9]{6}" }
  - name: quiet
    text: { detectors: [] }
"#;
        let file: ProfilesFile = serde_saphyr::from_str(yaml).unwrap();
        let set = ProfileSet::from_file(&file).unwrap();
        assert_eq!(set.names(), ["default", "quiet", "strict"]);
        let strict = set.get("strict").unwrap();
        assert!(!strict.last_applied_configuration);
        assert!(strict.rules_for("Secret").next().unwrap().paths[0].base64);
        assert_eq!(strict.text.as_ref().unwrap().names(), ["jwt", "ticket"]);
        assert!(set.get("quiet").unwrap().text.is_none());
        assert!(set.get("default").unwrap().text.is_some());
        assert!(set.get("nope").is_err());
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let dup = ProfilesFile {
            profiles: vec![default_spec(), default_spec()],
        };
        assert!(matches!(
            ProfileSet::from_file(&dup),
            Err(MaskError::DuplicateProfile(_))
        ));
        let yaml =
            "profiles:\n  - name: x\n    kinds:\n      - kind: Pod\n        paths: [\"a[\"]\n";
        let file: ProfilesFile = serde_saphyr::from_str(yaml).unwrap();
        let err = ProfileSet::from_file(&file).unwrap_err().to_string();
        assert!(err.contains("a["), "{err}");
        assert!(
            serde_saphyr::from_str::<ProfilesFile>("profiles:\n  - name: x\n    typo: 1\n")
                .is_err()
        );
    }
}
