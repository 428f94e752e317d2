//! What the coordinator and its workers agree on: the batch plan, URL and file-name
//! templates, the method and body of requests, the worker configuration and the framed bincode protocol on the pipes
//! between them.

pub mod chain;
pub mod config;
pub mod frame;
pub mod http_url;
pub mod loadtest;
pub mod plan;
pub mod protocol;
pub mod proxy;
pub mod refresh;
pub mod request;
pub mod template;
pub mod usage;
