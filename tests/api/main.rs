//! HTTP integration tests: each test starts the real relay on a random port
//! against a fresh SQLite file (`helpers::spawn_app`). One binary for all.

mod acrobits;
mod api_keys;
mod apps;
mod batches;
mod callbacks;
mod calls;
mod cli;
mod console;
mod failover;
mod faults;
mod health;
mod helpers;
mod hms;
mod hostile;
mod limits;
mod matrix;
mod migration;
mod native;
mod nodes;
mod operations;
mod security;
mod sip;
mod spark;
mod tenants;
mod uds;
mod users;
mod webpush;
