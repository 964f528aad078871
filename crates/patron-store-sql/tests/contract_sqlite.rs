//! The event store contract, against SQLite.

patron_store::event_store_contract!(async {
    let (store, dir) = patron_store_sql::testing::fresh_sqlite().await;
    patron_store::contract::WithGuard(store, dir)
});
