//! End-to-end tests: Herald started in-process, driven over HTTP, delivering to a local
//! recording receiver. One module per area, one test binary (faster to build and link).

mod batch;
mod errors;
mod flow;
mod kafka;
mod restart;
mod retries;
mod security;
mod support;
mod templates;
mod webhooks;
