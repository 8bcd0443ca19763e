//! A handshake refused at the TLS layer (no client certificate, one from another CA) never
//! reaches a handler, so it has no audit entry; the server logs it (SPEC.md §8.2) with the
//! peer address and the reason. Its own test binary: it installs a global log subscriber.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use renketsu_custodian::pki::{DevCa, Role};
use renketsu_custodian::service::ServiceSettings;
use renketsu_protocol::v1;
use support::{Pki, TestServer};

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;

    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_are_logged_with_peer_and_reason() {
    let log = Log::default();
    tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .init();
    let pki = Pki::new();
    let server = TestServer::start(&pki, ServiceSettings::default()).await;
    // No certificate.
    let mut none = server.client_with(&pki, None);
    none.list_projects(v1::ListProjectsRequest {})
        .await
        .unwrap_err();
    // A certificate from another CA.
    let foreign = DevCa::generate()
        .unwrap()
        .issue_client("admin", Role::Admin)
        .unwrap();
    let mut other = server.client_with(&pki, Some(&foreign));
    other
        .list_projects(v1::ListProjectsRequest {})
        .await
        .unwrap_err();
    // An allowed call still works.
    server
        .client(&pki, "admin", Role::Admin)
        .list_projects(v1::ListProjectsRequest {})
        .await
        .unwrap();
    let mut text = String::new();
    for _ in 0..50 {
        text = log.text();
        if text.matches("TLS handshake refused").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("TLS handshake refused"))
        .collect();
    assert!(refused.len() >= 2, "{text}");
    assert!(refused.iter().all(|l| l.contains("127.0.0.1")), "{text}");
    assert!(refused.iter().any(|l| l.contains("certificate")), "{text}");
    server.stop().await;
}
