//! Field tables for the protobuf messages the emulator decodes: field number, JSON
//! name, wire type, repeated. Numbers follow `k8s.io/api/*/generated.proto`.

#[derive(Clone, Copy)]
pub(super) enum T {
    Str,
    Int,
    Bool,
    Msg(&'static str),
    MapStr,
    MapBytes,
    MapQuantity,
    Time,
    IntOrString,
}

#[derive(Clone, Copy)]
pub(super) struct F(pub u32, pub &'static str, pub T, pub bool);

const fn one(n: u32, name: &'static str, t: T) -> F {
    F(n, name, t, false)
}
const fn many(n: u32, name: &'static str, t: T) -> F {
    F(n, name, t, true)
}

use T::{Bool, Int, IntOrString, MapBytes, MapQuantity, MapStr, Msg, Str, Time};

pub(super) fn schema(msg: &str) -> Option<&'static [F]> {
    Some(match msg {
        "ObjectMeta" => {
            const {
                &[
                    one(1, "name", Str),
                    one(2, "generateName", Str),
                    one(3, "namespace", Str),
                    one(5, "uid", Str),
                    one(6, "resourceVersion", Str),
                    one(8, "creationTimestamp", Time),
                    one(11, "labels", MapStr),
                    one(12, "annotations", MapStr),
                    many(14, "finalizers", Str),
                ]
            }
        }
        "Namespace" => {
            const {
                &[
                    one(1, "metadata", Msg("ObjectMeta")),
                    one(2, "spec", Msg("NamespaceSpec")),
                ]
            }
        }
        "NamespaceSpec" => const { &[many(1, "finalizers", Str)] },
        "Secret" => {
            const {
                &[
                    one(1, "metadata", Msg("ObjectMeta")),
                    one(2, "data", MapBytes),
                    one(3, "type", Str),
                    one(4, "stringData", MapStr),
                    one(5, "immutable", Bool),
                ]
            }
        }
        "ConfigMap" => {
            const {
                &[
                    one(1, "metadata", Msg("ObjectMeta")),
                    one(2, "data", MapStr),
                    one(3, "binaryData", MapBytes),
                    one(4, "immutable", Bool),
                ]
            }
        }
        "ServiceAccount" => {
            const {
                &[
                    one(1, "metadata", Msg("ObjectMeta")),
                    one(4, "automountServiceAccountToken", Bool),
                ]
            }
        }
        "Role" | "ClusterRole" => {
            const {
                &[
                    one(1, "metadata", Msg("ObjectMeta")),
                    many(2, "rules", Msg("PolicyRule")),
                ]
            }
        }
        "PolicyRule" => {
            const {
                &[
                    many(1, "verbs", Str),
                    many(2, "apiGroups", Str),
                    many(3, "resources", Str),
                    many(4, "resourceNames", Str),
                    many(5, "nonResourceURLs", Str),
                ]
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            const {
                &[
                    one(1, "metadata", Msg("ObjectMeta")),
                    many(2, "subjects", Msg("Subject")),
                    one(3, "roleRef", Msg("RoleRef")),
                ]
            }
        }
        "Subject" => {
            const {
                &[
                    one(1, "kind", Str),
                    one(2, "apiGroup", Str),
                    one(3, "name", Str),
                    one(4, "namespace", Str),
                ]
            }
        }
        "RoleRef" => {
            const {
                &[
                    one(1, "apiGroup", Str),
                    one(2, "kind", Str),
                    one(3, "name", Str),
                ]
            }
        }
        "Service" => {
            const {
                &[
                    one(1, "metadata", Msg("ObjectMeta")),
                    one(2, "spec", Msg("ServiceSpec")),
                ]
            }
        }
        "ServiceSpec" => {
            const {
                &[
                    many(1, "ports", Msg("ServicePort")),
                    one(2, "selector", MapStr),
                    one(3, "clusterIP", Str),
                    one(4, "type", Str),
                    one(11, "externalName", Str),
                ]
            }
        }
        "ServicePort" => {
            const {
                &[
                    one(1, "name", Str),
                    one(2, "protocol", Str),
                    one(3, "port", Int),
                    one(4, "targetPort", IntOrString),
                    one(5, "nodePort", Int),
                ]
            }
        }
        "Deployment" => {
            const {
                &[
                    one(1, "metadata", Msg("ObjectMeta")),
                    one(2, "spec", Msg("DeploymentSpec")),
                ]
            }
        }
        "DeploymentSpec" => {
            const {
                &[
                    one(1, "replicas", Int),
                    one(2, "selector", Msg("LabelSelector")),
                    one(3, "template", Msg("PodTemplateSpec")),
                    one(4, "strategy", Msg("DeploymentStrategy")),
                    one(5, "minReadySeconds", Int),
                    one(6, "revisionHistoryLimit", Int),
                    one(7, "paused", Bool),
                    one(9, "progressDeadlineSeconds", Int),
                ]
            }
        }
        "DeploymentStrategy" => {
            const {
                &[
                    one(1, "type", Str),
                    one(2, "rollingUpdate", Msg("RollingUpdate")),
                ]
            }
        }
        "RollingUpdate" => {
            const {
                &[
                    one(1, "maxUnavailable", IntOrString),
                    one(2, "maxSurge", IntOrString),
                ]
            }
        }
        "LabelSelector" => {
            const {
                &[
                    one(1, "matchLabels", MapStr),
                    many(2, "matchExpressions", Msg("LabelSelectorRequirement")),
                ]
            }
        }
        "LabelSelectorRequirement" => {
            const {
                &[
                    one(1, "key", Str),
                    one(2, "operator", Str),
                    many(3, "values", Str),
                ]
            }
        }
        "PodTemplateSpec" => {
            const {
                &[
                    one(1, "metadata", Msg("ObjectMeta")),
                    one(2, "spec", Msg("PodSpec")),
                ]
            }
        }
        "Pod" => {
            const {
                &[
                    one(1, "metadata", Msg("ObjectMeta")),
                    one(2, "spec", Msg("PodSpec")),
                ]
            }
        }
        "PodSpec" => {
            const {
                &[
                    many(2, "containers", Msg("Container")),
                    one(3, "restartPolicy", Str),
                    one(4, "terminationGracePeriodSeconds", Int),
                    one(6, "dnsPolicy", Str),
                    one(7, "nodeSelector", MapStr),
                    one(8, "serviceAccountName", Str),
                    one(10, "nodeName", Str),
                    one(19, "schedulerName", Str),
                    many(20, "initContainers", Msg("Container")),
                ]
            }
        }
        "Container" => {
            const {
                &[
                    one(1, "name", Str),
                    one(2, "image", Str),
                    many(3, "command", Str),
                    many(4, "args", Str),
                    one(5, "workingDir", Str),
                    many(6, "ports", Msg("ContainerPort")),
                    many(7, "env", Msg("EnvVar")),
                    one(8, "resources", Msg("ResourceRequirements")),
                    one(13, "terminationMessagePath", Str),
                    one(14, "imagePullPolicy", Str),
                    one(16, "stdin", Bool),
                    one(17, "stdinOnce", Bool),
                    one(18, "tty", Bool),
                    one(20, "terminationMessagePolicy", Str),
                ]
            }
        }
        "ContainerPort" => {
            const {
                &[
                    one(1, "name", Str),
                    one(2, "hostPort", Int),
                    one(3, "containerPort", Int),
                    one(4, "protocol", Str),
                ]
            }
        }
        "EnvVar" => const { &[one(1, "name", Str), one(2, "value", Str)] },
        "ResourceRequirements" => {
            const {
                &[
                    one(1, "limits", MapQuantity),
                    one(2, "requests", MapQuantity),
                ]
            }
        }
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            const {
                &[
                    one(1, "metadata", Msg("ObjectMeta")),
                    one(2, "spec", Msg("AccessReviewSpec")),
                ]
            }
        }
        "AccessReviewSpec" => {
            const {
                &[
                    one(1, "resourceAttributes", Msg("ResourceAttributes")),
                    one(2, "nonResourceAttributes", Msg("NonResourceAttributes")),
                    one(3, "user", Str),
                    many(4, "groups", Str),
                    one(6, "uid", Str),
                ]
            }
        }
        "ResourceAttributes" => {
            const {
                &[
                    one(1, "namespace", Str),
                    one(2, "verb", Str),
                    one(3, "group", Str),
                    one(4, "version", Str),
                    one(5, "resource", Str),
                    one(6, "subresource", Str),
                    one(7, "name", Str),
                ]
            }
        }
        "NonResourceAttributes" => const { &[one(1, "path", Str), one(2, "verb", Str)] },
        "SelfSubjectRulesReview" => {
            const {
                &[
                    one(1, "metadata", Msg("ObjectMeta")),
                    one(2, "spec", Msg("RulesReviewSpec")),
                ]
            }
        }
        "RulesReviewSpec" => const { &[one(1, "namespace", Str)] },
        "SelfSubjectReview" => const { &[one(1, "metadata", Msg("ObjectMeta"))] },
        _ => return None,
    })
}
