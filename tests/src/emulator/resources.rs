//! The registry of kinds the emulator serves: group, version, plural, kind, scope, verbs.

/// A subresource as discovery advertises it.
#[derive(Debug, Clone, Copy)]
pub struct SubresourceDef {
    /// `exec`, `status`, `scale`, …
    pub name: &'static str,
    /// Kind returned (e.g. `PodExecOptions`).
    pub kind: &'static str,
    /// Group of the response kind, when it differs from the parent's (`autoscaling` for scale).
    pub group: Option<&'static str>,
    /// Version of the response kind, when it differs.
    pub version: Option<&'static str>,
    /// Verbs allowed on it.
    pub verbs: &'static [&'static str],
}

/// One resource type.
#[derive(Debug, Clone, Copy)]
pub struct ResourceDef {
    /// API group (`""` = core).
    pub group: &'static str,
    /// Version (`v1`).
    pub version: &'static str,
    /// Plural resource name (`pods`).
    pub plural: &'static str,
    /// Singular name (`pod`).
    pub singular: &'static str,
    /// Kind (`Pod`).
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names (`po`).
    pub short_names: &'static [&'static str],
    /// Verbs in discovery.
    pub verbs: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Subresources.
    pub subresources: &'static [SubresourceDef],
    /// Whether objects are stored (false for review-style, create-only resources).
    pub stored: bool,
}

impl ResourceDef {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Finds a subresource by name.
    pub fn subresource(&self, name: &str) -> Option<&'static SubresourceDef> {
        self.subresources.iter().find(|s| s.name == name)
    }
}

const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const CREATE_ONLY: &[&str] = &["create"];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

const fn sub(
    name: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
) -> SubresourceDef {
    SubresourceDef {
        name,
        kind,
        group: None,
        version: None,
        verbs,
    }
}

const POD_SUBS: &[SubresourceDef] = &[
    sub("attach", "PodAttachOptions", &["create", "get"]),
    sub("exec", "PodExecOptions", &["create", "get"]),
    sub("log", "Pod", &["get"]),
    sub("portforward", "PodPortForwardOptions", &["create", "get"]),
    sub("status", "Pod", STATUS_VERBS),
];
const STATUS_ONLY_POD: &[SubresourceDef] = &[];
const DEPLOY_SUBS: &[SubresourceDef] = &[
    SubresourceDef {
        name: "scale",
        kind: "Scale",
        group: Some("autoscaling"),
        version: Some("v1"),
        verbs: STATUS_VERBS,
    },
    sub("status", "Deployment", STATUS_VERBS),
];
const NS_SUBS: &[SubresourceDef] = &[
    sub("finalize", "Namespace", &["update"]),
    sub("status", "Namespace", STATUS_VERBS),
];

#[allow(clippy::too_many_arguments)]
const fn def(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [SubresourceDef],
) -> ResourceDef {
    ResourceDef {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        verbs: CRUD,
        categories,
        subresources,
        stored: true,
    }
}

const fn review(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceDef {
    ResourceDef {
        group,
        version: "v1",
        plural,
        singular: "",
        kind,
        namespaced,
        short_names: &[],
        verbs: CREATE_ONLY,
        categories: &[],
        subresources: &[],
        stored: false,
    }
}

/// Every resource the emulator serves, in discovery order.
pub static RESOURCES: &[ResourceDef] = &[
    def(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        &[],
        &[],
    ),
    def(
        "",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        &[],
        &[],
    ),
    def("", "events", "event", "Event", true, &["ev"], &[], &[]),
    def(
        "",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        &[],
        NS_SUBS,
    ),
    def(
        "",
        "nodes",
        "node",
        "Node",
        false,
        &["no"],
        &[],
        STATUS_ONLY_POD,
    ),
    def("", "pods", "pod", "Pod", true, &["po"], &["all"], POD_SUBS),
    def("", "secrets", "secret", "Secret", true, &[], &[], &[]),
    def(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        &[],
        &[],
    ),
    def(
        "",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        &["all"],
        &[],
    ),
    def(
        "apps",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        &["all"],
        DEPLOY_SUBS,
    ),
    def(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        &[],
        &[],
    ),
    def(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
        &[],
        &[],
    ),
    def(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
        &[],
        &[],
    ),
    def(
        "rbac.authorization.k8s.io",
        "roles",
        "role",
        "Role",
        true,
        &[],
        &[],
        &[],
    ),
    review(
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    ),
    review(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    ),
    review(
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
    ),
    // --- TokenReview (the collector verifies agent service-account tokens) ---
    review(
        "authentication.k8s.io",
        "tokenreviews",
        "TokenReview",
        false,
    ),
];

/// API groups other than core, in `/apis` order.
pub const GROUPS: &[&str] = &[
    "apps",
    "rbac.authorization.k8s.io",
    "authorization.k8s.io",
    "authentication.k8s.io",
];

/// Looks a resource up by group and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by group and kind.
pub fn find_kind(group: &str, kind: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// Resources of one group version.
pub fn in_group(group: &str) -> impl Iterator<Item = &'static ResourceDef> + use<'_> {
    RESOURCES.iter().filter(move |r| r.group == group)
}
