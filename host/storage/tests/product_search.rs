//! Searching products by name or product key, against both back ends (SQLite file and
//! PostgreSQL): any case, `%` and `_` taken literally, combined with paging and scope.

use lotus_model::product::{DataFormat, NodeType};
use lotus_storage::{NewProduct, Page, Scope, Store};

#[macro_use]
mod backends;

on_both_backends!(search_by_name_or_key);

fn product(pk: &str, name: &str, region: &str) -> NewProduct {
    NewProduct {
        product_key: pk.into(),
        name: name.into(),
        node_type: NodeType::Direct,
        data_format: DataFormat::Alink,
        dynamic_registration: false,
        allow_unregistered: false,
        replay_window_secs: None,
        description: String::new(),
        product_secret: format!("product-secret-of-{pk}"),
        scope: Scope {
            org: String::new(),
            region: region.into(),
        },
    }
}

/// The keys of one page of products matching `search`, and the total that matched.
async fn keys(
    s: &Store,
    search: Option<&str>,
    within: Option<&Scope>,
    page: Page,
) -> (Vec<String>, i64) {
    let (rows, total) = s.list_products(page, within, search).await.unwrap();
    (rows.into_iter().map(|p| p.product_key).collect(), total)
}

async fn search_by_name_or_key(s: &Store, _url: &str) {
    for (pk, name, region) in [
        ("a1Lamp00001", "Street Lamp North", "/hz/xihu"),
        ("a1Lamp00002", "street lamp south", "/hz/binjiang"),
        ("a1Meter0001", "Water meter 100%", "/hz/xihu"),
        ("a1Meter0002", "Water meter 1000", "/hz/xihu"),
        ("a1Bin000001", "smart_bin", "/hz/xihu"),
        ("a1Bin000002", "smartXbin", "/hz/xihu"),
        ("a1Scr000001", "Écran public", "/hz/xihu"),
        ("a1Park00001", "停车场 地磁", "/hz/xihu"),
    ] {
        s.create_product(&product(pk, name, region)).await.unwrap();
    }
    let all = Page {
        offset: 0,
        limit: 100,
    };

    // No search, or a blank one, lists everything.
    assert_eq!(keys(s, None, None, all).await.1, 8);
    assert_eq!(keys(s, Some("   "), None, all).await.1, 8);

    // Part of the name, in any case.
    let lamps = (
        vec!["a1Lamp00001".to_string(), "a1Lamp00002".to_string()],
        2,
    );
    assert_eq!(keys(s, Some("LAMP"), None, all).await, lamps);
    assert_eq!(keys(s, Some("  street lamp "), None, all).await, lamps);
    assert_eq!(
        keys(s, Some("lamp north"), None, all).await,
        (vec!["a1Lamp00001".to_string()], 1)
    );

    // Part of the product key, in any case.
    assert_eq!(
        keys(s, Some("meter0002"), None, all).await,
        (vec!["a1Meter0002".to_string()], 1)
    );
    assert_eq!(
        keys(s, Some("A1BIN"), None, all).await,
        (
            vec!["a1Bin000001".to_string(), "a1Bin000002".to_string()],
            2
        )
    );

    // `%` and `_` are the characters themselves, not wildcards.
    assert_eq!(
        keys(s, Some("100%"), None, all).await,
        (vec!["a1Meter0001".to_string()], 1)
    );
    assert_eq!(
        keys(s, Some("smart_bin"), None, all).await,
        (vec!["a1Bin000001".to_string()], 1)
    );
    assert_eq!(keys(s, Some("%"), None, all).await.1, 1);
    assert_eq!(keys(s, Some("_"), None, all).await.1, 1);
    assert_eq!(keys(s, Some("\\"), None, all).await.1, 0);

    // Names beyond ASCII: as typed on both back ends, and CJK (which has no case).
    assert_eq!(
        keys(s, Some("Écran"), None, all).await,
        (vec!["a1Scr000001".to_string()], 1)
    );
    assert_eq!(
        keys(s, Some("停车"), None, all).await,
        (vec!["a1Park00001".to_string()], 1)
    );

    assert_eq!(
        keys(s, Some("no such product"), None, all).await,
        (vec![], 0)
    );

    // Paging walks the matches only, and the total counts all of them.
    let first = Page {
        offset: 0,
        limit: 1,
    };
    let second = Page {
        offset: 1,
        limit: 1,
    };
    assert_eq!(
        keys(s, Some("lamp"), None, first).await,
        (vec!["a1Lamp00001".to_string()], 2)
    );
    assert_eq!(
        keys(s, Some("lamp"), None, second).await,
        (vec!["a1Lamp00002".to_string()], 2)
    );

    // The scope still confines a search.
    let xihu = Scope {
        org: String::new(),
        region: "/hz/xihu".into(),
    };
    assert_eq!(
        keys(s, Some("lamp"), Some(&xihu), all).await,
        (vec!["a1Lamp00001".to_string()], 1)
    );
}
