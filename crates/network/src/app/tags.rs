//! Tags of any taggable resource (`standard-attr-tag`, `tag-creation`):
//! every change loads the resource inside its write transaction and checks
//! policy on that row, like every other network write.

use api::{AuthContext, Error, Target};

use super::view::{
    fip_target, network_target, port_target, router_target, sg_target, subnet_target, NetMeta,
};
use super::{db_err, fault, Network, Tx};
use crate::store as db;

/// Neutron's `MAX_TAGS_COUNT`.
pub const TAGS_PER_RESOURCE: usize = 50;

/// A change to a resource's tags.
#[derive(Debug, Clone, Copy)]
pub enum TagChange<'a> {
    /// `PUT …/tags`: the set becomes exactly these.
    Replace(&'a [String]),
    /// `POST …/tags` (`tag-creation`): these are added to what is there;
    /// tags already present stay (Neutron's `create_tags`).
    Create(&'a [String]),
    /// `PUT …/tags/{tag}`: one tag added.
    Add(&'a str),
    /// `DELETE …/tags/{tag}`: 404 `TagNotFound` when absent.
    Remove(&'a str),
    /// `DELETE …/tags`.
    Clear,
}

/// The singular name of a taggable collection (`security-groups` →
/// `security_group`), as policy rules and error messages spell it.
pub fn singular(collection: &str) -> &'static str {
    match collection {
        "networks" => "network",
        "subnets" => "subnet",
        "ports" => "port",
        "routers" => "router",
        "floatingips" => "floatingip",
        _ => "security_group",
    }
}

/// The not-found error of a taggable resource.
pub fn resource_not_found(collection: &str, id: &str) -> Error {
    match collection {
        "networks" => fault::network_not_found(id),
        "subnets" => fault::subnet_not_found(id),
        "ports" => fault::port_not_found(id),
        "routers" => fault::router_not_found(id),
        "floatingips" => fault::floatingip_not_found(id),
        _ => fault::security_group_not_found(id),
    }
}

/// 404 `TagNotFound`.
pub fn tag_not_found(tag: &str, collection: &str, id: &str) -> Error {
    fault::not_found(
        "TagNotFound",
        format!(
            "Tag {} could not be found for {} {id}.",
            crate::api::body::shown(tag),
            singular(collection)
        ),
    )
}

impl Network {
    /// The policy target of a taggable resource, read on `c` (a write
    /// transaction's connection, so the check holds until it commits).
    async fn taggable_target(
        &self,
        c: &mut sqlx::SqliteConnection,
        collection: &str,
        id: &str,
    ) -> Result<Option<Target>, Error> {
        let net_meta = |n: Option<db::network::Network>| n.map(|n| NetMeta::of(&n));
        Ok(match collection {
            "networks" => db::network::get(&mut *c, id)
                .await
                .map_err(db_err)?
                .map(|n| network_target(&n)),
            "subnets" => match db::subnet::get(&mut *c, id).await.map_err(db_err)? {
                Some(s) => net_meta(
                    db::network::get(&mut *c, &s.network_id)
                        .await
                        .map_err(db_err)?,
                )
                .map(|m| subnet_target(&s, &m)),
                None => None,
            },
            "ports" => match db::port::get(&mut *c, id).await.map_err(db_err)? {
                Some(p) => net_meta(
                    db::network::get(&mut *c, &p.network_id)
                        .await
                        .map_err(db_err)?,
                )
                .map(|m| port_target(&p, &m)),
                None => None,
            },
            "routers" => db::router::get(&mut *c, id)
                .await
                .map_err(db_err)?
                .map(|r| router_target(&r)),
            "floatingips" => db::floatingip::get(&mut *c, id)
                .await
                .map_err(db_err)?
                .map(|f| fip_target(&f)),
            _ => db::secgroup::get(&mut *c, id)
                .await
                .map_err(db_err)?
                .map(|g| sg_target(&g)),
        })
    }

    /// The tags of a resource: 404 if the caller may not see it
    /// (`get_<resource>`), 403 unless `get_<resource>:tags` allows.
    pub async fn tags_of(
        &self,
        ctx: &AuthContext,
        collection: &str,
        id: &str,
    ) -> Result<Vec<String>, Error> {
        let one = singular(collection);
        let mut c = self.pool.acquire().await.map_err(|e| Error::internal(&e))?;
        let target = self
            .taggable_target(&mut c, collection, id)
            .await?
            .ok_or_else(|| resource_not_found(collection, id))?;
        self.enforce_or_hide(
            ctx,
            &format!("get_{one}:tags"),
            &format!("get_{one}"),
            &target,
            || resource_not_found(collection, id),
        )?;
        db::misc::tags(&mut *c, collection, id)
            .await
            .map_err(db_err)
    }

    /// Changes a resource's tags and answers them as they now are. The
    /// resource is loaded inside the write transaction: a caller who may
    /// not see it gets its 404, one who may see it but whom the action's
    /// rule refuses 403. The rules are Neutron's tagging controller's:
    /// `create_<resource>:tags` (POST), `update_<resource>:tags` (PUT of
    /// the set or of one tag), `delete_<resource>:tags` (DELETE of one or
    /// all); `update_<resource>` is not consulted, as upstream.
    pub async fn tags_change(
        &self,
        ctx: &AuthContext,
        collection: &str,
        id: &str,
        change: TagChange<'_>,
    ) -> Result<Vec<String>, Error> {
        let one = singular(collection);
        let mut tx = self.begin().await?;
        let target = self
            .taggable_target(tx.c(), collection, id)
            .await?
            .ok_or_else(|| resource_not_found(collection, id))?;
        let action = match change {
            TagChange::Create(_) => "create",
            TagChange::Replace(_) | TagChange::Add(_) => "update",
            TagChange::Remove(_) | TagChange::Clear => "delete",
        };
        self.enforce_or_hide(
            ctx,
            &format!("{action}_{one}:tags"),
            &format!("get_{one}"),
            &target,
            || resource_not_found(collection, id),
        )?;
        apply(&mut tx, collection, id, change).await?;
        let tags = db::misc::tags(tx.c(), collection, id)
            .await
            .map_err(db_err)?;
        self.commit(tx).await?;
        Ok(tags)
    }
}

async fn apply(
    tx: &mut Tx,
    collection: &str,
    id: &str,
    change: TagChange<'_>,
) -> Result<(), Error> {
    match change {
        TagChange::Replace(tags) => super::network::set_tags(tx, collection, id, tags).await,
        TagChange::Add(tag) => {
            add(tx, collection, id, std::slice::from_ref(&tag.to_string())).await
        }
        TagChange::Create(tags) => add(tx, collection, id, tags).await,
        TagChange::Remove(tag) => {
            if db::misc::remove_tag(tx.c(), collection, id, tag)
                .await
                .map_err(db_err)?
            {
                Ok(())
            } else {
                Err(tag_not_found(tag, collection, id))
            }
        }
        TagChange::Clear => db::misc::clear_tags(tx.c(), collection, id)
            .await
            .map_err(db_err),
    }
}

/// Adds tags (those present stay), within the per-resource limit.
async fn add(tx: &mut Tx, collection: &str, id: &str, tags: &[String]) -> Result<(), Error> {
    let have = db::misc::tags(tx.c(), collection, id)
        .await
        .map_err(db_err)?;
    let mut total: Vec<&String> = have.iter().collect();
    for t in tags {
        if !total.contains(&t) {
            total.push(t);
        }
    }
    if total.len() > TAGS_PER_RESOURCE {
        return Err(fault::invalid_attr(
            "tags",
            format!("at most {TAGS_PER_RESOURCE} tags are allowed"),
        ));
    }
    for t in tags {
        db::misc::add_tag(tx.c(), collection, id, t)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}
