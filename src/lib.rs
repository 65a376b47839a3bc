//! Switchboard: a realtime notification hub for the Message Center.
pub mod auth;
pub mod config;
pub mod domain;
pub mod startup;
