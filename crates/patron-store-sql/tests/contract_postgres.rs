//! The event store contract, against PostgreSQL.

patron_store::event_store_contract!(patron_store_sql::testing::fresh_postgres());
