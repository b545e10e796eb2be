//! Ownership: claims of expired leases and by id, renewal, release.

use std::time::{Duration, SystemTime};

use super::{DEFINITION, checkpoint, new_saga};
use crate::definition::BoxFuture;
use crate::error::StoreError;
use crate::store::{Claim, ClaimExpired, SagaRecord, SagaStore};

fn request() -> ClaimExpired {
    ClaimExpired::new("b", Duration::from_secs(30), vec![DEFINITION], 10)
}

fn accept_all(_: &SagaRecord) -> bool {
    true
}

pub(super) fn expired_leases_are_claimed(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        store
            .create(new_saga("lease", Some("a"), Duration::from_millis(300)))
            .await
            .expect("create");
        assert!(
            store
                .claim_expired(request(), &accept_all)
                .await
                .expect("claim")
                .is_empty(),
            "the lease is still live"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let claimed = store
            .claim_expired(request(), &accept_all)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].owner.as_deref(), Some("b"));
        assert_eq!((claimed[0].version, claimed[0].recovery_count), (2, 1));
        // The old owner is fenced off; its renewals are refused.
        let err = store
            .save(checkpoint("lease", "a", 1))
            .await
            .expect_err("fenced");
        assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
        let renewed = store
            .renew("a", &["lease".into()], Duration::from_secs(30))
            .await
            .expect("renew");
        assert!(renewed.is_empty(), "the old owner renews nothing");
        let renewed = store
            .renew("b", &["lease".into()], Duration::from_secs(30))
            .await
            .expect("renew");
        assert_eq!(renewed.len(), 1);
        // A live lease is not claimed again.
        assert!(
            store
                .claim_expired(request(), &accept_all)
                .await
                .expect("claim")
                .is_empty()
        );
        // Other definitions are left alone, and so are rows the filter refuses.
        store
            .create(new_saga("other", Some("a"), Duration::ZERO))
            .await
            .expect("create");
        let mut only_others = request();
        only_others.definitions = vec!["another_definition"];
        assert!(
            store
                .claim_expired(only_others, &accept_all)
                .await
                .expect("claim")
                .is_empty()
        );
        let before = store.load("other").await.expect("load");
        assert!(
            store
                .claim_expired(request(), &|_| false)
                .await
                .expect("claim")
                .is_empty()
        );
        assert_eq!(store.load("other").await.expect("load"), before);
        // At most `limit` rows per claim.
        for i in 0..3 {
            store
                .create(new_saga(&format!("many-{i}"), None, Duration::ZERO))
                .await
                .expect("create");
        }
        let mut two = request();
        two.limit = 2;
        assert_eq!(
            store
                .claim_expired(two, &accept_all)
                .await
                .expect("claim")
                .len(),
            2
        );
    })
}

pub(super) fn claims_are_fenced(store: &dyn SagaStore) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        store
            .create(new_saga("other", Some("a"), Duration::ZERO))
            .await
            .expect("create");
        let claim = Claim::new("other", "c", 1, Duration::from_secs(5));
        assert_eq!(store.claim(claim.clone()).await.expect("claim").version, 2);
        assert!(matches!(
            store.claim(claim).await.expect_err("the version moved"),
            StoreError::Fenced { .. }
        ));
        assert!(matches!(
            store
                .claim(Claim::new("nobody", "c", 1, Duration::from_secs(5)))
                .await
                .expect_err("no such row"),
            StoreError::NotFound { .. }
        ));
        // Releasing ends the lease now, for the owner only.
        store
            .release("someone-else", &["other".into()])
            .await
            .expect("release");
        let row = store.load("other").await.expect("load").expect("the row");
        assert!(row.lease_expires_at.expect("a lease") > SystemTime::now());
        store
            .release("c", &["other".into()])
            .await
            .expect("release");
        let row = store.load("other").await.expect("load").expect("the row");
        assert!(row.lease_expires_at.expect("a lease") <= SystemTime::now());
    })
}
