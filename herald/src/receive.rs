//! `herald receive`: a local receiver for trying Herald out.
//!
//! It answers every request with 200, prints what arrived, and — given the endpoint's
//! secret — checks its Standard Webhooks signature. It is how the README's walk-through
//! sees deliveries without any outside service.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use herald_domain::signing::{standard_signature, EndpointSecret};

pub async fn run(listen: SocketAddr, secret: Option<EndpointSecret>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "herald receive: listening on http://{}; every request is printed and answered 200",
        listener.local_addr()?
    );
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let secret = secret.clone();
            async move {
                println!("\n{method} {uri}");
                for name in [
                    "content-type",
                    "webhook-id",
                    "webhook-timestamp",
                    "webhook-signature",
                    "herald-signature",
                    "x-herald-signature",
                ] {
                    if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
                        println!("  {name}: {value}");
                    }
                }
                println!("  {}", String::from_utf8_lossy(&body));
                if let (Some(secret), true) = (&secret, headers.contains_key("webhook-id")) {
                    println!("  signature: {}", verify(secret, &headers, &body));
                }
                "ok"
            }
        },
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Checks a Standard Webhooks signature the way a receiver would.
fn verify(secret: &EndpointSecret, headers: &HeaderMap, body: &[u8]) -> &'static str {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return "missing webhook-* headers";
    };
    let Ok(timestamp) = timestamp.parse::<i64>() else {
        return "bad timestamp";
    };
    let expected = standard_signature(secret, id, timestamp, body);
    if signatures.split(' ').any(|candidate| candidate == expected) {
        "valid"
    } else {
        "INVALID"
    }
}
