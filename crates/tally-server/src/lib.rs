//! Tally's server: the HTTP API, live counts over Socket.io and WebSocket,
//! the web client, and the operator's load panel.
//!
//! It sits on [`tally_store`] (the backends, behind two traits) and uses
//! [`tally_bench`]'s engine for load runs; the `tally` binary sits on top.
//! Start reading at [`startup`] (what runs, and how it stops), then
//! [`routes`], then [`live`].

pub mod auth;
pub mod config;
pub mod connections;
pub mod cors;
pub mod cursor;
pub mod error;
pub mod images;
pub mod live;
pub mod load_panel;
pub mod media;
pub mod ratelimit;
pub mod routes;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod text;
pub mod trending;
pub mod web;
