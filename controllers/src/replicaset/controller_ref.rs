//! Adoption and orphaning by selector: upstream's `ControllerRefManager`
//! (`pkg/controller/controller_ref_manager.go`), shared by the replica-set controllers (claiming
//! pods) and the deployment controller (claiming replica sets).
//!
//! An object the owner controls but its selector no longer matches is released (its controller
//! reference removed); an orphan the selector matches is adopted (a controller reference with
//! `blockOwnerDeletion` added), but only after a fresh read of the owner shows it still exists
//! with the same UID and is not being deleted (`RecheckDeletionTimestamp`). Objects controlled by
//! someone else are left alone. Patches carry the object's resourceVersion, so a concurrent change
//! makes them fail rather than overwrite.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::Resource;
use machinery::informer::Object;
use serde_json::json;
use tokio::sync::OnceCell;

use super::pods::{controller_of, controller_ref};
use super::selector::Selector;

/// Errors claiming objects.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("adopting {kind} {name}: {source}")]
    Adopt {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("releasing {kind} {name}: {source}")]
    Release {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Claims objects of type `K` for one owner of type `O`.
pub struct RefManager<'a, O: Object> {
    pub client: kube::Client,
    /// The owner's API (namespaced), for the fresh read before adopting.
    pub owner_api: Api<O>,
    pub owner: &'a ObjectMeta,
    pub api_version: &'a str,
    pub kind: &'a str,
    pub selector: &'a Selector,
    can_adopt: OnceCell<bool>,
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl<'a, O: Object> RefManager<'a, O> {
    pub fn new(
        client: kube::Client,
        owner_api: Api<O>,
        owner: &'a ObjectMeta,
        api_version: &'a str,
        kind: &'a str,
        selector: &'a Selector,
    ) -> Self {
        RefManager {
            client,
            owner_api,
            owner,
            api_version,
            kind,
            selector,
            can_adopt: OnceCell::new(),
        }
    }

    /// Upstream's `canAdopt` (checked once per claim, lazily): the owner, read live, still has
    /// our UID and no deletionTimestamp.
    async fn can_adopt(&self) -> bool {
        *self
            .can_adopt
            .get_or_init(|| async {
                let name = self.owner.name.as_deref().unwrap_or_default();
                match self.owner_api.get_opt(name).await {
                    Ok(Some(fresh)) => {
                        fresh.meta().uid == self.owner.uid
                            && fresh.meta().deletion_timestamp.is_none()
                    }
                    _ => false,
                }
            })
            .await
    }

    /// The objects among `objs` this owner controls after adopting and releasing.
    pub async fn claim<K: Object + Resource<Scope = NamespaceResourceScope>>(
        &self,
        objs: Vec<Arc<K>>,
    ) -> Result<Vec<Arc<K>>, ClaimError> {
        let owner_uid = self.owner.uid.as_deref().unwrap_or_default();
        let owner_deleting = self.owner.deletion_timestamp.is_some();
        let mut claimed = Vec::new();
        let mut first_err = None;
        for obj in objs {
            let meta = obj.meta();
            let matches = self.selector.matches(meta.labels.as_ref());
            match controller_of(meta) {
                Some(r) if r.uid == owner_uid => {
                    if matches {
                        claimed.push(obj);
                    } else if !owner_deleting {
                        if let Err(e) = self.release(obj.as_ref()).await {
                            if !is_not_found(&e) {
                                first_err.get_or_insert(ClaimError::Release {
                                    kind: K::kind(&()).into(),
                                    name: meta.name.clone().unwrap_or_default(),
                                    source: e,
                                });
                            }
                        }
                    }
                }
                Some(_) => {}
                None => {
                    if owner_deleting || !matches || meta.deletion_timestamp.is_some() {
                        continue;
                    }
                    if !self.can_adopt().await {
                        continue;
                    }
                    match self.adopt(obj.as_ref()).await {
                        Ok(adopted) => claimed.push(Arc::new(adopted)),
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => {
                            first_err.get_or_insert(ClaimError::Adopt {
                                kind: K::kind(&()).into(),
                                name: meta.name.clone().unwrap_or_default(),
                                source: e,
                            });
                        }
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(claimed),
        }
    }

    fn api<K: Object + Resource<Scope = NamespaceResourceScope>>(&self, obj: &K) -> Api<K> {
        Api::namespaced(
            self.client.clone(),
            obj.meta().namespace.as_deref().unwrap_or_default(),
        )
    }

    async fn adopt<K: Object + Resource<Scope = NamespaceResourceScope>>(
        &self,
        obj: &K,
    ) -> Result<K, kube::Error> {
        let meta = obj.meta();
        let mut refs: Vec<OwnerReference> = meta.owner_references.clone().unwrap_or_default();
        refs.retain(|r| Some(&r.uid) != self.owner.uid.as_ref());
        refs.push(controller_ref(self.api_version, self.kind, self.owner));
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta.resource_version}});
        self.api::<K>(obj)
            .patch(
                meta.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
    }

    async fn release<K: Object + Resource<Scope = NamespaceResourceScope>>(
        &self,
        obj: &K,
    ) -> Result<K, kube::Error> {
        let meta = obj.meta();
        let refs: Vec<OwnerReference> = meta
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| Some(&r.uid) != self.owner.uid.as_ref())
            .collect();
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta.resource_version}});
        self.api::<K>(obj)
            .patch(
                meta.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
    }
}
