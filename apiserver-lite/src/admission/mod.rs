//! Admission control that is not a built-in strategy step: the dynamic admission webhooks
//! (upstream's `MutatingAdmissionWebhook` and `ValidatingAdmissionWebhook` plugins). The
//! built-in plugins (Priority, LimitRanger, PodSecurity, NodeRestriction, …) live beside the
//! resources they admit (`strategy`, `pod_security`, `auth`).

pub mod webhook;
