//! The API stand-in's watches start where a list left off, as the API server's do: a
//! controller lists, then watches from the list's resource version, and a change made in
//! between must still reach it.

use agentpool_kube::fake::{FakeApi, NAMESPACE};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, WatchEvent, WatchParams};

fn secret(name: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s
}

#[tokio::test]
async fn a_watch_from_a_list_s_version_gets_what_changed_in_between() {
    let fake = FakeApi::new();
    fake.put_secret(&secret("before"));
    let api: Api<Secret> = Api::namespaced(fake.client(), NAMESPACE);
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let rv = listed.metadata.resource_version.unwrap();
    fake.put_secret(&secret("in-between"));
    let mut events = api.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), events.try_next());
    match next
        .await
        .expect("the change made in between never came")
        .unwrap()
    {
        Some(WatchEvent::Added(s)) => assert_eq!(s.metadata.name.as_deref(), Some("in-between")),
        other => panic!("{other:?}"),
    }
    // And what comes after the watch started, as before.
    fake.put_secret(&secret("after"));
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Added(s)) => assert_eq!(s.metadata.name.as_deref(), Some("after")),
        other => panic!("{other:?}"),
    }
}
