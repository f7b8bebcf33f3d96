//! A `wasi:http/proxy` component: answers every request with `hello from wasi:http <path>`,
//! `/fail` with a 500, `/trap` by trapping (the host must answer 500 and keep serving), and
//! `/sleep?ms=N` after waiting N milliseconds on a `wasi:clocks` pollable (a slow request for
//! the drain tests, which see `sleep N ms: start` on stdout; the wait is a host call, so it
//! does not hold a host thread).

use std::io::Write as _;

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasi::http::proxy::export!(Hello);

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if path == "/trap" {
            panic!("asked to trap");
        }
        if let Some(ms) = path.strip_prefix("/sleep?ms=") {
            let ms: u64 = ms.parse().unwrap_or(0);
            // Tells a test watching the container log that the request is in flight.
            println!("sleep {ms} ms: start");
            wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        }
        let resp = OutgoingResponse::new(Fields::new());
        if path == "/fail" {
            resp.set_status_code(500).unwrap();
        }
        let body = resp.body().unwrap();
        ResponseOutparam::set(response_out, Ok(resp));
        let mut out = body.write().unwrap();
        writeln!(out, "hello from wasi:http {path}").unwrap();
        out.flush().unwrap();
        drop(out);
        OutgoingBody::finish(body, None).unwrap();
    }
}
