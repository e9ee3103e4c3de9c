//! Tally: exact, durable, live like counts for image posts.
//!
//! The crate is a library with a thin binary (`main.rs`) so that tests and
//! tools drive the same [`startup::Application`] the binary runs. Start
//! reading at [`startup`], then [`store`] (the backend seam), then [`routes`].

pub mod auth;
pub mod cli;
pub mod config;
pub mod cursor;
pub mod domain;
pub mod error;
pub mod images;
pub mod live;
pub mod load_panel;
pub mod loadgen;
pub mod media;
pub mod ratelimit;
pub mod routes;
pub mod seed;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod web;
