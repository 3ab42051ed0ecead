//! The access log line: one per decision, on target `scopegate::access`, never a token.

use super::log::{JSON_ACCESS, LOG_BUFFER_MAX};

/// One decision, as the access log records it (target `scopegate::access`).
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub decision: &'a str,
    pub reason: &'a str,
    pub client: Option<&'a str>,
    pub token_kind: Option<&'a str>,
    pub latency_us: u64,
    pub peer: std::net::IpAddr,
}

impl AccessLine<'_> {
    /// Logs the line when `scopegate::access` is enabled at INFO.
    ///
    /// In JSON format the line is written here, byte for byte what tracing-subscriber's JSON
    /// formatter writes for the same event (a unit test holds the two together), because the
    /// generic formatter (visitor, `fmt::Debug` per field, a `serde_json::Value` for the span
    /// list) cost ~10% of a cached request. Text format goes through the subscriber.
    pub fn log(&self) {
        if !tracing::enabled!(target: "scopegate::access", tracing::Level::INFO) {
            return;
        }
        match JSON_ACCESS.get() {
            Some(shared) => {
                let full = {
                    let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
                    self.write_json(&mut pending, std::time::SystemTime::now());
                    pending.len() >= LOG_BUFFER_MAX
                };
                if full {
                    shared.flush();
                }
            }
            None => self.event(),
        }
    }

    /// The access line as a tracing event, for the subscriber to format.
    fn event(&self) {
        tracing::info!(
            target: "scopegate::access",
            route = self.route,
            method = self.method,
            status = self.status,
            decision = self.decision,
            reason = self.reason,
            client = self.client,
            token_kind = self.token_kind,
            latency_us = self.latency_us,
            peer = %self.peer,
        );
    }

    /// Appends the JSON line (with its newline) to `out`.
    fn write_json(&self, out: &mut Vec<u8>, now: std::time::SystemTime) {
        use std::io::Write;
        fn string(out: &mut Vec<u8>, s: &str) {
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        }
        // Writes into a Vec cannot fail.
        let _ = write!(
            out,
            "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"route\":",
            humantime::format_rfc3339_micros(now)
        );
        string(out, self.route);
        out.extend_from_slice(b",\"method\":");
        string(out, self.method);
        let _ = write!(out, ",\"status\":{},\"decision\":", self.status);
        string(out, self.decision);
        out.extend_from_slice(b",\"reason\":");
        string(out, self.reason);
        if let Some(client) = self.client {
            out.extend_from_slice(b",\"client\":");
            string(out, client);
        }
        if let Some(kind) = self.token_kind {
            out.extend_from_slice(b",\"token_kind\":");
            string(out, kind);
        }
        let _ = writeln!(
            out,
            ",\"latency_us\":{},\"peer\":\"{}\",\"target\":\"scopegate::access\"}}",
            self.latency_us, self.peer
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::log::tests::Shared;
    use crate::telemetry::names::NO_ROUTE;

    /// The line tracing-subscriber's JSON formatter (as `init_logging` sets it up) writes for
    /// the access event the text path emits, with its timestamp.
    fn subscriber_line(line: &AccessLine<'_>) -> String {
        let out = Shared::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .json()
            .flatten_event(true)
            .finish();
        tracing::subscriber::with_default(subscriber, || line.event());
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn the_hand_written_access_line_is_the_subscribers_line() {
        let lines = [
            AccessLine {
                route: "/v2/orders/{id}",
                method: "GET",
                status: 200,
                decision: "allow",
                reason: "permitted",
                client: Some("bench \"quoted\" \\ \u{1}\n caf\u{e9} \u{1F600}"),
                token_kind: Some("client_credentials"),
                latency_us: 1397,
                peer: "127.0.0.1".parse().unwrap(),
            },
            AccessLine {
                route: NO_ROUTE,
                method: "OTHER",
                status: 404,
                decision: "deny",
                reason: "no_route",
                client: None,
                token_kind: None,
                latency_us: 0,
                peer: "2001:db8::1".parse().unwrap(),
            },
        ];
        for line in &lines {
            let theirs = subscriber_line(line);
            let stamp: serde_json::Value = serde_json::from_str(&theirs).unwrap();
            let stamp: std::time::SystemTime =
                humantime::parse_rfc3339(stamp["timestamp"].as_str().unwrap()).unwrap();
            let mut ours = Vec::new();
            line.write_json(&mut ours, stamp);
            assert_eq!(String::from_utf8(ours).unwrap(), theirs);
        }
    }
}
