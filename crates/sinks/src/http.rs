//! One HTTP call through the SSRF-safe fetcher, and what its answer means for delivery.

use tidings_sources::fetch::Fetcher;

use crate::Outcome;

pub(crate) struct Request {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub basic_auth: Option<(String, String)>,
}

pub(crate) async fn send(fetcher: &Fetcher, req: Request) -> Outcome {
    let _ = (fetcher, req);
    Outcome::failed("not implemented yet")
}
